"""Fault injection from outside the guest (issue 14): injectors that work on any kernel with
ELF symbols, given as `--inject SPEC` (grammar in spec.py) or from Python.

    from emu.inject import attach, parse_spec
    injectors = attach(machine, [parse_spec("fail-function:function=kmalloc,fail-nth=3")])

Every injection is an `Injection` event, so a run with injections replays exactly.
Modules: knobs.py (Linux's fault-injection knobs), spec.py (the grammar),
fail_function.py, timed.py (ram, irq, spurious-pf), disk.py (the swap disk's requests).
"""
from __future__ import annotations

from typing import Iterable

from emu.inject.knobs import Decider, Knobs
from emu.inject.spec import InjectionSpec, parse_spec

__all__ = ["Decider", "InjectionSpec", "Knobs", "attach", "parse_spec"]


def attach(machine, specs: Iterable[InjectionSpec]) -> list:
    """Install one injector per spec on a machine that has not run yet, after every other
    observer and checker: an injector's hook must run after the others at the same address
    (Unicorn calls them in the order they were added), so that a checker at a function's
    entry sees the call before fail-function makes it return."""
    # Imported here: the package stays light for the pytest plugin (Unicorn, capstone).
    from emu.inject.disk import DiskFault
    from emu.inject.fail_function import FailFunction
    from emu.inject.timed import Irq, RamFlip, SpuriousPageFault
    injectors = {"fail-function": FailFunction, "ram": RamFlip, "irq": Irq,
                 "spurious-pf": SpuriousPageFault, "disk": DiskFault}
    return [injectors[spec.kind](machine, spec) for spec in specs]
