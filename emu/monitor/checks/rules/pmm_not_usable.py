"""PMM_NOT_USABLE: the PMM only hands out memory the boot map calls RAM."""
from __future__ import annotations

from emu.monitor.checks.context import Check, describe_table
from emu.monitor.checks.rules.base import Rule
from emu.x86 import PAGE_SIZE


class PmmNotUsable(Rule):
    id = "PMM_NOT_USABLE"
    meaning = ("The PMM can hand out, or has handed out as a page table, a frame that is not "
               "USABLE or BOOTLOADER_RECLAIMABLE in the boot memory map (address: the frame, "
               "physical).")
    example = "pmm_free accepting the RESERVED BIOS frame 0xf0000 into the free pool"

    def check(self, check: Check) -> None:
        ram = check.layout.ram
        for table in check.space.tables:
            if next(ram.gaps(table.paddr, table.paddr + PAGE_SIZE), None) is not None:
                check.report(self.id, table.paddr,
                             f"{describe_table(table)} is not USABLE or "
                             "BOOTLOADER_RECLAIMABLE memory", walk_of=table.vaddr)
        if check.pmm is None:
            return
        d = check.pmm.descriptor
        for first, last in ram.gaps(d.base_pfn << 12, (d.base_pfn + d.frames) << 12):
            free = check.pmm.first_free(first >> 12, last >> 12)
            if free is not None:
                check.report(self.id, free << 12,
                             f"frame {free << 12:#x} is free in the PMM but is "
                             f"{check.layout.type_at(free << 12)}, not USABLE or "
                             "BOOTLOADER_RECLAIMABLE", walk=False)
