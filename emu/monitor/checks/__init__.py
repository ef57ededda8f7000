"""The invariant checker (`emu run --check pt`, `emu exec --check`): named rules about the
guest's page tables, its physical memory manager and its processes' address spaces,
checked from outside while the guest runs.

Modules: checker (when checks happen, reporting), context (what a rule sees), pmm (the guest
PMM read through its descriptor), userspace (what a process rule sees), rules/ (one module
per rule, registered in rules/__init__.py: a new rule is one new file plus one line there).
"""
from emu.monitor.checks.checker import (InvariantChecker, allowed_rules, attach,
                                         platform_of, table_reader)
from emu.monitor.checks.context import Platform
from emu.monitor.checks.pmm import (DESCRIPTOR, DESCRIPTOR_MAGIC, PMM_BITMAP, PMM_BUDDY,
                                    PmmDescriptor, PmmState, read_pmm)
from emu.monitor.checks.rules import PROCESS_RULES, RULE_IDS, RULES

__all__ = ["InvariantChecker", "Platform", "attach", "allowed_rules", "platform_of",
           "table_reader", "RULES", "PROCESS_RULES", "RULE_IDS", "DESCRIPTOR", "DESCRIPTOR_MAGIC",
           "PMM_BITMAP", "PMM_BUDDY", "PmmDescriptor", "PmmState", "read_pmm"]
