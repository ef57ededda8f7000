"""Model-specific registers the machine's devices own (IA32_APIC_BASE, IA32_TSC_DEADLINE):
Unicorn's RDMSR and WRMSR know nothing of them and cannot be hooked as instructions, so the
RDMSR and WRMSR instructions found in the kernel's code (emu/cpu/scan.py) get a hook at
their address that emulates an owned MSR and steps over the instruction.

Owns: those hooks, and keeping the instruction count exact when one steps over (the block's
rest would otherwise be counted twice: Unicorn starts a new block at the new RIP).
Does not own: the MSRs' values (the owner's, e.g. emu/hw/platform.py), other MSRs (Unicorn's).
Code the kernel writes at run time is not scanned: an RDMSR there reads Unicorn's value.
"""
from __future__ import annotations

from typing import Protocol

from unicorn import x86_const as X

from emu.cpu.counting import ExactCount
from emu.engine.guard import HookGuard

MSR_INSTRUCTION_LENGTH = 2          # 0F 32 (RDMSR), 0F 30 (WRMSR)
MASK32 = 0xFFFFFFFF


class MsrOwner(Protocol):
    def read_msr(self, index: int) -> int | None: ...

    def write_msr(self, index: int, value: int) -> bool: ...


class MsrHooks:
    """The owner answers the MSRs it knows; the rest run as Unicorn runs them."""

    def __init__(self, uc, guard: HookGuard, count: ExactCount) -> None:
        self.uc = uc
        self.guard = guard
        self.count = count
        self.owner: MsrOwner | None = None

    def watch(self, reads: list[int], writes: list[int]) -> None:
        for address in reads:
            self.guard.on_execute(address, self._on_rdmsr)
        for address in writes:
            self.guard.on_execute(address, self._on_wrmsr)

    def _on_rdmsr(self, uc, address: int, size: int, _data) -> None:
        if self.owner is None:
            return
        value = self.owner.read_msr(uc.reg_read(X.UC_X86_REG_RCX) & MASK32)
        if value is None:
            return
        uc.reg_write(X.UC_X86_REG_RAX, value & MASK32)
        uc.reg_write(X.UC_X86_REG_RDX, value >> 32)
        self._step_over(address)

    def _on_wrmsr(self, uc, address: int, size: int, _data) -> None:
        if self.owner is None:
            return
        value = (uc.reg_read(X.UC_X86_REG_RDX) & MASK32) << 32 | \
            (uc.reg_read(X.UC_X86_REG_RAX) & MASK32)
        if self.owner.write_msr(uc.reg_read(X.UC_X86_REG_RCX) & MASK32, value):
            self._step_over(address)

    def _step_over(self, address: int) -> None:
        """The instruction retired; its block's rest will be counted again by the block
        Unicorn starts at the new RIP."""
        following = address + MSR_INSTRUCTION_LENGTH
        self.count.settle(following)
        self.uc.reg_write(X.UC_X86_REG_RIP, following)
