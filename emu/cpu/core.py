"""The CPU: Unicorn plus exception, interrupt and SYSCALL delivery as on hardware.

Owns: delivering every exception and interrupt through the guest's IDT (Intel SDM vol. 3,
ch. 6: gate checks, the DPL check for software interrupts, the TSS.RSP0 and IST stack
switches, error codes, CR2, #DF when delivery itself faults, the triple fault), SYSCALL,
external interrupts at exact instruction counts, the instruction count, and reading guest
virtual memory for the monitor.
Does not own: devices (bus.py), booting (loader.py), deciding when a run ends (machine.py).

How: Unicorn calls UC_HOOK_INTR for every exception and `int n` without using the IDT.
The hook saves the CPU context once, reads what it needs from the saved bytes, builds the
frame on the guest stack in RAM, patches RIP/RSP/RFLAGS/CS/SS/CPL and QEMU's in-flight
exception state in the bytes, and restores them: a handful of microseconds per fault.
"""
from __future__ import annotations

import ctypes
import heapq
import struct
from dataclasses import dataclass

from capstone import CS_ARCH_X86, CS_MODE_64, Cs
from unicorn import (UC_HOOK_CODE, UC_HOOK_INSN, UC_HOOK_INSN_INVALID, UC_HOOK_INTR, Uc,
                     UcError)
from unicorn import x86_const as X
from unicorn.unicorn_py3 import unicorn as _binding

from emu.arch import paging
from emu.engine.context import (CC_OP_EFLAGS, DESC_A, DESC_B, DESC_CODE, DESC_G, DESC_L, DESC_P,
                      DESC_RW, DESC_S, HF_CPL_MASK, ContextBuffer, layout)
from emu.errors import EmuError, TripleFault
from emu.events import Cr3Written, EventBus, ExceptionDelivered, TlbFlush
from emu.engine.guard import NO_OPERANDS, HookGuard
from emu.engine.icount import NEVER, InstructionCounter, NoInstructionCounter
from emu.hw.memory import PhysicalMemory, UnbackedAccess

U64 = struct.Struct("<Q")
U32 = struct.Struct("<I")
I32 = struct.Struct("<i")
SEGMENT_CACHE = struct.Struct("<IxxxxQII")   # QEMU's SegmentCache: selector, base, limit, flags

EXCEPTION_NAMES = {
    0: "#DE divide error", 1: "#DB debug", 2: "NMI", 3: "#BP breakpoint", 4: "#OF overflow",
    5: "#BR bound range", 6: "#UD invalid opcode", 7: "#NM device not available",
    8: "#DF double fault", 10: "#TS invalid TSS", 11: "#NP segment not present",
    12: "#SS stack fault", 13: "#GP general protection", 14: "#PF page fault",
    16: "#MF x87 error", 17: "#AC alignment check", 18: "#MC machine check",
    19: "#XM SIMD error", 20: "#VE virtualization", 21: "#CP control protection",
}
WITH_ERROR_CODE = frozenset({8, 10, 11, 12, 13, 14, 17, 21, 29, 30})
CONTRIBUTORY = frozenset({0, 10, 11, 12, 13})
PAGE_FAULT = 14
DOUBLE_FAULT = 8

RFLAGS_TF = 1 << 8
RFLAGS_IF = 1 << 9
RFLAGS_DF = 1 << 10
RFLAGS_NT = 1 << 14
RFLAGS_RF = 1 << 16
RFLAGS_VM = 1 << 17
ARITH_FLAGS = 0x8D5            # CF PF AF ZF SF OF
EFER_SCE = 1 << 0
EFER_NXE = 1 << 11
CR0_WP = 1 << 16
SYSCALL_LENGTH = 2
# Port I/O and its permission check (SDM vol. 1, 19.5).
IO_INSTRUCTIONS = frozenset({"in", "out", "insb", "insw", "insd", "outsb", "outsw", "outsd"})
IOPL_SHIFT = 12
TSS_IO_MAP_BASE = 0x66
TSS_MIN_LIMIT = 0x67
DESC_TYPE_SHIFT = 8
TSS_TYPES = (9, 11)                 # 64-bit TSS, available or busy
GENERAL_PROTECTION = 13
# Instructions that can set RFLAGS.IF, and how many instructions after their start an
# interrupt may be taken (sti holds interrupts off for one more instruction: its shadow).
IF_OPENERS = {"sti": 2, "popfq": 1, "popf": 1, "iretq": 1, "iret": 1, "sysretq": 1, "sysret": 1}
HELD_INTERRUPT_RETRY = 1000      # retry period when no IF-setting instruction is known
SYSCALL_VECTOR = 256           # not an IDT vector: how SYSCALL entries are counted and traced
NOWHERE = (1 << 64) - 1        # emu_start's "until": a non-canonical address is never reached


def _nothing(*_args) -> None:
    """A code hook that only makes Unicorn check for a stop request at its address."""


class _DeliveryFault(Exception):
    """A fault raised while delivering another event (then #DF or serial delivery)."""

    def __init__(self, vector: int, error_code: int, cr2: int | None = None) -> None:
        super().__init__(vector)
        self.vector = vector
        self.error_code = error_code
        self.cr2 = cr2


@dataclass(frozen=True, slots=True)
class _HotOffsets:
    rsp: int
    cs: int
    ss: int


@dataclass(frozen=True, slots=True)
class Registers:
    """Architectural state for reports; read once, never written back."""
    values: dict

    def __getitem__(self, name: str) -> int:
        return self.values[name]


REPORT_REGISTERS = (
    ("rax", X.UC_X86_REG_RAX), ("rbx", X.UC_X86_REG_RBX), ("rcx", X.UC_X86_REG_RCX),
    ("rdx", X.UC_X86_REG_RDX), ("rsi", X.UC_X86_REG_RSI), ("rdi", X.UC_X86_REG_RDI),
    ("rbp", X.UC_X86_REG_RBP), ("rsp", X.UC_X86_REG_RSP), ("r8", X.UC_X86_REG_R8),
    ("r9", X.UC_X86_REG_R9), ("r10", X.UC_X86_REG_R10), ("r11", X.UC_X86_REG_R11),
    ("r12", X.UC_X86_REG_R12), ("r13", X.UC_X86_REG_R13), ("r14", X.UC_X86_REG_R14),
    ("r15", X.UC_X86_REG_R15), ("rip", X.UC_X86_REG_RIP), ("rflags", X.UC_X86_REG_EFLAGS),
    ("cs", X.UC_X86_REG_CS), ("ss", X.UC_X86_REG_SS), ("ds", X.UC_X86_REG_DS),
    ("es", X.UC_X86_REG_ES), ("fs", X.UC_X86_REG_FS), ("gs", X.UC_X86_REG_GS),
    ("cr0", X.UC_X86_REG_CR0), ("cr2", X.UC_X86_REG_CR2), ("cr3", X.UC_X86_REG_CR3),
    ("cr4", X.UC_X86_REG_CR4),
)


class Cpu:
    """One x86-64 CPU over `memory`. Construct, set the boot state, then `run()`."""

    def __init__(self, uc: Uc, memory: PhysicalMemory, events: EventBus, guard: HookGuard,
                 count: bool = True):
        self.uc = uc
        self.memory = memory
        self.events = events
        self.guard = guard
        self.layout = layout()
        self.context = ContextBuffer(uc, self.layout)
        self._offsets = _HotOffsets(self.layout.reg("rsp"), self.layout.seg("cs"),
                                    self.layout.seg("ss"))
        self._disasm = Cs(CS_ARCH_X86, CS_MODE_64)
        self._reg_value = ctypes.c_uint64()
        self._reg_read = _binding.uclib.uc_reg_read
        # Translations the CPU itself used for descriptor tables and interrupt stacks:
        # page -> (CR3, writable, RAM view, offset). Flushed like a TLB: on CR3 writes and
        # invlpg.
        self._system_tlb: dict[int, tuple[int, bool, memoryview, int]] = {}
        self._gates: dict[bytes, tuple] = {}          # raw IDT gate -> decoded fields
        self._rest_of_block: dict[tuple[int, int, int], int] = {}
        self.counter = InstructionCounter(uc, self._instructions_in_block) if count \
            else NoInstructionCounter()
        events.clock = self.icount
        self.exceptions_by_vector: dict[int, int] = {}
        self._last_exception: tuple | None = None
        self._cr2 = 0              # the guest's CR2, which emu_start clobbers on return
        self._scheduled: list[tuple[int, int, int]] = []   # (icount, sequence, vector)
        self._if_openers: dict[int, int] = {}     # address of sti etc. -> shadow length
        self._held: list[tuple[int, int]] = []    # (sequence, vector) waiting for IF
        self._exits_on = False
        # User-mode port I/O (see "user-mode port I/O" below).
        self.io_checks = False            # on once a block runs at CPL 3 (counted runs only)
        self._io_guards: dict[int, int] = {}      # address after an I/O instruction -> hook
        self._stale_blocks: list[tuple[int, int]] = []    # to translate again, with guards
        self._denied_io: tuple[int, int, int, int] | None = None    # rip, rsi, rdi, rcx
        if count:
            self.counter.watch_user_blocks(self._on_user_block)
        self._sequence = 0
        self.exit_status: int | None = None
        self.exit_reason: str | None = None
        uc.hook_add(UC_HOOK_INTR, guard.wrap(self._on_interrupt))
        uc.hook_add(UC_HOOK_INSN_INVALID, guard.wrap(self._on_invalid_opcode, on_error=True))
        uc.hook_add(UC_HOOK_INSN, guard.wrap(self._on_syscall), None, 1, 0,
                    X.UC_X86_INS_SYSCALL)
        self._hook_time_stamp_counter()

    # ---- state access -------------------------------------------------------------------

    def reg(self, register: int) -> int:
        return self.uc.reg_read(register)

    def _fast_reg(self, register: int) -> int:
        """reg_read without the binding's dispatch (a hot path in delivery)."""
        self._reg_read(self.uc._uch, register, ctypes.byref(self._reg_value))
        return self._reg_value.value

    def registers(self) -> Registers:
        return Registers({name: self.uc.reg_read(reg) for name, reg in REPORT_REGISTERS})

    def cpl(self) -> int:
        return U32.unpack_from(self.context.save(), self.layout.hflags)[0] & HF_CPL_MASK

    def cr3(self) -> int:
        return self.uc.reg_read(X.UC_X86_REG_CR3)

    def paging_enabled(self) -> bool:
        return bool(self.uc.reg_read(X.UC_X86_REG_CR0) & (1 << 31))

    def walk(self, vaddr: int, cr3: int | None = None) -> paging.Walk:
        """Our own page walk of vaddr (no TLB, no CR2 side effect)."""
        return paging.walk(self._read_phys_u64, self.cr3() if cr3 is None else cr3, vaddr,
                           nxe=self._nxe())

    def _nxe(self) -> bool:
        """EFER.NXE of the live CPU (the saved context is only current inside a delivery)."""
        return bool(U64.unpack_from(self.context.save(), self.layout.efer)[0] & EFER_NXE)

    def _read_phys_u64(self, paddr: int) -> int:
        return self.memory.read_u64(paddr)

    def translate(self, vaddr: int, cr3: int | None = None) -> int | None:
        if not self.paging_enabled():
            return vaddr
        return self.walk(vaddr, cr3).paddr

    def read_virtual(self, vaddr: int, size: int, cr3: int | None = None) -> bytes:
        """Guest-virtual read through our own walker; raises UnbackedAccess/LookupError."""
        out = bytearray()
        while size > 0:
            chunk = min(size, 0x1000 - (vaddr & 0xFFF))
            paddr = self.translate(vaddr, cr3)
            if paddr is None:
                raise LookupError(f"virtual {vaddr:#x} is not mapped")
            out += self.memory.read(paddr, chunk)
            vaddr += chunk
            size -= chunk
        return bytes(out)

    # ---- privileged instructions ------------------------------------------------------

    def flush_tlb(self, page: int | None = None) -> None:
        """Forget the CPU's own cached translations (all, or one virtual page)."""
        if page is None:
            self._system_tlb.clear()
        else:
            self._system_tlb.pop(page >> 12, None)

    def watch_privileged(self, ranges) -> int:
        """Hook exactly the CR3 writes and `invlpg`s found in `ranges` (virtual start, end)
        of executable guest code: no per-instruction hook. Returns how many were found."""
        # The scan is lite (mnemonics only); the few hits are decoded again with operand
        # details. Detail mode over the whole text also left the run after it about 8%
        # slower (measured on the compute kernel; the cause is inside Unicorn or libc).
        scan = Cs(CS_ARCH_X86, CS_MODE_64)
        scan.skipdata = True            # data between functions must not end the scan
        detail = Cs(CS_ARCH_X86, CS_MODE_64)
        detail.detail = True
        found = 0
        for start, end in ranges:
            try:
                code = self.read_virtual(start, end - start)
            except (LookupError, UnbackedAccess):
                continue
            for address, size, mnemonic, op_str in scan.disasm_lite(code, start):
                if mnemonic in IF_OPENERS:
                    self._if_openers[address] = IF_OPENERS[mnemonic]
                    continue
                if not (mnemonic == "invlpg" or (mnemonic == "mov" and op_str.startswith("cr3,"))):
                    continue
                offset = address - start
                insn = next(detail.disasm(code[offset:offset + size], address))
                if mnemonic == "mov":
                    source = insn.operands[1].reg
                    self.uc.hook_add(UC_HOOK_CODE, self.guard.wrap(self._on_cr3_write),
                                     _reg_id(insn.reg_name(source)), address, address)
                else:
                    self.uc.hook_add(UC_HOOK_CODE, self.guard.wrap(self._on_invlpg),
                                     insn.operands[0].mem, address, address)
                found += 1
        return found

    # ---- interrupts held while RFLAGS.IF is clear -----------------------------------------

    def _watch_if_openers(self) -> None:
        """An interrupt came due with IF clear: make the instructions that can set IF (found
        by watch_privileged) emulation exits, so the run stops right before each; the CPU
        then steps over it (and sti's one-instruction shadow) exactly and retries, as on
        hardware. The exits exist only while an interrupt is held."""
        if self._exits_on or not self._if_openers:
            return
        self.uc.ctl_exits_enabled(True)
        self.uc.ctl_set_exits(list(self._if_openers))
        self.uc.ctl_flush_tb()         # blocks translated earlier do not know the exits
        self._exits_on = True

    def _unwatch_if_openers(self) -> None:
        if self._exits_on:
            self.uc.ctl_exits_enabled(False)
            self.uc.ctl_flush_tb()
            self._exits_on = False

    def _step_over_if_opener(self) -> bool:
        """If the run stopped at an IF-setting instruction with an interrupt held, retire it
        (and the shadow) exactly, then let _deliver_due retry. True if it did."""
        delay = self._if_openers.get(self.uc.reg_read(X.UC_X86_REG_RIP)) \
            if self._exits_on else None
        if delay is None:
            return False
        self._unwatch_if_openers()
        self._run_exactly(self.icount() + delay)
        for sequence, vector in self._held:           # due again, right now
            heapq.heappush(self._scheduled, (self.icount(), sequence, vector))
        self._held = []
        return True

    def _on_cr3_write(self, uc: Uc, address: int, size: int, source: int) -> None:
        new = uc.reg_read(source)
        old = uc.reg_read(X.UC_X86_REG_CR3)
        self.flush_tlb()
        if new & paging.ADDRESS_MASK != old & paging.ADDRESS_MASK:
            self.forget_code()
        if self.events.wants(Cr3Written):
            self.events.emit(Cr3Written(self.counter.state.icount, address, old, new))

    def _on_invlpg(self, uc: Uc, address: int, size: int, operand) -> None:
        target = _effective_address(self._fast_reg, operand)
        self.flush_tlb(target)
        if self.events.wants(TlbFlush):
            self.events.emit(TlbFlush(self.counter.state.icount, address, target))

    # ---- instruction counting -----------------------------------------------------------

    def _instructions_in_block(self, address: int, size: int) -> int:
        code = self.read_virtual(address, size)
        return sum(1 for _ in self._disasm.disasm_lite(code, address)) or 1

    def _not_retired(self, resume_at: int) -> int:
        """Instructions of the last counted block from `resume_at` to its end: they were
        counted when the block started but did not run."""
        state = self.counter.state
        block, size = state.last_block, state.last_size
        if not block <= resume_at < block + size:
            return 0
        key = (block, size, resume_at)
        rest = self._rest_of_block.get(key)
        if rest is None:
            try:
                code = self.read_virtual(resume_at, block + size - resume_at)
            except (LookupError, UnbackedAccess):
                return 0
            rest = sum(1 for _ in self._disasm.disasm_lite(code, resume_at))
            if len(self._rest_of_block) > 65536:
                self._rest_of_block.clear()
            self._rest_of_block[key] = rest
        return rest

    def _settle_count(self, resume_at: int) -> None:
        """Make the counter exact when the block stopped before `resume_at`'s remainder."""
        rest = self._not_retired(resume_at)
        if rest:
            self.counter.adjust(-rest)
            state = self.counter.state
            # The last block is now the part that ran: settled once, and a later block
            # with the same (address, size) gets the right count from the C fast path.
            state.last_size = resume_at - state.last_block
            state.last_count -= rest

    def icount(self) -> int:
        return self.counter.raw

    def forget_code(self) -> None:
        """The code behind some addresses may have changed (new address space)."""
        self.counter.forget_blocks()
        self._rest_of_block.clear()

    # ---- exception delivery -------------------------------------------------------------

    def _on_interrupt(self, uc: Uc, vector: int, _data) -> None:
        env = self.context.save()
        lay = self.layout
        rip = U64.unpack_from(env, lay.eip)[0]
        if I32.unpack_from(env, lay.exception_is_int)[0]:
            resume = U64.unpack_from(env, lay.exception_next_eip)[0]
            self._settle_count(resume)
            self._deliver(env, vector, "software", None, resume, source=resume)
        else:
            self._settle_count(rip)
            error = None
            if vector in WITH_ERROR_CODE:
                error = U32.unpack_from(env, lay.error_code)[0]
            self._deliver(env, vector, "fault", error, rip, source=rip)

    def _on_invalid_opcode(self, uc: Uc, _data) -> bool:
        env = self.context.save()
        rip = U64.unpack_from(env, self.layout.eip)[0]
        self._settle_count(rip)
        self._deliver(env, 6, "fault", None, rip, source=rip)
        return True

    def raise_interrupt(self, vector: int) -> bool:
        """Deliver an external interrupt now, between instructions. False if IF is clear
        (the interrupt stays pending)."""
        rflags = self.uc.reg_read(X.UC_X86_REG_EFLAGS)
        if not rflags & RFLAGS_IF:
            return False
        env = self.context.save()
        rip = U64.unpack_from(env, self.layout.eip)[0]
        self._deliver(env, vector, "external", None, rip, source=rip)
        return True

    def schedule_interrupt(self, at_icount: int, vector: int) -> None:
        """Raise external interrupt `vector` when exactly `at_icount` instructions have
        retired (or as soon after as RFLAGS.IF allows)."""
        if not self.counter.counting:
            raise EmuError("interrupts at instruction counts need instruction counting "
                           "(do not turn it off)")
        self._sequence += 1
        heapq.heappush(self._scheduled, (at_icount, self._sequence, vector))

    def _deliver(self, env: memoryview, vector: int, kind: str, error: int | None,
                 return_rip: int, source: int, eip_bias: int = 0) -> None:
        """Deliver one event through the IDT, turning faults during delivery into the
        serial fault, a #DF, or a triple fault as the SDM's table 6-5 says."""
        rflags = self._fast_reg(X.UC_X86_REG_EFLAGS)
        original_cpl = U32.unpack_from(env, self.layout.hflags)[0] & HF_CPL_MASK
        cr2 = U64.unpack_from(env, self.layout.cr + 16)[0] if vector == PAGE_FAULT else None
        # FIX: see the return_rip fix-up below; the vector tells `int n` from int3/int1/into
        software_vector = vector if kind == "software" else None
        chain = []
        while True:
            try:
                handler = self._push_frame(env, vector, kind, error, return_rip, rflags,
                                           eip_bias)
                break
            except _DeliveryFault as nested:
                chain.append((vector, error))
                if vector == DOUBLE_FAULT:
                    self._record(vector, kind, error, source, cr2, original_cpl, 0)
                    chain.append((nested.vector, nested.error_code))
                    steps = " -> ".join(
                        EXCEPTION_NAMES.get(v, hex(v)).split(" ")[0] +
                        ("" if e is None else f"({e:#x})") for v, e in chain)
                    raise TripleFault(f"triple fault at RIP {source:#x}: {steps}",
                                      rip=source, chain=tuple(chain)) from None
                first_contributory = vector in CONTRIBUTORY
                first_page_fault = vector == PAGE_FAULT
                second_contributory = nested.vector in CONTRIBUTORY
                if (first_contributory and second_contributory) or \
                        (first_page_fault and (second_contributory or nested.vector == PAGE_FAULT)):
                    self._record(vector, kind, error, source, cr2, original_cpl, 0)
                    chain.append((nested.vector, nested.error_code))
                    vector, kind, error = DOUBLE_FAULT, "double", 0
                else:
                    vector, kind, error = nested.vector, "fault", nested.error_code
                if nested.cr2 is not None and vector == PAGE_FAULT:
                    cr2 = nested.cr2
                    U64.pack_into(env, self.layout.cr + 16, cr2)
                # FIX (tests/test_delivery.py): for `int n` the caller passes source ==
                # return_rip (the next instruction), so `source != return_rip` never held and
                # a fault raised by the delivery (#GP for a DPL-0 gate, #NP, IDT limit) pushed
                # the address AFTER the int. A fault's frame holds the int instruction itself.
                if kind == "fault" and software_vector is not None and source == return_rip:
                    return_rip = self._instruction_start(source, software_vector)
        self.context.restore()
        self._record(vector, kind, error, source, cr2, original_cpl, handler)

    def _record(self, vector, kind, error, rip, cr2, cpl, handler) -> None:
        counts = self.exceptions_by_vector
        counts[vector] = counts.get(vector, 0) + 1
        if cr2 is not None:
            self._cr2 = cr2
        self._last_exception = (self.counter.state.icount, vector, kind, rip, error, cr2, cpl,
                                handler)
        if self.events.wants(ExceptionDelivered):
            self.events.emit(ExceptionDelivered(*self._last_exception))

    @property
    def last_exception(self) -> ExceptionDelivered | None:
        return ExceptionDelivered(*self._last_exception) if self._last_exception else None

    def _instruction_start(self, next_rip: int, vector: int | None = None) -> int:
        """The start of a software-interrupt instruction that ends at next_rip."""
        try:
            before = self.read_virtual(next_rip - 2, 2)
        except (LookupError, UnbackedAccess):
            return next_rip - 1
        # FIX (tests/test_delivery.py): `int n` is CD n; int3/int1/into (CC/F1/CE) are one
        # byte whose value is never their vector, so when the vector is known require the
        # last byte to equal it (a 0xCD that merely precedes an int3 is not an `int n`).
        if vector is not None and before[1] != vector:
            return next_rip - 1
        return next_rip - 2 if before[0] == 0xCD else next_rip - 1

    def _push_frame(self, env: memoryview, vector: int, kind: str, error: int | None,
                    return_rip: int, rflags: int, eip_bias: int) -> int:
        """Check the gate, switch stacks, push the frame and patch the context bytes.
        Raises _DeliveryFault without touching the context if a check fails."""
        lay = self.layout
        off = self._offsets
        hflags = U32.unpack_from(env, lay.hflags)[0]
        cpl = hflags & HF_CPL_MASK
        external = 1 if kind == "external" else 0
        idt_error = vector * 8 + 2 + external
        idt_base = U64.unpack_from(env, lay.idt + 8)[0]
        idt_limit = U32.unpack_from(env, lay.idt + 16)[0]
        if vector * 16 + 15 > idt_limit:
            raise _DeliveryFault(13, idt_error)
        raw = self._system_read(env, idt_base + vector * 16, 16)
        gate = self._gates.get(raw)
        if gate is None:
            gate = self._gates[raw] = _decode_gate(raw)
        handler, selector, ist, gate_type, gate_dpl, present = gate
        if gate_type not in (0xE, 0xF):
            raise _DeliveryFault(13, idt_error)
        if kind == "software" and gate_dpl < cpl:
            raise _DeliveryFault(13, idt_error)
        if not present:
            raise _DeliveryFault(11, idt_error)
        descriptor = self._code_descriptor(env, selector, cpl, external)
        conforming = (descriptor >> 42) & 1
        new_cpl = cpl if conforming else (descriptor >> 45) & 3
        if not paging.canonical(handler):
            raise _DeliveryFault(13, external)

        old_rsp = U64.unpack_from(env, off.rsp)[0]
        old_ss = U32.unpack_from(env, off.ss)[0]
        old_cs = U32.unpack_from(env, off.cs)[0]
        if ist:
            rsp = self._tss_read(env, 36 + 8 * (ist - 1))
        elif new_cpl < cpl:
            rsp = self._tss_read(env, 4 + 8 * new_cpl)
        else:
            rsp = old_rsp
        rsp &= ~0xF
        frame = [return_rip, old_cs, rflags, old_rsp, old_ss]
        if error is not None:
            frame.insert(0, error)
        rsp -= 8 * len(frame)
        if not paging.canonical(rsp) or not paging.canonical(rsp + 8 * len(frame) - 1):
            raise _DeliveryFault(12, external)
        self._system_write(env, rsp, struct.pack(f"<{len(frame)}Q", *frame))

        # Commit: from here on nothing can fail.
        U64.pack_into(env, off.rsp, rsp)
        U64.pack_into(env, lay.eip, handler - eip_bias)
        U64.pack_into(env, lay.exception_next_eip, handler - eip_bias)
        eflags = U64.unpack_from(env, lay.eflags)[0]
        eflags &= ~(RFLAGS_TF | RFLAGS_NT | RFLAGS_RF | RFLAGS_VM)
        if gate_type == 0xE:
            eflags &= ~RFLAGS_IF
        U64.pack_into(env, lay.eflags, eflags)
        cs_flags = (descriptor >> 32) & 0x00F0FF00
        SEGMENT_CACHE.pack_into(env, off.cs, (selector & ~3) | new_cpl, 0, 0xFFFFFFFF, cs_flags)
        if new_cpl != cpl:
            SEGMENT_CACHE.pack_into(env, off.ss, new_cpl, 0, 0, new_cpl << 13)
        U32.pack_into(env, lay.hflags, (hflags & ~HF_CPL_MASK) | new_cpl)
        I32.pack_into(env, lay.old_exception, -1)
        return handler

    def _load_segment(self, env: memoryview, name: str, selector: int, base: int, limit: int,
                      flags: int) -> None:
        SEGMENT_CACHE.pack_into(env, self.layout.seg(name), selector, base, limit, flags)

    def _code_descriptor(self, env: memoryview, selector: int, cpl: int, external: int) -> int:
        lay = self.layout
        index = selector & ~7
        if index == 0 or selector & 4:
            raise _DeliveryFault(13, (selector & ~3) + external)
        gdt_base = U64.unpack_from(env, lay.gdt + 8)[0]
        gdt_limit = U32.unpack_from(env, lay.gdt + 16)[0]
        if index + 7 > gdt_limit:
            raise _DeliveryFault(13, (selector & ~3) + external)
        descriptor = U64.unpack_from(self._system_read(env, gdt_base + index, 8))[0]
        is_code = (descriptor >> 43) & 1 and (descriptor >> 44) & 1
        if not is_code or not (descriptor >> 53) & 1 or (descriptor >> 45) & 3 > cpl:
            raise _DeliveryFault(13, (selector & ~3) + external)
        if not (descriptor >> 47) & 1:
            raise _DeliveryFault(11, (selector & ~3) + external)
        return descriptor

    def _tss_read(self, env: memoryview, offset: int) -> int:
        lay = self.layout
        base = U64.unpack_from(env, lay.tr + 8)[0]
        limit = U32.unpack_from(env, lay.tr + 16)[0]
        selector = U32.unpack_from(env, lay.tr)[0]
        if offset + 7 > limit:
            raise _DeliveryFault(10, selector & ~3)
        value = U64.unpack_from(self._system_read(env, base + offset, 8))[0]
        if not value:
            raise _DeliveryFault(10, selector & ~3)   # a zero RSPn/IST is a broken TSS
        return value

    def _system_page(self, env: memoryview, vaddr: int, write: bool) -> tuple[memoryview, int]:
        """(RAM view, offset) of `vaddr` for an access the CPU itself makes at supervisor
        level (descriptor tables, the new stack). Translations are cached per page like a
        TLB (flushed on CR3 writes and invlpg); raises _DeliveryFault as the MMU would."""
        lay = self.layout
        cr0 = U64.unpack_from(env, lay.cr)[0]
        cr3 = U64.unpack_from(env, lay.cr + 24)[0] if cr0 & (1 << 31) else -1
        cached = self._system_tlb.get(vaddr >> 12)
        if cached is not None and cached[0] == cr3 and (cached[1] or not write):
            return cached[2], cached[3] + (vaddr & 0xFFF)
        if cr3 == -1:
            frame, writable = vaddr & ~0xFFF, True
        else:
            nxe = bool(U64.unpack_from(env, lay.efer)[0] & EFER_NXE)
            wp = bool(cr0 & CR0_WP)
            try:
                result = paging.walk(self._read_phys_u64, cr3, vaddr, nxe)
            except UnbackedAccess:
                raise _DeliveryFault(PAGE_FAULT, paging.PF_RESERVED | paging.PF_PRESENT, vaddr)
            code = paging.fault_code(result, write=write, user=False, fetch=False, wp=wp,
                                     nxe=nxe)
            if code is not None:
                raise _DeliveryFault(PAGE_FAULT, code, vaddr)
            frame = result.paddr & ~0xFFF
            writable = paging.fault_code(result, write=True, user=False, fetch=False, wp=wp,
                                         nxe=nxe) is None
        try:
            view, offset = self.memory.locate(frame, 0x1000)
        except UnbackedAccess:
            raise _DeliveryFault(13, 0) from None
        if len(self._system_tlb) > 4096:
            self._system_tlb.clear()
        self._system_tlb[vaddr >> 12] = (cr3, writable, view, offset)
        return view, offset + (vaddr & 0xFFF)

    def _system_read(self, env: memoryview, vaddr: int, size: int) -> bytes:
        out = b""
        while size:
            chunk = min(size, 0x1000 - (vaddr & 0xFFF))
            view, offset = self._system_page(env, vaddr, write=False)
            out += view[offset:offset + chunk]
            vaddr += chunk
            size -= chunk
        return out

    def _system_write(self, env: memoryview, vaddr: int, data: bytes) -> None:
        pieces = []
        done = 0
        while done < len(data):
            chunk = min(len(data) - done, 0x1000 - ((vaddr + done) & 0xFFF))
            view, offset = self._system_page(env, vaddr + done, write=True)
            pieces.append((view, offset, data[done:done + chunk]))
            done += chunk
        for view, offset, piece in pieces:   # every page translated first: no half frame
            view[offset:offset + len(piece)] = piece

    # ---- SYSCALL ------------------------------------------------------------------------

    def _on_syscall(self, uc: Uc, _data) -> None:
        """Unicorn runs SYSCALL as a no-op that then adds the instruction length to RIP;
        do what the CPU does (SDM vol. 2, SYSCALL) and pre-subtract that length."""
        env = self.context.save()
        lay = self.layout
        rip = U64.unpack_from(env, lay.eip)[0]
        self._settle_count(rip + SYSCALL_LENGTH)
        efer = U64.unpack_from(env, lay.efer)[0]
        if not efer & EFER_SCE:
            self._deliver(env, 6, "fault", None, rip, source=rip, eip_bias=SYSCALL_LENGTH)
            return
        rflags = self._fast_reg(X.UC_X86_REG_EFLAGS)
        star = U64.unpack_from(env, lay.star)[0]
        lstar = U64.unpack_from(env, lay.lstar)[0]
        fmask = U64.unpack_from(env, lay.fmask)[0]
        hflags = U32.unpack_from(env, lay.hflags)[0]
        cpl = hflags & HF_CPL_MASK
        U64.pack_into(env, lay.reg("rcx"), rip + SYSCALL_LENGTH)
        U64.pack_into(env, lay.reg("r11"), rflags & ~RFLAGS_RF)
        new_flags = rflags & ~fmask & ~RFLAGS_RF
        U64.pack_into(env, lay.eflags, (new_flags & ~(ARITH_FLAGS | RFLAGS_DF)) | 2)
        U64.pack_into(env, lay.cc_src, new_flags & ARITH_FLAGS)
        U32.pack_into(env, lay.cc_op, CC_OP_EFLAGS)
        I32.pack_into(env, lay.df, -1 if new_flags & RFLAGS_DF else 1)
        selector = (star >> 32) & 0xFFFC
        self._load_segment(env, "cs", selector, 0, 0xFFFFFFFF,
                           DESC_G | DESC_P | DESC_S | DESC_CODE | DESC_RW | DESC_A | DESC_L)
        self._load_segment(env, "ss", selector + 8, 0, 0xFFFFFFFF,
                           DESC_G | DESC_B | DESC_P | DESC_S | DESC_RW | DESC_A)
        U32.pack_into(env, lay.hflags, hflags & ~HF_CPL_MASK)
        U64.pack_into(env, lay.eip, lstar - SYSCALL_LENGTH)
        self.context.restore()
        self._record(SYSCALL_VECTOR, "syscall", None, rip, None, cpl, lstar)

    # ---- user-mode port I/O -------------------------------------------------------------

    # Unicorn runs IN/OUT/INS/OUTS at any CPL without the I/O permission check (SDM vol. 1,
    # 19.5), and an I/O hook cannot raise #GP: the rest of its translated block would run
    # first. So each new block that runs at CPL 3 is scanned (the counter shows it once);
    # an I/O instruction with more of the block after it gets a code hook on the next
    # instruction, whose exit check ends the block there, and the block is translated again.
    # A denied access then stops the run right after the instruction, which is undone and
    # turned into #GP(0). Without the counter (--no-count) nothing shows the blocks, and the
    # check is off: asking for the CPL on every port access would cost the kernel's serial
    # output more than the speed --no-count is for. One order differs from hardware: INS and
    # OUTS touch their memory operand before the port (QEMU's restartable string I/O), so a
    # #PF there comes before the #GP.

    def _on_user_block(self, address: int, size: int) -> bool:
        """A new block at CPL 3. True: stop before it runs (it gained guards)."""
        self.io_checks = True
        try:
            code = self.read_virtual(address, size)
        except (LookupError, UnbackedAccess):
            return False
        end, added = address + size, False
        for at, length, mnemonic, _ in self._disasm.disasm_lite(code, address):
            after = at + length
            if mnemonic.rsplit(" ", 1)[-1] in IO_INSTRUCTIONS and after < end and \
                    after not in self._io_guards:
                self._io_guards[after] = self.uc.hook_add(UC_HOOK_CODE, _nothing, None,
                                                          after, after)
                added = True
        if added:
            self._stale_blocks.append((address, end))
        return added

    def permits_io(self, port: int, size: int) -> bool:
        """The I/O permission check of IN/OUT/INS/OUTS by the current instruction: CPL <=
        IOPL, or every bit of the accessed ports clear in the TSS I/O permission bitmap."""
        cpl = self._fast_reg(X.UC_X86_REG_CS) & 3
        if cpl == 0 or cpl <= (self._fast_reg(X.UC_X86_REG_EFLAGS) >> IOPL_SHIFT) & 3:
            return True
        env = self.context.save()
        lay = self.layout
        base = U64.unpack_from(env, lay.tr + 8)[0]
        limit, flags = struct.unpack_from("<II", env, lay.tr + 16)
        if not flags & DESC_P or (flags >> DESC_TYPE_SHIFT) & 0xF not in TSS_TYPES or \
                limit < TSS_MIN_LIMIT:
            return False
        try:
            io_map = int.from_bytes(self._system_read(env, base + TSS_IO_MAP_BASE, 2), "little")
            offset = io_map + port // 8
            if offset + 1 > limit:          # both bytes must lie inside the TSS
                return False
            bits = int.from_bytes(self._system_read(env, base + offset, 2), "little")
        except _DeliveryFault:
            return False
        return not bits & (((1 << size) - 1) << (port & 7))

    def deny_io(self, size: int, is_in: bool) -> int:
        """Called from the I/O hook for an access permits_io refused: remember the
        instruction, stop after it, and return what an IN hands Unicorn (the destination's
        current contents, so that the undone instruction changed nothing)."""
        rip = self._fast_reg(X.UC_X86_REG_RIP)
        rsi, rdi, rcx = (self._fast_reg(r) for r in (X.UC_X86_REG_RSI, X.UC_X86_REG_RDI,
                                                      X.UC_X86_REG_RCX))
        self._denied_io = (rip, rsi, rdi, rcx)
        self.uc.emu_stop()
        if not is_in:
            return 0
        mask = (1 << (8 * size)) - 1
        if self._is_string_io(rip):          # INS stores at [RDI]: store what is there
            try:
                return int.from_bytes(self.read_virtual(rdi, size), "little")
            except (LookupError, UnbackedAccess):
                return 0
        return self._fast_reg(X.UC_X86_REG_RAX) & mask

    def _is_string_io(self, rip: int) -> bool:
        try:
            code = self.read_virtual(rip, 15)
        except (LookupError, UnbackedAccess):
            return False
        return any(mnemonic.rsplit(" ", 1)[-1].startswith(("ins", "outs"))
                   for _, _, mnemonic, _ in self._disasm.disasm_lite(code, rip, 1))

    def _finish_user_io_stop(self) -> bool:
        """After emu_start returned: translate guarded blocks again, deliver a pending #GP.
        True if the run stopped for one of these."""
        handled = bool(self._stale_blocks)
        for start, end in self._stale_blocks:
            self.uc.ctl_remove_cache(start, end)
        self._stale_blocks.clear()
        if self._denied_io is not None:
            self._deliver_denied_io()
            handled = True
        return handled

    def _deliver_denied_io(self) -> None:
        rip, rsi, rdi, rcx = self._denied_io
        self._denied_io = None
        self._settle_count(rip)                 # the denied instruction did not retire
        env = self.context.save()
        lay = self.layout
        for name, value in (("rsi", rsi), ("rdi", rdi), ("rcx", rcx)):   # string I/O moved them
            U64.pack_into(env, lay.reg(name), value)
        U64.pack_into(env, lay.eip, rip)
        self._deliver(env, GENERAL_PROTECTION, "fault", 0, rip, source=rip)

    # ---- time -------------------------------------------------------------------------

    def _hook_time_stamp_counter(self) -> None:
        """RDTSC/RDTSCP read host time in Unicorn, which breaks determinism: answer with the
        instruction count instead (one tick per retired instruction), or, when nothing is
        counted, with the number of reads so far (time still moves: a calibration loop
        waiting for the TSC ends). The Python binding does not wrap these hooks; the C API
        has them."""
        self._tsc_reads = 0
        for instruction in (X.UC_X86_INS_RDTSC, X.UC_X86_INS_RDTSCP):
            self.guard.hook_instruction(instruction, NO_OPERANDS, self._on_rdtsc, on_error=1)

    def time_stamp(self, rip: int) -> int:
        """The virtual TSC as seen by the instruction at rip: instructions retired before it."""
        return self.counter.raw - self._not_retired(rip)

    def _on_rdtsc(self, handle, _data) -> int:
        rip = self._fast_reg(X.UC_X86_REG_RIP)
        self._tsc_reads += 1
        tsc = self.time_stamp(rip) if self.counter.counting else self._tsc_reads
        self.uc.reg_write(X.UC_X86_REG_RAX, tsc & 0xFFFFFFFF)
        self.uc.reg_write(X.UC_X86_REG_RDX, tsc >> 32)
        if self.read_virtual(rip, 3) == b"\x0f\x01\xf9":     # RDTSCP also loads TSC_AUX
            self.uc.reg_write(X.UC_X86_REG_RCX, 0)
        return 1                                   # skip Unicorn's own (host-time) RDTSC

    # ---- running ------------------------------------------------------------------------

    def request_exit(self, status: int, reason: str = "debug-exit") -> None:
        """Called by a device (debug exit): stop after the current instruction."""
        self.exit_status = status
        self.exit_reason = reason
        self.uc.emu_stop()

    def run(self, budget: int = NEVER) -> str:
        """Run until the guest exits, halts for good, or `budget` instructions retire.
        Returns "exit", "halt" or "budget"; raises GuestError subclasses for crashes.

        The counting hook stops Unicorn before the block that would reach the next stop
        point (budget or scheduled interrupt) runs; the rest is single-stepped with
        Unicorn's exact instruction count, so both land on the exact instruction."""
        if budget != NEVER and not self.counter.counting:
            raise EmuError("an instruction budget needs instruction counting (do not turn it off)")
        while True:
            target = self._scheduled[0][0] if self._scheduled else NEVER
            stop_at = min(budget, target)
            self.counter.request_stop_at(stop_at)
            self._emulate(self.uc.reg_read(X.UC_X86_REG_RIP))
            if self.exit_status is not None:
                return "exit"
            if self._finish_user_io_stop():
                continue
            if self._step_over_if_opener():
                if self.exit_status is not None:
                    return "exit"
                self._deliver_due()
                continue
            if self.counter.stop_requested and self.icount() < stop_at:
                self._run_exactly(stop_at)
                if self.exit_status is not None:
                    return "exit"
            icount = self.icount()
            if icount >= budget:
                return "budget"
            if self._scheduled and icount >= target:
                self._deliver_due()
                continue
            if self.counter.stop_requested:
                continue
            if self._halted():
                if self._scheduled and self.uc.reg_read(X.UC_X86_REG_EFLAGS) & RFLAGS_IF:
                    _, _, vector = heapq.heappop(self._scheduled)
                    self.raise_interrupt(vector)
                    continue
                return "halt"
            return "stopped"

    def _emulate(self, start: int, count: int = 0) -> None:
        try:
            self.uc.emu_start(start, NOWHERE, 0, count)
            self._repair_after_stop()
        except UcError as exc:
            self.guard.reraise()
            if self.counter.error is not None:
                raise self.counter.error
            raise EmuError(f"unicorn stopped: {exc}") from None
        self.guard.reraise()
        if self.counter.error is not None:
            error, self.counter.error = self.counter.error, None
            raise error
        self._settle_count(self.uc.reg_read(X.UC_X86_REG_RIP))

    def _repair_after_stop(self) -> None:
        """When emu_start returns, Unicorn has probed the `until` address as a page fault:
        CR2 = until - 1 and QEMU's in-flight exception = #PF, which would turn the guest's
        next page fault into a #DF. Put back the guest's CR2 and clear that state."""
        env = self.context.save()
        U64.pack_into(env, self.layout.cr + 16, self._cr2)
        I32.pack_into(env, self.layout.old_exception, -1)
        self.context.restore()

    def _run_exactly(self, target: int) -> None:
        """Single-step (Unicorn's exact count) up to `target` retired instructions."""
        while self.icount() < target and self.exit_status is None:
            self.counter.request_stop_at(NEVER)
            # Blocks translated before carry no count check and chain to each other (a
            # `jmp $` would spin forever): drop them so the count is honoured.
            self.uc.ctl_flush_tb()
            self._emulate(self.uc.reg_read(X.UC_X86_REG_RIP), count=target - self.icount())
            if self._halted():
                break

    def _deliver_due(self) -> None:
        while self._scheduled and self._scheduled[0][0] <= self.icount():
            at, sequence, vector = self._scheduled[0]
            if self.raise_interrupt(vector):
                heapq.heappop(self._scheduled)
                continue
            # IF is clear: held until an instruction that can set IF retires. Without
            # known ones (code not scanned), try again later, deterministically.
            self._watch_if_openers()
            if self._exits_on:
                heapq.heappop(self._scheduled)
                self._held.append((sequence, vector))
            else:
                heapq.heapreplace(self._scheduled,
                                  (self.icount() + HELD_INTERRUPT_RETRY, sequence, vector))

    def _halted(self) -> bool:
        rip = self.uc.reg_read(X.UC_X86_REG_RIP)
        try:
            return self.read_virtual(rip - 1, 1) == b"\xf4"
        except (LookupError, UnbackedAccess):
            return False


def _reg_id(name: str) -> int:
    """Unicorn's register id for a capstone register name."""
    return getattr(X, f"UC_X86_REG_{name.upper()}")


def _effective_address(read_register, mem) -> int:
    """Compute a capstone memory operand's address from the live registers."""
    from capstone.x86 import X86_REG_INVALID, X86_REG_RIP
    address = mem.disp
    for register, scale in ((mem.base, 1), (mem.index, mem.scale)):
        if register in (X86_REG_INVALID,):
            continue
        if register == X86_REG_RIP:
            raise EmuError("rip-relative invlpg operand is not supported")
        address += scale * read_register(_capstone_to_unicorn(register))
    return address & ((1 << 64) - 1)


def _capstone_to_unicorn(register: int) -> int:
    return _reg_id(_CS_NAMES.reg_name(register))


_CS_NAMES = Cs(CS_ARCH_X86, CS_MODE_64)


def _decode_gate(raw: bytes) -> tuple:
    """(handler, selector, ist, type, dpl, present) of a 16-byte 64-bit IDT gate."""
    low, high = struct.unpack("<QQ", raw)
    handler = (low & 0xFFFF) | ((low >> 32) & 0xFFFF0000) | ((high & 0xFFFFFFFF) << 32)
    return (handler, (low >> 16) & 0xFFFF, (low >> 32) & 7, (low >> 40) & 0xF,
            (low >> 45) & 3, (low >> 47) & 1)
