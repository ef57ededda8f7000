"""The `emu` command line.

  emu run [KERNEL] [--memory SIZE] [--memmap PRESET|FILE] [--cmdline TEXT]
          [--module FILE]... [--max-instructions N] [--trace FILE] [--screenshot FILE.png]
          [--check [pt,heap]] [--strict] [--check-every N]
  emu pt [KERNEL] [the machine options of run] [--cr3 VALUE] [--at-checkpoint N]
  emu heap-replay TRACE [--heap KIND|all] [--debug] [--bare] [--json] [--kernel ELF]
  emu build

Without KERNEL, `emu run` builds (if the sources changed) and boots the project's own kernel.
Exit status: the guest's own debug-exit value (0-63), 70 guest crash, 71 instruction budget
exhausted, 72 guest halted for good, 73 invariant violation under --strict, 2 bad input or
harness error (one line on stderr). `emu pt` runs the kernel the same way and lists an address
space (exit 0, or 2 when there is none to list). `emu heap-replay` replays a malloc-lab trace
on each heap allocator in the guest and prints a table (exit 0 all clean, 1 an allocator
broke integrity, 70-72 a run did not finish, 2 a bad trace: refused before booting).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from emu import __version__
from emu.errors import ConfigError, EmuError
from emu.machine import EXIT_HARNESS_ERROR, Machine, MachineConfig, RunResult
from emu.hw.memmap import parse_memory_size

MSR_EFER, EFER_NXE = 0xC0000080, 1 << 11
CHECKS = ("pt", "heap")        # --check pt,heap: emu/checker.py, emu/heapcheck.py


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="emu", description="x86-64 emulator harness for "
                                     "OS memory managers")
    parser.add_argument("--version", action="version", version=f"emu {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="boot a Limine kernel (default: the project's own)")
    _machine_options(run)
    run.add_argument("--trace", type=Path, help="write a JSON-lines trace of events to FILE")
    run.add_argument("--screenshot", type=Path, help="save the framebuffer as a PNG at the end")
    run.add_argument("--quiet", action="store_true", help="no live serial output")
    run.add_argument("--check", nargs="?", const="pt", default=None, metavar="pt,heap",
                     help="check invariants while the guest runs, a comma list: pt (the "
                          "default) the page tables and PMM at every CR3 load, page fault "
                          "and guest checkpoint (emu/checker.py); heap every kmalloc, "
                          "krealloc and kfree call (emu/heapcheck.py)")
    run.add_argument("--strict", action="store_true",
                     help="with --check: end the run at the first violation or heap finding "
                          "(exit status 73)")
    run.add_argument("--check-every", type=_count, default=None, metavar="N",
                     help="with --check: also check every N instructions")
    pt = commands.add_parser("pt", help="run a kernel and list an address space (like "
                                        "QEMU's `info mem`)")
    _machine_options(pt)
    pt.add_argument("--cr3", type=lambda text: int(text, 0), default=None,
                    help="list the tables at this physical address (default: the CR3 live "
                         "at the end of the run)")
    pt.add_argument("--at-checkpoint", type=_count, default=None, metavar="N",
                    help="list the address space live at the Nth guest checkpoint")
    replay = commands.add_parser(
        "heap-replay", help="replay a malloc-lab trace on the guest's heap allocators, "
                            "checked from outside")
    replay.add_argument("trace", type=Path, help="malloc-lab trace (a ID SIZE, r ID SIZE, "
                                                 "f ID after a 2- or 4-integer header)")
    replay.add_argument("--heap", default="all", choices=("list", "buddy", "slab", "chained",
                                                          "all"),
                        help="allocator to run the trace on (default all)")
    replay.add_argument("--debug", action="store_true",
                        help="heapdebug=1: red zones, poison and checks in the guest")
    replay.add_argument("--bare", action="store_true",
                        help="replay=bare: the allocator alone, no checking in the guest (its "
                             "pure cost in instructions per operation)")
    replay.add_argument("--json", action="store_true", help="print JSON instead of a table")
    replay.add_argument("--kernel", type=Path, help="ELF kernel (default: build guest/)")
    replay.add_argument("--memory", help="RAM size (default: the pc preset's)")
    replay.add_argument("--max-instructions", type=_count, default=None,
                        help="stop a run after N instructions (default 5 billion)")
    commands.add_parser("build", help="build the guest kernel in guest/")
    return parser


def _machine_options(command: argparse.ArgumentParser) -> None:
    """The options that make a MachineConfig (see _machine_config), shared by run and pt."""
    command.add_argument("kernel", nargs="?", type=Path,
                         help="ELF kernel (default: build guest/)")
    command.add_argument("--memory", help="RAM size, e.g. 256M, 4G, 64G (default: the "
                                          "preset's)")
    command.add_argument("--memmap", default=None,
                         help="memory map preset (pc, tiny, fragmented) or a TOML file "
                              "(default pc)")
    command.add_argument("--cmdline", default="", help="kernel command line")
    command.add_argument("--module", action="append", default=[], type=Path,
                         help="file handed to the kernel as a Limine module (repeatable)")
    command.add_argument("--max-instructions", type=_count, default=None,
                         help="stop the guest after N instructions (default: no limit)")
    command.add_argument("--boot-time", type=int, default=1_700_000_000,
                         help="date at boot given to the kernel, UNIX seconds (fixed: "
                              "deterministic)")
    command.add_argument("--no-count", action="store_true",
                         help="do not count instructions: about 1.3x faster on tight loops, but "
                              "no --max-instructions, --trace, instruction figures or "
                              "user-mode I/O permission check")


def _machine_config(args) -> MachineConfig:
    kernel = args.kernel
    if kernel is None:
        from emu.build import build_guest
        kernel = build_guest()
    return MachineConfig(
        kernel=kernel, memory=parse_memory_size(args.memory) if args.memory else None,
        memmap=args.memmap, cmdline=args.cmdline, modules=tuple(args.module),
        max_instructions=args.max_instructions, boot_time=args.boot_time,
        count_instructions=not args.no_count)


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
            from emu.build import build_guest
            print(build_guest())
            return 0
        if args.command == "pt":
            return _pt(args)
        if args.command == "heap-replay":
            return _heap_replay(args)
        return _run(args)
    except EmuError as exc:
        print(f"emu: error: {exc}", file=sys.stderr)
        return EXIT_HARNESS_ERROR
    except KeyboardInterrupt:
        print("emu: interrupted", file=sys.stderr)
        return 130


def _checks(args) -> frozenset[str]:
    """The checks `--check` asks for. `--check KERNEL` (the flag alone, then the kernel) is
    taken apart again: an optional value swallows the positional argument after it."""
    value = args.check
    checks: set[str] = set()
    if value is not None:
        names = [name.strip() for name in value.split(",")]
        if all(name in CHECKS for name in names):
            checks.update(names)
        elif args.kernel is None and ("/" in value or value.endswith(".elf") or
                                      Path(value).exists()):
            args.kernel = Path(value)
            checks.add("pt")
        else:
            raise ConfigError(f"--check {value}: unknown check; choose from "
                              f"{', '.join(CHECKS)} (a comma list, e.g. --check pt,heap)")
    if args.check_every or (args.strict and not checks):
        checks.add("pt")
    return frozenset(checks)


def _run(args) -> int:
    checks = _checks(args)
    config = _machine_config(args)
    kernel = config.kernel
    if args.no_count and args.trace:
        raise ConfigError("--trace stamps every event with an instruction count; drop --no-count")
    if args.no_count and args.check_every:
        raise ConfigError("--check-every counts instructions; drop --no-count")
    observers = []
    recorder = None
    if args.trace:
        from emu.monitor.trace import TraceRecorder
        import hashlib
        digest = hashlib.sha256(kernel.read_bytes()).hexdigest() if kernel.is_file() else ""
        recorder = TraceRecorder(args.trace, digest, config.describe())
        observers.append(recorder)
    live = None if args.quiet else _live_printer()
    try:
        machine = Machine(config, observers, on_serial_text=live)
        checker = heap_checker = None
        if "pt" in checks:
            from emu.monitor.checker import attach
            checker = attach(machine, strict=args.strict, every=args.check_every,
                             on_violation=None if args.strict else _print_violation)
        if "heap" in checks:
            from emu.monitor import heapcheck
            heap_checker = heapcheck.attach(machine, _heap_finding(machine, args.strict))
        result = machine.run()
    finally:
        if recorder:
            recorder.close()
    if args.screenshot:
        from emu.monitor.screenshot import save_framebuffer
        save_framebuffer(machine, args.screenshot)
    _summary(result)
    if checker is not None:
        _check_summary(checker)
    if heap_checker is not None:
        _heap_summary(heap_checker)
    return result.exit_status


def _heap_finding(machine, strict: bool):
    from emu.monitor.heapcheck import describe

    def found(event) -> None:
        if strict:
            machine.stop_for_violation(f"heap finding {event.rule} at {event.address:#x}",
                                       "  " + describe(event))
        else:
            print(f"emu: heap finding {describe(event)}", file=sys.stderr)
    return found


def _heap_summary(checker) -> None:
    rules: dict[str, int] = {}
    for finding in checker.findings:
        rules[finding.rule] = rules.get(finding.rule, 0) + 1
    calls = sum(stats.calls for stats in checker.stats.values())
    counts = ", ".join(f"{rule} x{n}" for rule, n in rules.items())
    print(f"--- heap checks: {calls:,} calls, {len(checker.live):,} blocks live at the end, "
          f"findings: {counts or 'none'}", file=sys.stderr)


def _heap_replay(args) -> int:
    """`emu heap-replay`: the trace is read and checked before anything boots."""
    from emu.workloads import heap_replay as heapreplay

    trace = heapreplay.parse_trace(args.trace)
    kernel = args.kernel
    if kernel is None:
        from emu.build import build_guest
        kernel = build_guest()
    heaps = heapreplay.HEAP_KINDS if args.heap == "all" else (args.heap,)
    outcomes = heapreplay.replay_all(
        kernel, trace, heaps, bare=args.bare, debug=args.debug,
        memory=parse_memory_size(args.memory) if args.memory else None,
        max_instructions=args.max_instructions or heapreplay.DEFAULT_BUDGET)
    print(heapreplay.render_json(trace, outcomes) if args.json
          else heapreplay.render_table(trace, outcomes))
    return heapreplay.worst_status(outcomes)


def _print_violation(event) -> None:
    first, *rest = event.detail.splitlines()
    print(f"emu: invariant violation {event.rule} at {event.address:#x}: {first}",
          file=sys.stderr)
    for line in rest:
        print(f"  {line}", file=sys.stderr)


def _check_summary(checker) -> None:
    counts = ", ".join(f"{rule} x{n}" for rule, n in checker.counts.items())
    print(f"--- invariant checks: {checker.checks}, violations: {counts or 'none'}",
          file=sys.stderr)


def _pt(args) -> int:
    """`emu pt`: run, then list the address space at the end, at --cr3 or at a checkpoint."""
    from unicorn.x86_const import UC_X86_REG_MSR

    from emu.events import Checkpoint, Observer
    from emu.hw.memory import UnbackedAccess
    from emu.arch.paging import mapped_ranges

    machine = Machine(_machine_config(args))

    def listing(cr3: int) -> list:
        nxe = bool(machine.uc.reg_read(UC_X86_REG_MSR, MSR_EFER) & EFER_NXE)
        try:
            return mapped_ranges(machine.memory.read_u64, cr3, nxe)
        except UnbackedAccess as exc:
            raise ConfigError(f"no page tables at CR3 {cr3:#x}: {exc}") from None

    class AtCheckpoint(Observer):
        seen = 0
        picture = None

        def on_checkpoint(self, event: Checkpoint) -> None:
            self.seen += 1
            if self.seen == args.at_checkpoint:
                cr3 = machine.cpu.cr3()
                self.picture = (cr3, f"at checkpoint #{self.seen} (number {event.number}, "
                                     f"instruction {event.icount:,})", listing(cr3))

    watcher = AtCheckpoint()
    if args.at_checkpoint:
        machine.events.subscribe(watcher)
    result = machine.run()
    print(f"--- {result.message}", file=sys.stderr)
    if args.at_checkpoint:
        if watcher.picture is None:
            raise ConfigError(f"the guest reached {watcher.seen} checkpoints, not "
                              f"{args.at_checkpoint}")
        cr3, when, ranges = watcher.picture
    elif args.cr3 is not None:
        cr3, when = args.cr3, "given with --cr3"
        ranges = listing(cr3)
    else:
        cr3, when = machine.cpu.cr3(), f"at the end of the run ({result.reason})"
        ranges = listing(cr3)
    for line in _address_space_lines(cr3, when, ranges):
        print(line)
    return 0


def _address_space_lines(cr3: int, when: str, ranges) -> list[str]:
    """The header, one line per range (MappedRange.describe: start-end size perms ->
    physical; perms w/r, u/s, x/-), and the bytes mapped per permission."""
    lines = [f"address space of CR3 {cr3:#x}, {when}: {len(ranges)} ranges",
             f"{'start':16} {'end':16} {'size':16} prm -> physical"]
    lines += [r.describe() for r in ranges]
    totals: dict[str, int] = {}
    for r in ranges:
        perms = r.describe().split()[2]
        totals[perms] = totals.get(perms, 0) + r.end - r.start
    lines.append(f"mapped: {_size(sum(totals.values()))}" +
                 "".join(f", {perms} {_size(size)}" for perms, size in sorted(totals.items())))
    return lines


def _size(size: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if size >= 1 << shift:
            return f"{size / (1 << shift):.1f} {unit}".replace(".0 ", " ")
    return f"{size} B"


def _live_printer():
    def write(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()
    return write


def _summary(result: RunResult) -> None:
    from emu.monitor.report import exception_name
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
