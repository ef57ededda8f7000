"""The privileged instructions of the guest's code, found once and hooked at exactly their
addresses (a hook on every instruction costs about 50x, see docs/UNICORN.md).

Owns: scanning executable ranges with capstone for `mov cr3, reg`, `invlpg`, RDMSR and
WRMSR (for msr.py), the instructions that can set RFLAGS.IF and the returns from handlers
(`iretq`, `sysretq`); hooking the first two so that CR3 loads and TLB flushes reach the
CPU's own caches and the event bus (Cr3Written fires before the `mov` runs, so observers
see the new root before the guest uses it), and the returns for InterruptReturn (one
Python call per return, where a delivery costs several; an event only if wanted).
Does not own: what observers do with the events, holding interrupts (interrupts.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

from capstone import CS_ARCH_X86, CS_MODE_64, Cs
from capstone.x86 import X86_REG_INVALID, X86_REG_RIP
from unicorn import UC_HOOK_CODE
from unicorn import x86_const as X

from emu.cpu.counting import ExactCount
from emu.cpu.interrupts import IF_OPENERS
from emu.cpu.state import CpuState
from emu.cpu.system import SystemMemory
from emu.engine.guard import HookGuard
from emu.errors import GuestMemoryError
from emu.events import Cr3Written, EventBus, InterruptReturn, TlbFlush
from emu.x86 import MASK64, PTE_ADDRESS_MASK

_NAMES = Cs(CS_ARCH_X86, CS_MODE_64)     # capstone register ids -> names
RETURNS = ("iretq", "sysretq", "sysret")  # back from a handler (iretd: a 32-bit frame, not ours)


@dataclass(slots=True)
class Privileged:
    """What a scan found: (address, source register) of `mov cr3, reg`, (address, memory
    operand) of `invlpg`, IF-setting instruction address -> shadow length, and
    (address, mnemonic) of the returns from handlers."""
    cr3_writes: list[tuple[int, int]] = field(default_factory=list)
    invlpgs: list[tuple[int, object]] = field(default_factory=list)
    if_openers: dict[int, int] = field(default_factory=dict)
    rdmsrs: list[int] = field(default_factory=list)
    wrmsrs: list[int] = field(default_factory=list)
    returns: list[tuple[int, str]] = field(default_factory=list)


def find_privileged(code: bytes, start: int, found: Privileged) -> None:
    """Add what `code` (at virtual `start`) holds to `found`. The scan is lite (mnemonics
    only); the few hits are decoded again with operand details. Detail mode over the whole
    text also left the run after it about 8% slower (measured on the compute kernel)."""
    scan = Cs(CS_ARCH_X86, CS_MODE_64)
    scan.skipdata = True            # data between functions must not end the scan
    detail = Cs(CS_ARCH_X86, CS_MODE_64)
    detail.detail = True
    for address, size, mnemonic, op_str in scan.disasm_lite(code, start):
        if mnemonic in IF_OPENERS:
            found.if_openers[address] = IF_OPENERS[mnemonic]
            if mnemonic in RETURNS:
                found.returns.append((address, mnemonic))
            continue
        if mnemonic in ("rdmsr", "wrmsr"):
            (found.rdmsrs if mnemonic == "rdmsr" else found.wrmsrs).append(address)
            continue
        if not (mnemonic == "invlpg" or (mnemonic == "mov" and op_str.startswith("cr3,"))):
            continue
        offset = address - start
        insn = next(detail.disasm(code[offset:offset + size], address))
        if mnemonic == "mov":
            found.cr3_writes.append((address, _unicorn_register(insn.operands[1].reg)))
        else:
            found.invlpgs.append((address, insn.operands[0].mem))


class PrivilegedWatch:
    """Hooks the CR3 writes and invlpgs of scanned code. `on_new_root` is called when a CR3
    write changes the root (the code behind addresses may have changed)."""

    def __init__(self, uc, guard: HookGuard, state: CpuState, count: ExactCount,
                 system: SystemMemory, events: EventBus,
                 on_new_root: Callable[[], None], syscall_frame: Callable[[], int]) -> None:
        self.uc = uc
        self.guard = guard
        self.state = state
        self.count = count
        self.system = system
        self.events = events
        self.on_new_root = on_new_root
        self.syscall_frame = syscall_frame      # a sysret's frame (ExceptionDelivered.frame)

    def scan(self, ranges: Iterable[tuple[int, int]]) -> Privileged:
        """Scan virtual [start, end) ranges of executable code and hook what they hold."""
        found = Privileged()
        for start, end in ranges:
            try:
                code = self.state.read_virtual(start, end - start)
            except GuestMemoryError:
                continue
            find_privileged(code, start, found)
        for address, register in found.cr3_writes:
            self.uc.hook_add(UC_HOOK_CODE, self.guard.wrap(self._on_cr3_write), register,
                             address, address)
        for address, operand in found.invlpgs:
            self.uc.hook_add(UC_HOOK_CODE, self.guard.wrap(self._on_invlpg), operand,
                             address, address)
        for address, mnemonic in found.returns:
            self.uc.hook_add(UC_HOOK_CODE, self.guard.wrap(self._on_return), mnemonic,
                             address, address)
        return found

    def _on_cr3_write(self, uc, address: int, size: int, source: int) -> None:
        new = uc.reg_read(source)
        old = uc.reg_read(X.UC_X86_REG_CR3)
        self.system.flush()
        if new & PTE_ADDRESS_MASK != old & PTE_ADDRESS_MASK:
            self.on_new_root()
        if self.events.wants(Cr3Written):
            self.events.emit(Cr3Written(self.count.time_stamp(address), address, old, new))

    def _on_invlpg(self, uc, address: int, size: int, operand) -> None:
        target = _effective_address(self.state.fast_reg, operand, address + size)
        self.system.flush(target)
        if self.events.wants(TlbFlush):
            self.events.emit(TlbFlush(self.count.time_stamp(address), address, target))


    def _on_return(self, uc, address: int, size: int, mnemonic: str) -> None:
        """Before an iretq or sysret runs: which frame it pops."""
        if not self.events.wants(InterruptReturn):
            return
        frame = self.state.fast_reg(X.UC_X86_REG_RSP) if mnemonic == "iretq" else \
            self.syscall_frame()
        self.events.emit(InterruptReturn(self.count.time_stamp(address), address, frame))


def _unicorn_register(capstone_register: int) -> int:
    """Unicorn's register id for a capstone register id."""
    return getattr(X, f"UC_X86_REG_{_NAMES.reg_name(capstone_register).upper()}")


def _effective_address(read_register: Callable[[int], int], mem, next_rip: int) -> int:
    """A capstone memory operand's address from the live registers (RIP-relative operands
    count from the next instruction)."""
    address = mem.disp
    for register, scale in ((mem.base, 1), (mem.index, mem.scale)):
        if register == X86_REG_INVALID:
            continue
        if register == X86_REG_RIP:
            address += next_rip
        else:
            address += scale * read_register(_unicorn_register(register))
    return address & MASK64
