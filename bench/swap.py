#!/usr/bin/env python
"""Swapping benchmarks: tests/programs/swaphog.c (sequential writes and reads, random
touches, loops) and tests/programs/hotcold.c run as the kernel's first process with a swap
disk.

    python bench/swap.py [--quick] [--repeats N] [--json PATH]

(a) host throughput: pages swapped (out and in, from the kernel's swap_descriptor) per
    second of host time (Machine.run()), with the swap checker on and off, medians of
    interleaved rounds (bench/common.py); the checker's cost is their ratio. Target (issue
    12): at least 5,000 pages a second with the checker on. Pages read ahead count as
    swapped in (they were read and mapped); the run's read-ahead share is reported beside.
(b) guest instructions per swap-in fault: from the #PF delivery from ring 3 to the `iretq`
    back to ring 3, minus the device wait (every interrupt taken meanwhile, delivery to its
    own `iretq`, and the `hlt` it ended), for the faults that noted a SwapIn. Counts are
    exact and deterministic (two runs must agree).
(c) major faults (pages read back from swap) per replacement policy on the same workloads,
    page by page (swap_cluster=1: no clusters, no read-ahead, the model OPT assumes), beside
    Belady's OPT with as many frames, computed from the reference string recorded on a
    machine without memory pressure (emu/monitor/refstring.py).
(d) the host cost of one request's completion: host time from the driver's notify (the
    entry of virtio_mmio_notify) to the delivery of the completion interrupt, median per
    request kind and size, on the run of (a) with the checker on.
(e) the cost of a clock scan per page: guest instructions of one step of the clock that
    gives a referenced frame its second chance (evict() from its entry to its ret: the
    Accessed bit tested and cleared, invlpg, the frame moved to the tail).

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
from emu.monitor.refstring import ReferenceRecorder, opt_major_faults
from emu.monitor.swapcheck import POLICIES, read_descriptor
from emu.workloads.process import HostConsole, ProgramSpec, run_program
from emu.x86 import PAGE_FAULT
from capstone import CS_ARCH_X86, CS_MODE_64, Cs
from common import host, interleaved_rounds, publish
from processes import _iretq_address

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "swap_results.json"
HOG = ROOT / "tests" / "programs" / "swaphog.c"
HOTCOLD = ROOT / "tests" / "programs" / "hotcold.c"
BUDGET = 5_000_000_000
MEMORY, SWAP, LATENCY = 64 << 20, 64 << 20, 2000
USER_MEM = 1 << 20                                   # 256 user frames
THROUGHPUT = ("4096", "3000")                        # KiB, random touches
QUICK_THROUGHPUT = ("1024", "500")
# (c): name -> (program, arguments), on POLICY_FRAMES user frames; the scans are 4x them.
POLICY_FRAMES = 64
POLICY_WORKLOADS = {"sequential scan": (HOG, ("1024", "0")),
                    "random": (HOG, ("1024", "1500")),
                    "loop 1.25x RAM": (HOG, ("320", "0")),
                    "hot/cold (90% of touches on 1/8 of the pages)":
                        (HOTCOLD, ("1024", "128", "4000"))}
QUICK_POLICY_WORKLOADS = {"random": (HOG, ("256", "300"))}
BLK_VECTOR = 0x40                                    # guest/dev/virtio_blk.c
SECOND_CHANCE = 2                                    # enum evict_result, guest/mm/swap.c
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
         observers=(), attach=None, frames: int = USER_MEM // 4096, cluster: int = 32,
         swap: bool = True) -> dict:
    out = bytearray()
    config = MachineConfig(kernel=kernel, max_instructions=BUDGET, memory=MEMORY,
                           swap=SWAP if swap else None, swap_latency=LATENCY,
                           cmdline=f"user_mem={frames * 4}K swap_policy={policy} "
                                   f"swap_cluster={cluster}")
    result = run_program(ProgramSpec(hog, tuple(args)), config,
                         HostConsole(out.extend, lambda _: None), list(observers),
                         attach=attach, swap_check=check)
    if result.status != 0 or (result.swap is not None and result.swap.findings):
        raise RuntimeError(f"{hog.name} {' '.join(args)} ({policy}): status {result.status}, "
                           f"{result.run.message}")
    found = read_descriptor(result.machine)
    stats = found[1] if found else None
    return {"seconds": result.run.seconds, "instructions": result.run.instructions,
            "pages_out": stats.pages_out if stats else 0,
            "pages_in": stats.pages_in if stats else 0,
            "readahead": stats.readahead if stats else 0,
            "requests": stats.write_requests + stats.read_requests if stats else 0,
            "clean_drops": stats.clean_drops if stats else 0, "output": bytes(out)}


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
                     "pages_per_second": pages / seconds,
                     "pages_read_ahead": runs[0][1]["readahead"],
                     "requests": runs[0][1]["requests"]}
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
    return {"faults": len(faults), "median": statistics.median_low(faults),
            "min": min(faults), "max": max(faults)}


def record(kernel: Path, program: Path, args) -> list:
    """The reference string of `program args` on a machine that holds it all (no swap)."""
    recorder = ReferenceRecorder()
    _run(kernel, program, args, frames=MEMORY // 4096, swap=False, check=False,
         attach=recorder.attach)
    if recorder.unknown:
        raise RuntimeError(f"{program.name}: {recorder.unknown} accesses to unknown frames")
    return recorder.refs


def policies(kernel: Path, workloads: dict) -> dict:
    table: dict = {}
    for name, (source, args) in workloads.items():
        program = build_program(source)
        runs = {policy: _run(kernel, program, args, policy=policy, frames=POLICY_FRAMES,
                             cluster=1) for policy in POLICIES}
        outputs = {run["output"] for run in runs.values()}
        if len(outputs) != 1:
            raise RuntimeError(f"{name}: the policies printed different output")
        refs = record(kernel, program, args)
        table[name] = {"program": source.stem, "args": list(args),
                       **{policy: run["pages_in"] for policy, run in runs.items()},
                       "opt": opt_major_faults(refs, POLICY_FRAMES),
                       "references": len(refs), "pages": len(set(refs))}
    return table


class CompletionTimer(Observer):
    """Host seconds from each notify to its completion interrupt's delivery (see (d))."""

    def __init__(self) -> None:
        self.times: dict[str, list[float]] = {}
        self._start: float | None = None
        self._kind: str | None = None

    def attach(self, machine) -> None:
        machine.hooks.on_execute(machine.symbols.address_of("virtio_mmio_notify"),
                                 self._on_notify)

    def _on_notify(self, uc, address: int, size: int, _data) -> None:
        self._start, self._kind = time.perf_counter(), None

    def on_block_request(self, event) -> None:
        self._kind = f"{event.length // 4096}-page {'writes' if event.kind == 'out' else 'reads'}"

    def on_exception(self, event: ExceptionDelivered) -> None:
        if event.vector == BLK_VECTOR and self._start is not None and self._kind:
            self.times.setdefault(self._kind, []).append(time.perf_counter() - self._start)
            self._start = None


def completion_cost(kernel: Path, hog: Path, args) -> dict:
    timer = CompletionTimer()
    _run(kernel, hog, args, observers=[timer], attach=timer.attach)
    return {kind: {"requests": len(times), "median_us": statistics.median(times) * 1e6}
            for kind, times in sorted(timer.times.items(), key=lambda kv: -len(kv[1]))
            if len(times) >= 10}


class ClockStepTimer(Observer):
    """Guest instructions of each evict() that gave a second chance (see (e))."""

    def __init__(self) -> None:
        self.steps: list[int] = []
        self._start: int | None = None
        self._machine = None

    def attach(self, machine) -> None:
        self._machine = machine
        start, size = machine.symbols.address_of("evict"), machine.symbols.size_of("evict")
        if start is None or not size:
            raise RuntimeError("the kernel has no evict symbol")
        machine.hooks.on_execute(start, self._on_entry)
        code = machine.cpu.read_virtual(start, size)
        for address, _size, mnemonic, _ in Cs(CS_ARCH_X86, CS_MODE_64).disasm_lite(code, start):
            if mnemonic == "ret":
                machine.hooks.on_execute(address, self._on_ret)

    def _on_entry(self, uc, address: int, size: int, _data) -> None:
        self._start = self._machine.cpu.time_stamp(address)

    def _on_ret(self, uc, address: int, size: int, _data) -> None:
        if self._start is not None and uc.reg_read(X.UC_X86_REG_RAX) == SECOND_CHANCE:
            self.steps.append(self._machine.cpu.time_stamp(address) - self._start + 1)
        self._start = None


def clock_step_cost(kernel: Path, hog: Path, args) -> dict:
    timer = ClockStepTimer()
    _run(kernel, hog, args, observers=[timer], attach=timer.attach, check=False)
    steps = timer.steps
    return {"steps": len(steps), "median": statistics.median_low(steps), "min": min(steps),
            "max": max(steps)}


def table(results: dict) -> str:
    t, s = results["throughput"], results["swap_in"]
    lines = ["| swap benchmark | value |", "| --- | --- |"]
    for name in ("checker on", "checker off"):
        lines.append(f"| pages swapped per host second, {name} | "
                     f"{t[name]['pages_per_second']:,.0f} ({t[name]['pages_swapped']:,} "
                     f"pages in {t[name]['median_seconds']:.2f} s, "
                     f"{t[name]['pages_read_ahead']:,} read ahead, "
                     f"{t[name]['requests']:,} requests) |")
    lines.append(f"| checker cost (on / off) | {t['checker_cost_ratio']:.2f}x |")
    lines.append(f"| guest instructions per swap-in fault, device wait excluded (median) | "
                 f"{s['median']:,} (min {s['min']:,}, max {s['max']:,}, {s['faults']:,} "
                 f"faults) |")
    for kind, row in results["completion"].items():
        lines.append(f"| host time of a request's completion, notify to interrupt delivered, "
                     f"{kind} (median of {row['requests']:,}) | {row['median_us']:,.0f} us |")
    c = results["clock_step"]
    lines.append(f"| guest instructions per page of a clock scan (a second chance, median of "
                 f"{c['steps']:,}) | {c['median']:,} (min {c['min']:,}, max {c['max']:,}) |")
    lines += ["", f"| workload ({POLICY_FRAMES} user frames, page by page) | " +
              " | ".join(POLICIES) + " | OPT |", "| --- |" + " --- |" * (len(POLICIES) + 1)]
    for name, row in results["policies"].items():
        lines.append(f"| {name} (`{row['program']} {' '.join(row['args'])}`) | " +
                     " | ".join(f"{row[p]:,}" for p in POLICIES) + f" | {row['opt']:,} |")
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
               "completion": completion_cost(kernel, hog, workload),
               "clock_step": clock_step_cost(kernel, hog, workload),
               "policies": policies(kernel, QUICK_POLICY_WORKLOADS if args.quick
                                    else POLICY_WORKLOADS)}
    results["wall_seconds"] = time.perf_counter() - started
    publish(args.json, results, table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
