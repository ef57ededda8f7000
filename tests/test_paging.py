"""Our page walker (emu.paging) against Unicorn's MMU, and its unit behaviour.

The property test builds a random 4-level mapping (4 KiB, 2 MiB or 1 GiB leaf; P, R/W, U/S
and NX chosen at every level; sometimes a reserved or ignored bit) for one virtual address
in a fresh BareMachine, then performs one access (read, write or fetch, at CPL 0 or CPL 3)
in the guest. Unicorn either translates it (the guest reads back the value placed at the
physical address we expect, or writes there, or runs the code there) or raises a #PF whose
error code and CR2 the guest's handler records. `paging.walk` + `paging.fault_code` must
predict exactly that.
"""
from __future__ import annotations

import struct
from collections import defaultdict
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from unicorn import x86_const as X

from emu.bare import CODE, PML4, UCODE, UDATA, BareMachine
from emu import x86
from emu.arch import paging
from emu.errors import UnbackedAccess

PDPT_AT, PD_AT, PT_AT = 0x30000, 0x31000, 0x32000     # the generated tables (identity RAM)
SCRATCH = 0x600000         # every generated leaf points into 0x600000-0x7fffff
RESULT = 0x61000
USER_RSP = 0x7E000
MAGIC = 0x1122_3344_5566_7788
VALUE = 0x0BAD_CAFE_F00D_0001

# main dispatches on r13 (1: enter ring 3 with iretq) to the access routine in r12
MAIN = f"""
        test r13, r13
        jz kernel
        push {UDATA}
        push {USER_RSP}
        push 2
        push {UCODE}
        push r12
        iretq
    kernel:
        jmp r12
"""
ROUTINES = {
    "read": "mov rax, qword ptr [rbx]\nint 0x80",
    "write": "mov qword ptr [rbx], rdx\nint 0x80",
    "fetch": "jmp rbx",
    "done": "hlt",
    "pf": f"""
        mov rcx, {RESULT}
        mov rax, qword ptr [rsp]
        mov qword ptr [rcx], rax
        mov rax, cr2
        mov qword ptr [rcx + 8], rax
        hlt
    """,
}
ROUTINE_AT = {name: CODE + 0x1000 * (n + 1) for n, name in enumerate(ROUTINES)}
FETCHED = bytes.fromhex("4889d0cd80")                  # mov rax, rdx ; int 0x80

LEVELS = ("pml4e", "pdpte", "pde", "pte")
MUTATIONS = [
    # (level, bit): reserved bits must fault with RSVD, ignored ones must not matter
    (0, 51), (1, 51), (2, 51), (3, 51), (3, 40), (2, 45),   # above MAXPHYADDR (40)
    (0, 7),                                                 # PS in a PML4E
    (2, 13), (1, 20),                                       # inside a huge page's frame
    (2, 12), (1, 12), (3, 7),                               # PAT bits: not reserved
    (0, 8), (3, 52), (2, 62), (0, 9), (3, 11),              # ignored / available bits
]


@dataclass(frozen=True)
class Case:
    vaddr: int
    size: int                      # leaf page size
    entries: tuple[int, ...]       # pml4e, pdpte[, pde[, pte]] as written
    paddr: int                     # the physical address the mapping means
    access: str                    # read / write / fetch
    user: bool
    wp: bool
    nxe: bool


def random_flags(draw) -> int:
    value = x86.PTE_PRESENT if draw(st.integers(0, 11)) else 0
    value |= x86.PTE_WRITABLE if draw(st.booleans()) else 0
    value |= x86.PTE_USER if draw(st.booleans()) else 0
    value |= x86.PTE_NO_EXECUTE if draw(st.integers(0, 5)) == 0 else 0
    return value


def level_flags(draw, levels: int, access: str) -> tuple[list[int], tuple | None]:
    """Flags for each level and a mutation. Three shapes, so that every outcome is common:
    "random" (anything), "permissive" (P|W|U everywhere, NX where it does not matter) and
    "one-off" (permissive except one cause: a cleared P, W or U, a set NX, or one reserved
    or ignored bit)."""
    shape = draw(st.sampled_from(["random", "permissive", "one-off"]))
    if shape == "random":
        return [random_flags(draw) for _ in range(levels)], \
            draw(st.sampled_from([None] * 8 + MUTATIONS))
    flags = [x86.PTE_PRESENT | x86.PTE_WRITABLE | x86.PTE_USER for _ in range(levels)]
    if access != "fetch":
        for level in range(levels):
            if draw(st.booleans()):
                flags[level] |= x86.PTE_NO_EXECUTE
    if shape == "permissive":
        return flags, None
    cause = draw(st.sampled_from(["P", "W", "U", "NX", "bit"]))
    level = draw(st.integers(0, levels - 1))
    if cause == "bit":
        return flags, draw(st.sampled_from(MUTATIONS))
    if cause == "NX":
        flags[level] |= x86.PTE_NO_EXECUTE
    else:
        flags[level] &= ~{"P": x86.PTE_PRESENT, "W": x86.PTE_WRITABLE, "U": x86.PTE_USER}[cause]
    return flags, None


LEVELS_FOR = {1 << 12: 4, 1 << 21: 3, 1 << 30: 2}


def make_case(size: int, index: tuple[int, int, int, int], offset: int, frame_page: int,
              flags: list[int], mutation: tuple | None, access: str, user: bool,
              wp: bool = True, nxe: bool = True) -> Case:
    """The tables for one address: `index` (PML4 index >= 1, then PDPT, PD, PT indices),
    `flags` for each level down to the leaf, `mutation` (level, bit) set on top."""
    i4, i3, i2, i1 = index
    if size == 1 << 30:
        i2 = SCRATCH >> 21          # the 1 GiB frame is 0: land in the scratch area
        frame = 0
    elif size == 1 << 21:
        frame = SCRATCH
    else:
        frame = SCRATCH + 0x1000 * frame_page
    vaddr = x86.sign_extend((i4 << 39) | (i3 << 30) | (i2 << 21) | (i1 << 12) | offset)
    entries = list(flags)
    entries[0] |= PDPT_AT
    if size == 1 << 30:
        entries[1] |= frame | x86.PTE_HUGE
    else:
        entries[1] |= PD_AT
        if size == 1 << 21:
            entries[2] |= frame | x86.PTE_HUGE
        else:
            entries[2] |= PT_AT
            entries[3] |= frame
    if mutation is not None and mutation[0] < len(entries):
        level, bit = mutation
        entries[level] |= 1 << bit
    return Case(vaddr, size, tuple(entries), frame | (vaddr & (size - 1)), access, user, wp,
                nxe)


@st.composite
def cases(draw) -> Case:
    size = draw(st.sampled_from(list(LEVELS_FOR)))
    index = (draw(st.integers(1, 511)), draw(st.integers(0, 511)),
             draw(st.integers(0, 511)), draw(st.integers(0, 511)))
    access = draw(st.sampled_from(["read", "write", "fetch"]))
    offset = draw(st.integers(0, 0xFF0 // 8)) * 8
    frame_page = draw(st.integers(0, 511))
    flags, mutation = level_flags(draw, LEVELS_FOR[size], access)
    return make_case(size, index, offset, frame_page, flags, mutation, access,
                     user=draw(st.booleans()), wp=draw(st.integers(0, 3)) != 0,
                     nxe=draw(st.integers(0, 5)) != 0)


def indices(vaddr: int) -> list[int]:
    return [(vaddr >> shift) & 0x1FF for shift in x86.LEVEL_SHIFTS]


def install(m: BareMachine, case: Case) -> None:
    tables = [PML4, PDPT_AT, PD_AT, PT_AT]
    for level, entry in enumerate(case.entries):
        m.u64(tables[level] + 8 * indices(case.vaddr)[level], entry)


def expectation(m: BareMachine, case: Case) -> tuple[paging.Walk, int | None]:
    result = paging.walk(m.memory.read_u64, PML4, case.vaddr, nxe=case.nxe)
    code = paging.fault_code(result, write=case.access == "write", user=case.user,
                             fetch=case.access == "fetch", wp=case.wp, nxe=case.nxe)
    return result, code


def run_access(case: Case) -> tuple[BareMachine, paging.Walk, int | None]:
    m = BareMachine()
    install(m, case)
    result, code = expectation(m, case)
    m.load(MAIN, **ROUTINES)
    m.gate(14, ROUTINE_AT["pf"])
    m.gate(0x80, ROUTINE_AT["done"], dpl=3)
    if case.access == "read":
        m.u64(case.paddr, VALUE)
    elif case.access == "fetch":
        m.memory.write(case.paddr, FETCHED)
    m.boot(efer=0xD01 if case.nxe else 0x501)
    if not case.wp:
        m.uc.reg_write(X.UC_X86_REG_CR0, m.reg(X.UC_X86_REG_CR0) & ~(1 << 16))
    for register, value in ((X.UC_X86_REG_RBX, case.vaddr), (X.UC_X86_REG_RDX, MAGIC),
                            (X.UC_X86_REG_R12, ROUTINE_AT[case.access]),
                            (X.UC_X86_REG_R13, int(case.user))):
        m.uc.reg_write(register, value)
    assert m.run(budget=10_000) == "halt"
    return m, result, code


def mismatch(case: Case) -> str | None:
    """Run the access in the guest; None if the walker predicted exactly what happened."""
    m, result, code = run_access(case)
    where = f"{case}\n{result.describe()}"
    if result.paddr is not None and (result.paddr, result.page_size) != (case.paddr,
                                                                         case.size):
        return f"walker translated to {result.paddr:#x}, tables say {case.paddr:#x}\n{where}"
    if code is None:
        if m.cpu.exceptions_by_vector != {0x80: 1}:
            return f"walker: no fault; guest: {m.cpu.exceptions_by_vector} " \
                   f"(#PF {m.memory.read_u64(RESULT):#x})\n{where}"
        if case.access == "read":
            ok = m.reg(X.UC_X86_REG_RAX) == VALUE
        elif case.access == "write":
            ok = m.memory.read_u64(case.paddr) == MAGIC
        else:
            ok = m.reg(X.UC_X86_REG_RAX) == MAGIC      # ran the code at case.paddr
        return None if ok else f"the access did not reach {case.paddr:#x}\n{where}"
    if m.cpu.exceptions_by_vector != {14: 1}:
        return f"walker: #PF {code:#x}; guest: {m.cpu.exceptions_by_vector}\n{where}"
    error, cr2 = m.memory.read_u64(RESULT), m.memory.read_u64(RESULT + 8)
    if (error, cr2) != (code, case.vaddr):
        return f"Unicorn: #PF {error:#x} at {cr2:#x}; walker: #PF {code:#x}\n{where}"
    return None


@settings(max_examples=200, derandomize=True, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_walker_agrees_with_unicorn_mmu(case):
    problem = mismatch(case)
    assert problem is None, problem


def test_property_generator_reaches_every_outcome():
    """The generator makes translations, not-present, protection and reserved-bit faults
    (so the property test means something)."""
    seen = set()

    @settings(max_examples=200, derandomize=True, deadline=None, database=None)
    @given(cases())
    def collect(case):
        m = BareMachine()
        install(m, case)
        _, code = expectation(m, case)
        outcome = "ok" if code is None else "rsvd" if code & x86.PF_RESERVED else \
            "np" if not code & x86.PF_PRESENT else "prot"
        seen.add(outcome)
        seen.add((case.size, outcome == "ok"))

    collect()
    assert {"ok", "np", "prot", "rsvd"} <= seen
    for size in LEVELS_FOR:
        assert (size, True) in seen and (size, False) in seen


SINGLE_CAUSES = [None, "P", "W", "U", "NX"] + MUTATIONS


@pytest.mark.parametrize("size", list(LEVELS_FOR), ids=["4K", "2M", "1G"])
def test_every_single_cause_agrees_with_unicorn_mmu(size):
    """Systematically: permissive tables with exactly one cause at one level, for every
    access kind and privilege (and CR0.WP=0, EFER.NXE=0 for the causes they affect)."""
    levels = LEVELS_FOR[size]
    problems = []
    for level in range(levels):
        for cause in SINGLE_CAUSES:
            if isinstance(cause, tuple) and cause[0] != level:
                continue
            if cause is None and level:
                continue
            for access in ("read", "write", "fetch"):
                for user in (False, True):
                    for wp, nxe in ((True, True), (False, True), (True, False)):
                        if not wp and (access != "write" or user or cause not in ("W", None)):
                            continue
                        if not nxe and cause not in ("NX", None):
                            continue
                        flags = [x86.PTE_PRESENT | x86.PTE_WRITABLE | x86.PTE_USER] * levels
                        mutation = cause if isinstance(cause, tuple) else None
                        if cause == "NX":
                            flags[level] |= x86.PTE_NO_EXECUTE
                        elif cause in ("P", "W", "U"):
                            flags[level] &= ~{"P": x86.PTE_PRESENT, "W": x86.PTE_WRITABLE,
                                              "U": x86.PTE_USER}[cause]
                        case = make_case(size, (300, 5, 7, 9), 0x238, 17, flags, mutation,
                                         access, user, wp, nxe)
                        problem = mismatch(case)
                        if problem:
                            problems.append(problem)
    assert not problems, f"{len(problems)} disagreements; first:\n" + problems[0]


# --- the walker on its own ------------------------------------------------------------------

class Tables:
    """Page tables in a dict: read_u64 for the walker, helpers to map pages."""

    def __init__(self) -> None:
        self.ram: dict[int, int] = defaultdict(int)
        self.next_table = 0x100000
        self.cr3 = self.table()

    def table(self) -> int:
        self.next_table += 0x1000
        return self.next_table

    def read_u64(self, paddr: int) -> int:
        return self.ram[paddr]

    def map(self, vaddr: int, paddr: int, size: int = 1 << 12, flags: int = 7,
            upper: int = 7) -> None:
        table = self.cr3
        leaf_level = {1 << 12: 3, 1 << 21: 2, 1 << 30: 1}[size]
        for level in range(leaf_level):
            slot = table + 8 * ((vaddr >> x86.LEVEL_SHIFTS[level]) & 0x1FF)
            if not self.ram[slot]:
                self.ram[slot] = self.table() | upper
            table = self.ram[slot] & x86.PTE_ADDRESS_MASK
        slot = table + 8 * ((vaddr >> x86.LEVEL_SHIFTS[leaf_level]) & 0x1FF)
        self.ram[slot] = paddr | flags | (x86.PTE_HUGE if size > 0x1000 else 0)

    def ranges(self, nxe: bool = True) -> list[tuple]:
        return [(r.start, r.end, r.paddr, r.writable, r.user, r.executable)
                for r in paging.mapped_ranges(self.read_u64, self.cr3, nxe=nxe)]


def test_mapped_ranges_merges_contiguous_pages():
    t = Tables()
    for page in range(16):
        t.map(0x400000 + page * 0x1000, 0x200000 + page * 0x1000)
    assert t.ranges() == [(0x400000, 0x410000, 0x200000, True, True, True)]


def test_mapped_ranges_splits_on_permissions_and_physical_gaps():
    t = Tables()
    t.map(0x400000, 0x200000)
    t.map(0x401000, 0x201000, flags=x86.PTE_PRESENT | x86.PTE_USER)          # read-only
    t.map(0x402000, 0x202000, flags=x86.PTE_PRESENT | x86.PTE_WRITABLE)      # supervisor
    t.map(0x403000, 0x203000, flags=7 | x86.PTE_NO_EXECUTE)
    t.map(0x404000, 0x300000)                                              # not contiguous
    t.map(0x405000, 0x301000)
    t.map(0x407000, 0x303000)                                              # virtual hole
    assert t.ranges() == [
        (0x400000, 0x401000, 0x200000, True, True, True),
        (0x401000, 0x402000, 0x201000, False, True, True),
        (0x402000, 0x403000, 0x202000, True, False, True),
        (0x403000, 0x404000, 0x203000, True, True, False),
        (0x404000, 0x406000, 0x300000, True, True, True),
        (0x407000, 0x408000, 0x303000, True, True, True),
    ]
    # without EFER.NXE bit 63 is reserved: that page is not mapped at all
    assert (0x403000, 0x404000, 0x203000, True, True, True) not in t.ranges(nxe=False)
    assert len(t.ranges(nxe=False)) == 5


def test_mapped_ranges_merges_huge_and_small_pages_and_upper_level_permissions():
    t = Tables()
    t.map(0x200000, 0x200000, size=1 << 21)
    for page in range(3):                       # continues the 2 MiB page physically
        t.map(0x400000 + page * 0x1000, 0x400000 + page * 0x1000)
    t.map(1 << 30, 1 << 30, size=1 << 30)
    t.map(0x7F00_0000_0000, 0x5000, upper=x86.PTE_PRESENT | x86.PTE_USER)    # RO via upper
    t.map(0xFFFF_8000_0000_0000, 0x6000)                                   # high half
    assert t.ranges() == [
        (0x200000, 0x403000, 0x200000, True, True, True),
        (1 << 30, 2 << 30, 1 << 30, True, True, True),
        (0x7F00_0000_0000, 0x7F00_0000_1000, 0x5000, False, True, True),
        (0xFFFF_8000_0000_0000, 0xFFFF_8000_0000_1000, 0x6000, True, True, True),
    ]
    text = paging.mapped_ranges(t.read_u64, t.cr3)[2].describe()
    assert text.startswith("00007f0000000000-00007f0000001000") and " ru" in text


def test_walk_reports_permissions_and_sizes():
    t = Tables()
    t.map(0x200000, 0xA00000, size=1 << 21, flags=x86.PTE_PRESENT | x86.PTE_USER)
    w = paging.walk(t.read_u64, t.cr3, 0x212345)
    assert (w.paddr, w.page_size, w.writable, w.user, w.executable, w.reserved) == \
        (0xA12345, 1 << 21, False, True, True, False)
    assert [step.level for step in w.steps] == ["PML4", "PDPT", "PD"]
    assert paging.fault_code(w, write=True, user=True, fetch=False) == 0x7
    assert paging.fault_code(w, write=True, user=False, fetch=False, wp=False) is None
    assert paging.fault_code(w, write=True, user=False, fetch=False, wp=True) == 0x3
    assert paging.fault_code(w, write=False, user=True, fetch=True) is None
    missing = paging.walk(t.read_u64, t.cr3, 0x400000)
    assert missing.paddr is None and not missing.reserved
    assert paging.fault_code(missing, write=False, user=True, fetch=True) == 0x14
    assert paging.fault_code(missing, write=False, user=True, fetch=True, nxe=False) == 0x4
    assert paging.walk(t.read_u64, t.cr3, 0x8000_0000_0000).problem == "non-canonical address"


@pytest.mark.parametrize("where, bit", [
    ("pte", 51), ("pte", 40), ("pde", 51), ("pml4e", 51), ("pml4e", 7),
    ("huge pde", 13), ("pte nx without nxe", 63),
])
def test_walk_flags_reserved_bits(where, bit):
    t = Tables()
    if where == "huge pde":
        t.map(0x200000, 0x400000, size=1 << 21)
    else:
        t.map(0x200000, 0x400000)
    level = {"pml4e": 0, "pde": 2, "huge pde": 2}.get(where, 3)
    w = paging.walk(t.read_u64, t.cr3, 0x200000)
    slot = w.steps[level].entry_address
    t.ram[slot] |= 1 << bit
    w = paging.walk(t.read_u64, t.cr3, 0x200000, nxe=where != "pte nx without nxe")
    assert w.reserved and w.paddr is None
    assert "reserved" in w.problem and x86.PAGING_LEVELS[level] in w.problem
    nxe = where != "pte nx without nxe"
    assert paging.fault_code(w, write=False, user=False, fetch=False, nxe=nxe) == \
        x86.PF_PRESENT | x86.PF_RESERVED
    assert paging.fault_code(w, write=True, user=True, fetch=False, nxe=nxe) == 0xF
    # an entry's reserved bits do not matter while it is not present
    t.ram[slot] &= ~x86.PTE_PRESENT
    w = paging.walk(t.read_u64, t.cr3, 0x200000, nxe=nxe)
    assert not w.reserved and paging.fault_code(w, False, False, False) == 0
    assert len(paging.mapped_ranges(t.read_u64, t.cr3, nxe=nxe)) == 0


def test_walk_describe_names_each_level():
    t = Tables()
    t.map(0x201000, 0x5000)
    text = paging.walk(t.read_u64, t.cr3, 0x201234).describe()
    assert text.splitlines()[0] == "page walk of 0x0000000000201234:"
    for name in x86.PAGING_LEVELS:
        assert name in text
    assert "-> physical 0x5234 (4 KiB page, WUX)" in text


def test_cpu_walk_uses_the_live_efer_nxe():
    """A walk outside any delivery must see EFER.NXE as it is now: NX is a permission then,
    not a reserved bit."""
    from emu.bare import BareMachine, PT0, DEMAND, P, W
    m = BareMachine()
    m.load("hlt")
    m.u64(PT0 + 8 * (DEMAND >> 12), DEMAND | P | W | (1 << 63))
    m.boot(efer=0xD00)                 # NXE on, set after the Cpu was built
    result = m.cpu.walk(DEMAND)
    assert result.paddr == DEMAND and not result.reserved and not result.executable


# --- the scan cache ---------------------------------------------------------------------

def _random_tables(data, pages: dict[int, bytearray]) -> int:
    """A random 4-level hierarchy in `pages` (paddr -> 4096 bytes); returns the root."""
    from hypothesis import strategies as st
    next_page = [0x100000]

    def table() -> int:
        paddr, next_page[0] = next_page[0], next_page[0] + 0x1000
        pages[paddr] = bytearray(4096)
        return paddr

    def fill(paddr: int, level: int) -> None:
        for index in data.draw(st.lists(st.integers(0, 511), max_size=4, unique=True)):
            flags = data.draw(st.sampled_from([0x3, 0x7, 0x1, 0x8000000000000003, 0x83]))
            if level < 3 and not flags & 0x80 and data.draw(st.booleans()):
                child = table()
                fill(child, level + 1)
                entry = child | flags
            else:
                entry = (data.draw(st.integers(0, 0xFFFFF)) << 12) | flags
                if level in (1, 2) and data.draw(st.booleans()):
                    entry |= 0x80                         # a large page (maybe misaligned)
            struct.pack_into("<Q", pages[paddr], 8 * index, entry)

    root = table()
    fill(root, 0)
    return root


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_scan_cache_gives_what_a_fresh_scan_gives(data):
    pages: dict[int, bytearray] = {}
    root = _random_tables(data, pages)

    def read_raw(paddr: int) -> bytes:
        if paddr not in pages:
            raise UnbackedAccess(paddr, 4096)
        return bytes(pages[paddr])

    cache = paging.ScanCache()
    first = paging.scan(read_raw, root, True, cache)
    assert first == paging.scan(read_raw, root, True)
    if not first.unreadable:           # a table with no RAM behind it is never "unchanged"
        assert paging.scan(read_raw, root, True, cache) is first     # nothing changed
    for _ in range(data.draw(st.integers(1, 4))):                     # change some entries
        paddr = data.draw(st.sampled_from(sorted(pages)))
        index = data.draw(st.integers(0, 511))
        struct.pack_into("<Q", pages[paddr], 8 * index, data.draw(st.sampled_from(
            [0, 0x5003, 0x200083, 0x8000000000007003, (1 << 51) | 0x3])))
    again = paging.scan(read_raw, root, True, cache)
    fresh = paging.scan(read_raw, root, True)
    assert again == fresh
    assert [leaf.start for leaf in again.leaves] == sorted(leaf.start for leaf in again.leaves)


def test_scan_cache_sees_a_shared_table_changed_while_another_root_was_scanned():
    # Two roots share a PDPT and its PD (a kernel half): a leaf removed from the PD and
    # seen first through root B must not leave root A's cached space claiming the leaf.
    pages = {paddr: bytearray(4096) for paddr in (0x1000, 0x2000, 0x3000, 0x4000)}
    for root in (0x1000, 0x2000):
        struct.pack_into("<Q", pages[root], 8 * 256, 0x3000 | 0x3)
    struct.pack_into("<Q", pages[0x3000], 0, 0x4000 | 0x3)
    struct.pack_into("<Q", pages[0x4000], 0, 0x200000 | 0x83)     # a 2 MiB leaf
    cache = paging.ScanCache()

    def read_raw(paddr: int) -> bytes:
        return bytes(pages[paddr])

    assert len(paging.scan(read_raw, 0x1000, True, cache).leaves) == 1
    assert len(paging.scan(read_raw, 0x2000, True, cache).leaves) == 1
    struct.pack_into("<Q", pages[0x4000], 0, 0)
    assert paging.scan(read_raw, 0x2000, True, cache).leaves == ()
    assert paging.scan(read_raw, 0x1000, True, cache).leaves == ()
