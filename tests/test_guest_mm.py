"""Tests of the guest kernel's memory managers: the PMM (bitmap and buddy backends) and its
own page tables, driven by the kernel's `selftest=NAME` command-line option.

Every run is in-process: `Machine(MachineConfig(...)).run()`. A self-test passes when the
kernel prints ``selftest NAME: ok`` and exits with 0 through the debug-exit port; a broken
invariant panics (exit value 1). Besides the guest's own checks, some tests look from the
outside after the run: they read the `pmm_descriptor` the kernel exports and walk the page
tables CR3 points to with the monitor's walker, so the guest cannot fool itself.

The 64 GiB runs allocate every frame (16.7 M) exhaustively: about 14 s for the bitmap and
27 s for the buddy backend at 300-400 guest MIPS; the second is marked slow.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile
from unicorn import x86_const as X

from emu import x86
from emu.arch import paging
from emu.build import build_guest
from emu.machine import Machine, MachineConfig, RunResult

GIB = 1 << 30
PAGE = 4096
PMMS = ("bitmap", "buddy")
PRESETS = ("pc", "tiny", "fragmented")
SELFTESTS = ("pmm", "pmm-random", "paging")

EXIT_OK, EXIT_PANIC = 0, 1
USABLE, BAD_MEMORY, BOOTLOADER_RECLAIMABLE = 0, 4, 5
HHDM = 0xFFFF_8000_0000_0000
CR0_WP, CR4_PGE = 1 << 16, 1 << 7
MSR_EFER, EFER_NXE = 0xC0000080, 1 << 11

# Instruction budgets: a runaway guest ends as reason "budget" instead of hanging the suite.
SMALL_BUDGET = 1_000_000_000            # the small maps need under 0.15 G
EXHAUSTIVE_64G_BUDGET = 20_000_000_000  # 5.3 G (bitmap) and 7.7 G (buddy) measured

DESCRIPTOR = struct.Struct("<IIIIQQQQQQQQQQ")     # pmm.h: 96 bytes
DESCRIPTOR_MAGIC = 0x444D4D50                     # "PMMD"
BITMAP, BUDDY = 1, 2


@dataclass(frozen=True, slots=True)
class Run:
    machine: Machine
    result: RunResult
    output: str


def run_kernel(kernel: Path, cmdline: str, memmap: str = "pc", memory: int | None = None,
               budget: int = SMALL_BUDGET) -> Run:
    machine = Machine(MachineConfig(kernel=kernel, cmdline=cmdline, memmap=memmap,
                                    memory=memory, max_instructions=budget))
    result = machine.run()
    return Run(machine, result, machine.serial_output())


def assert_ok(run: Run, test: str) -> None:
    assert run.result.reason == "exit", run.result.report or run.output
    assert run.result.guest_value == EXIT_OK, run.output
    assert re.search(rf"^selftest {re.escape(test)}: ok", run.output, re.M), run.output
    assert "kmain: done" in run.output


@pytest.fixture(scope="module")
def kernel() -> Path:
    """The plain build (the same one conftest.py's session fixture gives)."""
    return build_guest()


@pytest.fixture(scope="module")
def debug_kernel() -> Path:
    return build_guest(defines={"MM_DEBUG": "1"})


@pytest.fixture(scope="module")
def kernel_1g() -> Path:
    return build_guest(defines={"PAGING_FORCE_1G": "1"})


# --- The self-tests on every preset, with both PMMs -----------------------------------------

@pytest.mark.parametrize("test", SELFTESTS)
@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("pmm", PMMS)
def test_selftest_passes(kernel, pmm, preset, test):
    run = run_kernel(kernel, f"pmm={pmm} selftest={test}", memmap=preset)
    assert_ok(run, test)
    assert f"mm: {pmm} pmm," in run.output


@pytest.mark.parametrize("test", SELFTESTS)
@pytest.mark.parametrize("pmm", PMMS)
def test_selftest_passes_with_poisoning(debug_kernel, pmm, test):
    """MM_DEBUG poisons every freed and reclaimed frame; pmm-random then checks the poison,
    and the boot responses kmain still reads after mm_init must have survived."""
    run = run_kernel(debug_kernel, f"pmm={pmm} selftest={test} test=int3", memmap="tiny")
    assert_ok(run, test)
    assert "test int3: returned from the breakpoint handler" in run.output


def test_pmm_defaults_to_bitmap(kernel):
    run = run_kernel(kernel, "selftest=pmm", memmap="tiny")
    assert_ok(run, "pmm")
    assert "mm: bitmap pmm," in run.output


def test_pmm_selftest_counts_every_free_frame(kernel):
    run = run_kernel(kernel, "selftest=pmm", memmap="fragmented")
    assert_ok(run, "pmm")
    managed = re.search(r"(\d+) USABLE \+ (\d+) reclaimed = (\d+) managed frames; (\d+) metadata, "
                        r"(\d+) page tables, (\d+) free", run.output)
    assert managed, run.output
    usable, reclaimed, total, metadata, tables, free = map(int, managed.groups())
    memmap = run.machine.boot.memmap
    assert usable == sum(r.length for r in memmap.regions if r.type == USABLE) // PAGE - 1
    assert total == usable + reclaimed and free == total - metadata - tables
    tracked = int(re.search(r"selftest pmm: ok (\d+) frames \(all free frames\)", run.output)[1])
    assert 0 < free - tracked <= 2          # the tracking bitmap's own frames


# --- 64 GiB ---------------------------------------------------------------------------------

@pytest.mark.parametrize("pmm", [pytest.param("bitmap"),
                                 pytest.param("buddy", marks=pytest.mark.slow)])
def test_64g_exhaustive_pmm(kernel, pmm):
    run = run_kernel(kernel, f"pmm={pmm} selftest=pmm", memory=64 * GIB,
                     budget=EXHAUSTIVE_64G_BUDGET)
    assert_ok(run, "pmm")
    frames = int(re.search(r"selftest pmm: ok (\d+) frames \(all free frames\)", run.output)[1])
    assert frames > 16_000_000


@pytest.mark.parametrize("pmm", PMMS)
def test_64g_partial_pmm(kernel, pmm):
    run = run_kernel(kernel, f"pmm={pmm} selftest=pmm selftest-frames=100000", memory=64 * GIB)
    assert_ok(run, "pmm")
    assert "selftest pmm: ok 100000 frames (selftest-frames limit)" in run.output


def test_64g_paging_with_1g_pages(kernel_1g):
    """Unicorn's CPUID lacks Page1GB but its MMU walks 1 GiB entries: the test build forces
    them, for the HHDM and the self-test's 1 GiB page (read through, since it is RAM)."""
    run = run_kernel(kernel_1g, "selftest=paging", memory=64 * GIB)
    assert_ok(run, "paging")
    assert "1 GiB pages tested" in run.output
    hhdm = walk(run, HHDM + 8 * GIB)
    assert hhdm.paddr == 8 * GIB and hhdm.page_size == GIB


# --- Misuse panics --------------------------------------------------------------------------

@pytest.mark.parametrize("pmm", PMMS)
@pytest.mark.parametrize("test, message", [
    pytest.param("pmm-double-free", r"panic: pmm_free: double free of 0x[0-9a-f]+$",
                 id="double-free"),
    pytest.param("pmm-unmanaged", r"panic: pmm_free: 0x100000 is not managed RAM$",
                 id="unmanaged"),
])
def test_misuse_panics(kernel, pmm, test, message):
    run = run_kernel(kernel, f"pmm={pmm} selftest={test}")
    assert run.result.reason == "exit" and run.result.guest_value == EXIT_PANIC
    assert re.search(message, run.output, re.M), run.output


@pytest.mark.parametrize("cmdline, message", [
    pytest.param("pmm=slab", "panic: mm_init: unknown pmm=slab (use bitmap or buddy)",
                 id="pmm"),
    pytest.param("selftest=nothing", "panic: selftest: unknown test 'nothing'", id="selftest"),
])
def test_bad_options_panic(kernel, cmdline, message):
    run = run_kernel(kernel, cmdline, memmap="tiny")
    assert run.result.guest_value == EXIT_PANIC and message in run.output


# --- From the outside: the descriptor and the page tables -----------------------------------

def elf_symbols(path: Path) -> dict[str, int]:
    with path.open("rb") as stream:
        table = ELFFile(stream).get_section_by_name(".symtab")
        return {s.name: s["st_value"] for s in table.iter_symbols() if s.name}


def walk(run: Run, vaddr: int) -> paging.Walk:
    """The monitor's page walk through the guest's current CR3, with the live EFER.NXE
    (Cpu.walk reads NXE from a context snapshot that run() leaves stale)."""
    machine = run.machine
    nxe = bool(machine.uc.reg_read(X.UC_X86_REG_MSR, MSR_EFER) & EFER_NXE)
    return paging.walk(machine.memory.read_u64, machine.cpu.cr3(), vaddr, nxe=nxe)


def read_descriptor(run: Run, kernel: Path) -> dict[str, int]:
    where = walk(run, elf_symbols(kernel)["pmm_descriptor"]).paddr
    assert where is not None
    raw = run.machine.memory.read(where, DESCRIPTOR.size)
    names = ("magic", "version", "kind", "max_order", "map", "map_bytes", "links", "base_pfn",
             "frames", "total_frames", "free_frames", "hhdm_offset", "meta_base", "meta_frames")
    return dict(zip(names, DESCRIPTOR.unpack(raw)))


def free_frames(run: Run, d: dict[str, int]) -> set[int]:
    """The free frame numbers, decoded the way pmm.h documents the map."""
    data = run.machine.memory.read(d["map"], d["map_bytes"])
    if d["kind"] == BITMAP:
        bits = int.from_bytes(data, "little")
        return {d["base_pfn"] + i for i in range(d["frames"]) if not bits >> i & 1}
    free = set()
    for match in re.finditer(rb"[\x80-\x8f]", data[:d["frames"]]):
        order = match.group()[0] & 0x0F
        assert order <= d["max_order"] and match.start() % (1 << order) == 0
        free.update(range(d["base_pfn"] + match.start(),
                          d["base_pfn"] + match.start() + (1 << order)))
    return free


@pytest.mark.parametrize("pmm, kind", [("bitmap", BITMAP), ("buddy", BUDDY)])
def test_descriptor_shows_the_free_frames(kernel, pmm, kind):
    run = run_kernel(kernel, f"pmm={pmm} selftest=pmm-random selftest-steps=3000",
                     memmap="fragmented")
    assert_ok(run, "pmm-random")
    d = read_descriptor(run, kernel)
    assert (d["magic"], d["version"], d["kind"]) == (DESCRIPTOR_MAGIC, 1, kind)
    assert d["hhdm_offset"] == HHDM
    free = free_frames(run, d)
    assert len(free) == d["free_frames"] and d["free_frames"] <= d["total_frames"]
    ram = set()
    for region in run.machine.boot.memmap.regions:
        if region.type in (USABLE, BOOTLOADER_RECLAIMABLE):
            ram.update(range(region.base // PAGE, (region.base + region.length) // PAGE))
    assert free <= ram and 0 not in free
    meta = set(range(d["meta_base"] // PAGE, d["meta_base"] // PAGE + d["meta_frames"]))
    assert not free & meta


def test_kernel_page_tables_from_the_outside(kernel):
    """After mm_init CR3 holds the kernel's own PML4: sections with their own rights, all
    global; the HHDM over RAM, never executable; no identity map; BAD_MEMORY unmapped."""
    run = run_kernel(kernel, "", memmap="fragmented")
    assert run.result.guest_value == EXIT_OK
    cpu, symbols = run.machine.cpu, elf_symbols(kernel)
    assert cpu.cr3() & ~0xFFF != run.machine.boot.cr3
    assert cpu.reg(X.UC_X86_REG_CR0) & CR0_WP and cpu.reg(X.UC_X86_REG_CR4) & CR4_PGE
    walks = {name: walk(run, symbols[name]) for name in
             ("__text_start", "__rodata_start", "__data_start", "pmm_descriptor")}
    assert (walks["__text_start"].writable, walks["__text_start"].executable) == (False, True)
    assert (walks["__rodata_start"].writable, walks["__rodata_start"].executable) == \
        (False, False)
    for name in ("__data_start", "pmm_descriptor"):
        assert (walks[name].writable, walks[name].executable) == (True, False)
    assert all(w.steps[-1].entry & x86.PTE_GLOBAL for w in walks.values())
    assert walk(run, 0x1000).paddr is None
    for region in run.machine.boot.memmap.regions:
        for paddr in (region.base, region.base + region.length - 1):
            hhdm = walk(run, HHDM + paddr)
            if region.type in (USABLE, BOOTLOADER_RECLAIMABLE):
                assert hhdm.paddr == paddr and hhdm.writable and not hhdm.executable
            elif region.type == BAD_MEMORY:
                assert hhdm.paddr is None
