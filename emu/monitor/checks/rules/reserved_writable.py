"""RESERVED_WRITABLE: memory the firmware keeps is never mapped writable."""
from __future__ import annotations

from emu.monitor.checks.context import Check, span
from emu.monitor.checks.rules.base import Rule


class ReservedWritable(Rule):
    id = "RESERVED_WRITABLE"
    meaning = ("A frame wholly inside a RESERVED, RESERVED_MAPPED, ACPI_RECLAIMABLE, "
               "ACPI_NVS or BAD_MEMORY entry, other than a device's registers, is mapped "
               "writable (address: the virtual page).")
    example = "an HHDM that maps the ACPI tables read-write"
    space_only = True

    def check(self, check: Check) -> None:
        for run in check.runs:
            if not run.writable:
                continue
            overlaps = check.layout.reserved.overlaps(run.paddr, run.paddr + run.end - run.start)
            for first, last, kind in overlaps:
                if check.layout.is_device(first, last):
                    continue
                check.report(self.id, run.start + first - run.paddr,
                             f"{span(run)} maps {kind} memory {first:#x}-{last:#x} writable")
                break
