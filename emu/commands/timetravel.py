"""The time-travel options of `emu run`: `--until`, snapshot files and `--resume`.

Owns: parsing `--until N|SYMBOL`, `--save-snapshot FILE`, `--snapshot-every N` with
`--snapshot-dir DIR`, and `--resume SNAPSHOT` (the machine rebuilt from the snapshot's
recorded configuration, its inputs found by hash as a replay finds them); driving a run
that saves snapshots on the way.
Does not own: snapshots themselves (emu/snapshot/) or the rest of `emu run`.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from emu.commands import console
from emu.commands.options import count
from emu.errors import ConfigError
from emu.inputs import check_output, display
from emu.machine import Machine, MachineConfig
from emu.snapshot import load, save

SNAPSHOT_SUFFIX = ".emusnap"
MIN_PERIOD = 10_000          # a file every few microseconds of guest time helps nobody


def until_value(text: str) -> int | str:
    """--until: an instruction count, or a symbol name."""
    try:
        return count(text)
    except argparse.ArgumentTypeError:
        if not text or not (text[0].isalpha() or text[0] in "_.$"):
            raise argparse.ArgumentTypeError(f"{text!r} is neither a positive instruction "
                                             "count nor a symbol name") from None
        return text


def port_number(text: str) -> int:
    """--gdb PORT: a TCP port, 0 for any free one (the port is printed)."""
    try:
        value = int(text, 10)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (0-65535)")
    return value


def add_arguments(run: argparse.ArgumentParser) -> None:
    run.add_argument("--until", type=until_value, default=None, metavar="N|SYMBOL",
                     help="stop when exactly N instructions have retired, or before the "
                          "first instruction of SYMBOL runs (exit status 76)")
    run.add_argument("--save-snapshot", type=Path, default=None, metavar="FILE",
                     help="when the run stops, save a snapshot to FILE (with --until: the "
                          "place to resume from)")
    run.add_argument("--snapshot-every", type=count, default=None, metavar="N",
                     help="save a snapshot every N instructions into --snapshot-dir")
    run.add_argument("--snapshot-dir", type=Path, default=Path("snapshots"), metavar="DIR",
                     help="where --snapshot-every writes (default ./snapshots)")
    run.add_argument("--gdb", type=port_number, default=None, metavar="PORT",
                     help="start halted and wait for GDB on localhost:PORT (`target remote "
                          ":PORT`); reverse-stepi and reverse-continue work (exit status 77 "
                          "if GDB kills the run)")
    run.add_argument("--resume", type=Path, default=None, metavar="SNAPSHOT",
                     help="continue a run from a snapshot file, with the configuration it "
                          "was taken with (kernel and modules found by hash)")


def check_arguments(args) -> None:
    if args.no_count and (args.until is not None or args.save_snapshot or args.snapshot_every
                          or args.resume):
        raise ConfigError("--until, snapshots and --resume count instructions; drop --no-count")
    for output in (args.save_snapshot,):
        if output is not None:
            check_output(output, "snapshot")
    if args.snapshot_every is not None and args.snapshot_every < MIN_PERIOD:
        raise ConfigError(f"--snapshot-every {args.snapshot_every}: at least {MIN_PERIOD:,} "
                          "instructions between snapshots")
    if args.snapshot_every and args.snapshot_dir.exists() and not args.snapshot_dir.is_dir():
        raise ConfigError(f"--snapshot-dir {display(args.snapshot_dir)} is not a directory")
    if args.gdb is not None and (args.no_count or args.snapshot_every):
        raise ConfigError("--gdb counts instructions and takes its own snapshots; drop "
                          "--no-count and --snapshot-every")
    if args.resume is not None and args.kernel is not None:
        raise ConfigError("--resume runs the kernel the snapshot was taken of; drop KERNEL")


def resumed_config(args) -> tuple[MachineConfig, object]:
    """The configuration a snapshot was taken with, its inputs found, and the snapshot."""
    from emu.replay.header import config_from_header
    from emu.replay.inputs import find_inputs
    saved = load(args.resume)
    found = find_inputs(saved.header, None, [], args.resume)
    return config_from_header(saved.header, found.kernel, found.inputs), saved


def prepare(machine: Machine, args, saved) -> None:
    """After the machine is built and its checkers attached: the snapshot resumed, the
    --until stop set."""
    if saved is not None:
        saved.apply(machine)
        machine.reopen()
        console.err(f"--- resumed from {display(args.resume)} at instruction "
                    f"{saved.icount:,}")
    if args.until is not None:
        if isinstance(args.until, int):
            if args.until < machine.cpu.icount():
                raise ConfigError(f"--until {args.until}: the snapshot is already at "
                                  f"instruction {machine.cpu.icount():,}")
            machine.stop_at(icount=args.until)
        else:
            machine.stop_at(symbol=args.until)


def drive(machine: Machine, args, header: dict, checkers=(None, None)):
    """Run to the end, saving a snapshot file every --snapshot-every instructions and at
    the end with --save-snapshot; with --gdb, under the debugger first."""
    if args.gdb is not None:
        result = _debug(machine, args.gdb, *checkers)
        if result is not None:
            return result
    if args.snapshot_every:
        args.snapshot_dir.mkdir(parents=True, exist_ok=True)
        period = args.snapshot_every
        limit = args.until if isinstance(args.until, int) else None
        mark = machine.cpu.icount() // period * period + period
        while (limit is None or mark < limit) and machine.advance(mark):
            save(machine, args.snapshot_dir / f"snapshot-{mark:012d}{SNAPSHOT_SUFFIX}", header)
            mark += period
    result = machine.run()
    if args.save_snapshot is not None:
        size = save(machine, args.save_snapshot, header)
        console.err(f"--- snapshot at instruction {machine.cpu.icount():,} saved to "
                    f"{display(args.save_snapshot)} ({size:,} bytes)")
    return result


def _debug(machine: Machine, port: int, checker, heap_checker):
    """A GDB session; the run's result if it ended meanwhile, else None (the run goes on
    after a detach, or ends KILLED)."""
    from emu.gdb.stub import SessionEnd, listen, serve
    from emu.result import RunEnd
    server = listen(port)
    console.err(f"--- waiting for GDB on localhost:{server.getsockname()[1]} "
                f"(gdb KERNEL -ex 'target remote :{server.getsockname()[1]}')")
    end, result = serve(machine, server, checker=checker, heap_checker=heap_checker,
                        say=console.err)
    if result is None and end is SessionEnd.KILLED:
        machine.stop(RunEnd.KILLED, "killed by the debugger")
    return result
