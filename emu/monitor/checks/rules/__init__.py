"""The invariant checker's rules: one module per rule, registered here.

Adding a rule: a new module with a `Rule` subclass (rules/base.py says what it may
define), and its line in RULES. The order is the order of checking (and of reports within
one check). Each rule has a planted-bug test in tests/test_checker.py.
"""
from __future__ import annotations

from emu.monitor.checks.rules.base import Rule
from emu.monitor.checks.rules.kernel_half_differs import KernelHalfDiffers
from emu.monitor.checks.rules.map_outside_ram import MapOutsideRam
from emu.monitor.checks.rules.mapped_free_frame import MappedFreeFrame
from emu.monitor.checks.rules.pmm_not_usable import PmmNotUsable
from emu.monitor.checks.rules.reserved_bits import ReservedBits
from emu.monitor.checks.rules.reserved_writable import ReservedWritable
from emu.monitor.checks.rules.stale_tlb import StaleTlb
from emu.monitor.checks.rules.table_page_free import TablePageFree
from emu.monitor.checks.rules.user_kernel_half import UserKernelHalf
from emu.monitor.checks.rules.write_exec import WriteExec

RULES: tuple[type[Rule], ...] = (
    MapOutsideRam,
    ReservedWritable,
    UserKernelHalf,
    WriteExec,
    ReservedBits,
    TablePageFree,
    MappedFreeFrame,
    PmmNotUsable,
    KernelHalfDiffers,
    StaleTlb,
)
RULE_IDS = tuple(rule.id for rule in RULES)

__all__ = ["RULES", "RULE_IDS", "Rule"]
