#!/usr/bin/env python
"""Guest PMM benchmarks: instructions per allocate+free pair, and boot time at 64 GiB.

    python bench/pmm.py [--quick] [--repeats N] [--json PATH]

(a) pairs: the kernel runs `selftest=pmm-bench` (guest/test/selftest.c) on the default `pc`
    machine (256 MiB) with pmm=bitmap or buddy, for blocks of one frame (pmm_alloc and
    pmm_free) and of 16 frames aligned to 16 (order 4: pmm_alloc_contiguous and
    pmm_free_contiguous). 100 blocks are held in a ring and each pair allocates a block and
    frees the oldest, so the bitmap's next-fit hint moves on and the buddy's free lists
    work. Each configuration runs with N1 and N2 pairs: (instructions(N2) -
    instructions(N1)) / (N2 - N1) is the cost of one pair, amortized, with boot and set-up
    cancelled exactly (the counter is exact and the runs deterministic; N1 and N2 have the
    same number of digits, so even parsing and printing them costs the same).
    The benchmark loop's own instructions (the ring, the loop, its CHECK and the two call
    instructions) are counted apart by a code hook on test_pmm_bench, in one more pair of
    runs per configuration, and subtracted: "PMM" is what runs inside pmm_alloc/pmm_free
    (or the contiguous calls) and everything they call.
(b) boot: the kernel with pmm=bitmap or buddy and no self-test on a 64 GiB `pc` machine:
    instructions and seconds of the whole run (`Machine.run()`, construction excluded).

Target (issue 3): at most 100 guest instructions per single-frame allocate+free pair,
amortized, for each PMM (judged on the PMM figure).

Instruction counts must be identical in every round (they are checked); seconds are
medians of interleaved rounds (the order rotates every round). Prints a Markdown table and
writes bench/pmm_results.json.
"""
from __future__ import annotations

import gc
import statistics
import sys
from pathlib import Path

from emu.build import build_guest
from emu.machine import Machine, MachineConfig
from common import host, interleaved_rounds, quick_main

RESULTS = Path(__file__).resolve().parent / "pmm_results.json"
PMMS = ("bitmap", "buddy")
ORDERS = (0, 4)
HELD = 100
PAIRS = (10_000, 20_000)               # same number of digits: the same parsing and printing
QUICK_PAIRS = (1_000, 2_000)
BOOT_MEMORY = 64 << 30
TARGET_PER_PAIR = 100                  # issue 3: single frames, each PMM
BENCH_FUNCTION = "test_pmm_bench"
OK_MARKER = "selftest pmm-bench: ok"
BUDGET = 2_000_000_000                 # a runaway guest ends the run instead of hanging


def _cmdline(pmm: str, order: int, pairs: int) -> str:
    return (f"pmm={pmm} selftest=pmm-bench selftest-pairs={pairs} selftest-order={order} "
            f"selftest-held={HELD}")


def _run(kernel: Path, cmdline: str, memory: int | None = None,
         count_in: str | None = None) -> tuple[float, int, int]:
    """One boot: (seconds, instructions, instructions executed inside function count_in)."""
    machine = Machine(MachineConfig(kernel=kernel, cmdline=cmdline, memory=memory,
                                    max_instructions=BUDGET))
    inside = [0]
    if count_in is not None:
        start = machine.symbols.address_of(count_in)
        size = machine.symbols.size_of(count_in)
        if start is None or not size:
            raise RuntimeError(f"no symbol {count_in} in {kernel.name}")

        def count(uc, address, size, data) -> None:
            inside[0] += 1
        machine.hooks.on_execute_range(start, start + size - 1, count)
    gc.collect()
    result = machine.run()
    output = machine.serial_output()
    if result.reason != "exit" or result.guest_value != 0:
        raise RuntimeError(f"`{cmdline}` ended with {result.reason} "
                           f"({result.message}):\n{result.report or output[-2000:]}")
    if "selftest" in cmdline and OK_MARKER not in output:
        raise RuntimeError(f"`{cmdline}` did not print {OK_MARKER!r}")
    return result.seconds, result.instructions, inside[0]


def measure(quick: bool, repeats: int) -> dict:
    kernel = build_guest()
    pairs = QUICK_PAIRS if quick else PAIRS
    variants = {}
    for pmm in PMMS:
        for order in ORDERS:
            for n in pairs:
                variants[f"{pmm}/order{order}/{n}"] = \
                    lambda pmm=pmm, order=order, n=n: _run(kernel, _cmdline(pmm, order, n))
        variants[f"{pmm}/boot64g"] = \
            lambda pmm=pmm: _run(kernel, f"pmm={pmm}", memory=BOOT_MEMORY)
    outputs = interleaved_rounds(variants, repeats)
    seconds = {name: [out[0] for out in runs] for name, runs in outputs.items()}
    counts: dict[str, int] = {}
    for name, runs in outputs.items():
        for _, instructions, _ in runs:
            if counts.setdefault(name, instructions) != instructions:
                raise RuntimeError(f"{name}: {instructions} instructions, {counts[name]} in "
                                   "another round: the run is not deterministic")
    median = {name: statistics.median(values) for name, values in seconds.items()}

    n1, n2 = pairs
    pair_cost: dict[str, dict] = {}
    for pmm in PMMS:
        pair_cost[pmm] = {}
        for order in ORDERS:
            key = f"{pmm}/order{order}"
            i1, i2 = counts[f"{key}/{n1}"], counts[f"{key}/{n2}"]
            h1, h2 = (_run(kernel, _cmdline(pmm, order, n), count_in=BENCH_FUNCTION)
                      for n in pairs)
            if (h1[1], h2[1]) != (i1, i2):
                raise RuntimeError(f"{key}: the counting hook changed the instruction count")
            per_pair = (i2 - i1) / (n2 - n1)
            loop = (h2[2] - h1[2]) / (n2 - n1)
            s1, s2 = median[f"{key}/{n1}"], median[f"{key}/{n2}"]
            pair_cost[pmm][f"order{order}"] = {
                "frames": 1 << order,
                "alignment_frames": 1 << order,
                "instructions": [i1, i2],
                "instructions_per_pair": per_pair,
                "loop_instructions_per_pair": loop,
                "pmm_instructions_per_pair": per_pair - loop,
                "seconds": [s1, s2],
                "us_per_pair": max(s2 - s1, 0.0) / (n2 - n1) * 1e6,
            }
    boot = {pmm: {"memory": BOOT_MEMORY, "instructions": counts[f"{pmm}/boot64g"],
                  "seconds": median[f"{pmm}/boot64g"],
                  "mips": counts[f"{pmm}/boot64g"] / median[f"{pmm}/boot64g"] / 1e6}
            for pmm in PMMS}
    return {
        "quick": quick,
        "repeats": repeats,
        "statistic": "median",
        "host": host(),
        "kernel": kernel.name,
        "pairs": {"n1": n1, "n2": n2, "held": HELD, "machine": "pc, 256 MiB",
                  "cmdline": "pmm=bitmap|buddy selftest=pmm-bench selftest-pairs=N "
                             f"selftest-order=0|4 selftest-held={HELD}"},
        "pair_cost": pair_cost,
        "target": {
            "pmm_instructions_per_single_frame_pair": TARGET_PER_PAIR,
            "met": {pmm: pair_cost[pmm]["order0"]["pmm_instructions_per_pair"]
                    <= TARGET_PER_PAIR for pmm in PMMS},
        },
        "boot_64g": boot,
        "samples_seconds": seconds,
    }


def table(results: dict) -> str:
    lines = [
        "| PMM | blocks | instructions per pair | benchmark loop | PMM | target | met |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for pmm, orders in results["pair_cost"].items():
        for order, c in orders.items():
            single = c["frames"] == 1
            block = "1 frame" if single else \
                f"{c['frames']} frames, {c['alignment_frames']}-aligned"
            target = f"<= {results['target']['pmm_instructions_per_single_frame_pair']}" \
                if single else "-"
            met = ("**yes**" if results["target"]["met"][pmm] else "**no**") if single else "-"
            lines.append(f"| {pmm} | {block} | {c['instructions_per_pair']:.1f} | "
                         f"{c['loop_instructions_per_pair']:.1f} | "
                         f"{c['pmm_instructions_per_pair']:.1f} | {target} | {met} |")
    lines += ["", "| PMM | 64 GiB `pc` boot: instructions | seconds | MIPS |",
              "| --- | --- | --- | --- |"]
    for pmm, b in results["boot_64g"].items():
        lines.append(f"| {pmm} | {b['instructions']:,} | {b['seconds']:.3f} | {b['mips']:.0f} |")
    p = results["pairs"]
    note = (f"\nPairs: `{p['cmdline']}`, N = {p['n1']:,} and {p['n2']:,}, {p['held']} blocks "
            f"held, {p['machine']}; per pair = difference of exact instruction counts / "
            f"{p['n2'] - p['n1']:,}. Boot seconds: medians of {results['repeats']} interleaved "
            f"runs on {results['host']['cpus']} CPUs (load average "
            f"{results['host']['load_average'][0]:.2f}).")
    return "\n".join(lines) + "\n" + note


def main(argv: list[str] | None = None) -> int:
    return quick_main(argv, __doc__, RESULTS, measure, table, 11,
                      quick_help=f"3 rounds, {QUICK_PAIRS[0]:,} and {QUICK_PAIRS[1]:,} "
                                 "pairs (for the test)",
                      repeats_help="rounds of every variant")


if __name__ == "__main__":
    sys.exit(main())
