"""The heap's page cache (guest/heap/pages.c): released pages stay mapped up to heapcache=N
pages, a claim takes them back before the PMM, and the PMM drains them (its shrinker)
before it fails an allocation.

The guest's self-tests (guest/test/selftest.c) do the work and check the counts from inside;
these tests also read the `heap_descriptor` from outside, as a leak check would, and run the
page-table and heap checkers over them.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from emu.build import build_guest
from emu.machine import Machine, MachineConfig
from emu.monitor.checks import attach as attach_pt
from emu.monitor.heapcheck import read_heap_descriptor
from emu.workloads.heap_replay import parse_trace, replay

TRACES = Path(__file__).resolve().parent.parent / "traces" / "malloclab"
BUDGET = 1_000_000_000


def boot(cmdline: str) -> tuple[Machine, str]:
    machine = Machine(MachineConfig(kernel=build_guest(), cmdline=cmdline,
                                    max_instructions=BUDGET))
    result = machine.run()
    output = machine.serial_output()
    assert result.reason == "exit", result.report or output
    return machine, output


@pytest.mark.parametrize("heap", ["chained", "buddy", "slab"])
def test_exhausted_pmm_drains_the_cache_and_the_allocation_succeeds(heap):
    machine, output = boot(f"selftest=heap-cache heap={heap}")
    assert "selftest heap-cache: ok" in output, output
    found = re.search(r"(\d+) pages cached, (\d+) frames free; with none left the next "
                      r"pmm_alloc drained the cache and got 0x([0-9a-f]+); (\d+) frames", output)
    cached, free, frame, taken = int(found[1]), int(found[2]), int(found[3], 16), int(found[4])
    assert cached >= 8 and frame != 0
    assert taken >= free + cached          # the drained pages were all handed out
    descriptor = read_heap_descriptor(machine)
    assert descriptor is not None and descriptor.cached_pages == 0


@pytest.mark.parametrize("heap", ["chained", "buddy", "slab"])
def test_the_watermark_bounds_the_cache(heap):
    machine, output = boot(f"selftest=heap-cache-watermark heap={heap} heapcache=16")
    assert "selftest heap-cache-watermark: ok" in output, output
    found = re.search(r"(\d+) pages released, (\d+) kept \(heapcache=16\)", output)
    assert int(found[1]) > 16 and int(found[2]) == 16
    descriptor = read_heap_descriptor(machine)
    assert descriptor.cache_watermark == 16 and descriptor.cached_pages == 16
    assert descriptor.pages >= descriptor.cached_pages


def test_the_selftest_catches_a_cache_that_keeps_too_much():
    """The watermark test fails when the cache may keep all it was given: it could be false."""
    machine = Machine(MachineConfig(kernel=build_guest(), max_instructions=BUDGET,
                                    cmdline="selftest=heap-cache-watermark heapcache=4096"))
    machine.run()
    assert "check failed" in machine.serial_output()


def test_a_watermark_above_the_table_panics_in_one_line():
    machine = Machine(MachineConfig(kernel=build_guest(), max_instructions=BUDGET,
                                    cmdline="heapcache=8193"))
    machine.run()
    assert "panic: heap_init: heapcache=8193 is above the most, 8192 pages" in \
        machine.serial_output()


@pytest.mark.parametrize("test", ["heap-cache", "heap-cache-watermark"])
def test_checkers_see_no_fault_with_the_cache_in_use(test):
    """Cached pages stay mapped and moved or evicted ones are unmapped with invlpg: the
    page-table checker's rules hold, checked every 20,000 instructions."""
    machine = Machine(MachineConfig(kernel=build_guest(), max_instructions=BUDGET,
                                    cmdline=f"selftest={test} heapcache=16"))
    checker = attach_pt(machine, every=20_000)
    result = machine.run()
    assert result.reason == "exit" and f"selftest {test}: ok" in machine.serial_output()
    assert checker.violations == []


def test_cached_pages_count_in_the_footprint():
    """A trace whose frees fill the cache: the utilization is the same with and without it
    (a claim takes a cached page before the PMM), the figures differ only in cost."""
    trace = parse_trace(TRACES / "short2-bal.rep")
    kernel = build_guest()
    with_cache = replay(kernel, trace, "chained", bare=True).outcome
    without = replay(kernel, trace, "chained", bare=True, extra_cmdline="heapcache=0").outcome
    assert with_cache.ok and without.ok
    assert with_cache.peak_footprint == without.peak_footprint
