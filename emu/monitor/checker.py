"""The invariant checker: named rules about the guest's page tables and its physical memory
manager, checked from outside while the guest runs (`emu run --check`).

Owns: the rules (RULES), scanning an address space, reading the guest PMM's free/used state
through its `pmm_descriptor` (layout in guest/pmm.h), the TLB shadow behind STALE_TLB, and
reporting violations as InvariantViolation events.
Does not own: translating one address (paging.py), ending the run (the machine, for
`--strict`), printing (cli.py).

When: at every CR3 load (Cr3Written fires before the `mov` runs, so the new root is
checked), after every page fault is delivered, at every guest checkpoint (guest/checkpoint.h)
and, with `--check-every N`, every N instructions. The loader's page tables (the CR3 the
kernel starts with) are the loader's business and are not checked. Each (rule, address) is
reported once per run.

Cost: the work is per page-table page and per leaf entry, and the range rules look at leaves
merged into runs (a 64 GiB HHDM of 2 MiB pages is 32,768 leaves but a handful of runs). No
loop walks the 4 KiB pages of a large mapping, except STALE_TLB probing the pages of a leaf
that lost its mapping without an invlpg (at most MAX_PROBES per check).

STALE_TLB: a shadow of the translations the TLB may hold is taken at each CR3 load, kept up
to date at every invlpg (the page is walked again) and extended with the current mappings
at every check. At a checkpoint or page fault, a shadow page whose mapping has since been
removed, moved or lost a permission is probed with Unicorn's own translation
(`uc_vmem_translate`, which looks in Unicorn's TLB first): if Unicorn still translates it,
the guest can still use it, and it is reported. Periodic checks (`--check-every`) land
between any two instructions, also between a kernel's PTE store and its invlpg, so they only
extend the shadow; a CR3 load is itself a flush, so it starts a new shadow without probing.
A mapping made and torn down between two checks is not seen.
"""
from __future__ import annotations

import bisect
import ctypes
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

from elftools.elf.elffile import ELFFile
from unicorn import UC_PROT_EXEC, UC_PROT_READ, UC_PROT_WRITE
from unicorn import x86_const as X
from unicorn.unicorn_py3 import unicorn as _binding

from emu.arch import paging
from emu.events import Checkpoint, Cr3Written, EventBus, ExceptionDelivered, InvariantViolation, \
    Observer, TlbFlush
from emu.hw.memmap import PAGE_SIZE, MemoryType, Region
from emu.hw.memory import PhysicalMemory, UnbackedAccess

__all__ = ["RULES", "Rule", "InvariantChecker", "Platform", "attach", "scan", "merge",
           "AddressSpace", "Leaf", "PmmState", "read_pmm"]


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    meaning: str
    example: str


RULES: tuple[Rule, ...] = (
    Rule("MAP_OUTSIDE_RAM",
         "A page maps a physical frame that is in no memory-map entry and no declared MMIO or "
         "framebuffer region (address: the virtual page).",
         "mapping physical 0xa0000 (the VGA hole) at HHDM + 0xa0000"),
    Rule("RESERVED_WRITABLE",
         "A frame wholly inside a RESERVED, RESERVED_MAPPED, ACPI_RECLAIMABLE, ACPI_NVS or "
         "BAD_MEMORY entry is mapped writable (address: the virtual page).",
         "an HHDM that maps the ACPI tables read-write"),
    Rule("USER_KERNEL_HALF",
         "A page at or above 0xffff800000000000 is user-accessible: U/S set at every level "
         "(address: the virtual page).",
         "the kernel's rodata mapped with VM_USER"),
    Rule("WRITE_EXEC",
         "A page is writable and executable (address: the virtual page).",
         "the kernel's data and bss mapped without NX"),
    Rule("RESERVED_BITS",
         "A present entry has reserved bits set: physical-address bits above MAXPHYADDR (40), "
         "NX without EFER.NXE, PS in a PT entry, frame bits below a large page's alignment "
         "(address: the first virtual address the entry covers).",
         "a PTE with bit 51 set"),
    Rule("TABLE_PAGE_FREE",
         "A page-table page (the root, or one an entry points to) is free in the PMM "
         "(address: the table page, physical).",
         "freeing an emptied page table but leaving the parent entry"),
    Rule("MAPPED_FREE_FRAME",
         "A frame the PMM says is free is mapped outside the HHDM and the kernel image, which "
         "map memory by design: a use after free (address: the virtual page).",
         "pmm_free of a frame still mapped at 0xffffc00000000000"),
    Rule("PMM_NOT_USABLE",
         "The PMM can hand out, or has handed out as a page table, a frame that is not "
         "USABLE or BOOTLOADER_RECLAIMABLE in the boot memory map (address: the frame, "
         "physical).",
         "pmm_free accepting the RESERVED BIOS frame 0xf0000 into the free pool"),
    Rule("KERNEL_HALF_DIFFERS",
         "A kernel-half PML4 entry (256-511) differs from the same entry of the address space "
         "checked before (address: the first virtual address the entry covers).",
         "a new address space whose PML4 did not copy the kernel half"),
    Rule("STALE_TLB",
         "Unicorn's TLB still translates a page whose mapping was removed, moved or lost a "
         "permission with no invlpg or CR3 load since (address: the virtual page).",
         "vmm_unmap without invlpg, then a read of the page"),
)
RULE_IDS = tuple(rule.id for rule in RULES)

KERNEL_HALF = 0xFFFF_8000_0000_0000
MAX_PROBES = 1 << 14           # STALE_TLB probes per check
MSR_EFER, EFER_NXE = 0xC0000080, 1 << 11
_TABLE = struct.Struct("<512Q")
_SIZES = (1 << 12, 1 << 21, 1 << 30)
_IGNORED_TABLE_BITS = paging.ACCESSED | paging.DIRTY     # set by the MMU behind the kernel
_RESERVED_TYPES = frozenset({MemoryType.RESERVED, MemoryType.RESERVED_MAPPED,
                             MemoryType.ACPI_RECLAIMABLE, MemoryType.ACPI_NVS,
                             MemoryType.BAD_MEMORY})
_RAM_TYPES = frozenset({MemoryType.USABLE, MemoryType.BOOTLOADER_RECLAIMABLE})
_PROTS = {UC_PROT_READ: "read", UC_PROT_WRITE: "write", UC_PROT_EXEC: "fetch"}


# ---- Address spaces: scanned by paging.py --------------------------------------------------

Leaf = paging.MappedRange
AddressSpace, BadEntry, Table = paging.AddressSpace, paging.BadEntry, paging.Table
scan, merge = paging.scan, paging.merge


def table_reader(memory: PhysicalMemory) -> Callable[[int], tuple[int, ...]]:
    def read_table(paddr: int) -> tuple[int, ...]:
        view, offset = memory.locate(paddr, PAGE_SIZE)
        return _TABLE.unpack_from(view, offset)
    return read_table


# ---- The guest PMM, from its descriptor ---------------------------------------------------

DESCRIPTOR = struct.Struct("<IIIIQQQQQQQQQQ")        # struct pmm_descriptor, 96 bytes
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
    """Which frames the guest PMM says are free, read in place from guest RAM (no copy):
    the bitmap or the buddy map, as guest/pmm.h documents them."""

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


def object_address(kernel: Path, name: str, slide: int = 0) -> int | None:
    """A data symbol's address (emu.symbols keeps functions only)."""
    with Path(kernel).open("rb") as stream:
        table = ELFFile(stream).get_section_by_name(".symtab")
        if table is None:
            return None
        for symbol in table.get_symbol_by_name(name) or ():
            if symbol["st_shndx"] != "SHN_UNDEF":
                return symbol["st_value"] + slide
    return None


# ---- Physical ranges ----------------------------------------------------------------------

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


def _page_down(value: int) -> int:
    return value & ~(PAGE_SIZE - 1)


def _page_up(value: int) -> int:
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

    @classmethod
    def of(cls, machine) -> "Platform":
        boot = machine.boot
        framebuffer = () if boot.framebuffer is None else \
            ((boot.framebuffer.address, boot.framebuffer.address + boot.framebuffer.size),)
        return cls(boot.memmap.regions, boot.hhdm_offset,
                   boot.kernel_virtual_base - boot.kernel_physical_base,
                   object_address(machine.config.kernel, "pmm_descriptor", boot.kernel_slide),
                   boot.cr3 & paging.ADDRESS_MASK, framebuffer, machine.bus.mmio_owner)


# ---- The checker --------------------------------------------------------------------------

class InvariantChecker(Observer):
    """Checks RULES on the live (or given) address space and the guest PMM; see the module
    docstring for when. Violations are emitted on `events` as InvariantViolation and passed
    to `on_violation`; `counts` has them per rule, `checks` counts the checks made."""

    def __init__(self, memory: PhysicalMemory, uc, events: EventBus, platform: Platform,
                 on_violation: Callable[[InvariantViolation], None] | None = None) -> None:
        self.memory = memory
        self.uc = uc
        self.events = events
        self.platform = platform
        self.on_violation = on_violation
        self.violations: list[InvariantViolation] = []
        self.counts: dict[str, int] = {}
        self.checks = 0
        self._reported: set[tuple[str, int]] = set()
        self._read_table = table_reader(memory)
        regions = platform.regions
        self._present = Ranges(((_page_down(r.base), _page_up(r.end), None) for r in regions),
                               merge_touching=True)
        self._reserved = Ranges((_page_up(r.base), _page_down(r.end), r.type.name)
                                for r in regions if r.type in _RESERVED_TYPES)
        ram = Ranges(((r.base, r.end, None) for r in regions if r.type in _RAM_TYPES),
                     merge_touching=True)
        self._ram = Ranges((_page_up(s), _page_down(e), None) for s, e, _ in ram.spans)
        self._devices = Ranges((s, e, None) for s, e in platform.devices)
        # (root, kernel-half PML4 entries) of the address space checked last, and of the
        # last one checked before it that had another root
        self._kernel_half: tuple[int, tuple[int, ...]] | None = None
        self._other_half: tuple[int, tuple[int, ...]] | None = None
        # STALE_TLB: leaf start -> leaf the TLB may hold, for the address space at _shadow_root
        self._shadow: dict[int, Leaf] = {}
        self._shadow_root: int | None = None

    # ---- events ---------------------------------------------------------------------------

    def on_cr3_write(self, event: Cr3Written) -> None:
        space = self.check(event.new, reason="CR3 load", stale=False)
        if space is not None:
            self._shadow = {leaf.start: leaf for leaf in space.leaves}
            self._shadow_root = space.root
        else:
            self._shadow, self._shadow_root = {}, None

    def on_tlb_flush(self, event: TlbFlush) -> None:
        if self._shadow_root is None or self._live_root() != self._shadow_root:
            return
        page = event.address & ~(PAGE_SIZE - 1)
        for size in _SIZES:
            leaf = self._shadow.get(page & ~(size - 1))
            if leaf is not None and leaf.end - leaf.start == size:
                del self._shadow[leaf.start]
        walk = self._walk(self._shadow_root, page)
        if walk.paddr is not None:
            start = page & ~(walk.page_size - 1)
            self._shadow[start] = Leaf(
                start, start + walk.page_size, walk.paddr - (page - start), walk.writable,
                walk.user, walk.executable)

    def on_exception(self, event: ExceptionDelivered) -> None:
        if event.vector == 14:
            self.check(reason=f"page fault at {event.cr2:#x}")

    def on_checkpoint(self, event: Checkpoint) -> None:
        self.check(reason=f"checkpoint {event.number}")

    # ---- checking -------------------------------------------------------------------------

    def check(self, root: int | None = None, reason: str = "check",
              stale: bool = True) -> AddressSpace | None:
        """Check the address space at `root` (default: the live CR3) and the PMM; with
        `stale`, probe for STALE_TLB too if `root` is live. Returns the scanned address
        space, or None if there is nothing to check (paging off, the loader's tables)."""
        if not self.uc.reg_read(X.UC_X86_REG_CR0) & (1 << 31):
            return None
        live = self._live_root()
        root = live if root is None else root & paging.ADDRESS_MASK
        if root == self.platform.loader_root:
            return None
        self.checks += 1
        space = self._scan(root)
        pmm = self._pmm(root)
        self._check_entries(space)
        self._check_ranges(space, pmm)
        self._check_tables(space, pmm)
        if pmm is not None:
            self._check_pmm(pmm)
        self._check_kernel_half(space)
        if root == live and root == self._shadow_root:
            if stale:
                self._stale_check(space)
            for leaf in space.leaves:
                self._shadow[leaf.start] = leaf
        return space

    def _check_entries(self, space: AddressSpace) -> None:
        for bad in space.bad_entries:
            self._report("RESERVED_BITS", bad.vaddr, space.root,
                         f"{paging.LEVEL_NAMES[bad.level]} entry at {bad.entry_address:#x} = "
                         f"{bad.entry:#018x} has reserved bits set")
        for table in space.unreadable:
            self._report("MAP_OUTSIDE_RAM", table.vaddr, space.root,
                         f"the {paging.LEVEL_NAMES[table.level]} at physical {table.paddr:#x} "
                         f"(entry at {table.parent:#x}) has no RAM behind it")

    def _check_ranges(self, space: AddressSpace, pmm: PmmState | None) -> None:
        direct = {self.platform.hhdm_offset, self.platform.kernel_offset} - {None}
        for run in merge(space.leaves):
            size = run.end - run.start
            if run.user and run.start >= KERNEL_HALF:
                self._report("USER_KERNEL_HALF", run.start, space.root,
                             f"{_span(run)} is user-accessible in the kernel half")
            if run.writable and run.executable:
                self._report("WRITE_EXEC", run.start, space.root,
                             f"{_span(run)} is writable and executable")
            for first, last in self._present.gaps(run.paddr, run.paddr + size):
                if not self._is_device(first, last):
                    self._report("MAP_OUTSIDE_RAM", run.start + first - run.paddr, space.root,
                                 f"{_span(run)} maps physical {first:#x}-{last:#x}, which is "
                                 "in no memory-map entry, MMIO or framebuffer region")
                    break
            if run.writable:
                for first, last, kind in self._reserved.overlaps(run.paddr, run.paddr + size):
                    self._report("RESERVED_WRITABLE", run.start + first - run.paddr, space.root,
                                 f"{_span(run)} maps {kind} memory {first:#x}-{last:#x} "
                                 "writable")
                    break
            if pmm is not None and (run.start - run.paddr) % (1 << 64) not in direct:
                free = pmm.first_free(run.paddr >> 12, (run.paddr + size) >> 12)
                if free is not None:
                    vaddr = run.start + (free << 12) - run.paddr
                    self._report("MAPPED_FREE_FRAME", vaddr, space.root,
                                 f"frame {free << 12:#x}, mapped at {vaddr:#x}, is free in "
                                 "the PMM")

    def _check_tables(self, space: AddressSpace, pmm: PmmState | None) -> None:
        for table in space.tables:
            what = f"the {paging.LEVEL_NAMES[table.level]} at physical {table.paddr:#x} " + \
                   ("(the root)" if table.parent is None else
                    f"(entry at {table.parent:#x}, covering {table.vaddr:#x})")
            if pmm is not None and pmm.is_free(table.paddr >> 12):
                self._report("TABLE_PAGE_FREE", table.paddr, space.root,
                             f"{what} is free in the PMM", walk_of=table.vaddr)
            if next(self._ram.gaps(table.paddr, table.paddr + PAGE_SIZE), None) is not None:
                self._report("PMM_NOT_USABLE", table.paddr, space.root,
                             f"{what} is not USABLE or BOOTLOADER_RECLAIMABLE memory",
                             walk_of=table.vaddr)

    def _check_pmm(self, pmm: PmmState) -> None:
        d = pmm.descriptor
        for first, last in self._ram.gaps(d.base_pfn << 12, (d.base_pfn + d.frames) << 12):
            free = pmm.first_free(first >> 12, last >> 12)
            if free is not None:
                self._report("PMM_NOT_USABLE", free << 12, None,
                             f"frame {free << 12:#x} is free in the PMM but is "
                             f"{self._type_at(free << 12)}, not USABLE or "
                             "BOOTLOADER_RECLAIMABLE")

    def _check_kernel_half(self, space: AddressSpace) -> None:
        try:
            entries = self._read_table(space.root)[256:]
        except UnbackedAccess:
            return
        entries = tuple(e & ~_IGNORED_TABLE_BITS for e in entries)
        if self._kernel_half is not None and self._kernel_half[0] != space.root:
            self._other_half = self._kernel_half
        self._kernel_half = (space.root, entries)
        previous = self._other_half
        if previous is None:
            return
        for index, (old, new) in enumerate(zip(previous[1], entries), start=256):
            if old != new:
                self._report("KERNEL_HALF_DIFFERS", paging.sign_extend(index << 39), space.root,
                             f"PML4[{index}] is {new:#018x} under root {space.root:#x} but "
                             f"{old:#018x} under root {previous[0]:#x}")

    # ---- STALE_TLB ------------------------------------------------------------------------

    def _stale_check(self, space: AddressSpace) -> None:
        current = {leaf.start: leaf for leaf in space.leaves}
        candidates = []
        for old in self._shadow.values():
            new = current.get(old.start)
            if new is not None and new.end == old.end and _covers(new, old, 0):
                continue
            candidates += _lost_pages(old, current)
            if len(candidates) >= MAX_PROBES:
                del candidates[MAX_PROBES:]
                break
        if not candidates:
            return
        saved_cr2 = self.uc.reg_read(X.UC_X86_REG_CR2)
        try:
            hits = [(page, prot, paddr) for page, prot in candidates
                    if (paddr := self._probe(page, prot)) is not None]
        finally:
            self.uc.reg_write(X.UC_X86_REG_CR2, saved_cr2)
        for page, prot, paddr in hits:
            walk = self._walk(space.root, page)
            if walk.paddr is not None and walk.paddr == paddr and \
                    (prot != UC_PROT_WRITE or walk.writable) and \
                    (prot != UC_PROT_EXEC or walk.executable):
                continue                # the probe found the current, valid translation
            now = walk.problem or f"now {walk.paddr:#x}" + \
                ("" if prot == UC_PROT_READ else f" without {_PROTS[prot]} permission")
            self._report("STALE_TLB", page, space.root,
                         f"Unicorn's TLB still allows a {_PROTS[prot]} of {page:#x} -> "
                         f"{paddr:#x}, but the tables say: {now}; no invlpg or CR3 load since "
                         "an earlier check saw the old mapping")

    def _probe(self, vaddr: int, prot: int) -> int | None:
        """Unicorn's translation (its TLB first, then its MMU), or None. Clobbers CR2."""
        out = ctypes.c_uint64()
        error = _binding.uclib.uc_vmem_translate(self.uc._uch, ctypes.c_uint64(vaddr),
                                                 ctypes.c_int(prot), ctypes.byref(out))
        return out.value if error == 0 else None

    # ---- helpers --------------------------------------------------------------------------

    def _live_root(self) -> int:
        return self.uc.reg_read(X.UC_X86_REG_CR3) & paging.ADDRESS_MASK

    def _nxe(self) -> bool:
        return bool(self.uc.reg_read(X.UC_X86_REG_MSR, MSR_EFER) & EFER_NXE)

    def _scan(self, root: int) -> AddressSpace:
        return scan(self._read_table, root, self._nxe())

    def _walk(self, root: int, vaddr: int) -> paging.Walk:
        """Our walk of vaddr; a table with no RAM behind it ends it without a translation."""
        try:
            return paging.walk(self.memory.read_u64, root, vaddr, nxe=self._nxe())
        except UnbackedAccess as exc:
            return paging.Walk(vaddr, (), None, 0, False, False, False,
                               f"a page table has no RAM behind it ({exc})", False)

    def _pmm(self, root: int) -> PmmState | None:
        if self.platform.pmm_descriptor is None:
            return None
        where = self._walk(root, self.platform.pmm_descriptor).paddr
        if where is None:
            return None
        try:
            return read_pmm(self.memory, where)
        except UnbackedAccess:
            return None

    def _is_device(self, start: int, end: int) -> bool:
        if next(self._devices.gaps(start, end), None) is None:
            return True
        owner = self.platform.mmio_owner(start) if self.platform.mmio_owner else None
        return owner is not None and owner.base <= start and end <= owner.end

    def _type_at(self, paddr: int) -> str:
        for region in self.platform.regions:
            if region.base <= paddr < region.end:
                return region.type.name
        return "in no memory-map entry"

    def _report(self, rule: str, address: int, root: int | None, detail: str,
                walk_of: int | None = None) -> None:
        if (rule, address) in self._reported:
            return
        self._reported.add((rule, address))
        vaddr = address if walk_of is None else walk_of
        if root is not None and paging.canonical(vaddr):
            detail += "\n" + self._walk(root, vaddr).describe()
        event = InvariantViolation(self.events.now(), rule, address, detail)
        self.violations.append(event)
        self.counts[rule] = self.counts.get(rule, 0) + 1
        self.events.emit(event)
        if self.on_violation is not None:
            self.on_violation(event)


def _span(run: Leaf) -> str:
    return f"{run.start:#x}-{run.end:#x} (-> {run.paddr:#x})"


def _covers(new: Leaf, old: Leaf, offset: int) -> bool:
    """Does `new` give the page at `offset` into `old` the same frame and every permission
    `old` gave? (`offset` measured from old.start; the page must lie inside `new`.)"""
    page = old.start + offset
    return new.paddr + (page - new.start) == old.paddr + offset and \
        (new.writable or not old.writable) and (new.executable or not old.executable) and \
        (new.user or not old.user)


def _leaf_at(leaves: dict[int, Leaf], vaddr: int) -> Leaf | None:
    for size in _SIZES:
        leaf = leaves.get(vaddr & ~(size - 1))
        if leaf is not None and leaf.start <= vaddr < leaf.end:
            return leaf
    return None


def _lost_pages(old: Leaf,
                current: dict[int, Leaf]) -> list[tuple[int, int]]:
    """(page, access to probe) for each page of `old` that the current tables no longer
    map the same way with the same permissions."""
    out = []
    page = old.start
    while page < old.end and len(out) < MAX_PROBES:
        new = _leaf_at(current, page)
        offset = page - old.start
        if new is None or new.paddr + (page - new.start) != old.paddr + offset:
            out.append((page, UC_PROT_READ))
        elif old.writable and not new.writable:
            out.append((page, UC_PROT_WRITE))
        elif old.executable and not new.executable:
            out.append((page, UC_PROT_EXEC))
        else:
            page = min(new.end, old.end)    # the rest of this leaf is as before
            continue
        page += PAGE_SIZE
    return out


def attach(machine, *, strict: bool = False, every: int | None = None,
           on_violation: Callable[[InvariantViolation], None] | None = None
           ) -> InvariantChecker:
    """An InvariantChecker for `machine`, subscribed to its events. `strict` ends the run at
    the first violation (reason "violation", exit status 73); `every` also checks every
    that many instructions."""
    def violated(event: InvariantViolation) -> None:
        if on_violation is not None:
            on_violation(event)
        if strict:
            machine.stop_for_violation(
                f"invariant violation {event.rule} at {event.address:#x}",
                "\n".join("  " + line for line in event.detail.splitlines()))

    checker = InvariantChecker(machine.memory, machine.uc, machine.events,
                               Platform.of(machine), violated)
    machine.events.subscribe(checker)
    if every is not None:
        machine.every(every, lambda: checker.check(reason="periodic", stale=False))
    return checker
