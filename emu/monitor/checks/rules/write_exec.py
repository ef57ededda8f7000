"""WRITE_EXEC: no page is both writable and executable (W^X)."""
from __future__ import annotations

from emu.monitor.checks.context import Check, span
from emu.monitor.checks.rules.base import Rule


class WriteExec(Rule):
    id = "WRITE_EXEC"
    meaning = "A page is writable and executable (address: the virtual page)."
    example = "the kernel's data and bss mapped without NX"
    space_only = True

    def check(self, check: Check) -> None:
        for run in check.runs:
            if run.writable and run.executable:
                check.report(self.id, run.start, f"{span(run)} is writable and executable")
