"""`emu exec`: run a static Linux x86-64 program as a process of the project's kernel, and
exit as the program did (as `env` and `timeout` do).

Owns: the options of `emu exec` (--file, --kernel, --env, --seed, the machine options,
--trace, --check, --summary), the program's streams on the host's (fd 1 to stdout and fd 2 to stderr
byte for byte, the host's stdin behind fd 0), the kernel's own lines on stderr as
`emu: kernel: ...`, and the exit status (emu/result.py's EXEC table: the program's status,
128 + N after signal N, 125 when emu or the kernel failed, 126/127 when the program cannot
run or does not exist).
Does not own: packing and running (emu/workloads/process.py), the checkers.
"""
from __future__ import annotations

import argparse
import errno
import os
from pathlib import Path

from emu.commands import console
from emu.commands.options import (add_machine_options, add_trace_options, attach_counters,
                                  attach_injections, machine_config, trace_filter)
from emu.commands.run import swap_findings, swap_summary
from emu.errors import ConfigError
from emu.inputs import check_output, display, refuse_overwriting
from emu.result import (EXEC_EXIT_STATUS_MEANINGS, EXEC_HARNESS_FAILURE, EXEC_NOT_FOUND,
                        RunEnd)

NAME = "exec"
HELP = "run a static Linux x86-64 program under the project's kernel"
ERROR_STATUS = EXEC_HARNESS_FAILURE


def add_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument("--file", action="append", default=[], metavar="HOST[:GUEST]",
                         help="put the host file HOST in the initrd at GUEST (default: "
                              "/NAME); repeatable")
    add_machine_options(command, kernel_option=True)
    command.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                         help="the program's environment (default: empty); repeatable")
    command.add_argument("--seed", type=int, default=0,
                         help="seed of the kernel's random bytes (getrandom, AT_RANDOM)")
    add_trace_options(command)
    command.add_argument("--check", action="store_true",
                         help="check the page tables, the PMM and the processes' address "
                              "spaces while the program runs (findings on stderr)")
    command.add_argument("--strict", action="store_true",
                         help="with --check: end the run at the first finding (status 125)")
    command.add_argument("--summary", action="store_true",
                         help="at the end, on stderr: each process (how it ended, system "
                              "calls, faults by kind, peak RSS), the system calls the kernel "
                              "does not implement, and whether the PMM came back to its "
                              "baseline")
    # A string, not a Path: argv[0] is the program as the user typed it ("./prog" stays
    # "./prog", as a shell passes it), which Path would shorten.
    command.add_argument("program", help="the static executable to run")
    command.add_argument("args", nargs=argparse.REMAINDER,
                         help="the program's arguments (everything after PROGRAM)")
    command.epilog = "exit status: " + "; ".join(f"{code} {meaning}" for code, meaning
                                                 in EXEC_EXIT_STATUS_MEANINGS)


def _files(values: list[str]) -> tuple[tuple[Path, str], ...]:
    out = []
    for value in values:
        host, sep, guest = value.rpartition(":") if ":" in value else (value, "", "")
        if not sep:
            host, guest = value, ""
        if not host:
            raise ConfigError(f"--file {value!r}: no host file")
        out.append((Path(host), guest or "/" + Path(host).name))
    return tuple(out)


def _spec(args):
    from emu.workloads.process import ProgramSpec
    for item in args.env:
        if "=" not in item or item.startswith("="):
            raise ConfigError(f"--env {item!r}: expected NAME=VALUE")
    return ProgramSpec(program=Path(args.program), args=tuple(args.args),
                       files=_files(args.file), env=tuple(args.env), seed=args.seed,
                       argv0=args.program)


def execute(args) -> int:
    from emu.workloads.initrd import initrd_beside
    from emu.workloads.process import KernelLines, prepare, run_program
    spec = _spec(args)
    if not Path(args.program).exists():
        console.err(f"emu: {display(args.program)}: No such file or directory")
        return EXEC_NOT_FOUND
    config = machine_config(args)
    events = trace_filter(args)
    observers = [KernelLines(console.err)]
    recorder = prepared = None
    if args.trace:
        from emu.monitor.trace import TraceRecorder
        from emu.replay.header import build_header
        if args.no_count:
            raise ConfigError("--trace stamps every event with an instruction count; "
                              "drop --no-count")
        initrd = initrd_beside(args.trace)
        inputs = [("program", args.program), ("kernel", config.kernel),
                  *(("file", host) for host, _ in spec.files)]
        for output, what in ((args.trace, "trace"), (initrd, "initrd")):
            check_output(output, what)
            refuse_overwriting(output, what, inputs)
        try:
            prepared = prepare(spec, config, initrd)
        except FileNotFoundError as exc:
            raise ConfigError(f"{display(Path(exc.filename or args.program))}: "
                              f"{os.strerror(exc.errno or errno.ENOENT)}") from None
        recorder = TraceRecorder(args.trace, build_header(
            prepared, own_kernel=args.kernel is None,
            run={"checks": [], "exec_check": bool(args.check or args.strict),
                 "strict": args.strict, "processes": True,
                 "counters": args.trace_counters}), events)
        observers.append(recorder)
    host = console.program_streams()
    monitors: list = []
    machines: list = []             # the machine, once built (a --strict swap finding)
    try:
        result = run_program(spec, config, host, observers,
                             attach=_attach(args, recorder, monitors, machines),
                             prepared=prepared,
                             on_swap_finding=swap_findings(lambda: machines[0],
                                                           args.strict))
    except FileNotFoundError as exc:
        raise ConfigError(f"{display(Path(exc.filename or args.program))}: "
                          f"{os.strerror(exc.errno or errno.ENOENT)}") from None
    finally:
        if recorder:
            recorder.close()
    if 1 in host.closed:
        console.silence_stdout()
    if result.swap is not None and (args.check or result.swap.findings):
        swap_summary(result.machine, result.swap, "emu:")
    if result.status == EXEC_HARNESS_FAILURE and result.run.end is not RunEnd.INTERRUPTED:
        _failure(result)
    if args.summary and monitors and monitors[0] is not None:
        for line in monitors[0].summary_lines():
            console.err(f"emu: {line}")
    return result.status


def _attach(args, recorder, monitors: list, machines: list):
    """What joins the machine once it is built: the trace's virtual time; the process
    monitor when its summary, its events (--trace) or the process rules need it (otherwise
    nothing is hooked); the checker; the injections."""
    checking = args.check or args.strict

    def attach(machine) -> None:
        machines.append(machine)
        if recorder is not None:
            recorder.vtime_of = machine.vtime_of
        if checking or args.summary or args.trace:
            from emu.monitor import processes
            monitors.append(processes.attach(machine))
        if checking:
            from emu.commands.run import attach_process_checks
            attach_process_checks(machine, strict=args.strict)
        attach_injections(machine)          # its hooks run after the checkers'
        attach_counters(machine, args.trace_counters)
    return attach


def _failure(result) -> None:
    run = result.run
    if run.report:
        console.err(run.report)
    if run.end is RunEnd.EXIT and result.wait_status is None:
        console.err(f"emu: the kernel ended without reporting the program's status "
                    f"({run.message})")
    else:
        console.err(f"emu: {run.message}")
