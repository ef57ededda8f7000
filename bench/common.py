"""Shared by the benchmark scripts: interleaved timing rounds, host facts, and writing the
JSON and printing the table at the end."""
from __future__ import annotations

import gc
import json
import os
import platform
from pathlib import Path
from typing import Callable


def host() -> dict:
    """The machine the figures came from (they are ratios, but the load still matters)."""
    return {"python": platform.python_version(), "machine": platform.machine(),
            "cpus": os.cpu_count(), "load_average": list(os.getloadavg())}


def publish(path: Path, results: dict, table: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(table)
    print(f"\nwrote {path} in {results['wall_seconds']:.0f} s")


def interleaved_rounds(variants: dict[str, Callable[[], tuple]], repeats: int
                       ) -> dict[str, list[tuple]]:
    """Run every variant once to warm up (caches, the counter's .so, first imports), then
    `repeats` rounds whose order rotates, so a noisy neighbour hurts all variants alike.
    Returns each variant's outputs in round order; each output's [0] is its seconds.

    Garbage is collected before every variant starts: a Unicorn engine lives in reference
    cycles (its hooks point back at their owners), and freeing the previous one only
    after the next one is built made every other run of the same variant 25% slower
    (measured: 0.040 s and 0.051 s alternating for bare Unicorn), which skewed medians."""
    names = list(variants)

    def run(name: str) -> tuple:
        gc.collect()
        return variants[name]()

    for name in names:
        run(name)
    outputs: dict[str, list[tuple]] = {name: [] for name in names}
    for round_ in range(repeats):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            outputs[name].append(run(name))
    return outputs


def quick_main(argv, doc: str, default_json: Path, measure: Callable[[bool, int], dict],
               table: Callable[[dict], str], rounds: int, quick_help: str,
               repeats_help: str) -> int:
    """The command line of a benchmark that takes --quick, --repeats (at least 3; `rounds`
    by default, 3 with --quick) and --json: measure, time the whole, publish."""
    import argparse
    import time
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--repeats", type=int,
                        help=f"{repeats_help} (default {rounds}; 3 with --quick)")
    parser.add_argument("--json", type=Path, default=default_json,
                        help=f"default {default_json}")
    args = parser.parse_args(argv)
    repeats = args.repeats or (3 if args.quick else rounds)
    if repeats < 3:
        parser.error("--repeats must be at least 3")
    started = time.perf_counter()
    results = measure(args.quick, repeats)
    results["wall_seconds"] = time.perf_counter() - started
    publish(args.json, results, table(results))
    return 0
