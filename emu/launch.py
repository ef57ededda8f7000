"""The `emu` program's entry point (pyproject's console script).

Owns: the moment before the command line's own signal handling exists. Importing the
harness (Unicorn, the commands) takes a while; a Ctrl-C or SIGTERM in that time ends the
program as emu/cli.py would (one line, status 128 + the signal), never with a traceback.
Does not own: anything after emu.cli.main starts (it installs emu/signals.py's handlers).
"""
from __future__ import annotations

import signal
import sys

from emu.result import EXIT_SIGNAL_BASE     # light: the standard library only


def _early_stop(signum: int, _frame) -> None:
    try:
        sys.stderr.write("emu: interrupted\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass                    # the status says it all
    raise SystemExit(EXIT_SIGNAL_BASE + signum)


def guard_signals() -> None:
    """SIGINT and SIGTERM end the program quietly until emu/cli.py takes them over."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _early_stop)


def main(argv: list[str] | None = None) -> int:
    guard_signals()
    from emu.cli import main as command_line
    return command_line(argv)
