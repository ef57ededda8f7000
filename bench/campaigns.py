#!/usr/bin/env python
"""Fault-injection campaigns over our kernel: every failure point of its allocators.

    python bench/campaigns.py [--sample K] [--workers N] [--json PATH] [NAME ...]

Runs each campaign of bench/campaigns/ (all, or those named), every point unless
`--sample K` spreads K of them over the range, and prints a Markdown table: the calls the
clean run made, the runs, and their outcomes. The heap campaigns inject after the kernel's
mm_init checkpoint (`after=1`), the process campaigns after the first process started
(`after=5`): there every failure must be survived (a reported ENOMEM, a process ended for
want of memory are fine; a panic, triple fault, checker finding, leak or wrong output is a
bug). The boot campaign
injects from the first call on, where a clear panic is the right answer.

Writes bench/campaigns_results.json and each campaign's results under bench/campaign-out/
(not kept in git).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from emu.inject.campaign import CLASSES, load_campaign
from emu.inject.runner import run_campaign

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "campaigns_results.json"


def portable(command: str) -> str:
    """A reproducer as the results file keeps it: paths from the repository's root and
    the home folder written as ~, so the file names no one's machine."""
    return command.replace(f"{ROOT}/", "").replace(f"{Path.home()}/", "~/")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="campaigns to run (default: all)")
    parser.add_argument("--sample", type=int, default=None, help="points per campaign")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--json", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    files = sorted((HERE / "campaigns").glob("*.toml"))
    if args.names:
        files = [f for f in files if f.stem in args.names]
    rows, started = [], time.perf_counter()
    for path in files:
        campaign = load_campaign(path)
        began = time.perf_counter()
        report = run_campaign(campaign, HERE / "campaign-out" / path.stem,
                              workers=args.workers, sample_count=args.sample)
        counts = report.counts()
        rows.append({"campaign": path.stem, "name": campaign.name, "calls": report.calls,
                     "runs": len(report.outcomes),
                     "outcomes": {kind: counts[kind] for kind in CLASSES if counts[kind]},
                     "groups": [{"signature": list(group.signature),
                                 "runs": len(group.outcomes), "reproducer": portable(group.command),
                                 "reproduces": group.reproduces}
                                for group in report.groups],
                     "seconds": time.perf_counter() - began})
    results = {"sample": args.sample, "campaigns": rows,
               "wall_seconds": time.perf_counter() - started}
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(table(rows))
    return 0


def table(rows: list[dict]) -> str:
    lines = ["| campaign | calls in a clean run | runs | outcomes |", "| --- | --- | --- | --- |"]
    for row in rows:
        outcomes = ", ".join(f"{kind} {count}" for kind, count in row["outcomes"].items())
        calls = "-" if row["calls"] is None else f"{row['calls']:,}"   # points, not calls
        lines.append(f"| {row['name']} | {calls} | {row['runs']:,} | {outcomes} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
