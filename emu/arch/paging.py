"""x86-64 4-level page tables as pure functions: walks, scans and a builder.

Owns: decoding page-table entries, translating one address the way the MMU does (the same
permission and reserved-bit rules, including the #PF error code it would produce), listing
an address space (every table, leaf and bad entry: scan; merged ranges like QEMU's
`info mem`), and building tables in host memory (PageTableBuilder: the boot page tables).
Does not own: the bits themselves (emu.x86), the TLB (the CPU's), or deciding what a
mapping should be (the checkers). Imports only emu.x86 and emu.errors.

The functions take `read_u64(paddr) -> int` (`scan`: a whole table at a time), so they work
on RAM, a snapshot or a test dict.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Callable, Iterable, NamedTuple

from emu.errors import UnbackedAccess
from emu.x86 import (ENTRIES_PER_TABLE, HUGE_PAGE_SIZE, LARGE_PAGE_SIZE, LEVEL_SHIFTS,
                     PAGE_SIZE, PAGING_LEVELS, PF_FETCH, PF_PRESENT, PF_RESERVED, PF_USER,
                     PF_WRITE, PTE_ACCESSED, PTE_ADDRESS_MASK, PTE_DIRTY, PTE_GLOBAL, PTE_HUGE,
                     PTE_NO_EXECUTE, PTE_PAT_4K, PTE_PAT_LARGE, PTE_PRESENT,
                     PTE_RESERVED_HIGH, PTE_USER, PTE_WRITABLE, PTE_WRITE_THROUGH, canonical,
                     sign_extend)

__all__ = ["walk", "fault_code", "Walk", "Step", "scan", "ScanCache", "merge", "mapped_ranges",
           "MappedRange", "AddressSpace", "Table", "BadEntry", "PageTableBuilder",
           "entry_flags", "canonical", "sign_extend"]

ReadU64 = Callable[[int], int]


@dataclass(frozen=True, slots=True)
class Step:
    level: str
    index: int
    entry_address: int      # physical address of the entry
    entry: int

    def describe(self) -> str:
        return f"{self.level}[{self.index:3d}] @ {self.entry_address:#x} = {self.entry:#018x} " \
               f"{entry_flags(self.entry)}"


@dataclass(frozen=True, slots=True)
class Walk:
    """The result of walking one virtual address."""
    vaddr: int
    steps: tuple[Step, ...]
    paddr: int | None           # None when the walk stopped early
    page_size: int
    writable: bool              # AND of R/W over the levels
    user: bool                  # AND of U/S over the levels
    executable: bool            # no level has NX (with EFER.NXE)
    problem: str | None         # why there is no translation, if there is none
    reserved: bool              # a reserved bit was set in an entry

    def describe(self) -> str:
        lines = [f"page walk of {self.vaddr:#018x}:"]
        lines += ["  " + step.describe() for step in self.steps]
        if self.paddr is None:
            lines.append(f"  -> no translation: {self.problem}")
        else:
            perms = ("W" if self.writable else "R") + ("U" if self.user else "S") + \
                    ("X" if self.executable else "-")
            lines.append(f"  -> physical {self.paddr:#x} ({_size_name(self.page_size)} page, {perms})")
        return "\n".join(lines)


def entry_flags(entry: int) -> str:
    names = [(PTE_PRESENT, "P"), (PTE_WRITABLE, "W"), (PTE_USER, "U"), (PTE_ACCESSED, "A"), (PTE_DIRTY, "D"),
             (PTE_HUGE, "PS"), (PTE_GLOBAL, "G"), (PTE_NO_EXECUTE, "NX")]
    return " ".join(name for bit, name in names if entry & bit)


def _size_name(size: int) -> str:
    return {PAGE_SIZE: "4 KiB", LARGE_PAGE_SIZE: "2 MiB", HUGE_PAGE_SIZE: "1 GiB"}.get(
        size, hex(size))


def _reserved_bits(level: int, entry: int, nxe: bool) -> bool:
    if entry & PTE_RESERVED_HIGH:
        return True
    if not nxe and entry & PTE_NO_EXECUTE:
        return True
    if level == 0 and entry & PTE_HUGE:
        return True
    if entry & PTE_HUGE and level in (1, 2):
        # bits 12 (PAT) .. page offset of a huge page: the low frame bits must be 0
        low = (1 << LEVEL_SHIFTS[level]) - 1
        if entry & low & ~0x1FFF:
            return True
    return False


def walk(read_u64: ReadU64, cr3: int, vaddr: int, nxe: bool = True) -> Walk:
    """Translate `vaddr` through the tables at `cr3`, as the MMU would."""
    steps: list[Step] = []
    if not canonical(vaddr):
        return Walk(vaddr, (), None, 0, False, False, False, "non-canonical address", False)
    table = cr3 & PTE_ADDRESS_MASK
    writable = user = executable = True
    for level, shift in enumerate(LEVEL_SHIFTS):
        index = (vaddr >> shift) & 0x1FF
        entry_address = table + 8 * index
        entry = read_u64(entry_address)
        steps.append(Step(PAGING_LEVELS[level], index, entry_address, entry))
        if not entry & PTE_PRESENT:
            return Walk(vaddr, tuple(steps), None, 0, False, False, False,
                        f"{PAGING_LEVELS[level]} entry not present", False)
        if _reserved_bits(level, entry, nxe):
            return Walk(vaddr, tuple(steps), None, 0, False, False, False,
                        f"reserved bit set in {PAGING_LEVELS[level]} entry", True)
        writable &= bool(entry & PTE_WRITABLE)
        user &= bool(entry & PTE_USER)
        executable &= not (nxe and entry & PTE_NO_EXECUTE)
        if level == 3 or (entry & PTE_HUGE and level in (1, 2)):
            size = 1 << shift
            frame = entry & PTE_ADDRESS_MASK & ~(size - 1)
            return Walk(vaddr, tuple(steps), frame | (vaddr & (size - 1)), size,
                        writable, user, executable, None, False)
        table = entry & PTE_ADDRESS_MASK
    raise AssertionError("unreachable")


def fault_code(result: Walk, write: bool, user: bool, fetch: bool, wp: bool = True,
               nxe: bool = True) -> int | None:
    """The #PF error code this access would raise, or None if the MMU allows it."""
    code = (PF_WRITE if write else 0) | (PF_USER if user else 0) | \
           (PF_FETCH if fetch and nxe else 0)
    if result.paddr is None:
        if result.reserved:
            return code | PF_PRESENT | PF_RESERVED
        return code
    if user and not result.user:
        return code | PF_PRESENT
    if write and not result.writable and (user or wp):
        return code | PF_PRESENT
    if fetch and not result.executable:
        return code | PF_PRESENT
    return None


class MappedRange(NamedTuple):
    """A leaf entry, or a run of virtual pages with the same permissions, physically
    contiguous (a tuple: a 64 GiB HHDM of 4 KiB pages makes tens of thousands)."""
    start: int
    end: int
    paddr: int
    writable: bool
    user: bool
    executable: bool

    @property
    def perms(self) -> str:
        """`w`/`r`, `u`/`s`, `x`/`-`: writable, user, executable."""
        return ("w" if self.writable else "r") + ("u" if self.user else "s") + \
            ("x" if self.executable else "-")

    def describe(self) -> str:
        return f"{self.start:016x}-{self.end:016x} {self.end - self.start:016x} " \
               f"{self.perms} -> {self.paddr:#x}"


@dataclass(frozen=True, slots=True)
class Table:
    """One page-table page of an address space."""
    paddr: int
    level: int                  # index into PAGING_LEVELS: 0 = PML4 ... 3 = PT
    vaddr: int                  # the first virtual address it covers
    parent: int | None          # physical address of the entry pointing at it; None: root


@dataclass(frozen=True, slots=True)
class BadEntry:
    """A present entry with reserved bits set (the walk stops there, as the MMU's would)."""
    vaddr: int
    level: int
    entry_address: int
    entry: int


@dataclass(frozen=True, slots=True)
class AddressSpace:
    root: int
    leaves: tuple[MappedRange, ...]                      # one per leaf entry, in address order
    tables: tuple[Table, ...]
    bad_entries: tuple[BadEntry, ...]
    unreadable: tuple[Table, ...]                 # tables with no RAM behind them


@dataclass(slots=True)
class _TableScan:
    """What one table held the last time a scan read it, for ScanCache: its entries in
    address order, each a leaf, a bad entry or a child table (with the rights above it)."""
    raw: bytes
    items: list[MappedRange | BadEntry | tuple[Table, bool, bool, bool]]


class ScanCache:
    """Remembers each table page's bytes and what a scan found in them, so that scanning an
    address space again re-decodes only the tables whose bytes changed, and returns the
    very same AddressSpace object when nothing changed at all (callers may compare with
    `is`). For repeated checks of a live address space (`--check-every`).

    "Nothing changed" means every table the scan visited is the very decoding the cached
    space was built from: address spaces share tables (the kernel half), so a table that
    changed and was decoded again while another root was scanned still makes this root's
    cached space stale."""

    def __init__(self) -> None:
        self.tables: dict[tuple, _TableScan] = {}
        self.spaces: dict[tuple[int, bool], tuple[AddressSpace, list[_TableScan]]] = {}


def scan(read_table: Callable[[int], "tuple[int, ...] | bytes"], root: int, nxe: bool,
         cache: ScanCache | None = None) -> AddressSpace:
    """Every table, leaf and bad entry under `root`; `read_table(paddr)` gives a table page
    as its 512 entries or as its 4096 bytes (and raises UnbackedAccess where there is no
    RAM). With a `cache` (and bytes from read_table), unchanged tables are not decoded."""
    found = _Found([], [], [], [])
    changed = [cache is None]
    used: list[_TableScan] = []             # the decodings this scan rests on, in order

    def visit(table: Table, w: bool, u: bool, x: bool) -> None:
        found.tables.append(table)
        try:
            raw = read_table(table.paddr)
        except UnbackedAccess:
            found.unreadable.append(table)
            changed[0] = True
            return
        key = (table, w, u, x, nxe)
        known = cache.tables.get(key) if cache is not None else None
        if known is None or known.raw != raw:
            known = _decode(table, raw, w, u, x, nxe)
            changed[0] = True
            if cache is not None and isinstance(raw, bytes):
                if len(cache.tables) > _CACHE_LIMIT:
                    cache.tables.clear()
                cache.tables[key] = known
        used.append(known)
        for item in known.items:            # in address order: leaves stay sorted
            if type(item) is MappedRange:
                found.leaves.append(item)
            elif type(item) is BadEntry:
                found.bad.append(item)
            else:
                visit(*item)

    visit(Table(root & PTE_ADDRESS_MASK, 0, 0, None), True, True, True)
    space_key = (root & PTE_ADDRESS_MASK, nxe)
    known_space = cache.spaces.get(space_key) if cache is not None else None
    if known_space is not None and not changed[0] and len(known_space[1]) == len(used) and \
            all(a is b for a, b in zip(known_space[1], used)):
        return known_space[0]
    space = AddressSpace(root & PTE_ADDRESS_MASK, tuple(found.leaves), tuple(found.tables),
                         tuple(found.bad), tuple(found.unreadable))
    if cache is not None:
        cache.spaces[space_key] = (space, used)
    return space


@dataclass(slots=True)
class _Found:
    leaves: list[MappedRange]
    tables: list[Table]
    bad: list[BadEntry]
    unreadable: list[Table]


def _decode(table: Table, raw, w: bool, u: bool, x: bool, nxe: bool) -> _TableScan:
    """The leaves, bad entries and child tables of one table page."""
    entries = _TABLE.unpack(raw) if isinstance(raw, (bytes, bytearray, memoryview)) else raw
    out = _TableScan(raw, [])
    level, shift = table.level, LEVEL_SHIFTS[table.level]
    for index, entry in enumerate(entries):
        if not entry & PTE_PRESENT:
            continue
        vaddr = sign_extend(table.vaddr + (index << shift))
        entry_address = table.paddr + 8 * index
        if _reserved_bits(level, entry, nxe):
            out.items.append(BadEntry(vaddr, level, entry_address, entry))
            continue
        ww = w and bool(entry & PTE_WRITABLE)
        uu = u and bool(entry & PTE_USER)
        xx = x and not (nxe and entry & PTE_NO_EXECUTE)
        if level == 3 or (entry & PTE_HUGE and level in (1, 2)):
            size = 1 << shift
            frame = entry & PTE_ADDRESS_MASK & ~(size - 1)
            out.items.append(MappedRange(vaddr, vaddr + size, frame, ww, uu, xx))
        else:
            out.items.append((Table(entry & PTE_ADDRESS_MASK, level + 1, vaddr,
                                    entry_address), ww, uu, xx))
    return out


def merge(leaves: Iterable[MappedRange]) -> list[MappedRange]:
    """Neighbouring leaves with equal permissions and contiguous frames, as one run."""
    out: list[MappedRange] = []
    run: MappedRange | None = None
    end = 0
    for leaf in leaves:
        if run is not None and end == leaf.start and \
                run.paddr + (end - run.start) == leaf.paddr and run[3:] == leaf[3:]:
            end = leaf.end
            continue
        if run is not None:
            out.append(run._replace(end=end))
        run, end = leaf, leaf.end
    if run is not None:
        out.append(run._replace(end=end))
    return out


def mapped_ranges(read_u64: ReadU64, cr3: int, nxe: bool = True) -> list[MappedRange]:
    """Every mapping of the address space, merged where contiguous with equal permissions."""
    def read_table(paddr: int) -> tuple[int, ...]:
        return tuple(read_u64(paddr + 8 * index) for index in range(ENTRIES_PER_TABLE))

    space = scan(read_table, cr3, nxe)
    if space.unreadable:
        raise UnbackedAccess(space.unreadable[0].paddr, PAGE_SIZE)
    return merge(space.leaves)


class PageTableBuilder:
    """4-level page tables built in host memory, placed in guest RAM later (the boot page
    tables, and tests' bare machines). Tables are numbered; table 0 is the PML4.
    `overlap` is the exception raised when a range is mapped twice."""

    def __init__(self, overlap: Callable[[str], Exception] = ValueError) -> None:
        self.tables: list[list[int]] = [[0] * ENTRIES_PER_TABLE]
        self.children: dict[tuple[int, int], int] = {}
        self._overlap = overlap

    def map(self, virt: int, phys: int, size: int, flags: int, *, large: bool = True,
            write_combining: bool = False) -> None:
        """Map [virt, virt+size) to phys with leaf `flags` (P added), using 1 GiB and 2 MiB
        pages where both sides are aligned and `large` allows, 4 KiB pages elsewhere.
        `write_combining` selects PAT entry 5 (PAT=1, PCD=0, PWT=1), as Limine maps
        framebuffers."""
        end = virt + size
        while virt < end:
            for page, level in ((HUGE_PAGE_SIZE, 1), (LARGE_PAGE_SIZE, 2), (PAGE_SIZE, 3)):
                if page == PAGE_SIZE or (large and virt % page == 0 and phys % page == 0
                                         and end - virt >= page):
                    break
            table = self._table_for(virt, level)
            index = (virt >> LEVEL_SHIFTS[level]) & (ENTRIES_PER_TABLE - 1)
            if self.tables[table][index] or (table, index) in self.children:
                raise self._overlap(f"{virt:#x} is mapped twice")
            leaf = phys | flags | PTE_PRESENT | (PTE_HUGE if level < 3 else 0)
            if write_combining:
                leaf |= PTE_WRITE_THROUGH | (PTE_PAT_4K if level == 3 else PTE_PAT_LARGE)
            self.tables[table][index] = leaf
            virt += page
            phys += page

    def _table_for(self, virt: int, level: int) -> int:
        table = 0
        for depth in range(level):
            index = (virt >> LEVEL_SHIFTS[depth]) & (ENTRIES_PER_TABLE - 1)
            if self.tables[table][index]:
                raise self._overlap(f"{virt:#x} lies under a large page already mapped")
            child = self.children.get((table, index))
            if child is None:
                child = len(self.tables)
                self.tables.append([0] * ENTRIES_PER_TABLE)
                self.children[(table, index)] = child
            table = child
        return table

    def size(self) -> int:
        """Bytes the tables take in guest RAM."""
        return PAGE_SIZE * len(self.tables)

    def serialize(self, base: int) -> bytes:
        """The tables as they must lie at physical `base`, table n at base + n pages.
        Intermediate entries are present and writable (supervisor): the leaves decide."""
        out = bytearray()
        for number, entries in enumerate(self.tables):
            row = list(entries)
            for index in range(ENTRIES_PER_TABLE):
                child = self.children.get((number, index))
                if child is not None:
                    row[index] = (base + child * PAGE_SIZE) | PTE_PRESENT | PTE_WRITABLE
            out += _TABLE.pack(*row)
        return bytes(out)


_TABLE = struct.Struct(f"<{ENTRIES_PER_TABLE}Q")
_CACHE_LIMIT = 1 << 16                  # tables remembered by a ScanCache
