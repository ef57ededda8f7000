"""x86-64 4-level page walks, done by the monitor on guest RAM.

Owns: decoding page-table entries, translating one address the way the MMU does (the same
permission and reserved-bit rules, including the #PF error code it would produce), and
listing an address space: every table, leaf and bad entry (scan), and merged ranges (like
QEMU's `info mem`).
Does not own: the TLB (the CPU's), or deciding what a mapping should be (checks, later).

The functions take `read_u64(paddr) -> int` (`scan`: a whole table at a time), so they work
on RAM, a snapshot or a test dict.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, NamedTuple

from emu.hw.memory import UnbackedAccess

PRESENT = 1 << 0
WRITABLE = 1 << 1
USER = 1 << 2
WRITE_THROUGH = 1 << 3
CACHE_DISABLE = 1 << 4
ACCESSED = 1 << 5
DIRTY = 1 << 6
HUGE = 1 << 7
GLOBAL = 1 << 8
NO_EXECUTE = 1 << 63

# Unicorn's CPU model has 40 physical address bits (QEMU's TCG default): entry bits 40-51
# are reserved, as on a CPU with MAXPHYADDR = 40.
PHYS_BITS = 40
ADDRESS_MASK = ((1 << PHYS_BITS) - 1) & ~0xFFF
RESERVED_HIGH = ((1 << 52) - 1) & ~((1 << PHYS_BITS) - 1)

LEVEL_NAMES = ("PML4", "PDPT", "PD", "PT")
LEVEL_SHIFTS = (39, 30, 21, 12)

# #PF error code bits (Intel SDM vol. 3, 4.7)
PF_PRESENT = 1 << 0
PF_WRITE = 1 << 1
PF_USER = 1 << 2
PF_RESERVED = 1 << 3
PF_FETCH = 1 << 4

ReadU64 = Callable[[int], int]


def canonical(vaddr: int) -> bool:
    top = vaddr >> 47
    return top == 0 or top == (1 << 17) - 1


def sign_extend(vaddr: int) -> int:
    vaddr &= (1 << 48) - 1
    return vaddr | (0xFFFF << 48) if vaddr >> 47 else vaddr


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
    names = [(PRESENT, "P"), (WRITABLE, "W"), (USER, "U"), (ACCESSED, "A"), (DIRTY, "D"),
             (HUGE, "PS"), (GLOBAL, "G"), (NO_EXECUTE, "NX")]
    return " ".join(name for bit, name in names if entry & bit)


def _size_name(size: int) -> str:
    return {1 << 12: "4 KiB", 1 << 21: "2 MiB", 1 << 30: "1 GiB"}.get(size, hex(size))


def _reserved_bits(level: int, entry: int, nxe: bool) -> bool:
    if entry & RESERVED_HIGH:
        return True
    if not nxe and entry & NO_EXECUTE:
        return True
    if level == 0 and entry & HUGE:
        return True
    if entry & HUGE and level in (1, 2):
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
    table = cr3 & ADDRESS_MASK
    writable = user = executable = True
    for level, shift in enumerate(LEVEL_SHIFTS):
        index = (vaddr >> shift) & 0x1FF
        entry_address = table + 8 * index
        entry = read_u64(entry_address)
        steps.append(Step(LEVEL_NAMES[level], index, entry_address, entry))
        if not entry & PRESENT:
            return Walk(vaddr, tuple(steps), None, 0, False, False, False,
                        f"{LEVEL_NAMES[level]} entry not present", False)
        if _reserved_bits(level, entry, nxe):
            return Walk(vaddr, tuple(steps), None, 0, False, False, False,
                        f"reserved bit set in {LEVEL_NAMES[level]} entry", True)
        writable &= bool(entry & WRITABLE)
        user &= bool(entry & USER)
        executable &= not (nxe and entry & NO_EXECUTE)
        if level == 3 or (entry & HUGE and level in (1, 2)):
            size = 1 << shift
            frame = entry & ADDRESS_MASK & ~(size - 1)
            return Walk(vaddr, tuple(steps), frame | (vaddr & (size - 1)), size,
                        writable, user, executable, None, False)
        table = entry & ADDRESS_MASK
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

    def describe(self) -> str:
        perms = ("w" if self.writable else "r") + ("u" if self.user else "s") + \
                ("x" if self.executable else "-")
        return f"{self.start:016x}-{self.end:016x} {self.end - self.start:016x} " \
               f"{perms} -> {self.paddr:#x}"


@dataclass(frozen=True, slots=True)
class Table:
    """One page-table page of an address space."""
    paddr: int
    level: int                  # index into LEVEL_NAMES: 0 = PML4 ... 3 = PT
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


def scan(read_table: Callable[[int], tuple[int, ...]], root: int, nxe: bool) -> AddressSpace:
    """Every table, leaf and bad entry under `root`; `read_table(paddr)` gives the 512
    entries of a table page (and raises UnbackedAccess where there is no RAM)."""
    leaves: list[MappedRange] = []
    tables: list[Table] = []
    bad: list[BadEntry] = []
    unreadable: list[Table] = []

    def visit(table: Table, w: bool, u: bool, x: bool) -> None:
        tables.append(table)
        try:
            entries = read_table(table.paddr)
        except UnbackedAccess:
            unreadable.append(table)
            return
        level, shift = table.level, LEVEL_SHIFTS[table.level]
        for index, entry in enumerate(entries):
            if not entry & PRESENT:
                continue
            vaddr = sign_extend(table.vaddr + (index << shift))
            entry_address = table.paddr + 8 * index
            if _reserved_bits(level, entry, nxe):
                bad.append(BadEntry(vaddr, level, entry_address, entry))
                continue
            ww = w and bool(entry & WRITABLE)
            uu = u and bool(entry & USER)
            xx = x and not (nxe and entry & NO_EXECUTE)
            if level == 3 or (entry & HUGE and level in (1, 2)):
                size = 1 << shift
                frame = entry & ADDRESS_MASK & ~(size - 1)
                leaves.append(MappedRange(vaddr, vaddr + size, frame, ww, uu, xx))
            else:
                visit(Table(entry & ADDRESS_MASK, level + 1, vaddr, entry_address),
                      ww, uu, xx)

    visit(Table(root & ADDRESS_MASK, 0, 0, None), True, True, True)
    return AddressSpace(root & ADDRESS_MASK, tuple(leaves), tuple(tables), tuple(bad),
                        tuple(unreadable))


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
        return tuple(read_u64(paddr + 8 * index) for index in range(512))

    space = scan(read_table, cr3, nxe)
    if space.unreadable:
        raise UnbackedAccess(space.unreadable[0].paddr, 0x1000)
    return merge(space.leaves)
