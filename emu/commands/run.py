"""`emu run`: boot a Limine kernel (default: the project's own) and report how it ended.

Owns: the options of `emu run` (trace, screenshot, checks, the initrd), live serial
output, the kernel's processes' streams (their fd 0, 1 and 2 on emu's own), and the
summary on stderr (with, for a kernel that runs processes, one line per process, the
system calls it does not implement and its PMM baseline: emu/monitor/processes.py; with a
swap disk, the swap checker's findings as they come and the kernel's swap counters). The
exit status is the run's (emu/result.py).
Does not own: the machine, the checkers, the trace format.
"""
from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path
from typing import Callable

from emu.boot.limine import unanswered
from emu.commands import console, timetravel
from emu.commands.options import (add_machine_options, add_trace_options, attach_injections,
                                  attach_counters, count, machine_config, trace_filter)
from emu.errors import ConfigError, EmuError, Interrupted
from emu.events import SYSCALL_VECTOR, DeviceError, GuestExit, Observer
from emu.hw.devices.uart import FileLine
from emu.inputs import check_output, read_input, refuse_overwriting
from emu.machine import Machine
from emu.monitor import processes, swapcheck
from emu.result import EXIT_STATUS_MEANINGS, RunEnd, RunResult
from emu.x86 import exception_short_name

NAME = "run"
HELP = "boot a Limine kernel (default: the project's own)"
CHECKS = ("pt", "heap")
MAX_SERIAL_INPUT = 16 << 20    # held in the UART's queue and in one trace event        # --check pt,heap: emu/monitor/checks, emu/monitor/heapcheck.py


def add_arguments(run: argparse.ArgumentParser) -> None:
    add_machine_options(run)
    run.add_argument("--initrd", type=Path, metavar="DIR|TAR",
                     help="the kernel's files: a directory (packed as a USTAR archive, "
                          "DIR/bin/prog is /bin/prog) or a USTAR archive, handed over as "
                          "the first module; `--cmdline 'init=/bin/prog -- ARGS'` runs a "
                          "program from it")
    add_trace_options(run)
    run.add_argument("--serial-input", type=Path, default=None, metavar="FILE",
                     help="bytes for the guest to read from COM1: they arrive when the "
                          "guest first looks at the receiver (a trace records them; a "
                          "replay feeds them back from the trace)")
    run.add_argument("--screenshot", type=Path, help="save the framebuffer as a PNG at the end")
    run.add_argument("--quiet", action="store_true", help="no live serial output")
    run.add_argument("--check", nargs="?", const="pt", default=None, metavar="pt,heap",
                     help="check invariants while the guest runs, a comma list: pt (the "
                          "default) the page tables and PMM at every CR3 load, page fault "
                          "and guest checkpoint; heap every kmalloc, krealloc and kfree call")
    run.add_argument("--allow", default="", metavar="RULE,...",
                     help="with --check pt: leave these rules out (a kernel's own policy, "
                          "e.g. --allow WRITE_EXEC)")
    run.add_argument("--strict", action="store_true",
                     help="with --check: end the run at the first violation or heap finding "
                          "(exit status 73)")
    run.add_argument("--check-every", type=count, default=None, metavar="N",
                     help="with --check: also check every N instructions")
    timetravel.add_arguments(run)
    run.epilog = "exit status: " + "; ".join(f"{code} {meaning}"
                                             for code, meaning in EXIT_STATUS_MEANINGS)


def checks_asked(args) -> frozenset[str]:
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
    if args.check_every or args.allow or (args.strict and not checks):
        checks.add("pt")
    return frozenset(checks)


def execute(args) -> int:
    with tempfile.TemporaryDirectory(prefix="emu-run-") as workdir:
        return _execute(args, Path(workdir))


def _with_initrd(config, args, workdir: Path):
    """The config with --initrd's archive as the first module (the kernel indexes the
    first module that is a USTAR archive). A directory is packed beside the trace when
    there is one (as `emu exec` keeps its initrd: a replay needs the archive), else in
    `workdir`, which is gone after the run."""
    if args.initrd is None:
        return config
    from emu.workloads.initrd import initrd_beside, initrd_module
    packed = workdir / "initrd.tar"
    if args.trace is not None and args.initrd.is_dir():
        packed = initrd_beside(args.trace)
        check_output(packed, "initrd")
        refuse_overwriting(packed, "initrd", [("kernel", config.kernel),
                                              *(("module", m) for m in config.modules)])
    return dataclasses.replace(config, modules=(initrd_module(args.initrd, packed),
                                                *config.modules))


def _execute(args, workdir: Path) -> int:
    checks = checks_asked(args)
    events = trace_filter(args)
    timetravel.check_arguments(args)
    if args.resume is not None and "heap" in checks:
        raise ConfigError("--check heap cannot resume a snapshot (its hooks on return "
                          "addresses are not in the file); drop it or rerun from the start")
    if args.resume is not None and args.initrd is not None:
        raise ConfigError("--initrd with --resume: the snapshot holds the modules it was "
                          "taken with; drop --initrd")
    config, saved = timetravel.resumed_config(args) if args.resume else \
        (_with_initrd(machine_config(args), args, workdir), None)
    if args.no_count and args.trace:
        raise ConfigError("--trace stamps every event with an instruction count; drop --no-count")
    if args.no_count and args.check_every:
        raise ConfigError("--check-every counts instructions; drop --no-count")
    inputs = [("kernel", config.kernel), *(("module", m) for m in config.modules),
              ("snapshot", args.resume), ("swap file", config.swap_file),
              ("serial input", args.serial_input)]
    if args.initrd is not None:
        inputs.append(("initrd", args.initrd))
    serial = read_input(args.serial_input, "--serial-input file", MAX_SERIAL_INPUT) \
        if args.serial_input is not None else b""
    for output, what in ((args.trace, "trace"), (args.screenshot, "screenshot"),
                         (args.save_snapshot, "snapshot")):
        if output is not None:
            check_output(output, what)
            refuse_overwriting(output, what, inputs)
    # Hashing the inputs costs a read of each: only for a run that writes a trace or snapshots.
    header = _header(args, config, checks, saved) \
        if args.trace or args.save_snapshot or args.snapshot_every else {}
    recorder = None
    if args.trace:
        from emu.monitor.trace import TraceRecorder
        recorder = TraceRecorder(args.trace, header, events)
    try:
        result, machine, (checker, heap_checker, monitor, swap) = _run(
            args, config, checks, recorder, (saved, header), serial)
    finally:
        if recorder:
            recorder.close()
    if args.screenshot:
        from emu.monitor.screenshot import save_framebuffer
        save_framebuffer(machine, args.screenshot)
    _summary(result)
    if machine.boot.ignored_requests:
        console.err("--- Limine requests left unanswered: " +
                    ", ".join(unanswered(name) for name in machine.boot.ignored_requests))
    if checker is not None:
        counts = ", ".join(f"{rule} x{n}" for rule, n in checker.counts.items())
        console.err(f"--- invariant checks: {checker.checks}, "
                    f"violations: {counts or 'none'}")
    if heap_checker is not None:
        _heap_summary(heap_checker)
    if monitor is not None:
        for line in monitor.summary_lines():
            console.err(f"--- {line}")
    if swap is not None:
        swap_summary(machine, swap, "---")
    return result.exit_status


def swap_summary(machine: Machine, swap, prefix: str) -> None:
    """The kernel's swap counters (pages out and in, bytes, reclaim scans, OOM kills) and
    the swap checker's finding count, one line."""
    from emu.monitor.swapcheck import read_descriptor
    found = read_descriptor(machine)
    counters = found[1].summary() if found is not None else \
        "swap: the kernel set up no swap area on the disk"
    console.err(f"{prefix} {counters}; {len(swap.findings)} swap-check findings")


def run_options(args, checks: frozenset[str]) -> dict:
    """The options of this run that make events, for the trace header (a replay attaches
    the same checkers; the recorder adds its event filter)."""
    return {"checks": sorted(checks), "allow": args.allow, "strict": args.strict,
            "check_every": args.check_every, "processes": True,
            "counters": args.trace_counters}


def _header(args, config, checks: frozenset[str], saved) -> dict:
    """The trace (and snapshot) header: how to run this again (emu/replay/header.py); a
    resumed run keeps its snapshot's and says where it resumed."""
    from emu.replay.header import build_header
    if saved is not None:
        return {**saved.header, "run": run_options(args, checks),
                "resumed_from": {"snapshot": str(args.resume), "icount": saved.icount}}
    return build_header(config, own_kernel=args.kernel is None,
                        run=run_options(args, checks))


def _run(args, config, checks: frozenset[str], recorder, resume, serial: bytes):
    """Build the machine with its checkers and run it; a machine that cannot be built still
    ends its trace with a GuestExit (reason error)."""
    saved, header = resume
    try:
        machine = Machine(config, [recorder] if recorder else [],
                          on_serial_text=None if args.quiet else console.live)
        if recorder:
            recorder.vtime_of = machine.vtime_of
        if machine.devices.hostio is not None:
            machine.devices.hostio.host = console.program_streams()
        machine.events.subscribe(_DeviceErrors())
        monitor = processes.attach(
            machine, on_unimplemented=lambda u: console.err(processes.unimplemented_line(u)))
        swap = swapcheck.attach(machine, on_finding=swap_findings(lambda: machine,
                                                                   args.strict))
        checker = attach_page_checks(machine, args) if "pt" in checks else None
        heap_checker = attach_heap_checks(machine, args) if "heap" in checks else None
        attach_injections(machine)
        attach_counters(machine, args.trace_counters)
        if args.screenshot and machine.boot.framebuffer is None:
            # Known once the kernel is loaded: refuse now, not after a long run.
            raise ConfigError("--screenshot: the kernel asked for no framebuffer; drop "
                              "--screenshot")
        if serial:
            machine.devices.com1.line = FileLine(serial)
        timetravel.prepare(machine, args, saved)
    except (EmuError, Interrupted) as exc:
        if recorder:
            end = RunEnd.INTERRUPTED if isinstance(exc, Interrupted) else RunEnd.ERROR
            recorder.on_event(GuestExit(0, None, end.value))
        raise
    result = timetravel.drive(machine, args, header, (checker, heap_checker))
    if swap is not None:
        swap.finish()
    return result, machine, (checker, heap_checker, monitor, swap)


class _DeviceErrors(Observer):
    """Prints each breach of a device's protocol as it happens (the device reset itself to
    DEVICE_NEEDS_RESET; the guest runs on)."""

    def on_device_error(self, event: DeviceError) -> None:
        console.err(f"emu: device error in {event.device} at instruction {event.icount:,}: "
                    f"{event.detail}")


def attach_page_checks(machine: Machine, args):
    from emu.monitor.checks import attach
    return attach(machine, strict=args.strict, every=args.check_every,
                  on_violation=None if args.strict else _print_violation,
                  allow=args.allow.split(","))


def attach_process_checks(machine: Machine, strict: bool = False):
    """The invariant checker, every rule (page tables, PMM, the processes' address spaces),
    for `emu exec --check`: violations on stderr as they come, or the run ended at the
    first with `strict`. The process rules need the process monitor attached too."""
    from emu.monitor.checks import attach
    return attach(machine, strict=strict, on_violation=None if strict else _print_violation)


def attach_heap_checks(machine: Machine, args):
    from emu.monitor import heapcheck

    def found(event) -> None:
        if args.strict:
            machine.stop(RunEnd.VIOLATION, f"heap finding {event.rule} at {event.address:#x}",
                         "  " + heapcheck.describe(event))
        else:
            console.err(f"emu: heap finding {heapcheck.describe(event)}")
    return heapcheck.attach(machine, found)


def swap_findings(machine_of: Callable[[], Machine], strict: bool):
    """The swap checker's callback: each finding on stderr as it comes, or with --strict
    the first one ends the run like any checker's violation (exit 73; emu exec: 125)."""
    def found(event) -> None:
        if strict:
            machine_of().stop(RunEnd.VIOLATION, f"swap check {event.rule} at "
                                                f"{event.address:#x}", "  " + event.detail)
        else:
            console.err(f"emu: swap check: {event.rule} at {event.address:#x}: "
                        f"{event.detail}")
    return found


def _print_violation(event) -> None:
    first, *rest = event.detail.splitlines()
    console.err(f"emu: invariant violation {event.rule} at {event.address:#x}: {first}")
    for line in rest:
        console.err(f"  {line}")


def _heap_summary(checker) -> None:
    rules: dict[str, int] = {}
    for finding in checker.findings:
        rules[finding.rule] = rules.get(finding.rule, 0) + 1
    calls = sum(stats.calls for stats in checker.stats.values())
    counts = ", ".join(f"{rule} x{n}" for rule, n in rules.items())
    console.err(f"--- heap checks: {calls:,} calls, {len(checker.live):,} blocks live at "
                f"the end, findings: {counts or 'none'}")


def _summary(result: RunResult) -> None:
    if result.report:
        console.err(result.report)
    console.err(f"--- {result.message}")
    if result.counted:
        console.err(f"--- {result.instructions:,} instructions in {result.seconds:.3f} s "
             f"({result.mips:.1f} MIPS)")
    else:
        console.err(f"--- {result.seconds:.3f} s (instructions not counted: --no-count)")
    if result.exceptions:
        parts = ", ".join(f"{exception_short_name(v) if v < SYSCALL_VECTOR else 'syscall'}"
                          f" x{n}" for v, n in result.exceptions.items())
        console.err(f"--- exceptions: {parts}")
