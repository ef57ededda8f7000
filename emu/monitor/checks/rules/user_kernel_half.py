"""USER_KERNEL_HALF: ring 3 never reaches the kernel half."""
from __future__ import annotations

from emu.monitor.checks.context import Check, span
from emu.monitor.checks.rules.base import Rule
from emu.x86 import KERNEL_HALF


class UserKernelHalf(Rule):
    id = "USER_KERNEL_HALF"
    meaning = ("A page at or above 0xffff800000000000 is user-accessible: U/S set at every "
               "level (address: the virtual page).")
    example = "the kernel's rodata mapped with VM_USER"
    space_only = True

    def check(self, check: Check) -> None:
        for run in check.runs:
            if run.user and run.start >= KERNEL_HALF:
                check.report(self.id, run.start,
                             f"{span(run)} is user-accessible in the kernel half")
