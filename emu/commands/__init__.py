"""The subcommands of `emu`, one module each, registered in COMMANDS.

A command module has NAME, HELP, `add_arguments(parser)` and `execute(args) -> int` (the
process exit status; errors are raised as EmuError and turned into one line by emu/cli.py).
Adding a command: one new module plus its line here.

May import every layer below (emu.machine, emu.workloads, emu.monitor, ...).
"""
from emu.commands import build, campaign, exec, heap_replay, pt, replay, run, trace

COMMANDS = (run, exec, pt, replay, trace, heap_replay, campaign, build)

__all__ = ["COMMANDS"]
