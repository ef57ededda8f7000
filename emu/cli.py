"""The `emu` command line: a parser built from the registered commands (emu/commands/) and
the one error boundary every command runs inside.

  emu run [KERNEL] [machine options] [--trace FILE] [--screenshot FILE.png]
          [--check [pt,heap]] [--allow RULE,...] [--strict] [--check-every N]
  emu pt [KERNEL] [machine options] [--cr3 VALUE] [--at-checkpoint N]
  emu heap-replay TRACE [--heap KIND|all] [--debug] [--bare] [--json] [--kernel ELF]
  emu build

The exit statuses are emu/result.py's table. An error of the harness or of the user's
input is one line on stderr (`emu: error: ...`) and status 2.
"""
from __future__ import annotations

import argparse
import sys

from emu import __version__
from emu.commands import COMMANDS
from emu.errors import EmuError
from emu.result import EXIT_HARNESS_ERROR

EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="emu", description="x86-64 emulator harness for "
                                     "OS memory managers")
    parser.add_argument("--version", action="version", version=f"emu {__version__}")
    subcommands = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        sub = subcommands.add_parser(command.NAME, help=command.HELP)
        command.add_arguments(sub)
        sub.set_defaults(execute=command.execute)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.execute(args)
    except EmuError as exc:
        print(f"emu: error: {exc}", file=sys.stderr)
        return EXIT_HARNESS_ERROR
    except KeyboardInterrupt:
        print("emu: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
