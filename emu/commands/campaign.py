"""`emu campaign SPEC.toml`: a fault-injection campaign (emu/inject/campaign.py has the
file's format): every variant run, classified, failures grouped with a reproducer each.

Exit status: 0 when every variant passed, 1 when some failed (summary.md lists the groups
and their reproducers), 2 for a bad campaign file or option.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from emu.commands import console
from emu.commands.options import count

NAME = "campaign"
HELP = "run a fault-injection campaign and group its failures"


def add_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument("spec", type=Path, help="the campaign file (TOML)")
    command.add_argument("--out", type=Path, default=None,
                         help="folder for results.jsonl, summary.md and the reproducers' "
                              "traces (default: campaign-NAME beside the file)")
    command.add_argument("--workers", type=count, default=None,
                         help="worker processes (default: one per core)")
    command.add_argument("--sample", type=count, default=None, metavar="K",
                         help="run K points spread over the range instead of all")
    command.add_argument("--executor", choices=("local", "dask"), default="local",
                         help="local worker processes (default) or a Dask cluster")
    command.add_argument("--no-snapshot", action="store_true",
                         help="boot every variant anew instead of starting it from a "
                              "snapshot taken before the first injection (the same "
                              "outcomes, slower; for comparison)")
    command.add_argument("--scheduler", default="local", metavar="ADDRESS",
                         help="with --executor dask: the scheduler's address, or local "
                              "(a LocalCluster on this machine; the default)")


MAX_WORKERS = 256


def execute(args) -> int:
    from emu.errors import ConfigError
    from emu.inject.campaign import load_campaign
    if args.workers is not None and args.workers > MAX_WORKERS:
        raise ConfigError(f"--workers {args.workers}: at most {MAX_WORKERS} (one per core is "
                          f"the default)")
    from emu.inject.runner import run_campaign
    campaign = load_campaign(args.spec)
    out = args.out or args.spec.parent / f"campaign-{args.spec.stem}"
    report = run_campaign(campaign, out, executor=args.executor, scheduler=args.scheduler,
                          workers=args.workers, sample_count=args.sample,
                          snapshot=not args.no_snapshot)
    counts = report.counts()
    console.err(f"--- {len(report.outcomes)} runs: " +
                ", ".join(f"{kind} {number}" for kind, number in counts.most_common()))
    for number, group in enumerate(report.groups, 1):
        console.err(f"--- {number}. {group.signature[0]}: {group.signature[1]} "
                    f"({len(group.outcomes)} runs)\n    {group.command}")
    console.err(f"--- results in {out}")
    return 0 if counts["passed"] == len(report.outcomes) else 1
