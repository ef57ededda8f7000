"""REFCOUNT_MISMATCH: a user frame's reference count is the number of entries mapping it."""
from __future__ import annotations

from emu.monitor.checks.rules.base import ProcessRule

_SHOWN = 4                    # mappings named in a report


class RefcountMismatch(ProcessRule):
    id = "REFCOUNT_MISMATCH"
    meaning = ("A frame mapped in a process's user half has a reference count (guest "
               "mm/frames.h) other than the number of user page-table entries, over all "
               "live address spaces, that map it (address: the frame, physical).")
    example = "fork sharing the parent's pages with the child without counting the child's"

    def check_processes(self, view) -> None:
        for pfn, mappings in view.mappings.items():
            count = view.refs.get(pfn, 0)
            if count == len(mappings):
                continue
            paddr = pfn << 12
            if not count and next(view.kernel_frames.overlaps(paddr, paddr + 1), None):
                continue                  # the kernel's own frame: USER_KERNEL_FRAME says it
            named = "; ".join(m.describe() for m in mappings[:_SHOWN])
            more = f" and {len(mappings) - _SHOWN} more" if len(mappings) > _SHOWN else ""
            view.report(self.id, paddr,
                        f"frame {paddr:#x} has reference count {count} but {len(mappings)} "
                        f"user entries map it: {named}{more}")
