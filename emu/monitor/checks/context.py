"""What a rule sees when it checks one address space: the scan, the PMM, the machine's
physical layout, and a way to report.

Owns: `Platform` (what the checker needs to know about the machine, gathered once),
`Layout` (the physical ranges derived from it: present, reserved, RAM, devices), `Ranges`
(sorted labelled ranges with overlap and gap queries), and `Check` (one check's context).
Does not own: the rules (rules/), when checks happen (checker.py).
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

from emu.arch import paging
from emu.arch.paging import AddressSpace, MappedRange
from emu.hw.memmap import MemoryType, Region
from emu.monitor.checks.pmm import PmmState
from emu.x86 import PAGE_SIZE, PAGING_LEVELS

RESERVED_TYPES = frozenset({MemoryType.RESERVED, MemoryType.RESERVED_MAPPED,
                            MemoryType.ACPI_RECLAIMABLE, MemoryType.ACPI_NVS,
                            MemoryType.BAD_MEMORY})
RAM_TYPES = frozenset({MemoryType.USABLE, MemoryType.BOOTLOADER_RECLAIMABLE})


class Ranges:
    """Sorted, disjoint [start, end) ranges, each with a label."""

    def __init__(self, items: Iterable[tuple[int, int, object]], merge_touching: bool = False):
        spans: list[list] = []
        for start, end, label in sorted(i for i in items if i[0] < i[1]):
            if spans and start <= spans[-1][1] and (merge_touching or label == spans[-1][2]):
                spans[-1][1] = max(spans[-1][1], end)
            else:
                spans.append([start, end, label])
        self.spans = [tuple(span) for span in spans]
        self._starts = [span[0] for span in spans]

    def overlaps(self, start: int, end: int) -> Iterator[tuple[int, int, object]]:
        """The parts of [start, end) inside some range, with that range's label."""
        index = max(bisect.bisect_right(self._starts, start) - 1, 0)
        for first, last, label in self.spans[index:]:
            if first >= end:
                break
            if last > start:
                yield max(first, start), min(last, end), label

    def gaps(self, start: int, end: int) -> Iterator[tuple[int, int]]:
        """The parts of [start, end) inside no range."""
        cursor = start
        for first, last, _ in self.overlaps(start, end):
            if first > cursor:
                yield cursor, first
            cursor = max(cursor, last)
        if cursor < end:
            yield cursor, end


def page_down(value: int) -> int:
    return value & ~(PAGE_SIZE - 1)


def page_up(value: int) -> int:
    return (value + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)


@dataclass(frozen=True, slots=True)
class Platform:
    """What the checker needs to know about the machine, gathered once."""
    regions: tuple[Region, ...]               # the boot memory map the kernel was given
    hhdm_offset: int | None = None
    kernel_offset: int | None = None          # kernel virtual base - physical base
    pmm_descriptor: int | None = None         # virtual address of the guest's descriptor
    loader_root: int | None = None            # the CR3 at entry: not checked
    devices: tuple[tuple[int, int], ...] = ()     # MMIO and framebuffer [start, end)
    mmio_owner: Callable[[int], object] | None = None
    proc_descriptor: int | None = None        # virtual address of the process descriptor


class Layout:
    """The physical ranges of a Platform, as the rules query them."""

    def __init__(self, platform: Platform) -> None:
        regions = platform.regions
        self.platform = platform
        self.present = Ranges(((page_down(r.base), page_up(r.end), None) for r in regions),
                              merge_touching=True)
        self.reserved = Ranges((page_up(r.base), page_down(r.end), r.type.name)
                               for r in regions if r.type in RESERVED_TYPES)
        ram = Ranges(((r.base, r.end, None) for r in regions if r.type in RAM_TYPES),
                     merge_touching=True)
        self.ram = Ranges((page_up(s), page_down(e), None) for s, e, _ in ram.spans)
        self.devices = Ranges((s, e, None) for s, e in platform.devices)
        # Mappings at these offsets (virtual - physical) map memory by design.
        self.direct_offsets = {platform.hhdm_offset, platform.kernel_offset} - {None}

    def is_device(self, start: int, end: int) -> bool:
        if next(self.devices.gaps(start, end), None) is None:
            return True
        owner = self.platform.mmio_owner(start) if self.platform.mmio_owner else None
        return owner is not None and owner.base <= start and end <= owner.end

    def type_at(self, paddr: int) -> str:
        for region in self.platform.regions:
            if region.base <= paddr < region.end:
                return region.type.name
        return "in no memory-map entry"


Report = Callable[..., None]


@dataclass(slots=True)
class Check:
    """One check of one address space. `report(rule, address, detail, walk_of=None)` adds a
    violation (with the page walk of `walk_of`, default `address`, when it is virtual);
    `stale` says whether STALE_TLB may probe now; `live` whether `space` is the live CR3;
    `loading` whether the root is being loaded into CR3 (the check of a CR3 write)."""
    space: AddressSpace
    pmm: PmmState | None
    layout: Layout
    report: Report
    read_table: Callable[[int], tuple[int, ...]]
    walk: Callable[[int, int], paging.Walk]          # (root, vaddr): our walk, never raises
    tlb_translation: Callable[[int, int], int | None]   # Unicorn's (vaddr, prot), or None
    live: bool
    stale: bool
    _runs: list[MappedRange] | None = field(default=None)
    loading: bool = False

    @property
    def root(self) -> int:
        return self.space.root

    @property
    def runs(self) -> list[MappedRange]:
        """The leaves merged into runs of equal permissions and contiguous frames."""
        if self._runs is None:
            self._runs = paging.merge(self.space.leaves)
        return self._runs


def span(run: MappedRange) -> str:
    return f"{run.start:#x}-{run.end:#x} (-> {run.paddr:#x})"


def describe_table(table: paging.Table) -> str:
    return f"the {PAGING_LEVELS[table.level]} at physical {table.paddr:#x} " + \
        ("(the root)" if table.parent is None else
         f"(entry at {table.parent:#x}, covering {table.vaddr:#x})")
