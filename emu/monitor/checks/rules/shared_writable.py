"""SHARED_WRITABLE: a private frame is writable through one page-table entry at most."""
from __future__ import annotations

from emu.monitor.checks.rules.base import ProcessRule
from emu.monitor.proctable import VmaSharing


class SharedWritable(ProcessRule):
    id = "SHARED_WRITABLE"
    meaning = ("A frame is mapped writable by two user page-table entries (in two address "
               "spaces, or twice in one) and not every one lies in a shared region "
               "(MAP_SHARED|MAP_ANONYMOUS): copy-on-write is broken (address: the virtual "
               "page of the second entry).")
    example = "fork leaving the parent's private pages writable in parent and child"

    def check_processes(self, view) -> None:
        for pfn, mappings in view.mappings.items():
            writable = [m for m in mappings if m.leaf.writable]
            if len(writable) < 2:
                continue
            shared = [m.space.region_of(m.vaddr) for m in writable]
            if all(r is not None and r.sharing == VmaSharing.SHARED for r in shared):
                continue
            second = writable[1]
            view.report(self.id, second.vaddr,
                        f"frame {pfn << 12:#x} is writable at " +
                        " and at ".join(m.describe() for m in writable),
                        root=second.space.root)
