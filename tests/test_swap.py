"""Swapping end to end: a program larger than the memory its processes may use runs under
emu exec with a swap disk and prints what it prints natively, the swap checker finds
nothing on the correct kernel, and each planted swap bug (guest/test/planted.h, 401-404)
is caught by the rule that claims it."""
from __future__ import annotations

from pathlib import Path

import pytest

from differential import BUDGET, native, program
from emu.build import build_guest
from emu.events import Observer
from emu.machine import MachineConfig
from emu.monitor.swapcheck import read_descriptor
from emu.workloads.process import HostConsole, KernelLines, ProgramSpec, run_program

SWAP = 32 << 20
HOG_ARGS = ["512", "500"]   # KiB, random touches
MEMORY = 64 << 20
USER_MEM = "256K"           # 64 frames for user pages: the hog below needs 512 KiB and more


class SwapEvents(Observer):
    def __init__(self) -> None:
        self.outs: list = []
        self.ins: list = []

    def on_swap_out(self, event) -> None:
        self.outs.append(event)

    def on_swap_in(self, event) -> None:
        self.ins.append(event)


def run_swapped(path: Path, args=(), policy: str = "clock", plant: int = 0,
                user_mem: str = USER_MEM, latency: int = 2000):
    out, err, lines = bytearray(), bytearray(), []
    events = SwapEvents()
    kernel = build_guest(defines={"PLANT_BUG": str(plant)}) if plant else build_guest()
    config = MachineConfig(kernel=kernel, max_instructions=BUDGET, memory=MEMORY,
                           cmdline=f"user_mem={user_mem} swap_policy={policy}", swap=SWAP,
                           swap_latency=latency)
    spec = ProgramSpec(Path(path), tuple(args), argv0=str(path))
    result = run_program(spec, config, HostConsole(out.extend, err.extend, None),
                         [KernelLines(lines.append), events])
    stats = read_descriptor(result.machine)
    return bytes(out), result, stats[1] if stats else None, events, lines


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["clock", "fifo", "random"])
def test_a_hog_larger_than_user_memory_prints_what_it_prints_natively(policy):
    hog = program("swaphog")
    want = native(hog, HOG_ARGS)
    out, result, stats, events, lines = run_swapped(hog, HOG_ARGS, policy=policy)
    assert (out, result.status) == (want.stdout, want.status), lines
    assert stats is not None and stats.policy == policy
    assert stats.pages_out > 64 and stats.pages_in > 0
    assert len(events.outs) == stats.pages_out + stats.clean_drops
    assert len(events.ins) == stats.pages_in + stats.cache_hits
    assert result.swap.findings == []


def test_without_a_limit_nothing_swaps_and_the_checker_stays_quiet():
    hog = program("swaphog")
    out, result, stats, events, _ = run_swapped(hog, ["256", "100"], user_mem="64M")
    assert out == native(hog, ["256", "100"]).stdout
    assert stats.pages_out == 0 and events.outs == [] and result.swap.findings == []


@pytest.mark.slow
@pytest.mark.parametrize("plant,rule", [(401, "DIRTY_DROPPED"), (402, "SWAP_CONTENT"),
                                        (403, "SLOT_REUSED"), (404, "SWAP_ENTRY_INVALID")])
def test_each_planted_swap_bug_is_caught_by_its_rule(plant, rule):
    out, result, stats, events, lines = run_swapped(program("swaphog"), HOG_ARGS, plant=plant)
    rules = {finding.rule for finding in result.swap.findings}
    assert rule in rules, (rules, lines[-5:])
