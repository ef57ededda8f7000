"""The guest PMM's free/used state, read from outside through its `pmm_descriptor`.

Owns: the descriptor's layout (guest/mm/pmm.h: `struct pmm_descriptor`, 96 bytes, static
asserts there) and decoding the bitmap or buddy map in place in guest RAM (no copy).
Does not own: judging the state (the rules) or finding the descriptor (the symbol service).
"""
from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from emu.errors import UnbackedAccess
from emu.hw.memory import PhysicalMemory

DESCRIPTOR = struct.Struct("<IIIIQQQQQQQQQQ")        # struct pmm_descriptor, 96 bytes
DESCRIPTOR_SYMBOL = "pmm_descriptor"
DESCRIPTOR_MAGIC = 0x444D4D50                        # "PMMD"
DESCRIPTOR_VERSION = 1
PMM_BITMAP, PMM_BUDDY = 1, 2
_BUDDY_HEAD = re.compile(rb"[\x80-\xff]")            # 0x80 | order: first frame of a free block


@dataclass(frozen=True, slots=True)
class PmmDescriptor:
    magic: int
    version: int
    kind: int
    max_order: int
    map: int
    map_bytes: int
    links: int
    base_pfn: int
    frames: int
    total_frames: int
    free_frames: int
    hhdm_offset: int
    meta_base: int
    meta_frames: int

    @classmethod
    def parse(cls, raw: bytes) -> "PmmDescriptor":
        return cls(*DESCRIPTOR.unpack(raw))


class PmmState:
    """Which frames the guest PMM says are free, read in place from guest RAM: the bitmap
    (a set bit is a used frame) or the buddy map (one byte per frame; 0x80 | order marks
    the first frame of a free block), as guest/mm/pmm.h documents them."""

    def __init__(self, descriptor: PmmDescriptor, memory: PhysicalMemory) -> None:
        self.descriptor = descriptor
        view, offset = memory.locate(descriptor.map, max(descriptor.map_bytes, 1))
        self._map = view[offset:offset + descriptor.map_bytes]
        self._base = descriptor.base_pfn
        self._frames = min(descriptor.frames, descriptor.map_bytes * 8
                           if descriptor.kind == PMM_BITMAP else descriptor.map_bytes)

    def first_free(self, start_pfn: int, end_pfn: int) -> int | None:
        """The lowest free frame number in [start_pfn, end_pfn), or None."""
        lo = max(start_pfn - self._base, 0)
        hi = min(end_pfn - self._base, self._frames)
        if lo >= hi:
            return None
        if self.descriptor.kind == PMM_BITMAP:
            first = lo // 8
            used = int.from_bytes(self._map[first:(hi + 7) // 8], "little")
            free = ~used >> (lo - 8 * first) & ((1 << (hi - lo)) - 1)
            return None if not free else self._base + lo + (free & -free).bit_length() - 1
        scan_from = lo & ~((1 << self.descriptor.max_order) - 1)
        chunk = self._map[scan_from:hi]
        for head in _BUDDY_HEAD.finditer(chunk):
            start = scan_from + head.start()
            if start + (1 << (chunk[head.start()] & 0x7F)) > lo:
                return self._base + max(start, lo)
        return None

    def is_free(self, pfn: int) -> bool:
        return self.first_free(pfn, pfn + 1) is not None


def read_pmm(memory: PhysicalMemory, descriptor_paddr: int) -> PmmState | None:
    """The PMM state behind the descriptor at `descriptor_paddr`, or None before pmm_init
    (no magic yet) or for a layout this checker does not know."""
    raw = memory.read(descriptor_paddr, DESCRIPTOR.size)
    descriptor = PmmDescriptor.parse(raw)
    if descriptor.magic != DESCRIPTOR_MAGIC or descriptor.version != DESCRIPTOR_VERSION or \
            descriptor.kind not in (PMM_BITMAP, PMM_BUDDY):
        return None
    try:
        return PmmState(descriptor, memory)
    except UnbackedAccess:
        return None
