"""TABLE_PAGE_FREE: a page table in use is never free in the PMM."""
from __future__ import annotations

from emu.monitor.checks.context import Check, describe_table
from emu.monitor.checks.rules.base import Rule


class TablePageFree(Rule):
    id = "TABLE_PAGE_FREE"
    meaning = ("A page-table page (the root, or one an entry points to) is free in the PMM "
               "(address: the table page, physical).")
    example = "freeing an emptied page table but leaving the parent entry"

    def check(self, check: Check) -> None:
        if check.pmm is None:
            return
        for table in check.space.tables:
            if check.pmm.is_free(table.paddr >> 12):
                check.report(self.id, table.paddr,
                             f"{describe_table(table)} is free in the PMM",
                             walk_of=table.vaddr)
