"""KERNEL_HALF_DIFFERS: every address space shares one kernel half."""
from __future__ import annotations

from emu.errors import UnbackedAccess
from emu.monitor.checks.context import Check
from emu.monitor.checks.rules.base import Rule
from emu.x86 import PTE_ACCESSED, PTE_DIRTY, PTE_PRESENT, sign_extend

_IGNORED_BITS = PTE_ACCESSED | PTE_DIRTY          # set by the MMU behind the kernel
_FIRST_KERNEL_ENTRY = 256


class KernelHalfDiffers(Rule):
    """The reference is the first address space checked (the kernel's own, made by its
    memory-manager set-up), read again at every check: a snapshot would go stale when the
    kernel half gains an entry while another root is live. A root being loaded into CR3
    must hold the reference's kernel half exactly; between loads an entry the root lacks
    is allowed (a kernel that copies new kernel-half entries lazily, on the first fault
    or the next load, as Linux's vmalloc_fault did), an entry it holds must be the
    reference's."""
    id = "KERNEL_HALF_DIFFERS"
    meaning = ("A kernel-half PML4 entry (256-511) differs from the same entry of the first "
               "address space checked, the kernel's: when the root is loaded into CR3, or "
               "for an entry present in it (address: the first virtual address the entry "
               "covers).")
    example = "a new address space whose PML4 did not copy the kernel half"
    space_only = False          # the reference may change while this root does not

    def __init__(self) -> None:
        self._reference: int | None = None

    def check(self, check: Check) -> None:
        root = check.root
        if self._reference is None or (check.pmm is not None and
                                       check.pmm.is_free(self._reference >> 12)):
            self._reference = root          # the first, or the old one was freed
        if root == self._reference:
            return
        try:
            entries = check.read_table(root)[_FIRST_KERNEL_ENTRY:]
            reference = check.read_table(self._reference)[_FIRST_KERNEL_ENTRY:]
        except UnbackedAccess:
            return
        for index, (want, have) in enumerate(zip(reference, entries), start=_FIRST_KERNEL_ENTRY):
            if (want ^ have) & ~_IGNORED_BITS == 0:
                continue
            if not have & PTE_PRESENT and not check.loading:
                continue                # not copied yet: the kernel copies it on demand
            check.report(self.id, sign_extend(index << 39),
                         f"PML4[{index}] is {have:#018x} under root {root:#x} but "
                         f"{want:#018x} under the kernel's root {self._reference:#x}")
