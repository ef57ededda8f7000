"""PAGE_OUTSIDE_REGIONS: a user page is mapped only inside a VM region."""
from __future__ import annotations

from emu.monitor.checks.rules.base import ProcessRule


class PageOutsideRegions(ProcessRule):
    id = "PAGE_OUTSIDE_REGIONS"
    meaning = ("A present page of a process's user half lies in none of its VM regions "
               "(guest mm/vmm.h): a mapping the region tree does not know of (address: the "
               "virtual page).")
    example = "munmap removing the regions but leaving the last page of the range mapped"

    def check_processes(self, view) -> None:
        for space in view.spaces:
            for vaddr, paddr, leaf in space.pages():
                if space.region_of(vaddr) is None:
                    view.report(self.id, vaddr,
                                f"{vaddr:#x} of {space.who} ({leaf.perms}, frame {paddr:#x}) "
                                f"is in no region", root=space.root)
