"""MAPPED_FREE_FRAME: a frame the PMM may hand out again is not mapped (use after free)."""
from __future__ import annotations

from emu.monitor.checks.context import Check
from emu.monitor.checks.rules.base import Rule
from emu.x86 import MASK64


class MappedFreeFrame(Rule):
    id = "MAPPED_FREE_FRAME"
    meaning = ("A frame the PMM says is free is mapped outside the HHDM and the kernel image, "
               "which map memory by design: a use after free (address: the virtual page).")
    example = "pmm_free of a frame still mapped at 0xffffc00000000000"

    def check(self, check: Check) -> None:
        if check.pmm is None:
            return
        direct = check.layout.direct_offsets
        for run in check.runs:
            if (run.start - run.paddr) & MASK64 in direct:
                continue
            free = check.pmm.first_free(run.paddr >> 12, (run.paddr + run.end - run.start) >> 12)
            if free is not None:
                vaddr = run.start + (free << 12) - run.paddr
                check.report(self.id, vaddr,
                             f"frame {free << 12:#x}, mapped at {vaddr:#x}, is free in the PMM")
