"""RESERVED_BITS: no present entry has a reserved bit set (the MMU would fault on it)."""
from __future__ import annotations

from emu.x86 import PAGING_LEVELS
from emu.monitor.checks.context import Check
from emu.monitor.checks.rules.base import Rule


class ReservedBits(Rule):
    id = "RESERVED_BITS"
    meaning = ("A present entry has reserved bits set: physical-address bits above "
               "MAXPHYADDR (40), NX without EFER.NXE, PS in a PT entry, frame bits below a "
               "large page's alignment (address: the first virtual address the entry covers).")
    example = "a PTE with bit 51 set"
    space_only = True

    def check(self, check: Check) -> None:
        for bad in check.space.bad_entries:
            check.report(self.id, bad.vaddr,
                         f"{PAGING_LEVELS[bad.level]} entry at {bad.entry_address:#x} = "
                         f"{bad.entry:#018x} has reserved bits set")
