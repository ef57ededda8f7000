"""MAP_OUTSIDE_RAM: nothing is mapped where the machine has nothing."""
from __future__ import annotations

from emu.x86 import PAGING_LEVELS
from emu.monitor.checks.context import Check, span
from emu.monitor.checks.rules.base import Rule


class MapOutsideRam(Rule):
    id = "MAP_OUTSIDE_RAM"
    meaning = ("A page maps a physical frame that is in no memory-map entry and no declared "
               "MMIO or framebuffer region (address: the virtual page).")
    example = "mapping physical 0xa0000 (the VGA hole) at HHDM + 0xa0000"
    space_only = True

    def check(self, check: Check) -> None:
        for table in check.space.unreadable:
            check.report(self.id, table.vaddr,
                         f"the {PAGING_LEVELS[table.level]} at physical {table.paddr:#x} "
                         f"(entry at {table.parent:#x}) has no RAM behind it")
        layout = check.layout
        for run in check.runs:
            for first, last in layout.present.gaps(run.paddr, run.paddr + run.end - run.start):
                if not layout.is_device(first, last):
                    check.report(self.id, run.start + first - run.paddr,
                                 f"{span(run)} maps physical {first:#x}-{last:#x}, which is "
                                 "in no memory-map entry, MMIO or framebuffer region")
                    break
