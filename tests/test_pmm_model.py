"""The guest's physical memory manager against a small Python model (Hypothesis state machine).

guest/mm/pmm.c with each backend (bitmap, buddy) runs on the host, compiled unchanged into a
shared library (tests/pmm_host.py, tests/host/pmm_host.c): fast enough for thousands of
steps, and a guest panic comes back as GuestPanic. Each example draws a memory map of up to
about 25 MiB (frame 0 USABLE or not; USABLE islands between holes and RESERVED, ACPI,
BAD_MEMORY, BOOTLOADER_RECLAIMABLE, EXECUTABLE_AND_MODULES and FRAMEBUFFER entries), boots a
fresh PMM on it and runs rules on both the PMM and the model: allocate one frame, many
frames (to exhaustion), n contiguous frames with a power-of-two alignment; free one frame,
any run of allocated frames (a whole block, part of one, or pieces of neighbours), many;
reclaim the bootloader memory once with random keep ranges; and the misuse that must panic
(double free, freeing frame 0, metadata, reserved memory, holes, unreclaimed or far-away
frames, unaligned addresses, a run that reaches past its allocation, bad arguments).

What is checked, after every step:
- every frame handed out was free in the model: never twice, never frame 0, the metadata
  or anything outside USABLE (or reclaimed) memory, and aligned as asked;
- exhaustion: pmm_alloc returns 0 exactly when the model has no free frame. Contiguous
  runs do not under-claim either: the bitmap's first fit returns the LOWEST aligned free run
  and 0 only when none exists; the buddy succeeds exactly when some free block of the
  smallest order that holds the request (2^order >= frames and alignment, order <= 10) is
  free and aligned, and returns 0 otherwise;
- the counts (free, used, total, metadata, reclaimed) equal the model's;
- the descriptor a checker reads (pmm.h): its fields, and its state map decoded (bitmap
  bits; buddy heads, aligned, disjoint, no two free buddies left unmerged, free-list links
  consistent) describes exactly the model's free frames;
- contents: a frame keeps what its owner wrote until it is freed (the PMM never writes into
  allocated frames), then holds PMM_POISON (the library is the MM_DEBUG build); at the end
  of each example, nothing was written outside RAM (holes, reserved memory, past the map);
- a panic has the exact message pmm.h documents and changes nothing (validate first).
"""
from __future__ import annotations

import re
from functools import lru_cache

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from pmm_host import (ACPI_NVS, ACPI_RECLAIMABLE, BAD_MEMORY, BOOTLOADER_RECLAIMABLE,
                      DESCRIPTOR_MAGIC, EXECUTABLE_AND_MODULES, FRAMEBUFFER, GUARD_BYTES, KINDS,
                      MAX_ORDER, PAGE, POISON, RESERVED, USABLE, GuestPanic, PmmHost, Region)

POISON_PAGE = POISON.to_bytes(8, "little") * (PAGE // 8)
ALIGNMENTS = (0, *(1 << k for k in range(12)))          # 0 means 1; up to 8 MiB
NIL = 0xFFFF_FFFF
TAG = 0x5A17_C0DE_5A17_C0DE
HOLE = -1
SEGMENT_TYPES = (USABLE, USABLE, USABLE, HOLE, RESERVED, ACPI_RECLAIMABLE, ACPI_NVS,
                 BAD_MEMORY, BOOTLOADER_RECLAIMABLE, BOOTLOADER_RECLAIMABLE,
                 EXECUTABLE_AND_MODULES, FRAMEBUFFER)
FAR_ADDRESSES = (1 << 40, (1 << 52) - PAGE, (1 << 64) - PAGE)


# ---- bit sets: frame numbers as bits of Python ints -------------------------------------

def ones(n: int) -> int:
    return (1 << n) - 1


def frames_of(mask: int) -> list[int]:
    """The set bits of mask, ascending."""
    return [i for i, c in enumerate(reversed(bin(mask)[2:])) if c == "1"]


def lowest(mask: int) -> int:
    return (mask & -mask).bit_length() - 1


def trailing_ones(mask: int) -> int:
    return (mask ^ (mask + 1)).bit_length() - 1


def runs_of(mask: int) -> list[tuple[int, int]]:
    """The maximal runs of set bits of mask: (first, length), ascending."""
    runs = []
    while mask:
        first = lowest(mask)
        length = trailing_ones(mask >> first)
        runs.append((first, length))
        mask &= ~(ones(length) << first)
    return runs


def run_starts(free: int, n: int) -> int:
    """Bit s is set iff frames s .. s+n-1 are all set in free."""
    starts, covered = free, 1
    while covered < n:
        step = min(covered, n - covered)
        starts &= starts >> step
        covered += step
    return starts


@lru_cache(maxsize=None)
def multiples(align: int, limit: int) -> int:
    return sum(1 << k for k in range(0, limit, align))


# ---- memory maps ------------------------------------------------------------------------

@st.composite
def memory_maps(draw) -> list[Region]:
    """Page-aligned entries from physical 0 up, sorted, as Limine gives them. At least one
    USABLE island of 64+ frames, so both backends' metadata fits somewhere."""
    segments = [(draw(st.sampled_from((USABLE, RESERVED))), draw(st.integers(1, 160)))]
    segments += draw(st.lists(st.tuples(st.sampled_from(SEGMENT_TYPES), st.integers(1, 600)),
                              min_size=1, max_size=8))
    island = (USABLE, draw(st.integers(64, 3000)))
    segments.insert(draw(st.integers(1, len(segments))), island)
    regions, base = [], 0
    for kind, frames in segments:
        if kind != HOLE:
            regions.append(Region(base * PAGE, frames * PAGE, kind))
        base += frames
    return regions


# ---- the model --------------------------------------------------------------------------

class Model:
    """What the PMM should hold, from the memory map and the calls made so far."""

    def __init__(self, regions: list[Region], kind: str) -> None:
        self.kind = kind
        usable = reclaimable = 0
        ranges = []
        for r in regions:
            start = max(1, -(-r.base // PAGE))
            end = (r.base + r.length) // PAGE
            if end > start:
                ranges.append((r.type, start, end))
                if r.type == USABLE:
                    usable |= ones(end - start) << start
                elif r.type == BOOTLOADER_RECLAIMABLE:
                    reclaimable |= ones(end - start) << start
        ram = usable | reclaimable
        self.span_start = lowest(ram) & ~ones(MAX_ORDER)
        self.span_frames = ram.bit_length() - self.span_start
        self.top = max(r.base + r.length for r in regions) // PAGE
        if kind == "bitmap":
            self.meta_bytes = -(-self.span_frames // 64) * 8
        else:
            # state bytes (to a multiple of 8), links, then the buddy's private free bitmap
            self.meta_bytes = (self.span_frames + 7) // 8 * 8 + 8 * self.span_frames + \
                -(-self.span_frames // 64) * 8
        count = -(-self.meta_bytes // PAGE)
        start = next(s for t, s, e in ranges if t == USABLE and e - s >= count)
        self.meta_start, self.meta_count = start, count
        self.meta = ones(count) << start
        self.usable = usable
        self.reclaimable = reclaimable
        self.managed = usable
        self.free = usable & ~self.meta
        self.allocated = 0
        self.reclaimed: int | None = None       # frames added by the reclaim, once it ran

    def freeable(self) -> int:
        return self.managed & ~self.meta

    def why_not_free(self, pfn: int) -> str:
        if self.allocated >> pfn & 1:
            return "already handed out"
        if pfn == 0:
            return "frame 0"
        if self.meta >> pfn & 1:
            return "PMM metadata"
        return "not managed RAM"

    def contiguous_result(self, frames: int, align: int) -> int | None:
        """The pfn a request must return (bitmap first fit), -1 if any fitting run will do,
        None if it must fail."""
        align = align or 1
        if frames > self.free.bit_count():
            return None
        if self.kind == "bitmap":
            if frames == 1 and align == 1:
                return -1                    # next fit, like pmm_alloc
            fits = run_starts(self.free, frames) & multiples(align, self.top)
            return lowest(fits) if fits else None
        order = (max(frames, align) - 1).bit_length()
        if order > MAX_ORDER:
            return None
        fits = run_starts(self.free, 1 << order) & multiples(1 << order, self.top)
        return -1 if fits else None


# ---- the state machine ------------------------------------------------------------------

class PmmMachine(RuleBasedStateMachine):
    KIND = "bitmap"

    def __init__(self) -> None:
        super().__init__()
        self.pmm: PmmHost | None = None
        self.tags: dict[int, bytes] = {}
        self.serial = 0

    @initialize(regions=memory_maps())
    def boot(self, regions: list[Region]) -> None:
        self.model = Model(regions, self.KIND)
        self.pmm = PmmHost(regions, self.KIND)

    def teardown(self) -> None:
        if self.pmm is None:
            return
        try:
            self.untouched_outside_ram()
        finally:
            self.pmm.close()

    def untouched_outside_ram(self) -> None:
        """The PMM wrote nothing into frames that are not RAM (holes, reserved, ACPI...),
        nor past the map (into the host buffer's guard zone)."""
        m, pmm = self.model, self.pmm
        for pfn, frames in runs_of(ones(m.top) & ~(m.usable | m.reclaimable)):
            assert pmm.read(pfn * PAGE, frames * PAGE).count(0) == frames * PAGE, \
                f"the PMM wrote into frames 0x{pfn:x}+{frames}, which are not RAM"
        assert pmm.read(m.top * PAGE, GUARD_BYTES).count(0) == GUARD_BYTES, \
            "the PMM wrote past the end of the memory map"

    # ---- helpers ------------------------------------------------------------------------

    def take(self, pa: int, frames: int, align: int) -> None:
        """pa was just returned for frames frames: check it, record it, write tags."""
        m = self.model
        assert pa % PAGE == 0, f"0x{pa:x} is not page aligned"
        pfn = pa // PAGE
        assert pfn % (align or 1) == 0, f"frame 0x{pfn:x} is not aligned to {align} frames"
        run = ones(frames) << pfn
        if run & ~m.free:
            bad = lowest(run & ~m.free)
            raise AssertionError(f"frame 0x{bad:x} handed out: {m.why_not_free(bad)}")
        m.free &= ~run
        m.allocated |= run
        for p in range(pfn, pfn + frames):
            self.serial += 1
            tag = ((p * PAGE) ^ TAG).to_bytes(8, "little") + self.serial.to_bytes(8, "little")
            self.pmm.write(p * PAGE, tag)
            self.tags[p] = tag

    def give_back(self, pfn: int, frames: int, single: bool) -> None:
        """Free an allocated run through the API and check the contents rules."""
        m = self.model
        for p in range(pfn, pfn + frames):
            assert self.pmm.read(p * PAGE, 16) == self.tags[p], \
                f"allocated frame 0x{p:x} was written by the PMM"
        if single:
            self.pmm.free(pfn * PAGE)
        else:
            self.pmm.free_contiguous(pfn * PAGE, frames)
        run = ones(frames) << pfn
        m.allocated &= ~run
        m.free |= run
        for p in range(pfn, pfn + frames):
            del self.tags[p]
            assert self.pmm.read(p * PAGE, PAGE) == POISON_PAGE, f"freed 0x{p:x} not poisoned"

    def must_panic(self, message: str, call, *args) -> None:
        with pytest.raises(GuestPanic) as caught:
            call(*args)
        assert str(caught.value) == message

    # ---- allocation ---------------------------------------------------------------------

    @rule()
    def alloc_one(self) -> None:
        pa = self.pmm.alloc()
        if self.model.free == 0:
            assert pa == 0, f"pmm_alloc returned 0x{pa:x} with no free frame"
        else:
            assert pa != 0, f"pmm_alloc failed with {self.model.free.bit_count()} frames free"
            self.take(pa, 1, 1)

    @rule(count=st.one_of(st.integers(1, 64), st.just(100_000)))
    def alloc_many(self, count: int) -> None:
        """count single frames, or (100,000) until pmm_alloc returns 0 once."""
        for _ in range(count):
            pa = self.pmm.alloc()
            if self.model.free == 0:
                assert pa == 0, f"pmm_alloc returned 0x{pa:x} with no free frame"
                return
            assert pa != 0, f"pmm_alloc failed with {self.model.free.bit_count()} frames free"
            self.take(pa, 1, 1)

    @rule(frames=st.one_of(st.integers(1, 20), st.integers(1, 1100),
                           st.sampled_from((16, 64, 512, 1024, 1025))),
          align=st.sampled_from(ALIGNMENTS))
    def alloc_contiguous(self, frames: int, align: int) -> None:
        self.contiguous(frames, align)

    def contiguous(self, frames: int, align: int) -> None:
        expected = self.model.contiguous_result(frames, align)
        pa = self.pmm.alloc_contiguous(frames, align)
        request = f"pmm_alloc_contiguous({frames}, {align})"
        if expected is None:
            assert pa == 0, f"{request} returned 0x{pa:x}; the model says nothing fits"
            return
        assert pa != 0, f"{request} failed; the model has a fitting free run"
        if expected >= 0:
            assert pa == expected * PAGE, \
                f"{request}: first fit is 0x{expected * PAGE:x}, got 0x{pa:x}"
        self.take(pa, frames, align)

    @precondition(lambda self: self.model.free)
    @rule(data=st.data(), aligned=st.booleans())
    def alloc_exact_fit(self, data, aligned: bool) -> None:
        """Ask for exactly the length of a free run (a hole between used frames), with the
        largest alignment its start has, or none: boundary cases of every search."""
        m = self.model
        pfn = data.draw(st.sampled_from(frames_of(m.free & ~(m.free << 1))), label="run start")
        frames = min(trailing_ones(m.free >> pfn), 1 << MAX_ORDER)
        align = min(pfn & -pfn, 1 << 11) if aligned else 1
        self.contiguous(frames, align)

    # ---- freeing ------------------------------------------------------------------------

    @precondition(lambda self: self.model.allocated)
    @rule(data=st.data())
    def free_one(self, data) -> None:
        pfn = data.draw(st.sampled_from(frames_of(self.model.allocated)), label="frame")
        self.give_back(pfn, 1, single=True)

    @precondition(lambda self: self.model.allocated)
    @rule(data=st.data())
    def free_run(self, data) -> None:
        """Any run of allocated frames: a block, part of one, or across neighbours."""
        pfn = data.draw(st.sampled_from(frames_of(self.model.allocated)), label="start")
        longest = trailing_ones(self.model.allocated >> pfn)
        frames = data.draw(st.integers(1, min(longest, 2048)), label="frames")
        self.give_back(pfn, frames, single=False)

    @precondition(lambda self: self.model.allocated)
    @rule(every=st.integers(1, 4), whole_runs=st.booleans())
    def free_many(self, every: int, whole_runs: bool) -> None:
        """Every every-th allocated frame with pmm_free, or every every-th maximal run of
        allocated frames with pmm_free_contiguous."""
        if not whole_runs:
            for pfn in frames_of(self.model.allocated)[::every]:
                self.give_back(pfn, 1, single=True)
            return
        for pfn, frames in runs_of(self.model.allocated)[::every]:
            self.give_back(pfn, frames, single=False)

    # ---- reclaiming bootloader memory ---------------------------------------------------

    @rule(data=st.data())
    def reclaim(self, data) -> None:
        m = self.model
        if m.reclaimed is not None:
            self.must_panic("pmm_reclaim_bootloader: called twice",
                            self.pmm.reclaim_bootloader, [])
            return
        starts = st.integers(0, m.top)
        if m.reclaimable:
            starts = st.one_of(st.sampled_from(frames_of(m.reclaimable)), starts)
        keep = data.draw(st.lists(st.tuples(starts, st.integers(0, 40)), max_size=3),
                         label="keep")
        keep = [(start, start + length) for start, length in keep]
        kept = 0
        for start, end in keep:
            kept |= ones(end - start) << start
        added = m.reclaimable & ~kept
        assert self.pmm.reclaim_bootloader(keep) == added.bit_count()
        for pfn in frames_of(added):
            assert self.pmm.read(pfn * PAGE, PAGE) == POISON_PAGE, f"reclaimed 0x{pfn:x}"
        m.managed |= added
        m.free |= added
        m.reclaimed = added.bit_count()

    # ---- misuse: must panic and change nothing ------------------------------------------

    @precondition(lambda self: self.model.free)
    @rule(data=st.data())
    def double_free(self, data) -> None:
        pa = data.draw(st.sampled_from(frames_of(self.model.free)), label="frame") * PAGE
        self.must_panic(f"pmm_free: double free of 0x{pa:x}", self.pmm.free, pa)

    @rule(data=st.data(), what=st.sampled_from(("frame 0", "metadata", "not RAM",
                                                "bootloader", "past the end", "unaligned",
                                                "far away")))
    def free_unmanaged(self, data, what: str) -> None:
        """Frame 0, the metadata, reserved memory and holes, unreclaimed bootloader memory,
        frames past the map, an address inside a frame, an address far away."""
        m = self.model
        ram = m.usable | m.reclaimable
        candidates = {
            "frame 0": 1,
            "metadata": m.meta,
            "not RAM": ones(m.top) & ~ram & ~1,
            "bootloader": m.reclaimable & ~m.managed,
            "past the end": ones(4) << m.top,
        }
        if what == "unaligned":
            pa = (data.draw(st.integers(0, m.top), label="frame") * PAGE
                  + data.draw(st.integers(1, PAGE - 1), label="offset"))
        elif what == "far away":
            pa = data.draw(st.sampled_from(FAR_ADDRESSES), label="address")
        elif candidates[what]:
            pa = data.draw(st.sampled_from(frames_of(candidates[what])), label="frame") * PAGE
        else:
            return
        self.must_panic(f"pmm_free: 0x{pa:x} is not managed RAM", self.pmm.free, pa)

    @precondition(lambda self: self.model.allocated)
    @rule(data=st.data(), past=st.integers(1, 3))
    def free_run_too_long(self, data, past: int) -> None:
        """A run of allocated frames plus a frame or more after it: nothing may be freed."""
        m = self.model
        pfn = data.draw(st.sampled_from(frames_of(m.allocated)), label="start")
        length = trailing_ones(m.allocated >> pfn)
        skip = max(0, length - data.draw(st.integers(1, 64), label="frames before the end"))
        pfn, length = pfn + skip, length - skip
        bad = pfn + length
        pa = bad * PAGE
        why = (f"double free of 0x{pa:x}" if m.free >> bad & 1
               else f"0x{pa:x} is not managed RAM")
        self.must_panic(f"pmm_free_contiguous: {why}", self.pmm.free_contiguous,
                        pfn * PAGE, length + past)

    @rule(which=st.sampled_from(("zero frames", "bad alignment", "free zero frames")),
          align=st.sampled_from((3, 5, 6, 12, 48, 1000, 1 << 20 | 1)))
    def bad_arguments(self, which: str, align: int) -> None:
        if which == "zero frames":
            self.must_panic(f"pmm_alloc_contiguous: 0 frames aligned to {align}: need frames > "
                            "0 and a power-of-two alignment", self.pmm.alloc_contiguous, 0,
                            align)
        elif which == "bad alignment":
            self.must_panic(f"pmm_alloc_contiguous: 4 frames aligned to {align}: need frames > "
                            "0 and a power-of-two alignment", self.pmm.alloc_contiguous, 4,
                            align)
        else:
            pa = (lowest(self.model.allocated) if self.model.allocated else 1) * PAGE
            self.must_panic(f"pmm_free_contiguous: 0 frames at 0x{pa:x}",
                            self.pmm.free_contiguous, pa, 0)

    # ---- invariants ---------------------------------------------------------------------

    @invariant()
    def counts_match(self) -> None:
        m, pmm = self.model, self.pmm
        free, total = m.free.bit_count(), m.managed.bit_count()
        assert (pmm.free_count(), pmm.used_count(), pmm.total_count()) == \
            (free, total - free, total)
        assert pmm.metadata_frames() == m.meta_count
        assert pmm.reclaimed_frames() == (m.reclaimed or 0)

    @invariant()
    def descriptor_matches(self) -> None:
        m, d = self.model, self.pmm.descriptor()
        assert d["magic"] == DESCRIPTOR_MAGIC and d["version"] == 1
        assert d["kind"] == KINDS[m.kind]
        assert (d["base_pfn"], d["frames"]) == (m.span_start, m.span_frames)
        assert (d["free_frames"], d["total_frames"]) == (m.free.bit_count(),
                                                          m.managed.bit_count())
        assert d["hhdm_offset"] == self.pmm.hhdm_offset
        assert (d["meta_base"], d["meta_frames"]) == (m.meta_start * PAGE, m.meta_count)
        assert d["map_bytes"] == m.meta_bytes
        meta = (m.meta_start * PAGE, (m.meta_start + m.meta_count) * PAGE)
        if m.kind == "bitmap":
            assert d["max_order"] == 0 and d["links"] == 0 and d["map"] == meta[0]
            self.check_bitmap(d)
        else:
            assert d["max_order"] == MAX_ORDER and d["map"] == meta[0]
            assert d["links"] == meta[0] + (m.span_frames + 7) // 8 * 8
            assert d["links"] + 8 * m.span_frames <= meta[1]
            self.check_buddy(d)

    def check_bitmap(self, d: dict) -> None:
        """Bit i is 0 iff frame base_pfn + i is free; every other bit (used, unmanaged,
        past the end) is 1."""
        words = int.from_bytes(self.pmm.read(d["map"], d["map_bytes"]), "little")
        expected = ones(8 * d["map_bytes"]) & ~(self.model.free >> d["base_pfn"])
        if words != expected:
            wrong = lowest(words ^ expected) + d["base_pfn"]
            raise AssertionError(f"bitmap bit of frame 0x{wrong:x} is {words >> wrong & 1}")

    def check_buddy(self, d: dict) -> None:
        """The heads (0x80 | order) are aligned, disjoint free blocks whose union is the
        model's free set, no two buddies are both free heads of the same order, and each
        order's free list is one consistent doubly linked chain of heads of that order."""
        base, frames = d["base_pfn"], d["frames"]
        state = self.pmm.read(d["map"], frames)
        links = self.pmm.read(d["links"], 8 * frames)
        heads = {}
        union = 0
        for match in re.finditer(rb"[^\x00]", state):
            i, byte = match.start(), state[match.start()]
            order = byte & 0x7F
            assert byte & 0x80 and order <= MAX_ORDER, f"state byte 0x{byte:x} at {i}"
            size = 1 << order
            assert i % size == 0 and i + size <= frames, f"block {i} of order {order}"
            block = ones(size) << i
            assert not union & block, f"block {i} of order {order} overlaps another"
            union |= block
            heads[i] = order
        assert union << base == self.model.free, "the buddy's free blocks are not the free set"
        for i, order in heads.items():
            if order < MAX_ORDER:
                assert heads.get(i ^ (1 << order)) != order, f"free buddies {i} unmerged"
        firsts = {}
        for i, order in heads.items():
            nxt = int.from_bytes(links[8 * i:8 * i + 4], "little")
            prev = int.from_bytes(links[8 * i + 4:8 * i + 8], "little")
            for other, back in ((nxt, 4), (prev, 0)):
                if other != NIL:
                    assert heads.get(other) == order, f"head {i} links to {other}"
                    assert int.from_bytes(links[8 * other + back:8 * other + back + 4],
                                          "little") == i, f"links of {i} and {other} disagree"
            if prev == NIL:
                assert order not in firsts, f"two list heads of order {order}"
                firsts[order] = i


class BitmapMachine(PmmMachine):
    KIND = "bitmap"


class BuddyMachine(PmmMachine):
    KIND = "buddy"


MODEL_SETTINGS = settings(max_examples=200, stateful_step_count=50, derandomize=True,
                          deadline=None, database=None,
                          suppress_health_check=[HealthCheck.too_slow,
                                                 HealthCheck.data_too_large])

TestBitmapAgainstModel = BitmapMachine.TestCase
TestBitmapAgainstModel.settings = MODEL_SETTINGS
TestBuddyAgainstModel = BuddyMachine.TestCase
TestBuddyAgainstModel.settings = MODEL_SETTINGS


# ---- bring-up, by example ---------------------------------------------------------------

SMALL_MAP = [Region(0, 0x9F000, USABLE), Region(0x9F000, 0x1000, RESERVED),
             Region(0x100000, 0x300000, USABLE), Region(0x400000, 0x10000,
                                                        BOOTLOADER_RECLAIMABLE)]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("regions, options, message", [
    pytest.param(SMALL_MAP, {"memmap": False}, "pmm_init: the loader gave no memory map",
                 id="no-memmap"),
    pytest.param(SMALL_MAP, {"hhdm": False}, "pmm_init: the loader gave no HHDM", id="no-hhdm"),
    pytest.param([Region(0, 0x1000, USABLE), Region(0x1000, 0x100000, RESERVED)], {},
                 "pmm_init: the memory map has no USABLE frame", id="only-frame-0"),
    pytest.param([Region(0x1000, 0x1000, USABLE), Region(0x3000, 0x1000, USABLE),
                  Region(0x100000, 0x10000000, BOOTLOADER_RECLAIMABLE)], {},
                 "pmm_init: no USABLE region holds the", id="metadata-does-not-fit"),
    pytest.param([Region(PAGE * i, PAGE, USABLE if i % 2 else RESERVED) for i in range(1025)],
                 {}, "pmm_init: 1025 memory map entries, at most 1024", id="too-many-entries"),
])
def test_init_panics(kind, regions, options, message):
    with PmmHost(regions, kind, init=False, **options) as pmm:
        with pytest.raises(GuestPanic, match=f"^{re.escape(message)}"):
            pmm.init()


@pytest.mark.parametrize("kind", KINDS)
def test_init_once_reclaim_after(kind):
    with PmmHost(SMALL_MAP, kind, init=False) as pmm:
        with pytest.raises(GuestPanic, match="^pmm_reclaim_bootloader: before pmm_init$"):
            pmm.reclaim_bootloader([])
        pmm.init()
        with pytest.raises(GuestPanic, match="^pmm_init: called twice$"):
            pmm.init()


@pytest.mark.parametrize("kind", KINDS)
def test_each_host_pmm_starts_pristine(kind):
    """Every PmmHost loads its own copy of the library: no state leaks between examples."""
    for _ in range(2):
        with PmmHost(SMALL_MAP, kind) as pmm:
            assert pmm.total_count() == 0x9E + 0x300
            assert pmm.alloc() != 0


@pytest.mark.parametrize("kind", KINDS)
def test_unaligned_usable_entry_rounds_inward(kind):
    """Limine promises page-aligned USABLE entries; the PMM still only takes whole frames."""
    regions = [Region(0x1800, 0x5000, USABLE), Region(0x100000, 0x100000, USABLE)]
    with PmmHost(regions, kind) as pmm:
        assert pmm.total_count() == 4 + 256                # frames 2-5 and the 1 MiB island
        with pytest.raises(GuestPanic, match="is not managed RAM"):
            pmm.free(0x1000)
        with pytest.raises(GuestPanic, match="is not managed RAM"):
            pmm.free(0x6000)
