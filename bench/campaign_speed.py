#!/usr/bin/env python
"""Campaign variants per minute: each booted anew, against each started from a snapshot.

    python bench/campaign_speed.py [--repeats N] [--json PATH]

One warm worker (this process) runs the same variants of a campaign two ways: `boot`
creates and boots a new machine for every variant (`emu campaign --no-snapshot`);
`snapshot` boots once, keeps snapshots along the clean run and starts every variant from
the latest one before its first injection (the default). Both give the same outcomes,
which is checked here too. The snapshot side pays for its own boot and snapshots inside the
timing (its ladder is dropped before every round). Rounds alternate between the two ways
(bench/common.py), medians reported, ratios from the same run.

Workloads:
- `short-heap`: kmalloc fails at each of its 6 calls after mm_init in a short heap-trace
  replay (short1-bal), each point 20 times: variants run under 100,000 instructions after
  their snapshot, the issue's case (target: 10x more variants per minute);
- `process`: kmalloc fails while tests/programs/mm_workload.c runs (bench/campaigns/
  proc-kmalloc.toml), 24 points spread over its calls;
- `bit-flip`: 24 seeds of a bit flip in a heap page halfway through a heap replay
  (bench/campaigns/heap-bitflip.toml).

Writes bench/campaign_speed_results.json and prints a Markdown table.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from emu.inject import variant
from emu.inject.campaign import expand_points, load_campaign, sample
from emu.inject.runner import clean_run, start_point
from common import host, interleaved_rounds, publish

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "campaign_speed_results.json"
SHORT_HEAP = f"""
name = "kmalloc fails in a short heap replay"
[machine]
cmdline = "replay=1 heap=list"
modules = ["{ROOT / 'traces' / 'malloclab' / 'short1-bal.rep'}"]
checks = ["pt", "heap"]
[injection]
template = "fail-function:function=kmalloc,after=1,fail-nth={{n}}"
n = "1..auto"
[accept]
exit = [0, 1]
output = ['^replay: error: op \\\\d+ \\\\(a \\\\d+ \\\\d+\\\\): allocation returned 0x0$',
          '^replay: heap=list ops=12 errors=1 ']
"""


def workloads(scratch: Path) -> dict[str, tuple[Path, int | None, int]]:
    """name -> (campaign file, points sampled or None for all, times each point runs)."""
    short = scratch / "short-heap.toml"
    short.write_text(SHORT_HEAP)
    return {"short-heap": (short, None, 20),
            "process": (HERE / "campaigns" / "proc-kmalloc.toml", 24, 1),
            "bit-flip": (HERE / "campaigns" / "heap-bitflip.toml", 24, 1)}


def measure(path: Path, points: int | None, times: int, repeats: int) -> dict:
    campaign = load_campaign(path)
    job, calls, call_times = clean_run(campaign)
    chosen = sample(expand_points(campaign.points, calls), points) * times
    tasks = [(index, n, campaign.specs(n)) for index, n in enumerate(sorted(chosen))]
    starts = [start_point(job, task[2], call_times) for task in tasks]

    def boot() -> tuple:
        began = time.perf_counter()
        outcomes = [variant.run_variant(job, *task) for task in tasks]
        return time.perf_counter() - began, outcomes

    def from_snapshot() -> tuple:
        variant.forget_ladders()                     # its boot is part of its cost
        began = time.perf_counter()
        outcomes = [variant.run_variant(job, *task, start)
                    for task, start in zip(tasks, starts)]
        return time.perf_counter() - began, outcomes

    rounds = interleaved_rounds({"boot": boot, "snapshot": from_snapshot}, repeats)
    same = all([o.to_dict() for o in rounds["boot"][0][1]] == [o.to_dict() for o in outs]
               for _, outs in rounds["snapshot"])
    if not same:
        raise SystemExit(f"{path.name}: variants from a snapshot ended otherwise than booted")
    seconds = {way: statistics.median(run[0] for run in runs) for way, runs in rounds.items()}
    after = [outcome.instructions - start[0]
             for outcome, start in zip(rounds["snapshot"][0][1], starts)]
    return {"campaign": campaign.name, "variants": len(tasks),
            "instructions_after_start": {"median": int(statistics.median(after)),
                                         "max": max(after)},
            "seconds": seconds,
            "variants_per_minute": {way: len(tasks) * 60 / s for way, s in seconds.items()},
            "speedup": seconds["boot"] / seconds["snapshot"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    scratch = HERE / "campaign-out"
    scratch.mkdir(exist_ok=True)
    rows = {name: measure(path, points, times, args.repeats)
            for name, (path, points, times) in workloads(scratch).items()}
    results = {"host": host(), "repeats": args.repeats, "workloads": rows,
               "wall_seconds": time.perf_counter() - started}
    publish(args.json, results, table(rows))
    return 0


def table(rows: dict) -> str:
    lines = ["| workload | variants | instructions after the start (median, max) | "
             "variants/min booted | from a snapshot | speed-up |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name, row in rows.items():
        after, per_minute = row["instructions_after_start"], row["variants_per_minute"]
        lines.append(f"| {name} | {row['variants']} | {after['median']:,}, {after['max']:,} | "
                     f"{per_minute['boot']:,.0f} | {per_minute['snapshot']:,.0f} | "
                     f"{row['speedup']:.1f}x |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
