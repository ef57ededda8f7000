#!/usr/bin/env python
"""What recording a trace costs: each workload run without a trace, with a full trace
(`emu run --trace`: every event, JSON lines), with a full trace compressed (`.jsonl.zst`)
and with a filtered one (`--trace-events exceptions,cr3,syscalls`), as ratios measured in
one run, and the full trace's size per event type.

    python bench/trace_cost.py [--quick] [--repeats N] [--json PATH]

Workloads (the project's kernel):
  compute      `test=compute`, a sieve: about 37 M instructions, few events
  page faults  `emu exec` of tests/programs/memhog.c touching 8 MiB: a user-mode #PF per
               page, served by demand paging
  heap         the malloc-lab trace amptjp-bal replayed with `replay=1 heap=chained`
Timed: `Machine.run()` (construction excluded) in CPU time of this process (user and
system: the trace's writes count, other processes on a shared machine do not), median of
interleaved rounds; the traced variants write to a temporary file and close it inside the
timing. Targets (issue 13): a full trace at most 1.3x, a filtered one at most 1.1x.

Writes bench/trace_cost_results.json and prints Markdown tables.
"""
from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from emu.build import build_guest, build_program
from emu.machine import Machine, MachineConfig
from emu.monitor import trace_events
from emu.monitor.trace import TraceRecorder
from emu.replay.header import build_header
from emu.workloads.process import ProgramSpec, prepare

from common import host, interleaved_rounds, quick_main

ROOT = Path(__file__).resolve().parent.parent
TARGET = 1.3
FILTERED_TARGET = 1.1
FILTER = "exceptions,cr3,syscalls"


def configs(kernel: Path, workdir: Path) -> dict[str, MachineConfig]:
    memhog = build_program(ROOT / "tests" / "programs" / "memhog.c")
    spec = ProgramSpec(program=memhog, args=("8",), files=(), env=(), seed=0)
    return {
        "compute": MachineConfig(kernel, cmdline="test=compute", platform=False),
        "page faults": prepare(spec, MachineConfig(kernel), workdir / "initrd.tar"),
        "heap": MachineConfig(kernel, modules=(ROOT / "traces" / "malloclab" / "amptjp-bal.rep",),
                              cmdline="replay=1 heap=chained"),
    }


def one_run(config: MachineConfig, trace: Path | None, events: str = "all"
            ) -> tuple[float, int]:
    chosen = trace_events.parse(events)
    recorder = TraceRecorder(trace, build_header(config), chosen) if trace else None
    machine = Machine(config, [recorder] if recorder else [])
    if recorder:
        recorder.vtime_of = machine.vtime_of
    began = time.process_time()
    result = machine.run()
    if recorder:
        recorder.close()
    seconds = time.process_time() - began
    return seconds, result.instructions


def sizes(trace: Path) -> dict[str, dict[str, int]]:
    """Events, lines and bytes per event type (the header line excluded); a run of flushes
    (trace.FlushRuns) is one line holding `count` events."""
    counts: Counter = Counter()
    lines: Counter = Counter()
    total: Counter = Counter()
    with open(trace, encoding="utf-8") as stream:
        stream.readline()
        for line in stream:
            record = json.loads(line)
            kind = record["type"]
            counts[kind] += record.get("count", 1)
            lines[kind] += 1
            total[kind] += len(line.encode())
    return {kind: {"events": counts[kind], "lines": lines[kind], "bytes": total[kind]}
            for kind in sorted(counts, key=lambda k: -total[k])}


def measure(repeats: int) -> dict:
    kernel = build_guest()
    out: dict = {}
    with tempfile.TemporaryDirectory() as directory:
        workdir = Path(directory)
        for name, config in configs(kernel, workdir).items():
            trace, packed, filtered = (workdir / "bench.jsonl", workdir / "bench.jsonl.zst",
                                       workdir / "filtered.jsonl")
            rounds = interleaved_rounds({
                "none": lambda: one_run(config, None),
                "trace": lambda: one_run(config, trace),
                "zstd": lambda: one_run(config, packed),
                "filtered": lambda: one_run(config, filtered, FILTER)}, repeats)
            median = {kind: statistics.median(r[0] for r in runs)
                      for kind, runs in rounds.items()}
            assert len({runs[0][1] for runs in rounds.values()}) == 1     # the same run
            plain = median["none"]
            out[name] = {"instructions": rounds["none"][0][1], "seconds": plain,
                         "traced_seconds": median["trace"], "ratio": median["trace"] / plain,
                         "zstd_seconds": median["zstd"], "zstd_ratio": median["zstd"] / plain,
                         "filtered_seconds": median["filtered"],
                         "filtered_ratio": median["filtered"] / plain,
                         "trace_bytes": trace.stat().st_size,
                         "zstd_bytes": packed.stat().st_size,
                         "filtered_bytes": filtered.stat().st_size, "by_type": sizes(trace)}
    return out


def table(results: dict) -> str:
    def met(ratio: float, target: float) -> str:
        return f"**{ratio:.2f}** ({'met' if ratio <= target else 'not met'})"
    rows = [f"| workload | instructions | no trace | full trace (<= {TARGET}) | full, zstd | "
            f"{FILTER} (<= {FILTERED_TARGET}) | sizes: full, zstd, filtered |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in results["workloads"].items():
        rows.append(f"| {name} | {r['instructions']:,} | {r['seconds']:.3f} s | "
                    f"{met(r['ratio'], TARGET)} | {r['zstd_ratio']:.2f} | "
                    f"{met(r['filtered_ratio'], FILTERED_TARGET)} | "
                    f"{r['trace_bytes'] / 1024:,.0f} KiB, {r['zstd_bytes'] / 1024:,.0f} KiB, "
                    f"{r['filtered_bytes'] / 1024:,.1f} KiB |")
    rows += ["", "| workload | event type | events | lines | bytes | bytes/event |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name, r in results["workloads"].items():
        for kind, s in r["by_type"].items():
            rows.append(f"| {name} | {kind} | {s['events']:,} | {s['lines']:,} | "
                        f"{s['bytes']:,} | {s['bytes'] / s['events']:.0f} |")
    return "\n".join(rows)


def measure_all(quick: bool, repeats: int) -> dict:
    return {"host": host(), "quick": quick, "workloads": measure(repeats)}


def main(argv: list[str]) -> int:
    return quick_main(argv, __doc__, Path(__file__).with_name("trace_cost_results.json"),
                      measure_all, table, 7, quick_help="3 rounds", repeats_help="rounds")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
