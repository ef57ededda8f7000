"""Options shared by several commands: the machine options (everything a MachineConfig
holds) and the argument types.

Owns: the machine options of `emu run` and `emu pt` (and later commands that boot a
kernel), turning them into a MachineConfig, and the positive-count argument type.
Does not own: any command's own options.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from emu.hw.memmap import parse_memory_size
from emu.machine import MachineConfig


def count(text: str) -> int:
    """An argparse type: a positive whole number (`_` separators and 0x allowed)."""
    try:
        value = int(text.replace("_", ""), 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be a positive number of instructions")
    return value


def add_machine_options(command: argparse.ArgumentParser) -> None:
    """The options that make a MachineConfig (see machine_config)."""
    command.add_argument("kernel", nargs="?", type=Path,
                         help="ELF kernel (default: build the project's own)")
    command.add_argument("--memory", help="RAM size, e.g. 256M, 4G, 64G (default: the "
                                          "preset's)")
    command.add_argument("--memmap", default=None,
                         help="memory map preset (pc, tiny, fragmented) or a TOML file "
                              "(default pc)")
    command.add_argument("--cmdline", default="", help="kernel command line")
    command.add_argument("--module", action="append", default=[], type=Path,
                         help="file handed to the kernel as a Limine module (repeatable)")
    command.add_argument("--max-instructions", type=count, default=None,
                         help="stop the guest after N instructions (default: no limit)")
    command.add_argument("--boot-time", type=int, default=1_700_000_000,
                         help="date at boot given to the kernel, UNIX seconds (fixed: "
                              "deterministic)")
    command.add_argument("--no-count", action="store_true",
                         help="do not count instructions: about 1.3x faster on tight loops, but "
                              "no --max-instructions, --trace, instruction figures or "
                              "user-mode I/O permission check")


def kernel_path(kernel: Path | None) -> Path:
    """The kernel named on the command line, or the project's own (built if needed)."""
    if kernel is not None:
        return kernel
    from emu.build import build_guest
    return build_guest()


def machine_config(args) -> MachineConfig:
    return MachineConfig(
        kernel=kernel_path(args.kernel),
        memory=parse_memory_size(args.memory) if args.memory else None,
        memmap=args.memmap, cmdline=args.cmdline, modules=tuple(args.module),
        max_instructions=args.max_instructions, boot_time=args.boot_time,
        count_instructions=not args.no_count)
