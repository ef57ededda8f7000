"""What a process rule sees: every live process's user address space at one quiet moment,
the frames' reference counts, and the frames the kernel owns.

Owns: `UserView` (one process check's context) and building it: the process table read
through `proc_descriptor` (emu/monitor/proctable.py), each live process's regions and the
user half of its page tables (a scan of PML4 entries 0-255 only), the reference counts,
and the physical ranges the kernel keeps for itself (page-table pages, and frames the
kernel half maps other than through the HHDM: its image, heap and stacks).
Does not own: the rules (rules/), when process checks happen (checker.py).

A view is built only where the kernel is between operations (the checker's docstring says
when): a reference count and the page tables agree only when no fork or unmap is half done.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Callable

from emu.arch import paging
from emu.arch.paging import AddressSpace, MappedRange
from emu.monitor.checks.context import Ranges
from emu.monitor.checks.pmm import PmmState
from emu.monitor.proctable import ProcDescriptor, ProcEntry, Region, VmaSharing
from emu.x86 import KERNEL_HALF, MASK64, PAGE_SIZE

_KERNEL_HALF_BYTES = 2048                 # PML4 entries 256-511 of a root page


@dataclass(slots=True)
class UserSpace:
    """One live process's user address space."""
    process: ProcEntry
    root: int                             # physical
    scan: AddressSpace                    # the user half only
    regions: list[Region]                 # in address order
    _starts: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._starts = [region.start for region in self.regions]

    @property
    def who(self) -> str:
        return f"pid {self.process.pid} ({self.process.name})"

    def region_of(self, vaddr: int) -> Region | None:
        index = bisect.bisect_right(self._starts, vaddr) - 1
        if index >= 0 and vaddr < self.regions[index].end:
            return self.regions[index]
        return None

    def pages(self):
        """(virtual page, frame, leaf) for every 4 KiB page its user half maps."""
        for leaf in self.scan.leaves:
            for offset in range(0, leaf.end - leaf.start, PAGE_SIZE):
                yield leaf.start + offset, leaf.paddr + offset, leaf


@dataclass(frozen=True, slots=True)
class Mapping:
    """One page-table entry mapping a frame: where, in whose address space."""
    space: UserSpace
    vaddr: int
    leaf: MappedRange

    def describe(self) -> str:
        region = self.space.region_of(self.vaddr)
        where = "in no region" if region is None else \
            f"region {region.start:#x}-{region.end:#x}" + \
            (" shared" if region.sharing == VmaSharing.SHARED else " private")
        return f"{self.vaddr:#x} of {self.space.who} ({self.leaf.perms}, {where})"


Report = Callable[..., None]


@dataclass(slots=True)
class UserView:
    """One process check. `report(rule, address, detail, root=None)` adds a violation, with
    the page walk of `address` under `root` when a root is given (a virtual address);
    `exited` is the pid whose exit (its address space just torn down) caused the check."""
    descriptor: ProcDescriptor
    processes: list[ProcEntry]
    spaces: list[UserSpace]
    refs: dict[int, int]                  # frame number -> reference count (above zero)
    kernel_frames: Ranges                 # physical ranges the kernel owns, labelled
    pmm: PmmState | None
    report: Report
    exited: int | None = None
    _mappings: dict[int, list[Mapping]] | None = None

    @property
    def mappings(self) -> dict[int, list[Mapping]]:
        """Frame number -> every user page-table entry, over all live spaces, mapping it."""
        if self._mappings is None:
            found: dict[int, list[Mapping]] = {}
            for space in self.spaces:
                for vaddr, paddr, leaf in space.pages():
                    found.setdefault(paddr >> 12, []).append(Mapping(space, vaddr, leaf))
            self._mappings = found
        return self._mappings


def user_half_reader(read_raw: Callable[[int], bytes], root: int) -> Callable[[int], bytes]:
    """`read_raw` with the kernel half of `root` read as empty: a scan of the user half."""
    def read(paddr: int) -> bytes:
        raw = read_raw(paddr)
        if paddr == root:
            return raw[:_KERNEL_HALF_BYTES] + bytes(_KERNEL_HALF_BYTES)
        return raw
    return read


def kernel_frames(full: AddressSpace, hhdm_offset: int | None, kernel_offset: int | None,
                  user_tables: list[AddressSpace]) -> Ranges:
    """The frames the kernel owns: every page-table page (of `full`, a whole address space,
    and of the user halves), and every frame the kernel half maps other than through the
    HHDM, which maps all of RAM by design."""
    items: list[tuple[int, int, str]] = []
    for space in (full, *user_tables):
        items += [(table.paddr, table.paddr + PAGE_SIZE, "a page-table page")
                  for table in space.tables]
    for run in paging.merge(leaf for leaf in full.leaves if leaf.start >= KERNEL_HALF):
        offset = (run.start - run.paddr) & MASK64
        if offset == hhdm_offset:
            continue
        what = "the kernel image" if offset == kernel_offset else \
            f"a kernel mapping at {run.start:#x}"
        items.append((run.paddr, run.paddr + run.end - run.start, what))
    return Ranges(items, merge_touching=False)
