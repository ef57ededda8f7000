"""The CPU's state as the monitor reads it: registers, privilege level, paging, and guest
virtual memory through our own page walk.

Owns: register reads (the binding's, and a direct fast path for hooks), the report
snapshot of registers, CPL (from QEMU's hflags: Unicorn cannot tell it otherwise), CR3,
EFER.NXE, page walks and translations with the live CPU's settings, and reading guest
virtual memory (no TLB, no CR2 side effect).
Does not own: changing state (delivery, SYSCALL), counting, or running.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from capstone import CS_ARCH_X86, CS_MODE_64, Cs
from unicorn import x86_const as X

from emu.arch import paging
from emu.engine import capi
from emu.engine.context import HF_CPL_MASK, ContextBuffer
from emu.errors import GuestMemoryError, NotMapped
from emu.hw.memory import PhysicalMemory
from emu.x86 import CR0_PG, EFER_NXE, HLT, PAGE_SIZE

U32 = struct.Struct("<I")
U64 = struct.Struct("<Q")
MAX_INSTRUCTION = 15

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


@dataclass(frozen=True, slots=True)
class Registers:
    """Architectural state for reports; read once, never written back."""
    values: dict

    def __getitem__(self, name: str) -> int:
        return self.values[name]


PORT_MNEMONICS = frozenset({"in", "out", "insb", "insw", "insd", "outsb", "outsw", "outsd"})


class CpuState:
    """Read-only views of one CPU. `fast_reg(register)` is uc_reg_read without the
    binding's dispatch, for hooks on hot paths."""

    def __init__(self, uc, memory: PhysicalMemory, context: ContextBuffer) -> None:
        self.uc = uc
        self.memory = memory
        self.context = context
        self.layout = context.layout
        self.fast_reg = capi.register_reader(uc)
        self._disasm = Cs(CS_ARCH_X86, CS_MODE_64)

    def reg(self, register: int) -> int:
        return self.uc.reg_read(register)

    def rip(self) -> int:
        return self.fast_reg(X.UC_X86_REG_RIP)

    def registers(self) -> Registers:
        return Registers({name: self.uc.reg_read(reg) for name, reg in REPORT_REGISTERS})

    def cpl(self) -> int:
        return U32.unpack_from(self.context.save(), self.layout.hflags)[0] & HF_CPL_MASK

    # Read on every page walk (a user block's I/O scan, a report): the binding's reg_read
    # cost more than the walk's table reads.
    def cr3(self) -> int:
        return self.fast_reg(X.UC_X86_REG_CR3)

    def paging_enabled(self) -> bool:
        return bool(self.fast_reg(X.UC_X86_REG_CR0) & CR0_PG)

    def nxe(self) -> bool:
        """EFER.NXE of the live CPU (the saved context is only current inside a delivery)."""
        return bool(U64.unpack_from(self.context.save(), self.layout.efer)[0] & EFER_NXE)

    def walk(self, vaddr: int, cr3: int | None = None) -> paging.Walk:
        """Our own page walk of vaddr (no TLB, no CR2 side effect)."""
        return paging.walk(self.memory.read_u64, self.cr3() if cr3 is None else cr3, vaddr,
                           nxe=self.nxe())

    def translate(self, vaddr: int, cr3: int | None = None) -> int | None:
        if not self.paging_enabled():
            return vaddr
        return self.walk(vaddr, cr3).paddr

    def read_virtual(self, vaddr: int, size: int, cr3: int | None = None) -> bytes:
        """Guest-virtual bytes through our own walker; raises NotMapped or UnbackedAccess
        (both GuestMemoryError)."""
        out = bytearray()
        while size > 0:
            chunk = min(size, PAGE_SIZE - (vaddr & (PAGE_SIZE - 1)))
            paddr = self.translate(vaddr, cr3)
            if paddr is None:
                raise NotMapped(vaddr, cr3)
            out += self.memory.read(paddr, chunk)
            vaddr += chunk
            size -= chunk
        return bytes(out)

    def tlb_translation(self, vaddr: int, prot: int) -> int | None:
        """Unicorn's own translation of vaddr for an access of `prot` (UC_PROT_READ, WRITE
        or EXEC): its TLB first, then its MMU; None if it faults. The guest's CR2 is kept."""
        saved_cr2 = self.uc.reg_read(X.UC_X86_REG_CR2)
        try:
            return capi.vmem_translate(self.uc, vaddr, prot)
        finally:
            self.uc.reg_write(X.UC_X86_REG_CR2, saved_cr2)

    def count_instructions(self, address: int, size: int) -> int:
        """How many instructions the `size` bytes of code at `address` hold (capstone)."""
        code = self.read_virtual(address, size)
        return sum(1 for _ in self._disasm.disasm_lite(code, address))

    def port_instructions(self, address: int, size: int) -> list[int]:
        """For each port I/O instruction (in, out, ins, outs) in the `size` bytes of code at
        `address`: how many instructions from it to the end, itself included."""
        code = self.read_virtual(address, size)
        mnemonics = [mnemonic for _, _, mnemonic, _ in self._disasm.disasm_lite(code, address)]
        return [len(mnemonics) - index for index, mnemonic in enumerate(mnemonics)
                if mnemonic.split()[-1] in PORT_MNEMONICS]

    def block_ends_in_hlt(self, block: int, size: int) -> bool:
        """Did the code block [block, block + size) just run end with a `hlt` at RIP?
        (A byte 0xF4 before RIP is not enough: `mov r12, r14` ends with one.)"""
        if size == 0 or block + size != self.rip():
            return False
        try:
            code = self.read_virtual(block, size)
        except GuestMemoryError:
            return False
        last = None
        for _, _, mnemonic, _ in self._disasm.disasm_lite(code, block):
            last = mnemonic
        return last == "hlt"

    def byte_before_rip_is_hlt(self) -> bool:
        """The guess when no block is known: the byte before RIP is 0xF4 (a `hlt`, or the
        end of another instruction)."""
        try:
            return self.read_virtual(self.rip() - 1, 1)[0] == HLT
        except GuestMemoryError:
            return False

    def mnemonic_at(self, rip: int) -> str | None:
        """The mnemonic (with its prefix, e.g. `rep stosb`) of the instruction at rip, or
        None if it cannot be read or decoded."""
        for length in (MAX_INSTRUCTION, PAGE_SIZE - (rip & (PAGE_SIZE - 1))):
            try:
                code = self.read_virtual(rip, min(length, MAX_INSTRUCTION))
            except GuestMemoryError:
                continue            # the next page may be unmapped: try up to the page end
            for _, _, mnemonic, _ in self._disasm.disasm_lite(code, rip, 1):
                return mnemonic
            return None
        return None
