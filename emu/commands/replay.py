"""`emu replay TRACE`: run a recorded run again and compare its events as they happen.

Owns: the options of `emu replay`, rebuilding the recorded machine (emu/replay/), the
checkers the recording had, and what is printed: one line when everything matched, the
divergence report at the first difference. Exit status: 0 all matched, 75 a divergence
(emu/result.py), 2 bad input (a missing or changed input, a corrupt trace).
Does not own: the comparison (emu/replay/divergence.py) or the trace format.

Not to be confused with `emu heap-replay` (a malloc-lab allocation trace replayed on the
guest's heaps) or the guest's `replay=` (the kernel's own replayer of such traces).
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from emu.commands import console
from emu.commands.options import attach_counters, attach_injections
from emu.commands.run import attach_heap_checks, attach_page_checks
from emu.errors import ConfigError, TraceError
from emu.inputs import display
from emu.machine import Machine, MachineConfig
from emu.monitor import trace_events
from emu.monitor.trace import last_event, read_trace
from emu.replay import compare
from emu.replay.divergence import ReplayComparer
from emu.replay.feed import RecordedInputs
from emu.replay.header import config_from_header, with_seeds
from emu.replay.inputs import find_inputs
from emu.result import EXIT_STATUS, RunEnd

NAME = "replay"
HELP = "run a trace's recording again and report the first event that differs"
BUDGET_SLACK = 1_000_000        # a rerun may run this much past the recording's end
# Fields --set may not change: inputs are found by hash, and a replay counts instructions.
UNSETTABLE = frozenset({"kernel", "modules", "count_instructions"})


def add_arguments(replay: argparse.ArgumentParser) -> None:
    replay.add_argument("trace", type=Path, help="a trace written by `emu run --trace`")
    replay.add_argument("--kernel", type=Path, default=None,
                        help="replay with this kernel build (default: the recorded file, "
                             "found by its hash, or the project's own kernel rebuilt)")
    replay.add_argument("--search", type=Path, action="append", default=[], metavar="DIR",
                        help="look for the recorded kernel and modules here by name "
                             "(repeatable; verified by hash)")
    replay.add_argument("--compare", default=compare.ALL, metavar="all|mm|TYPE[/FIELD...],...",
                        help="what to compare: all (every event and field, the default), mm "
                             "(exceptions, CR3 loads, invlpg and the end by kind and address, "
                             "ignoring RIPs and instruction counts), or event types with "
                             "optional fields, e.g. ExceptionDelivered/vector/cr2,Cr3Written")
    replay.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="change one recorded configuration field (e.g. "
                             "boot_time=1800000000) to see where the run first depends on it")
    replay.add_argument("--seed", action="append", default=[], metavar="NAME=VALUE",
                        help="change one recorded seed (the header's seeds, e.g. inject.0=7) "
                             "to see where the run first depends on it")
    replay.epilog = ("exit status: 0 every compared event matched; 75 the rerun differed "
                     "(the report shows the first difference); 2 bad input")


def overrides(header: dict, settings: list[str]) -> dict:
    """--set FIELD=VALUE, typed like the recorded value."""
    recorded = header.get("config") if isinstance(header.get("config"), dict) else {}
    names = {field.name for field in dataclasses.fields(MachineConfig)
             if isinstance(recorded.get(field.name), (str, int, type(None))) and
             field.name not in UNSETTABLE}
    out = {}
    for setting in settings:
        name, sep, text = setting.partition("=")
        if not sep or name not in names:
            raise ConfigError(f"--set {setting}: give FIELD=VALUE with FIELD one of "
                              f"{', '.join(sorted(names))}")
        out[name] = _typed(name, text, recorded.get(name))
    return out


def _typed(name: str, text: str, recorded):
    if isinstance(recorded, bool):
        if text.lower() not in ("true", "false", "1", "0"):
            raise ConfigError(f"--set {name}={text}: give true or false")
        return text.lower() in ("true", "1")
    if isinstance(recorded, int) or recorded is None and text.lstrip("-").isdigit():
        try:
            return int(text.replace("_", ""), 0)
        except ValueError:
            raise ConfigError(f"--set {name}={text}: not a whole number") from None
    return text


def seeds(settings: list[str]) -> dict[str, int]:
    """--seed NAME=VALUE (the names are checked against the trace by with_seeds)."""
    out = {}
    for setting in settings:
        name, sep, text = setting.partition("=")
        try:
            out[name.strip()] = int(text.replace("_", ""), 0)
        except ValueError:
            raise ConfigError(f"--seed {setting}: give NAME=NUMBER, e.g. inject.0=7") \
                from None
        if not sep or not name.strip():
            raise ConfigError(f"--seed {setting}: give NAME=NUMBER, e.g. inject.0=7")
    return out


def _budget(config: MachineConfig, trace: Path) -> MachineConfig:
    """Bound a rerun that loops where the recording did not: the recorded budget, or twice
    the recording's length and some."""
    if config.max_instructions:
        return config
    last = last_event(trace)
    if last is None:
        return config
    return dataclasses.replace(config, max_instructions=2 * last["icount"] + BUDGET_SLACK)


def _machine(header: dict, config: MachineConfig, comparer: ReplayComparer,
             inputs: RecordedInputs) -> Machine:
    machine = Machine(config, [comparer])
    inputs.wire(machine)
    run = header.get("run") if isinstance(header.get("run"), dict) else {}
    checks = run.get("checks") or []
    options = argparse.Namespace(strict=bool(run.get("strict")), allow=str(run.get("allow", "")),
                                 check_every=run.get("check_every"))
    if "pt" in checks:
        attach_page_checks(machine, options)
    if "heap" in checks:
        attach_heap_checks(machine, options)
    if run.get("processes"):        # the process monitor's events were recorded
        from emu.monitor import processes
        processes.attach(machine)
    if run.get("exec_check"):
        from emu.commands.run import attach_process_checks
        attach_process_checks(machine, strict=bool(run.get("strict")))
    from emu.monitor import swapcheck
    swapcheck.attach(machine)       # emu run and emu exec check every run with a swap disk
    attach_injections(machine)
    period = run.get("counters")
    if period is not None and (type(period) is not int or period <= 0):
        raise TraceError(f"the trace header's run.counters is {period!r}, not a positive "
                         "number of instructions")
    attach_counters(machine, period)
    comparer.attach(machine)
    return machine


def execute(args) -> int:
    header, events = read_trace(args.trace)
    try:
        if header.get("resumed_from"):
            raise TraceError(f"{display(args.trace)} continues a run resumed from a snapshot; "
                             "replay the trace of the run that started from boot")
        found = find_inputs(header, args.kernel, args.search, args.trace)
        config = with_seeds(config_from_header(header, found.kernel, found.inputs,
                                               overrides(header, args.set)), seeds(args.seed))
        run = header.get("run") if isinstance(header.get("run"), dict) else {}
        recorded = trace_events.from_header(header)
        comparison = compare.parse(args.compare).narrowed_to(recorded.recorded_types)
        if not found.kernel_matches:
            console.err(f"emu: replaying with another kernel build ({display(found.kernel)}); "
                        f"the recording's was {str(header.get('kernel_sha256'))[:16]}...")
        comparer = ReplayComparer(events, comparison, recorded_filter=recorded)
        inputs = RecordedInputs(args.trace)
        result = _machine(header, _budget(config, args.trace), comparer, inputs).run()
    finally:
        events.close()
    return _outcome(args.trace, comparer, result)


def _outcome(trace: Path, comparer: ReplayComparer, result) -> int:
    try:
        comparer.finish()
    except TraceError as exc:
        raise TraceError(f"{display(trace)}: {exc}") from None
    if comparer.divergence is not None:
        console.out(comparer.divergence.report)
        console.err(f"--- replay diverged at event {comparer.divergence.index:,} "
                    f"(instruction {comparer.divergence.icount:,}); "
                    f"{comparer.matched:,} events matched before it")
        return EXIT_STATUS[RunEnd.DIVERGED]
    how = "the recording was cut short here" if comparer.cut_short else \
        f"the run ended as recorded ({result.reason})"
    console.out(f"replay matched: {comparer.matched:,} events compared "
                f"({comparer.comparison.text}), {result.instructions:,} instructions; {how}")
    return 0
