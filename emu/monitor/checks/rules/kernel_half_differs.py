"""KERNEL_HALF_DIFFERS: every address space shares one kernel half."""
from __future__ import annotations

from emu.errors import UnbackedAccess
from emu.monitor.checks.context import Check
from emu.monitor.checks.rules.base import Rule
from emu.x86 import PTE_ACCESSED, PTE_DIRTY, sign_extend

_IGNORED_BITS = PTE_ACCESSED | PTE_DIRTY          # set by the MMU behind the kernel
_FIRST_KERNEL_ENTRY = 256


class KernelHalfDiffers(Rule):
    id = "KERNEL_HALF_DIFFERS"
    meaning = ("A kernel-half PML4 entry (256-511) differs from the same entry of the address "
               "space checked before (address: the first virtual address the entry covers).")
    example = "a new address space whose PML4 did not copy the kernel half"
    space_only = True

    def __init__(self) -> None:
        # (root, kernel-half PML4 entries) of the address space checked last, and of the
        # last one checked before it that had another root
        self._last: tuple[int, tuple[int, ...]] | None = None
        self._other: tuple[int, tuple[int, ...]] | None = None

    def check(self, check: Check) -> None:
        root = check.root
        try:
            entries = check.read_table(root)[_FIRST_KERNEL_ENTRY:]
        except UnbackedAccess:
            return
        entries = tuple(e & ~_IGNORED_BITS for e in entries)
        if self._last is not None and self._last[0] != root:
            self._other = self._last
        self._last = (root, entries)
        if self._other is None:
            return
        other_root, other = self._other
        for index, (old, new) in enumerate(zip(other, entries), start=_FIRST_KERNEL_ENTRY):
            if old != new:
                check.report(self.id, sign_extend(index << 39),
                             f"PML4[{index}] is {new:#018x} under root {root:#x} but "
                             f"{old:#018x} under root {other_root:#x}")
