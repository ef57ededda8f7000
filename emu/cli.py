"""The `emu` command line: a parser built from the registered commands (emu/commands/) and
the one error boundary every command runs inside.

  emu run [KERNEL] [machine options] [--trace FILE] [--screenshot FILE.png]
          [--check [pt,heap]] [--allow RULE,...] [--strict] [--check-every N]
  emu pt [KERNEL] [machine options] [--cr3 VALUE] [--at-checkpoint N]
  emu replay TRACE [--kernel ELF] [--search DIR] [--compare SPEC] [--set FIELD=VALUE]
  emu heap-replay TRACE [--heap KIND|all] [--debug] [--bare] [--json] [--kernel ELF]
  emu build

The boundary: an error of the harness or of the user's input (EmuError, a bad argument)
is one line on stderr (`emu: error: ...`) and status 2; SIGINT/SIGTERM end the command with
128 + the signal number (a run first finishes its trace, emu/signals.py); a closed standard
output ends it quietly with 141, as Unix tools end. The statuses are emu/result.py's table.
"""
from __future__ import annotations

import argparse
import signal
import sys

from emu import __version__, signals
from emu.commands import COMMANDS, console
from emu.errors import BuildError, ConfigError, EmuError, Interrupted, OutputClosed
from emu.result import EXIT_HARNESS_ERROR, EXIT_OUTPUT_CLOSED, EXIT_SIGNAL_BASE


class _Parser(argparse.ArgumentParser):
    """Argument errors are one line (not the usage block), raised like every other."""

    def error(self, message: str):
        raise ConfigError(f"{self.prog}: {message} (see `{self.prog} --help`)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="emu", description="x86-64 emulator harness for OS memory "
                     "managers")
    parser.add_argument("--version", action="version", version=f"emu {__version__}")
    subcommands = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        sub = subcommands.add_parser(command.NAME, help=command.HELP)
        command.add_arguments(sub)
        sub.set_defaults(execute=command.execute)
    return parser


def error_status(argv: list[str] | None) -> int:
    """The status an error ends the command with: its module's ERROR_STATUS (`emu exec`
    ends with 125, as `env` does), else 2."""
    words = sys.argv[1:] if argv is None else argv
    name = next((word for word in words if not word.startswith("-")), None)
    for command in COMMANDS:
        if command.NAME == name:
            return getattr(command, "ERROR_STATUS", EXIT_HARNESS_ERROR)
    return EXIT_HARNESS_ERROR


def main(argv: list[str] | None = None) -> int:
    signals.install()
    failed = error_status(argv)
    try:
        args = build_parser().parse_args(argv)
        status = args.execute(args)
        console.flush()
        return status
    except OutputClosed:
        console.silence_stdout()
        return EXIT_OUTPUT_CLOSED
    except BuildError as exc:
        _error_line(f"emu: error: {exc}")      # with the compiler's first errors under it
        return failed
    except EmuError as exc:
        _error_line("emu: error: " + "; ".join(str(exc).splitlines()))
        return failed
    except Interrupted as exc:
        _error_line("emu: interrupted")
        return EXIT_SIGNAL_BASE + exc.signum
    except KeyboardInterrupt:
        _error_line("emu: interrupted")
        return EXIT_SIGNAL_BASE + int(signal.SIGINT)
    finally:
        signals.uninstall()


def _error_line(line: str) -> None:
    """The message on stderr; if even that cannot be written, the status says it all."""
    try:
        console.err(line)
    except EmuError:
        pass


if __name__ == "__main__":
    sys.exit(main())
