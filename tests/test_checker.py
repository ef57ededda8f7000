"""The invariant checker (emu/checker.py): the correct kernel's self-tests give no violation
on every preset with both PMMs; each planted bug (guest built with -DPLANT_BUG=N) is caught
by its rule at its address; every rule on hand-built page tables in a bare machine; the PMM
maps decoded as guest/mm/pmm.h documents them; --strict, --check-every and traces."""
from __future__ import annotations

import functools
import json
import re
import struct
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile
from hypothesis import given, settings
from hypothesis import strategies as st
from unicorn import x86_const as X

from emu import x86
from emu.monitor import checks as checker

from emu.arch import paging
from emu.build import build_guest
from emu.monitor.checks import (DESCRIPTOR, DESCRIPTOR_MAGIC, PMM_BITMAP, PMM_BUDDY, RULES,
                         InvariantChecker, Platform, PmmDescriptor, PmmState)
from emu.cli import main
from emu.events import EventBus, InvariantViolation, Observer
from emu.machine import Machine, MachineConfig
from emu.result import EXIT_STATUS, RunEnd
from emu.hw.memmap import MemoryType, Region
from emu.monitor.trace import read_trace

from emu.bare import CODE, DEMAND, PML4, PT0, BareMachine
from conftest import deadline

GIB = 1 << 30
PAGE = 4096
PMMS = ("bitmap", "buddy")
PRESETS = ("pc", "tiny", "fragmented")
SELFTESTS = ("pmm", "pmm-random", "paging")
SCRATCH = 0xFFFF_C000_0000_0000          # guest/test/selftest.c: PML4 slot 384
P, W, U, PS, NX = x86.PTE_PRESENT, x86.PTE_WRITABLE, x86.PTE_USER, x86.PTE_HUGE, x86.PTE_NO_EXECUTE
REQUIRED = ("MAP_OUTSIDE_RAM", "RESERVED_WRITABLE", "USER_KERNEL_HALF", "WRITE_EXEC",
            "RESERVED_BITS", "TABLE_PAGE_FREE", "MAPPED_FREE_FRAME", "PMM_NOT_USABLE",
            "KERNEL_HALF_DIFFERS", "STALE_TLB")


# --- Running the kernel with the checker -----------------------------------------------------

@functools.lru_cache(maxsize=None)
def planted(bug: int) -> Path:
    return build_guest(defines={"PLANT_BUG": str(bug)})


def checked_run(kernel: Path, cmdline: str, **options):
    machine = Machine(MachineConfig(kernel=kernel, cmdline=cmdline,
                                    max_instructions=2_000_000_000, **options))
    found = checker.attach(machine)
    with deadline(60):
        result = machine.run()
    return machine, result, found


def elf_symbol(kernel: Path, name: str) -> int:
    with kernel.open("rb") as stream:
        return ELFFile(stream).get_section_by_name(".symtab").get_symbol_by_name(name)[0][
            "st_value"]


def describe(found: InvariantChecker) -> str:
    return "\n".join(f"{v.rule} {v.address:#x}: {v.detail}" for v in found.violations)


def test_rules_are_named_and_documented():
    ids = [rule.id for rule in RULES]
    assert len(set(ids)) == len(ids)
    assert set(REQUIRED) <= set(ids)
    for rule in RULES:
        assert re.fullmatch(r"[A-Z_]+", rule.id)
        assert rule.meaning.endswith(").") and "address:" in rule.meaning
        assert rule.example


@pytest.mark.parametrize("test", SELFTESTS)
@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("pmm", PMMS)
def test_correct_kernel_has_no_violations(kernel, pmm, preset, test):
    machine, result, found = checked_run(kernel, f"pmm={pmm} selftest={test}", memmap=preset)
    output = machine.serial_output()
    assert result.reason == "exit" and result.guest_value == 0, result.report or output
    assert f"selftest {test}: ok" in output
    assert found.checks >= 3                 # CR3 load, two checkpoints (and page faults)
    assert found.violations == [], describe(found)


@pytest.mark.parametrize("cmdline", ["selftest=paging",
                                     "selftest=pmm selftest-frames=100000"])
@pytest.mark.parametrize("pmm", PMMS)
def test_correct_kernel_on_64g_has_no_violations(kernel, pmm, cmdline):
    machine, result, found = checked_run(kernel, f"pmm={pmm} {cmdline}", memory=64 * GIB)
    assert result.reason == "exit" and result.guest_value == 0, machine.serial_output()
    assert found.checks >= 3 and found.violations == [], describe(found)


def test_1g_pages_have_no_violations():
    """The HHDM and the self-test's 1 GiB page as 1 GiB entries (PAGING_FORCE_1G)."""
    kernel = build_guest(defines={"PAGING_FORCE_1G": "1"})
    machine, result, found = checked_run(kernel, "selftest=paging", memory=64 * GIB)
    assert "1 GiB pages tested" in machine.serial_output()
    assert found.checks >= 3 and found.violations == [], describe(found)


@pytest.mark.slow
@pytest.mark.parametrize("pmm", PMMS)
def test_64g_exhaustive_pmm_has_no_violations(kernel, pmm):
    machine = Machine(MachineConfig(kernel=kernel, cmdline=f"pmm={pmm} selftest=pmm",
                                    memory=64 * GIB, max_instructions=20_000_000_000))
    found = checker.attach(machine)
    result = machine.run()
    assert result.reason == "exit" and result.guest_value == 0, machine.serial_output()
    assert found.checks >= 3 and found.violations == [], describe(found)


def test_checks_see_the_pmm(kernel):
    """The descriptor is found and decoded on the real kernel (or the PMM rules would be
    silent for the wrong reason)."""
    machine, result, found = checked_run(kernel, "pmm=buddy", memmap="tiny")
    pmm = found.pmm_state(machine.cpu.cr3() & x86.PTE_ADDRESS_MASK)
    assert pmm is not None and pmm.descriptor.kind == PMM_BUDDY
    free = sum(1 for pfn in range(pmm.descriptor.base_pfn,
                                  pmm.descriptor.base_pfn + pmm.descriptor.frames)
               if pmm.is_free(pfn))
    assert free == pmm.descriptor.free_frames > 0


# --- Planted bugs ------------------------------------------------------------------------------

def _page_down(value: int) -> int:
    return value & ~(PAGE - 1)


@pytest.mark.parametrize("pmm", PMMS)
@pytest.mark.parametrize("bug, rule", [(1, "WRITE_EXEC"), (2, "USER_KERNEL_HALF"),
                                       (3, "STALE_TLB"), (4, "PMM_NOT_USABLE"),
                                       (6, "MAPPED_FREE_FRAME"), (7, "TABLE_PAGE_FREE")])
def test_planted_bug_is_caught_by_its_rule(pmm, bug, rule):
    kernel = planted(bug)
    machine, result, found = checked_run(kernel, f"pmm={pmm} selftest=planted")
    output = machine.serial_output()
    assert result.reason == "exit" and "selftest planted: done" in output, output
    assert [v.rule for v in found.violations] == [rule], describe(found)
    violation = found.violations[0]
    if bug == 1:
        expected = _page_down(elf_symbol(kernel, "__data_start"))
    elif bug == 2:
        expected = _page_down(elf_symbol(kernel, "__rodata_start"))
    elif bug in (3, 6):
        expected = SCRATCH
    elif bug == 4:
        expected = int(re.search(r"freeing RESERVED frame (0x[0-9a-f]+)", output)[1], 16)
    else:
        pd_entry = paging.walk(machine.memory.read_u64, machine.cpu.cr3(), SCRATCH).steps[2]
        expected = pd_entry.entry & x86.PTE_ADDRESS_MASK      # the freed page table
    assert violation.address == expected, describe(found)
    if bug == 6:
        frame = int(re.search(r"freeing (0x[0-9a-f]+), still mapped", output)[1], 16)
        assert f"frame {frame:#x}" in violation.detail
    if rule != "PMM_NOT_USABLE":
        assert f"page walk of {SCRATCH if bug == 7 else expected:#018x}:" in violation.detail


@pytest.mark.parametrize("pmm", PMMS)
def test_planted_double_free_panics(pmm):
    machine, result, found = checked_run(planted(5), f"pmm={pmm} selftest=planted")
    output = machine.serial_output()
    assert result.reason == "exit" and result.guest_value == 1
    freed = re.search(r"^panic: pmm_free: double free of (0x[0-9a-f]+)$", output, re.M)
    assert freed, output
    assert found.violations == [], describe(found)     # the PMM caught it first


def test_strict_ends_the_run_with_status_73(capsys):
    status = main(["run", "--quiet", "--strict", str(planted(3)), "--cmdline",
                   "selftest=planted"])
    out, err = capsys.readouterr()
    assert status == EXIT_STATUS[RunEnd.VIOLATION] == 73
    assert "=== stopped: invariant violation STALE_TLB at 0xffffc00000000000" in err
    assert "page walk of 0xffffc00000000000:" in err and "backtrace:" in err
    assert "--- invariant checks: " in err and "violations: STALE_TLB x1" in err
    assert "Traceback" not in err


def test_strict_stops_the_machine_early():
    machine = Machine(MachineConfig(kernel=planted(1), cmdline="selftest=planted"))
    checker.attach(machine, strict=True)
    result = machine.run()
    assert (result.reason, result.exit_status) == ("violation", 73)
    assert result.message.startswith("invariant violation WRITE_EXEC at 0xffffffff8")
    assert "selftest planted" not in machine.serial_output()     # stopped in mm_init


def test_check_prints_violations_and_counts(capsys):
    status = main(["run", "--quiet", "--check", str(planted(6)), "--cmdline",
                   "selftest=planted"])
    err = capsys.readouterr().err
    assert status == 0
    assert re.search(r"^emu: invariant violation MAPPED_FREE_FRAME at 0xffffc00000000000: "
                     r"frame 0x[0-9a-f]+, mapped at 0xffffc00000000000, is free in the PMM$",
                     err, re.M), err
    assert "violations: MAPPED_FREE_FRAME x1" in err


def test_check_every_also_checks_between_checkpoints(kernel):
    plain = Machine(MachineConfig(kernel=planted(3), cmdline="selftest=planted"))
    plain_result = plain.run()
    machine = Machine(MachineConfig(kernel=planted(3), cmdline="selftest=planted"))
    periodic = []
    found = checker.attach(machine, every=50_000)
    original = found.check
    found.check = lambda *a, **k: periodic.append(k.get("reason")) or original(*a, **k)
    result = machine.run()
    assert result.instructions == plain_result.instructions     # deterministic, exact
    assert periodic.count("periodic") == result.instructions // 50_000
    assert [v.rule for v in found.violations] == ["STALE_TLB"]


def test_violations_and_checkpoints_go_into_the_trace(tmp_path, capsys):
    trace = tmp_path / "run.jsonl"
    assert main(["run", "--quiet", "--check", "--trace", str(trace), str(planted(7)),
                 "--cmdline", "selftest=planted"]) == 0
    capsys.readouterr()
    _, events = read_trace(trace)
    events = list(events)
    checkpoints = [e["number"] for e in events if e["type"] == "Checkpoint"]
    assert checkpoints == [1, 3, 2]          # mm_init, planted, selftest returned
    violations = [e for e in events if e["type"] == "InvariantViolation"]
    assert [e["rule"] for e in violations] == ["TABLE_PAGE_FREE"]
    assert "page walk of" in violations[0]["detail"]
    json.dumps(violations)


# --- The PMM maps, decoded ---------------------------------------------------------------------

def pmm_state(kind: int, data: bytes, base_pfn: int = 0, max_order: int = 10) -> PmmState:
    m = BareMachine()
    m.memory.write(0x600000, data)
    frames = len(data) * 8 if kind == PMM_BITMAP else len(data)
    d = PmmDescriptor(DESCRIPTOR_MAGIC, 1, kind, max_order, 0x600000, len(data), 0, base_pfn,
                      frames, frames, 0, 0, 0, 0)
    return PmmState(d, m.memory)


@settings(max_examples=60, deadline=None)
@given(bits=st.lists(st.booleans(), min_size=8, max_size=300), base=st.integers(0, 4096),
       lo=st.integers(0, 320), length=st.integers(0, 320))
def test_bitmap_first_free_matches_a_model(bits, base, lo, length):
    frames = (len(bits) + 7) // 8 * 8
    bits = bits + [True] * (frames - len(bits))             # padding bits: not free
    data = sum(1 << i for i, used in enumerate(bits) if used).to_bytes(frames // 8, "little")
    state = pmm_state(PMM_BITMAP, data, base_pfn=base)
    start, end = base + lo - 10, base + lo - 10 + length
    free = [base + i for i, used in enumerate(bits) if not used and start <= base + i < end]
    assert state.first_free(start, end) == (free[0] if free else None)


@settings(max_examples=60, deadline=None)
@given(orders=st.lists(st.one_of(st.none(), st.integers(0, 4)), min_size=1, max_size=40),
       lo=st.integers(0, 700), length=st.integers(0, 300))
def test_buddy_first_free_matches_a_model(orders, lo, length):
    """Free blocks laid out left to right, each aligned to its size; None is a used frame."""
    data = bytearray()
    free: set[int] = set()
    for order in orders:
        if order is None:
            data.append(0)
            continue
        while len(data) % (1 << order):
            data.append(0)
        free.update(range(len(data), len(data) + (1 << order)))
        data += bytes([0x80 | order]) + bytes((1 << order) - 1)
    state = pmm_state(PMM_BUDDY, bytes(data), base_pfn=1024, max_order=4)
    start, end = 1024 + lo, 1024 + lo + length
    expected = [1024 + f for f in sorted(free) if start <= 1024 + f < end]
    assert state.first_free(start, end) == (expected[0] if expected else None)


# --- Every rule on hand-built page tables --------------------------------------------------------

KERNEL_VA = 0xFFFF_FFFF_8000_0000       # where the "kernel image" (and the descriptor) lives
KERNEL_PA = 0x500000
DESCRIPTOR_PA = 0x500000
BITMAP_PA = 0x501000
TABLES = 0x600000                       # the bump allocator for hand-built tables
FRAMES = 0x800                          # 8 MiB of RAM
REGIONS = (Region(0, 0x700000, MemoryType.USABLE),
           Region(0x700000, 0x10000, MemoryType.ACPI_NVS),
           Region(0x710000, 0x10000, MemoryType.RESERVED),
           Region(0x720000, 0xE0000, MemoryType.USABLE))


class Space:
    """An address space built by hand in a bare machine's RAM; tables come from a bump
    allocator, table entries are P|W|U (the leaves decide), leaves are what map() says."""

    def __init__(self, m: BareMachine, at: int = TABLES) -> None:
        self.m = m
        self.next = at
        self.root = self.table()

    def table(self) -> int:
        page, self.next = self.next, self.next + PAGE
        self.m.memory.write(page, bytes(PAGE))
        return page

    def entry_address(self, vaddr: int, level: int) -> int:
        """The entry at `level` (0 = PML4 ... 3 = PT) for vaddr, making tables above it."""
        table = self.root
        for depth in range(level):
            address = table + 8 * ((vaddr >> x86.LEVEL_SHIFTS[depth]) & 0x1FF)
            entry = self.m.memory.read_u64(address)
            if not entry & P:
                entry = self.table() | P | W | U
                self.m.memory.write_u64(address, entry)
            table = entry & x86.PTE_ADDRESS_MASK
        return table + 8 * ((vaddr >> x86.LEVEL_SHIFTS[level]) & 0x1FF)

    def map(self, vaddr: int, paddr: int, flags: int = P | W | NX, size: int = PAGE) -> int:
        level = {PAGE: 3, 1 << 21: 2, 1 << 30: 1}[size]
        address = self.entry_address(vaddr, level)
        self.m.memory.write_u64(address, paddr | flags | (PS if size > PAGE else 0))
        return address


def make_bare(free_frames=(), **platform) -> tuple[BareMachine, Space, InvariantChecker]:
    """A bare machine with a PMM descriptor and bitmap (every frame used but `free_frames`),
    a clean address space (the descriptor's page as "kernel image", some data, some user
    code) and a checker for it; `platform` overrides fields of its Platform."""
    m = BareMachine()
    m.boot()                     # CR0.PG, EFER.NXE, CR3 = the bare machine's identity map
    m.memory.write(BITMAP_PA, b"\xff" * (FRAMES // 8))
    free(m, *free_frames)
    m.memory.write(DESCRIPTOR_PA, DESCRIPTOR.pack(
        DESCRIPTOR_MAGIC, 1, PMM_BITMAP, 0, BITMAP_PA, FRAMES // 8, 0, 0, FRAMES, FRAMES,
        len(free_frames), 0, BITMAP_PA, 1))
    space = Space(m)
    space.map(KERNEL_VA, KERNEL_PA, P | NX)
    space.map(KERNEL_VA + PAGE, KERNEL_PA + PAGE, P | W | NX)
    space.map(0xFFFF_9000_0000_0000, 0x200000, P | W | NX, size=1 << 21)
    space.map(0x40_0000_0000, 0x300000, P | U)               # user code
    fields = dict(regions=REGIONS, kernel_offset=KERNEL_VA - KERNEL_PA,
                  pmm_descriptor=KERNEL_VA)
    fields.update(platform)
    return m, space, InvariantChecker(m.memory, m.cpu, m.events, Platform(**fields))


def free(m: BareMachine, *pfns: int) -> None:
    """Mark frames free in the bare machine's PMM bitmap."""
    for pfn in pfns:
        byte = m.memory.read(BITMAP_PA + pfn // 8, 1)[0]
        m.memory.write(BITMAP_PA + pfn // 8, bytes([byte & ~(1 << pfn % 8)]))


def found(check: InvariantChecker) -> list[tuple[str, int]]:
    return [(v.rule, v.address) for v in check.violations]


def test_hand_built_space_is_clean():
    m, space, check = make_bare(free_frames=(0x400,))
    assert check.check(space.root) is not None
    assert found(check) == []
    assert check.checks == 1


def test_rule_map_outside_ram():
    m, space, check = make_bare(devices=((0xFD00_0000, 0xFD01_0000),))
    space.map(0xFFFF_A000_0000_0000, 0x1000_0000, P | NX)         # 256 MiB: no RAM there
    space.map(0xFFFF_A000_0001_0000, 0xFD00_0000, P | W | NX)     # a declared device
    check.check(space.root)
    assert found(check) == [("MAP_OUTSIDE_RAM", 0xFFFF_A000_0000_0000)]


def test_rule_reserved_writable():
    m, space, check = make_bare()
    space.map(0xFFFF_A000_0000_0000, 0x700000, P | NX)            # ACPI NVS, read-only: fine
    space.map(0xFFFF_A000_0001_0000, 0x711000, P | W | NX)        # RESERVED, writable
    check.check(space.root)
    assert found(check) == [("RESERVED_WRITABLE", 0xFFFF_A000_0001_0000)]
    assert "RESERVED memory 0x711000-0x712000 writable" in check.violations[0].detail


def test_rule_user_kernel_half():
    m, space, check = make_bare()
    space.map(0xFFFF_A000_0000_0000, 0x100000, P | U | NX)
    space.map(0xFFFF_A000_0000_1000, 0x101000, P | NX)            # supervisor: fine
    check.check(space.root)
    assert found(check) == [("USER_KERNEL_HALF", 0xFFFF_A000_0000_0000)]


def test_rule_write_exec():
    m, space, check = make_bare()
    space.map(0xFFFF_A000_0020_0000, 0x200000, P | W, size=1 << 21)
    check.check(space.root)
    assert found(check) == [("WRITE_EXEC", 0xFFFF_A000_0020_0000)]
    assert "2 MiB page, WSX" in check.violations[0].detail


def test_rule_reserved_bits():
    m, space, check = make_bare()
    space.map(0xFFFF_A000_0000_0000, 0x100000 | 1 << 51, P | NX)
    space.map(0xFFFF_A000_0020_0000, 0x202000, P | NX, size=1 << 21)   # unaligned 2 MiB
    check.check(space.root)
    assert found(check) == [("RESERVED_BITS", 0xFFFF_A000_0000_0000),
                            ("RESERVED_BITS", 0xFFFF_A000_0020_0000)]


def test_rule_table_page_free():
    m, space, check = make_bare()
    pt = space.map(0xFFFF_A000_0000_0000, 0x100000, P | NX) & ~(PAGE - 1)
    free(m, pt >> 12)
    check.check(space.root)
    assert found(check) == [("TABLE_PAGE_FREE", pt)]


def test_rule_mapped_free_frame_outside_the_direct_maps():
    m, space, check = make_bare(free_frames=(0x100, 0x101, 0x450),
                                hhdm_offset=0xFFFF_8000_0000_0000)
    space.map(0xFFFF_A000_0000_0000, 0x100000, P | NX)            # a free frame: use after free
    space.map(KERNEL_VA + 0x101000 - KERNEL_PA, 0x101000, P | NX)  # at the kernel offset: fine
    space.map(0xFFFF_8000_0045_0000, 0x450000, P | W | NX)        # in the HHDM: fine
    check.check(space.root)
    assert found(check) == [("MAPPED_FREE_FRAME", 0xFFFF_A000_0000_0000)]


def test_rule_pmm_not_usable():
    m, space, check = make_bare(free_frames=(0x712, 0x400))       # 0x712000 is RESERVED
    check.check(space.root)
    assert found(check) == [("PMM_NOT_USABLE", 0x712000)]
    m, space, check = make_bare()
    space.next = 0x715000                                         # tables in RESERVED memory
    space.map(0xFFFF_A000_0000_0000, 0x100000, P | NX)
    check.check(space.root)
    rules = {rule for rule, _ in found(check)}
    assert rules == {"PMM_NOT_USABLE"}
    assert {address for _, address in found(check)} == {0x715000, 0x716000, 0x717000}


def test_rule_kernel_half_differs():
    m, space, check = make_bare()
    other = Space(m, at=0x680000)
    for index in range(256, 512):                                 # copy the kernel half...
        m.memory.write_u64(other.root + 8 * index, m.memory.read_u64(space.root + 8 * index))
    check.check(space.root)
    check.check(other.root)
    assert found(check) == []
    other.map(0xFFFF_B000_0000_0000, 0x100000, P | NX)            # ...then diverge
    check.check(other.root)
    assert found(check) == [("KERNEL_HALF_DIFFERS", 0xFFFF_B000_0000_0000)]


def test_loader_tables_and_paging_off_are_not_checked():
    m, space, check = make_bare(loader_root=TABLES)               # the root Space makes first
    space.map(0xFFFF_A000_0000_0000, 0x100000, P | W)             # W+X, but the loader's
    assert check.check(space.root) is None and check.violations == []
    m.uc.reg_write(X.UC_X86_REG_CR0, 0x11)
    assert check.check() is None


# --- STALE_TLB on a running bare machine --------------------------------------------------------

STALE = 0x300000                        # identity-mapped page the guest reads
NEVER_READ = 0x301000


def pte(vaddr: int) -> int:
    return PT0 + 8 * (vaddr >> 12)


def stale_machine(after: str, handler: str = "iretq", first: str = "mov rbx, qword ptr [rcx]",
                  stale_pte: int = 0) -> tuple[BareMachine, InvariantChecker]:
    """The guest loads CR3 (the checker's shadow starts), reads STALE (`first`: Unicorn's TLB
    now holds it), sets its PTE to `stale_pte` and clears NEVER_READ's without invlpg, runs
    `after` and halts."""
    m = BareMachine()
    regions = (Region(0, 8 << 20, MemoryType.USABLE),)
    check = InvariantChecker(m.memory, m.cpu, m.events, Platform(regions))
    m.events.subscribe(check)
    m.load(f"""
        mov rax, {PML4}
        mov cr3, rax
        mov rcx, {STALE}
        {first}
        mov rdi, {pte(STALE)}
        mov rax, {stale_pte}
        mov qword ptr [rdi], rax
        mov rax, {PML4}
        mov rdi, {pte(NEVER_READ)}
        mov qword ptr [rdi], 0
        {after}
        hlt
    """, pf=handler)
    m.gate(14, CODE + 0x1000)
    m.boot()
    m.cpu.watch_privileged([(CODE, CODE + 0x2000)])
    assert m.run() == "halt"
    assert check.rule("STALE_TLB").shadow_root == PML4
    return m, check


def stale(check: InvariantChecker) -> list[tuple[str, int]]:
    return [(v.rule, v.address) for v in check.violations if v.rule == "STALE_TLB"]


def test_stale_tlb_after_an_unmap_without_invlpg():
    m, check = stale_machine("mov rdx, qword ptr [rcx]")
    assert m.reg(X.UC_X86_REG_RDX) == m.reg(X.UC_X86_REG_RBX)    # read through the old entry
    assert stale(check) == []
    check.check()
    assert stale(check) == [("STALE_TLB", STALE)]
    detail = next(v.detail for v in check.violations if v.rule == "STALE_TLB")
    assert "PT entry not present" in detail and f"page walk of {STALE:#018x}" in detail


def test_stale_tlb_after_a_write_protect_without_invlpg():
    m, check = stale_machine("mov qword ptr [rcx], 7", first="mov qword ptr [rcx], 5",
                             stale_pte=STALE | P)
    assert m.memory.read_u64(STALE) == 7          # written through the old, writable entry
    check.check()
    assert stale(check) == [("STALE_TLB", STALE)]
    detail = next(v.detail for v in check.violations if v.rule == "STALE_TLB")
    assert f"allows a write of {STALE:#x} -> {STALE:#x}" in detail
    assert "without write permission" in detail


def test_no_stale_tlb_after_invlpg():
    m, check = stale_machine("invlpg [rcx]")
    check.check()
    assert stale(check) == []


def test_no_stale_tlb_after_a_cr3_reload():
    m, check = stale_machine("mov cr3, rax")
    check.check()
    assert stale(check) == []


def test_stale_tlb_probe_inside_a_page_fault_keeps_the_guest_state():
    """The check at a #PF probes from inside Unicorn's interrupt hook; a failed probe (the
    page never read) clobbers CR2, which the checker puts back."""
    m, check = stale_machine(f"""
        mov rsi, {DEMAND}
        mov rdi, qword ptr [rsi]
        mov r8, cr2
        mov r9, 0x600d
    """, handler="add rsp, 8\n add qword ptr [rsp], 3\n iretq")
    assert m.cpu.exceptions_by_vector == {14: 1}
    assert m.reg(X.UC_X86_REG_R8) == DEMAND and m.reg(X.UC_X86_REG_R9) == 0x600D
    assert stale(check) == [("STALE_TLB", STALE)]


def test_violation_events_reach_other_observers():
    seen = []

    class Listener(Observer):
        def on_invariant_violation(self, event: InvariantViolation) -> None:
            seen.append(event)

    m, space, check = make_bare()
    m.events.subscribe(Listener())
    space.map(0xFFFF_A000_0000_0000, 0x100000, P | W)
    check.check(space.root)
    check.check(space.root)                                       # reported once
    assert [(e.rule, e.address) for e in seen] == [("WRITE_EXEC", 0xFFFF_A000_0000_0000)]
    assert check.counts == {"WRITE_EXEC": 1} and check.checks == 2
    assert isinstance(m.events, EventBus)
    assert struct.calcsize("<IIIIQQQQQQQQQQ") == DESCRIPTOR.size == 96
