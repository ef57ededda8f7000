"""`emu trace export --perfetto TRACE OUT`: a trace in another tool's format.

Owns: the options of `emu trace` and checking the output path. Does not own: the format
(emu/export/perfetto.py) or reading traces.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from emu.commands import console
from emu.errors import ConfigError
from emu.inputs import check_output, display, refuse_overwriting

NAME = "trace"
HELP = "work with a trace: export it (--perfetto: for ui.perfetto.dev)"


def add_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument("action", choices=["export"], help="what to do with the trace")
    command.add_argument("--perfetto", action="store_true",
                         help="write a Perfetto trace (protobuf): open it at ui.perfetto.dev")
    command.add_argument("trace", type=Path, help="a trace written by `emu run --trace`")
    command.add_argument("out", type=Path, help="the file to write")


def execute(args) -> int:
    if not args.perfetto:
        raise ConfigError("emu trace export: choose a format (--perfetto)")
    check_output(args.out, "output")
    refuse_overwriting(args.out, "output", [("trace", args.trace)])
    from emu.export.perfetto import export
    size = export(args.trace, args.out)
    console.err(f"--- wrote {display(args.out)} ({size:,} bytes): open it at "
                "https://ui.perfetto.dev (Open trace file)")
    return 0
