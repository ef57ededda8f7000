"""The invariant checker's rules: one module per rule, registered here.

Adding a rule: a new module with a `Rule` subclass (rules/base.py says what it may
define), and its line in RULES; a rule about the processes' address spaces together is a
`ProcessRule` and goes in PROCESS_RULES. The order is the order of checking (and of
reports within one check). Each rule has a planted-bug test in tests/test_checker.py
(tests/test_processes.py for the process rules).
"""
from __future__ import annotations

from emu.monitor.checks.rules.base import ProcessRule, Rule
from emu.monitor.checks.rules.kernel_half_differs import KernelHalfDiffers
from emu.monitor.checks.rules.map_outside_ram import MapOutsideRam
from emu.monitor.checks.rules.mapped_free_frame import MappedFreeFrame
from emu.monitor.checks.rules.page_outside_regions import PageOutsideRegions
from emu.monitor.checks.rules.pmm_baseline import PmmBaseline
from emu.monitor.checks.rules.pmm_not_usable import PmmNotUsable
from emu.monitor.checks.rules.refcount_mismatch import RefcountMismatch
from emu.monitor.checks.rules.reserved_bits import ReservedBits
from emu.monitor.checks.rules.reserved_writable import ReservedWritable
from emu.monitor.checks.rules.shared_writable import SharedWritable
from emu.monitor.checks.rules.stale_tlb import StaleTlb
from emu.monitor.checks.rules.table_page_free import TablePageFree
from emu.monitor.checks.rules.user_frame_leak import UserFrameLeak
from emu.monitor.checks.rules.user_kernel_frame import UserKernelFrame
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
PROCESS_RULES: tuple[type[ProcessRule], ...] = (
    SharedWritable,
    UserKernelFrame,
    RefcountMismatch,
    PageOutsideRegions,
    UserFrameLeak,
    PmmBaseline,
)
RULE_IDS = tuple(rule.id for rule in RULES + PROCESS_RULES)

__all__ = ["RULES", "PROCESS_RULES", "RULE_IDS", "Rule", "ProcessRule"]
