#!/usr/bin/env python
"""Swapping benchmarks: tests/programs/swaphog.c (sequential writes and reads, random
touches, loops) run as the kernel's first process with a swap disk.

    python bench/swap.py [--quick] [--repeats N] [--json PATH]

(a) host throughput: pages swapped (out and in, from the kernel's swap_descriptor) per
    second of host time (Machine.run()), with the swap checker on and off, medians of
    interleaved rounds (bench/common.py); the checker's cost is their ratio. Target (issue
    12): at least 5,000 pages a second with the checker on.
(b) guest instructions per swap-in fault: from the #PF delivery from ring 3 to the `iretq`
    back to ring 3, minus the device wait (every interrupt taken meanwhile, delivery to its
    own `iretq`, and the `hlt` it ended), for the faults that noted a SwapIn. Counts are
    exact and deterministic (two runs must agree).
(c) major faults (swap-ins) per replacement policy on the same workloads: a sequential
    scan (no random touches), a random mix, and a loop slightly larger than the user frames.

Prints Markdown tables and writes bench/swap_results.json.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from unicorn import x86_const as X

from emu.build import build_guest, build_program
from emu.events import ExceptionDelivered, Observer
from emu.machine import MachineConfig
from emu.monitor.swapcheck import POLICIES, read_descriptor
from emu.workloads.process import HostConsole, ProgramSpec, run_program
from emu.x86 import PAGE_FAULT
from common import host, interleaved_rounds, publish
from processes import _iretq_address

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "swap_results.json"
HOG = ROOT / "tests" / "programs" / "swaphog.c"
BUDGET = 5_000_000_000
MEMORY, SWAP, LATENCY = 64 << 20, 64 << 20, 2000
USER_MEM = 1 << 20                                   # 256 user frames
THROUGHPUT = ("4096", "3000")                        # KiB, random touches
QUICK_THROUGHPUT = ("1024", "500")
# (c): name -> swaphog arguments; the loop is 1.25x the user frames, the others 4x.
POLICY_WORKLOADS = {"sequential scan": ("4096", "0"), "random": ("4096", "4000"),
                    "loop 1.25x RAM": ("1280", "0")}
QUICK_POLICY_WORKLOADS = {"random": ("1024", "500")}
TARGET_PAGES_PER_SECOND = 5_000


class SwapInTimer(Observer):
    """Instructions per swap-in fault from ring 3, the device wait excluded (see (b))."""

    def __init__(self) -> None:
        self.faults: list[int] = []
        self._start: int | None = None
        self._waited = 0
        self._interrupt: int | None = None
        self._swapped = False
        self._machine = None

    def on_exception(self, event: ExceptionDelivered) -> None:
        if event.vector == PAGE_FAULT and event.cpl == 3:
            self._start, self._waited, self._swapped = event.icount, 0, False
        elif self._start is not None:
            # the hlt that waited retired just before this delivery: part of the wait
            self._interrupt = event.icount - 1

    def on_swap_in(self, event) -> None:
        self._swapped = True

    def attach(self, machine) -> None:
        self._machine = machine
        machine.hooks.on_execute(_iretq_address(machine), self._on_iretq)

    def _on_iretq(self, uc, address: int, size: int, _data) -> None:
        if self._start is None:
            return
        cpu = self._machine.cpu
        now = cpu.time_stamp(address)
        cs = int.from_bytes(cpu.read_virtual(uc.reg_read(X.UC_X86_REG_RSP) + 8, 8), "little")
        if cs & 3 == 0:
            if self._interrupt is not None:
                self._waited += now - self._interrupt + 1
                self._interrupt = None
            return
        if self._swapped:
            self.faults.append(now - self._start + 1 - self._waited)
        self._start = None


def _run(kernel: Path, hog: Path, args, policy: str = "clock", check: bool = True,
         observers=(), attach=None) -> dict:
    out = bytearray()
    config = MachineConfig(kernel=kernel, max_instructions=BUDGET, memory=MEMORY, swap=SWAP,
                           swap_latency=LATENCY,
                           cmdline=f"user_mem={USER_MEM // 1024}K swap_policy={policy}")
    result = run_program(ProgramSpec(hog, tuple(args)), config,
                         HostConsole(out.extend, lambda _: None), list(observers),
                         attach=attach, swap_check=check)
    stats = read_descriptor(result.machine)[1]
    if result.status != 0 or (result.swap is not None and result.swap.findings):
        raise RuntimeError(f"swaphog {' '.join(args)} ({policy}): status {result.status}, "
                           f"{result.run.message}")
    return {"seconds": result.run.seconds, "instructions": result.run.instructions,
            "pages_out": stats.pages_out, "pages_in": stats.pages_in,
            "clean_drops": stats.clean_drops, "output": bytes(out)}


def throughput(kernel: Path, hog: Path, args, repeats: int) -> dict:
    rounds = interleaved_rounds(
        {name: (lambda check=check: (lambda r: (r["seconds"], r))(_run(kernel, hog, args,
                                                                         check=check)))
         for name, check in (("checker on", True), ("checker off", False))}, repeats)
    out: dict = {"args": list(args)}
    for name, runs in rounds.items():
        seconds = statistics.median(run[0] for run in runs)
        pages = runs[0][1]["pages_out"] + runs[0][1]["pages_in"]
        out[name] = {"pages_swapped": pages, "median_seconds": seconds,
                     "pages_per_second": pages / seconds}
    out["checker_cost_ratio"] = out["checker on"]["median_seconds"] / \
        out["checker off"]["median_seconds"]
    out["target_pages_per_second"] = TARGET_PAGES_PER_SECOND
    out["met"] = out["checker on"]["pages_per_second"] >= TARGET_PAGES_PER_SECOND
    return out


def swap_in_cost(kernel: Path, hog: Path, args) -> dict:
    measured = []
    for _ in range(2):
        timer = SwapInTimer()
        _run(kernel, hog, args, observers=[timer], attach=timer.attach)
        measured.append(timer.faults)
    if measured[0] != measured[1]:
        raise RuntimeError("two runs measured different swap-in faults: not deterministic")
    faults = measured[0]
    return {"faults": len(faults), "median": statistics.median(faults),
            "min": min(faults), "max": max(faults)}


def policies(kernel: Path, hog: Path, workloads: dict) -> dict:
    table: dict = {}
    for name, args in workloads.items():
        runs = {policy: _run(kernel, hog, args, policy=policy) for policy in POLICIES}
        outputs = {run["output"] for run in runs.values()}
        if len(outputs) != 1:
            raise RuntimeError(f"{name}: the policies printed different output")
        table[name] = {"args": list(args),
                       **{policy: run["pages_in"] for policy, run in runs.items()}}
    return table


def table(results: dict) -> str:
    t, s = results["throughput"], results["swap_in"]
    lines = ["| swap benchmark | value |", "| --- | --- |"]
    for name in ("checker on", "checker off"):
        lines.append(f"| pages swapped per host second, {name} | "
                     f"{t[name]['pages_per_second']:,.0f} ({t[name]['pages_swapped']:,} "
                     f"pages in {t[name]['median_seconds']:.2f} s) |")
    lines.append(f"| checker cost (on / off) | {t['checker_cost_ratio']:.2f}x |")
    lines.append(f"| guest instructions per swap-in fault, device wait excluded (median) | "
                 f"{s['median']:,} (min {s['min']:,}, max {s['max']:,}, {s['faults']:,} "
                 f"faults) |")
    lines += ["", f"| workload (user frames: {USER_MEM // 4096}) | " +
              " | ".join(POLICIES) + " |", "| --- |" + " --- |" * len(POLICIES)]
    for name, row in results["policies"].items():
        lines.append(f"| {name} (swaphog {' '.join(row['args'])}) | " +
                     " | ".join(f"{row[p]:,}" for p in POLICIES) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small workloads, 3 rounds")
    parser.add_argument("--repeats", type=int, help="rounds of (a) (default 5; 3 with --quick)")
    parser.add_argument("--json", type=Path, default=RESULTS, help=f"default {RESULTS}")
    args = parser.parse_args(argv)
    repeats = args.repeats or (3 if args.quick else 5)
    if repeats < 3:
        parser.error("--repeats must be at least 3")
    started = time.perf_counter()
    kernel, hog = build_guest(), build_program(HOG)
    workload = QUICK_THROUGHPUT if args.quick else THROUGHPUT
    results = {"quick": args.quick, "repeats": repeats, "host": host(),
               "throughput": throughput(kernel, hog, workload, repeats),
               "swap_in": swap_in_cost(kernel, hog, workload),
               "policies": policies(kernel, hog, QUICK_POLICY_WORKLOADS if args.quick
                                    else POLICY_WORKLOADS)}
    results["wall_seconds"] = time.perf_counter() - started
    publish(args.json, results, table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
