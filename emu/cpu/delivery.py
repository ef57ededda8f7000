"""Exception and interrupt delivery through the guest's IDT, as the CPU does it.

Owns: delivering every exception, software interrupt and external interrupt (Intel SDM
vol. 3, ch. 6: gate type, present and DPL checks, the code-segment checks, the TSS.RSP0 and
IST stack switches, the frame with its error code, CR2, IF cleared by interrupt gates);
turning a fault during delivery into the fault itself, a #DF, or a triple fault as table
6-5 says; the tally of deliveries by vector and the last one (for reports).
Does not own: supervisor memory accesses (system.py), the count (counting.py), SYSCALL
(syscall.py), deciding when an external interrupt is due (interrupts.py).

How: Unicorn calls UC_HOOK_INTR for every exception and `int n` without using the IDT. The
hook saves the CPU context once, reads what it needs from the saved bytes, builds the frame
on the guest stack in RAM, patches RIP/RSP/RFLAGS/CS/SS/CPL and QEMU's in-flight exception
state in the bytes, and restores them: a handful of microseconds per fault.
"""
from __future__ import annotations

import struct

from unicorn import x86_const as X

from emu.cpu.counting import ExactCount
from emu.cpu.state import CpuState
from emu.cpu.system import SystemMemory
from emu.engine.context import HF_CPL_MASK
from emu.errors import CpuFault, GuestCrash, GuestMemoryError, TripleFault
from emu.events import EventBus, ExceptionDelivered
from emu.x86 import (CONTRIBUTORY, DESC_CONFORMING, DESC_DPL_SHIFT, DOUBLE_FAULT,
                     ERROR_EXTERNAL, GATE_INTERRUPT, GATE_TRAP, GENERAL_PROTECTION,
                     IDT_ERROR_IDT, INT_N, INVALID_OPCODE, PAGE_FAULT, RFLAGS_IF, RFLAGS_NT,
                     RFLAGS_RF, RFLAGS_TF, RFLAGS_VM, SEGMENT_NOT_PRESENT, STACK_FAULT,
                     TSS_IST1, TSS_RSP0, WITH_ERROR_CODE, canonical, exception_short_name)

U32 = struct.Struct("<I")
I32 = struct.Struct("<i")
U64 = struct.Struct("<Q")
FRAME_BYTES = 40                             # RIP, CS, RFLAGS, RSP, SS
SEGMENT_CACHE = struct.Struct("<IxxxxQII")   # QEMU's SegmentCache: selector, base, limit, flags
_CR2_OFFSET = 16
_CS_CACHE_FLAGS = 0x00F0FF00                 # the descriptor high-dword bits QEMU caches


class Delivery:
    """Delivers events through the IDT of the live CPU; see the module docstring."""

    def __init__(self, state: CpuState, count: ExactCount, system: SystemMemory,
                 events: EventBus) -> None:
        self.state = state
        self.count = count
        self.system = system
        self.events = events
        self.context = state.context
        self.layout = state.layout
        self.exceptions_by_vector: dict[int, int] = {}
        self.guest_cr2 = 0         # the guest's CR2, which emu_start clobbers on return
        # Virtual [start, end) of the boot stack's guard page: a #PF there is an overflow
        # of the boot stack (kernels whose own page tables leave the RESERVED page out).
        self.stack_guard = (0, 0)
        self._last: tuple | None = None
        self._retried: int | None = None   # RIP of the last Unicorn #DF run again
        lay = self.layout
        self._rsp, self._cs, self._ss = lay.reg("rsp"), lay.seg("cs"), lay.seg("ss")

    # ---- Unicorn hooks ------------------------------------------------------------------

    def on_interrupt(self, uc, vector: int, _data) -> None:
        """UC_HOOK_INTR: a CPU exception or `int n`."""
        env = self.context.save()
        lay = self.layout
        if I32.unpack_from(env, lay.exception_is_int)[0]:
            resume = U64.unpack_from(env, lay.exception_next_eip)[0]
            self.count.settle(resume)
            self.deliver(env, vector, "software", None, resume, resume)
        else:
            rip = U64.unpack_from(env, lay.eip)[0]
            self.count.settle(rip)
            if vector == DOUBLE_FAULT and self._retried != rip:
                # Never a real #DF: Unicorn does not deliver, so a fault during a delivery
                # is found by deliver() below. This one is QEMU's in-flight state left from
                # an earlier fault (issue #1883; seen after a stop right after an iretq):
                # clear it and run the instruction again, to get the fault it really makes.
                self._retried = rip
                I32.pack_into(env, lay.old_exception, -1)
                self.context.restore()
                return
            self._retried = None
            error = U32.unpack_from(env, lay.error_code)[0] if vector in WITH_ERROR_CODE \
                else None
            if vector == PAGE_FAULT:
                self._check_stack_guard(env, rip)
            self.deliver(env, vector, "fault", error, rip, rip)

    def _check_stack_guard(self, env: memoryview, rip: int) -> None:
        start, end = self.stack_guard
        cr2 = U64.unpack_from(env, self.layout.cr + _CR2_OFFSET)[0]
        if start <= cr2 < end:
            raise GuestCrash(f"boot stack overflow: page fault at {cr2:#x}, in the guard "
                             f"page below the boot stack (RIP {rip:#x})")

    def on_invalid_opcode(self, uc, _data) -> bool:
        """UC_HOOK_INSN_INVALID: #UD does not reach the INTR hook."""
        env = self.context.save()
        rip = U64.unpack_from(env, self.layout.eip)[0]
        self.count.settle(rip)
        self.deliver(env, INVALID_OPCODE, "fault", None, rip, rip)
        return True

    def fault(self, env: memoryview, vector: int, error: int | None, rip: int,
              eip_bias: int = 0) -> None:
        """Deliver a fault the monitor itself decided on (#GP of a denied port access, #UD
        of SYSCALL without EFER.SCE) at the instruction `rip`, which does not retire."""
        self.deliver(env, vector, "fault", error, rip, rip, eip_bias)

    def external(self, vector: int) -> bool:
        """Deliver an external interrupt now, between instructions. False if RFLAGS.IF is
        clear (the interrupt stays pending with the caller)."""
        if not self.state.reg(X.UC_X86_REG_EFLAGS) & RFLAGS_IF:
            return False
        env = self.context.save()
        rip = U64.unpack_from(env, self.layout.eip)[0]
        self.deliver(env, vector, "external", None, rip, rip)
        return True

    # ---- delivery ------------------------------------------------------------------------

    def deliver(self, env: memoryview, event_vector: int, event_kind: str,
                event_error: int | None, return_rip: int, source: int,
                eip_bias: int = 0) -> None:
        """Deliver one event through the IDT: `kind` is fault, software, external or
        double; `return_rip` goes into the frame; `source` is the instruction it is
        reported at. Faults during delivery become the fault itself, a #DF, or a triple
        fault as the SDM's table 6-5 says."""
        rflags = self.state.fast_reg(X.UC_X86_REG_EFLAGS)
        original_cpl = U32.unpack_from(env, self.layout.hflags)[0] & HF_CPL_MASK
        cr2 = U64.unpack_from(env, self.layout.cr + _CR2_OFFSET)[0] \
            if event_vector == PAGE_FAULT else None
        vector, kind, error = event_vector, event_kind, event_error
        chain: list[tuple[int, int | None]] = []
        while True:
            try:
                handler, frame = self._push_frame(env, vector, kind, error, return_rip,
                                                  rflags, eip_bias)
                break
            except CpuFault as nested:
                chain.append((vector, error))
                if vector == DOUBLE_FAULT or _doubles(vector, nested.vector):
                    self._record(vector, kind, error, source, cr2, original_cpl, 0, 0)
                    chain.append((nested.vector, nested.error_code))
                    if vector == DOUBLE_FAULT:
                        raise _triple_fault(source, chain) from None
                    vector, kind, error = DOUBLE_FAULT, "double", 0
                else:
                    vector, kind, error = nested.vector, "fault", nested.error_code
                if nested.cr2 is not None and vector == PAGE_FAULT:
                    cr2 = nested.cr2
                    U64.pack_into(env, self.layout.cr + _CR2_OFFSET, cr2)
                # A fault raised by delivering `int n` (a DPL-0 gate, #NP, the IDT limit)
                # is a fault of the int instruction: its frame holds the int itself.
                if kind == "fault" and event_kind == "software" and source == return_rip:
                    return_rip = self._software_interrupt_start(source, event_vector)
        self.context.restore()
        self._record(vector, kind, error, source, cr2, original_cpl, handler, frame)

    def _record(self, vector, kind, error, rip, cr2, cpl, handler, frame) -> None:
        counts = self.exceptions_by_vector
        counts[vector] = counts.get(vector, 0) + 1
        if cr2 is not None:
            self.guest_cr2 = cr2
        self._last = (self.count.counter.state.icount, vector, kind, rip, error, cr2, cpl,
                      handler, frame)
        if self.events.wants(ExceptionDelivered):
            self.events.emit(ExceptionDelivered(*self._last))

    def record_syscall(self, vector: int, rip: int, cpl: int, handler: int,
                       frame: int) -> None:
        """Tally and report a SYSCALL entry (syscall.py delivers it itself)."""
        self._record(vector, "syscall", None, rip, None, cpl, handler, frame)

    def syscall_frame(self, env: memoryview) -> int:
        """Where a system call's return frame goes by convention: a ring-3 interrupt's
        place on the stack TSS.RSP0 names (ExceptionDelivered.frame); 0 without one, or
        when no one watches deliveries (a read of the TSS saved on every system call)."""
        if not self.events.wants(ExceptionDelivered):
            return 0
        try:
            return (self.system.tss_field(env, TSS_RSP0) & ~0xF) - FRAME_BYTES
        except (CpuFault, GuestMemoryError):
            return 0

    @property
    def last_exception(self) -> ExceptionDelivered | None:
        return ExceptionDelivered(*self._last) if self._last else None

    def _software_interrupt_start(self, next_rip: int, vector: int) -> int:
        """The start of a software-interrupt instruction that ends at next_rip: `int n`
        is CD n; int3/int1/into (CC/F1/CE) are one byte whose value is never their vector,
        so the last byte must equal the vector for a two-byte `int n`."""
        try:
            before = self.state.read_virtual(next_rip - 2, 2)
        except GuestMemoryError:
            return next_rip - 1
        return next_rip - 2 if before[0] == INT_N and before[1] == vector else next_rip - 1

    def _push_frame(self, env: memoryview, vector: int, kind: str, error: int | None,
                    return_rip: int, rflags: int, eip_bias: int) -> tuple[int, int]:
        """Check the gate, switch stacks, push the frame and patch the context bytes;
        returns the handler and where the frame's RIP slot is. Raises CpuFault without
        touching the context if a check fails."""
        lay = self.layout
        hflags = U32.unpack_from(env, lay.hflags)[0]
        cpl = hflags & HF_CPL_MASK
        external = ERROR_EXTERNAL if kind == "external" else 0
        idt_error = vector * 8 + IDT_ERROR_IDT + external
        handler, selector, ist, gate_type, gate_dpl, present = self.system.gate(
            env, vector, idt_error)
        if gate_type not in (GATE_INTERRUPT, GATE_TRAP):
            raise CpuFault(GENERAL_PROTECTION, idt_error)
        if kind == "software" and gate_dpl < cpl:
            raise CpuFault(GENERAL_PROTECTION, idt_error)
        if not present:
            raise CpuFault(SEGMENT_NOT_PRESENT, idt_error)
        descriptor = self.system.code_descriptor(env, selector, cpl, external)
        flags = descriptor >> 32
        new_cpl = cpl if flags & DESC_CONFORMING else (flags >> DESC_DPL_SHIFT) & 3
        if not canonical(handler):
            raise CpuFault(GENERAL_PROTECTION, external)
        rsp = self._push(env, cpl, new_cpl, ist, error, return_rip, rflags, external)
        # Commit: from here on nothing can fail.
        U64.pack_into(env, self._rsp, rsp)
        U64.pack_into(env, lay.eip, handler - eip_bias)
        U64.pack_into(env, lay.exception_next_eip, handler - eip_bias)
        eflags = U64.unpack_from(env, lay.eflags)[0]
        eflags &= ~(RFLAGS_TF | RFLAGS_NT | RFLAGS_RF | RFLAGS_VM)
        if gate_type == GATE_INTERRUPT:
            eflags &= ~RFLAGS_IF
        U64.pack_into(env, lay.eflags, eflags)
        SEGMENT_CACHE.pack_into(env, self._cs, (selector & ~3) | new_cpl, 0, 0xFFFFFFFF,
                                flags & _CS_CACHE_FLAGS)
        if new_cpl != cpl:
            SEGMENT_CACHE.pack_into(env, self._ss, new_cpl, 0, 0, new_cpl << DESC_DPL_SHIFT)
        U32.pack_into(env, lay.hflags, (hflags & ~HF_CPL_MASK) | new_cpl)
        I32.pack_into(env, lay.old_exception, -1)
        return handler, rsp if error is None else rsp + 8

    def _push(self, env: memoryview, cpl: int, new_cpl: int, ist: int, error: int | None,
              return_rip: int, rflags: int, external: int) -> int:
        """Switch stacks (IST, else RSPn on a privilege change) and write the frame;
        returns the new RSP."""
        old_rsp = U64.unpack_from(env, self._rsp)[0]
        if ist:
            rsp = self.system.tss_field(env, TSS_IST1 + 8 * (ist - 1))
        elif new_cpl < cpl:
            rsp = self.system.tss_field(env, TSS_RSP0 + 8 * new_cpl)
        else:
            rsp = old_rsp
        rsp &= ~0xF
        frame = [return_rip, U32.unpack_from(env, self._cs)[0], rflags, old_rsp,
                 U32.unpack_from(env, self._ss)[0]]
        if error is not None:
            frame.insert(0, error)
        rsp -= 8 * len(frame)
        if not canonical(rsp) or not canonical(rsp + 8 * len(frame) - 1):
            raise CpuFault(STACK_FAULT, external)
        self.system.write(env, rsp, struct.pack(f"<{len(frame)}Q", *frame))
        return rsp


def _doubles(first: int, second: int) -> bool:
    """Does a `second` fault while delivering `first` make a #DF (SDM table 6-5)?"""
    if first in CONTRIBUTORY:
        return second in CONTRIBUTORY
    return first == PAGE_FAULT and (second in CONTRIBUTORY or second == PAGE_FAULT)


def _triple_fault(rip: int, chain: list[tuple[int, int | None]]) -> TripleFault:
    steps = " -> ".join(exception_short_name(vector) + ("" if error is None else f"({error:#x})")
                        for vector, error in chain)
    return TripleFault(f"triple fault at RIP {rip:#x}: {steps}", rip=rip, chain=tuple(chain))
