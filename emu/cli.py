"""The `emu` command line.

  emu run [KERNEL] [--memory SIZE] [--memmap PRESET|FILE] [--cmdline TEXT]
          [--module FILE]... [--max-instructions N] [--trace FILE] [--screenshot FILE.png]
  emu build

Without KERNEL, `emu run` builds (if the sources changed) and boots the project's own kernel.
Exit status: the guest's own debug-exit value (0-63), 70 guest crash, 71 instruction budget
exhausted, 72 guest halted for good, 2 bad input or harness error (one line on stderr).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import __version__
from .errors import ConfigError, EmuError
from .machine import EXIT_HARNESS_ERROR, Machine, MachineConfig, RunResult
from .memmap import parse_memory_size


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="emu", description="x86-64 emulator harness for "
                                     "OS memory managers")
    parser.add_argument("--version", action="version", version=f"emu {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="boot a Limine kernel (default: the project's own)")
    run.add_argument("kernel", nargs="?", type=Path, help="ELF kernel (default: build guest/)")
    run.add_argument("--memory", help="RAM size, e.g. 256M, 4G, 64G (default: the preset's)")
    run.add_argument("--memmap", default=None,
                     help="memory map preset (pc, tiny, fragmented) or a TOML file (default pc)")
    run.add_argument("--cmdline", default="", help="kernel command line")
    run.add_argument("--module", action="append", default=[], type=Path,
                     help="file handed to the kernel as a Limine module (repeatable)")
    run.add_argument("--max-instructions", type=_count, default=None,
                     help="stop the guest after N instructions (default: no limit)")
    run.add_argument("--trace", type=Path, help="write a JSON-lines trace of events to FILE")
    run.add_argument("--screenshot", type=Path, help="save the framebuffer as a PNG at the end")
    run.add_argument("--boot-time", type=int, default=1_700_000_000,
                     help="date at boot given to the kernel, UNIX seconds (fixed: deterministic)")
    run.add_argument("--quiet", action="store_true", help="no live serial output")
    run.add_argument("--no-count", action="store_true",
                     help="do not count instructions: about 2x faster on tight loops, but no "
                          "--max-instructions, --trace or instruction figures")
    commands.add_parser("build", help="build the guest kernel in guest/")
    return parser


def _count(text: str) -> int:
    try:
        value = int(text.replace("_", ""), 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be a positive number of instructions")
    return value


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "build":
            from .build import build_guest
            print(build_guest())
            return 0
        return _run(args)
    except EmuError as exc:
        print(f"emu: error: {exc}", file=sys.stderr)
        return EXIT_HARNESS_ERROR
    except KeyboardInterrupt:
        print("emu: interrupted", file=sys.stderr)
        return 130


def _run(args) -> int:
    kernel = args.kernel
    if kernel is None:
        from .build import build_guest
        kernel = build_guest()
    config = MachineConfig(
        kernel=kernel, memory=parse_memory_size(args.memory) if args.memory else None,
        memmap=args.memmap, cmdline=args.cmdline, modules=tuple(args.module),
        max_instructions=args.max_instructions, boot_time=args.boot_time,
        count_instructions=not args.no_count)
    if args.no_count and args.trace:
        raise ConfigError("--trace stamps every event with an instruction count; drop --no-count")
    observers = []
    recorder = None
    if args.trace:
        from .trace import TraceRecorder
        import hashlib
        digest = hashlib.sha256(kernel.read_bytes()).hexdigest() if kernel.is_file() else ""
        recorder = TraceRecorder(args.trace, digest, config.describe())
        observers.append(recorder)
    live = None if args.quiet else _live_printer()
    try:
        machine = Machine(config, observers, on_serial_text=live)
        result = machine.run()
    finally:
        if recorder:
            recorder.close()
    if args.screenshot:
        from .screenshot import save_framebuffer
        save_framebuffer(machine, args.screenshot)
    _summary(result)
    return result.exit_status


def _live_printer():
    def write(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()
    return write


def _summary(result: RunResult) -> None:
    from .report import exception_name
    err = sys.stderr
    if result.report:
        print(result.report, file=err)
    print(f"--- {result.message}", file=err)
    if result.counted:
        print(f"--- {result.instructions:,} instructions in {result.seconds:.3f} s "
              f"({result.mips:.1f} MIPS)", file=err)
    else:
        print(f"--- {result.seconds:.3f} s (instructions not counted: --no-count)", file=err)
    if result.exceptions:
        parts = ", ".join(f"{exception_name(v).split(' ')[0] if v < 256 else 'syscall'}"
                          f" x{n}" for v, n in result.exceptions.items())
        print(f"--- exceptions: {parts}", file=err)


if __name__ == "__main__":
    sys.exit(main())
