"""The shape of an invariant rule.

A rule is a class with an `id` (the name reports, traces and `--allow` use), a `meaning`
(what breaking it means, and what its address is), an `example` (a bug that breaks it) and
`check(check)`, which looks at one address space (emu/monitor/checks/context.py: `Check`)
and reports each violation with `check.report(self.id, address, detail)`. A rule that
follows the guest between checks may also define `address_space_loaded(space)` (a CR3
load) and `page_flushed(page, live_root, walk)` (an invlpg). One instance per checker, so
a rule may keep state. A rule whose verdict depends on the page tables alone says so with
`space_only = True`: the checker then skips it when the address space has not changed
since its last check (emu/arch/paging.py's ScanCache returns the same object).
"""
from __future__ import annotations

from typing import ClassVar

from emu.monitor.checks.context import Check


class Rule:
    id: ClassVar[str]
    meaning: ClassVar[str]
    example: ClassVar[str]
    space_only: ClassVar[bool] = False

    def check(self, check: Check) -> None:
        raise NotImplementedError


class ProcessRule(Rule):
    """A rule about the processes' user address spaces together (reference counts, frames
    shared between processes, leaks): `check_processes(view)` looks at a UserView
    (emu/monitor/checks/userspace.py), built only where the kernel is between operations.
    Registered in PROCESS_RULES, reported like the others."""

    def check(self, check: Check) -> None:
        """Nothing to judge in one address space alone."""

    def check_processes(self, view) -> None:
        raise NotImplementedError
