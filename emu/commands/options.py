"""Options shared by several commands: the machine options (everything a MachineConfig
holds) and the argument types.

Owns: the machine options of `emu run` and `emu pt` (and later commands that boot a
kernel), turning them into a MachineConfig, and the positive-count argument type.
Does not own: any command's own options.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from emu.hw.blockdev import DEFAULT_LATENCY
from emu.hw.clock import DEFAULT_IPS
from emu.errors import ConfigError
from emu.hw.memmap import parse_memory_size, parse_size
from emu.inputs import read_input
from emu.inject import attach, parse_spec
from emu.machine import Machine, MachineConfig


MAX_KEYS_FILE = 1 << 20


def count(text: str) -> int:
    """An argparse type: a positive whole number (`_` separators and 0x allowed)."""
    try:
        value = int(text.replace("_", ""), 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be a positive number of instructions")
    return value


def ticks(text: str) -> int:
    """An argparse type: a whole number of ticks, 0 allowed (`_` separators and 0x too)."""
    try:
        value = int(text.replace("_", ""), 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or a positive number of ticks")
    return value


TRACE_HELP = ("write a trace of events to FILE: JSON lines, zstd-compressed if FILE ends "
              "in .zst")


def add_trace_options(command: argparse.ArgumentParser) -> None:
    """`--trace FILE` and `--trace-events LIST` (emu/monitor/trace_events.py)."""
    from emu.monitor import trace_events
    groups = ", ".join([*trace_events.GROUPS, trace_events.SYSCALLS])
    command.add_argument("--trace", type=Path, help=TRACE_HELP)
    command.add_argument("--trace-events", default=None, metavar="all|GROUP|TYPE,...",
                         help="with --trace: record only these events, a comma list of "
                              f"groups ({groups}) or event types, e.g. "
                              "exceptions,cr3,syscalls (default all; the run's start, end "
                              "and inputs are always recorded)")
    command.add_argument("--trace-counters", type=count, default=None, metavar="N",
                         help="with --trace: sample the guest's memory counters (free "
                              "frames, heap pages, swap slots used, each process's RSS) at "
                              "the first event every N instructions, for the counter tracks "
                              "of `emu trace export --perfetto`")


def trace_filter(args):
    """The TraceFilter of `--trace-events` (ConfigError without --trace; so is
    `--trace-counters`)."""
    from emu.monitor import trace_events
    if args.trace_events is not None and args.trace is None:
        raise ConfigError("--trace-events chooses what --trace records; add --trace FILE")
    if args.trace_counters is not None and args.trace is None:
        raise ConfigError("--trace-counters samples into the trace; add --trace FILE")
    return trace_events.parse(args.trace_events)


def attach_counters(machine, period: int | None) -> None:
    """`--trace-counters`: the sampler (emu/monitor/counters.py) on `machine`; a replay
    attaches it with the recorded period at the same place (after the injections)."""
    if period is not None:
        from emu.monitor import counters
        counters.attach(machine, period)


def add_machine_options(command: argparse.ArgumentParser, kernel_option: bool = False) -> None:
    """The options that make a MachineConfig (see machine_config). The kernel is the first
    positional argument, or `--kernel ELF` with `kernel_option` (a command whose positional
    arguments are its own)."""
    if kernel_option:
        command.add_argument("--kernel", type=Path,
                             help="ELF kernel (default: build the project's own)")
    else:
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
    command.add_argument("--ips", type=count, default=DEFAULT_IPS, metavar="N",
                         help=f"virtual instructions per second: the rate of the TSC, the "
                              f"timers and the clock (default {DEFAULT_IPS:,})")
    command.add_argument("--no-platform", action="store_true",
                         help="no PC platform (ACPI tables, APIC, IOAPIC, PIC, PIT, HPET, RTC, "
                              "PS/2, PCI): only the serial ports and the debug exit")
    command.add_argument("--acpi-rsdp-rev", type=int, choices=(0, 2), default=2,
                         help="ACPI RSDP revision: 2 (default, with an XSDT) or 0 (ACPI 1.0, "
                              "an RSDT only)")
    command.add_argument("--keys", default="", metavar="TEXT|FILE",
                         help="keys typed on the PS/2 keyboard once the guest waits for "
                              "input (idles in hlt or reads the 8042 status with IRQ 1 "
                              "unmasked, or polls the status): the text, "
                              "or the contents of FILE if it names one (\\n in the text is "
                              "Enter)")
    command.add_argument("--inject", action="append", default=[], metavar="SPEC",
                         help="a fault injection, KIND:KEY=VALUE,... (repeatable): "
                              "fail-function:function=NAME[,retval=N][,caller=SYM]"
                              "[,probability=P,interval=N,times=N,space=B,fail-nth=N,seed=S]; "
                              "ram:at=N,paddr=A|symbol=S|type=T[,bit=B,flips=K,seed=S]; "
                              "irq:at=N,vector=V; spurious-pf:at=N; "
                              "disk:fault=ioerr|torn|delay[,op=read|write][,sectors=A..B]"
                              "[,nth=N][,land=K][,ticks=T][,KNOBS] (with a swap disk)")
    command.add_argument("--swap", metavar="SIZE", default=None,
                         help="a swap disk of SIZE (e.g. 128M): a virtio-blk device over a "
                              "sparse temporary file, removed at exit")
    command.add_argument("--swap-file", metavar="PATH", type=Path, default=None,
                         help="a swap disk over the existing file PATH, kept (its hash goes "
                              "into the trace header)")
    command.add_argument("--swap-latency", type=ticks, default=DEFAULT_LATENCY, metavar="N",
                         help=f"ticks from a swap disk request to its completion interrupt "
                              f"(0: at once; default {DEFAULT_LATENCY:,})")
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


def keys_text(value: str) -> str:
    """--keys: a file's contents if it names a file, else the text with \\n as Enter."""
    if value and Path(value).is_file():
        return read_input(Path(value), "--keys file", MAX_KEYS_FILE).decode("utf-8", "replace")
    return value.replace("\\n", "\n").replace("\\t", "\t")


def machine_config(args) -> MachineConfig:
    for spec in args.inject:        # every spec's error before anything boots
        parse_spec(spec)
    return MachineConfig(
        kernel=kernel_path(args.kernel),
        memory=parse_memory_size(args.memory) if args.memory else None,
        memmap=args.memmap, cmdline=args.cmdline, modules=tuple(args.module),
        max_instructions=args.max_instructions, boot_time=args.boot_time,
        count_instructions=not args.no_count, platform=not args.no_platform, ips=args.ips,
        acpi_rsdp_revision=args.acpi_rsdp_rev, keys=keys_text(args.keys),
        injections=tuple(args.inject),
        swap=parse_size(args.swap) if args.swap is not None else None,
        swap_file=args.swap_file, swap_latency=args.swap_latency)


def attach_injections(machine: Machine) -> None:
    """The config's injections, attached after everything else on the machine: a hook an
    injector adds must run after the others at the same address (a checker at a function's
    entry sees the call before fail-function makes it return)."""
    attach(machine, [parse_spec(spec) for spec in machine.config.injections])
