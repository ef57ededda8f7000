"""One variant of a campaign: boot the workload with its injections, run it with the
checkers, and say how it ended, in one of campaign.CLASSES.

Owns: `run_variant` (a pure function of plain data, so that local worker processes and
Dask workers run the same thing), the classification, and the delta debugging that shrinks
a failing set of injections.

A variant can start from a snapshot: its task names a start point (an instruction count
before the variant can inject anything, and the calls of the counted function already made
there; runner.py finds both from the clean run). Each worker boots the workload once and
keeps snapshots of it along the clean run (a ladder, up to MAX_SNAPSHOTS); for a variant
it restores the latest one at or before the start, runs on to the start without injectors
and snapshots there too, attaches the variant's injectors (told the calls already made),
runs, and removes them again (_unwire). The outcome is the same as a fresh boot's,
instruction for instruction (tests/test_campaign.py compares them); only the shared part
of the run is saved. Tasks come in order of their points, so a worker mostly moves
forwards.
"""
from __future__ import annotations

import dataclasses
import json
import re
import time
from pathlib import Path

from unicorn import x86_const as X

from emu.errors import EmuError
from emu.hw.memmap import parse_memory_size
from emu.inject import attach, parse_spec
from emu.inject.campaign import DEFAULT_BUDGET, Outcome
from emu.inject.knobs import Knobs
from emu.machine import Machine, MachineConfig
from emu.result import RunEnd


def machine_config(machine: dict, specs: tuple[str, ...]) -> MachineConfig:
    """A campaign's [machine] table (paths resolved) as a MachineConfig."""
    from emu.build import build_guest
    memory = machine.get("memory")
    return MachineConfig(
        kernel=Path(machine["kernel"]) if "kernel" in machine else build_guest(),
        memory=parse_memory_size(memory) if isinstance(memory, str) else memory,
        memmap=machine.get("memmap"), cmdline=machine.get("cmdline", ""),
        modules=tuple(Path(module) for module in machine.get("modules", ())),
        max_instructions=machine.get("max_instructions", DEFAULT_BUDGET),
        boot_time=machine.get("boot_time", 1_700_000_000),
        ips=machine.get("ips", 100_000_000), platform=machine.get("platform", True),
        injections=specs)


class _Watch:
    """What the checkers found during one run."""

    def __init__(self) -> None:
        self.violations: list = []
        self.findings: list = []


def _build(job: dict, specs: tuple[str, ...], count: str | None, trace: str | None):
    config = machine_config(job["machine"], specs)
    observers = []
    if trace is not None:
        from emu.monitor.trace import TraceRecorder
        from emu.replay.header import build_header
        observers.append(TraceRecorder(Path(trace), build_header(
            config, own_kernel="kernel" not in job["machine"], run={"checks": job["checks"]})))
    machine = Machine(config, observers)
    for observer in observers:              # events carry the machine's virtual time
        observer.vtime_of = machine.vtime_of
    watch = _Watch()
    if "pt" in job["checks"]:
        from emu.monitor.checks import attach as attach_checks
        attach_checks(machine, on_violation=watch.violations.append)
    if "heap" in job["checks"]:
        from emu.monitor import heapcheck
        heapcheck.attach(machine, watch.findings.append)
    counter = None
    if count is not None:       # the template's function, hooked but never failing
        spec = dataclasses.replace(parse_spec(count.replace("{n}", "1")),
                                   knobs=Knobs(probability=0))
        (counter,) = attach(machine, [spec])
        counter.call_times = []
    # Injectors last: their hooks must run after the checkers' at the same address.
    attach(machine, [parse_spec(spec) for spec in specs])
    return machine, counter, watch, observers


Start = tuple[int, int]      # (instruction count, counted calls made before it)


def run_variant(job: dict, index: int, n: int, specs: tuple[str, ...],
                start: Start | None = None, *, count: str | None = None,
                trace: str | None = None) -> Outcome:
    """Run the workload of `job` (Campaign.job() plus "clean_output") with `specs`.
    `start`: begin from this worker's snapshot at that point instead of booting;
    `count`: a fail-function template whose calls to count (extra["calls"], and
    extra["call_times"], the instruction count of each); `trace`: write the run's trace
    there (a fresh boot). Errors of the harness or the campaign become class `error`."""
    if start is not None and count is None and trace is None:
        ladder = _ladder(job)
        if ladder is not None:
            return ladder.run(job, (index, n, specs), start)
    try:
        machine, counter, watch, observers = _build(job, specs, count, trace)
    except EmuError as exc:
        return Outcome(index, n, specs, "error", str(exc))
    try:
        result = machine.run()
    except EmuError as exc:             # the harness failed, not the guest: say so, go on
        return Outcome(index, n, specs, "error", str(exc))
    finally:
        for observer in observers:
            observer.close()
    extra = {"calls": counter.decider.calls, "call_times": counter.call_times} \
        if counter is not None else {}
    return _outcome(job, (index, n, specs), machine, result, watch, extra)


def _outcome(job: dict, variant: tuple[int, int, tuple[str, ...]], machine, result,
             watch: _Watch, extra: dict) -> Outcome:
    kind, detail, location = classify(job, machine, result, watch)
    extra["output"] = machine.serial_output().splitlines()
    return Outcome(*variant, kind, detail, location, result.instructions, extra)


MAX_SNAPSHOTS = 4            # each holds a forked process; RAM is shared copy-on-write


class _Ladder:
    """A worker's machine for one job and its snapshots along the clean run, by point."""

    def __init__(self, key: str, machine: Machine, watch: _Watch) -> None:
        self.key, self.machine, self.watch = key, machine, watch
        began = time.perf_counter()
        self.snapshots = {0: machine.snapshot()}
        self.snapshot_seconds = time.perf_counter() - began

    def close(self) -> None:
        for snapshot in self.snapshots.values():
            snapshot.close()

    def _go_to(self, point: int) -> bool:
        """Restore the latest snapshot at or before `point`, then run on to it without
        injectors, and keep a snapshot there if getting there took longer than taking one
        (the oldest after the first goes if full; which snapshot a variant starts from
        changes its speed, never its outcome). False if the run ends before it."""
        base = max(at for at in self.snapshots if at <= point)
        self.machine.restore(self.snapshots[base])
        if base == point:
            return True
        began = time.perf_counter()
        if not self.machine.advance(point):
            return False
        if time.perf_counter() - began < self.snapshot_seconds:
            return True
        if len(self.snapshots) >= MAX_SNAPSHOTS:
            self.snapshots.pop(sorted(self.snapshots)[1]).close()
        self.snapshots[point] = self.machine.snapshot()
        return True

    def run(self, job: dict, variant: tuple[int, int, tuple[str, ...]],
            start: Start) -> Outcome:
        machine, watch = self.machine, self.watch
        point, calls_before = start
        try:
            reached = self._go_to(point)
        except EmuError as exc:
            return Outcome(*variant, "error", str(exc))
        if not reached:
            return Outcome(*variant, "error", f"the clean run did not reach instruction "
                                              f"{point:,} in this worker")
        watch.violations.clear()
        watch.findings.clear()
        mark = _wiring(machine)
        try:
            injectors = attach(machine, [parse_spec(spec) for spec in variant[2]])
            for injector in injectors:
                if _counted(job, injector):
                    injector.decider.resume(calls_before)
            result = machine.run()
        except EmuError as exc:
            return Outcome(*variant, "error", str(exc))
        finally:
            _unwire(machine, mark)
        return _outcome(job, variant, machine, result, watch, {})


def _wiring(machine: Machine) -> tuple[int, int]:
    """A mark of the code hooks and observers added so far, for `_unwire`."""
    return len(machine.hooks.handles), len(machine.events.observers)


def _unwire(machine: Machine, mark: tuple[int, int]) -> None:
    """Remove the code hooks and observers added since `mark` (a variant's injectors), so
    that the machine, restored from a snapshot, runs the next variant with only its own.
    Their Python state needs no undoing: a restore brings back every component the
    snapshot captured, and these were added after it. Hooks an observer adds as it goes
    and keeps a record of (`lasting`, the heap checker's returns) stay."""
    hooks, observers = mark
    machine.hooks.remove_since(hooks)
    for observer in machine.events.observers[observers:]:
        machine.events.unsubscribe(observer)


def _counted(job: dict, injector) -> bool:
    """Does `injector` count the calls the clean run counted (the template's function,
    caller and checkpoint)?"""
    counted = job.get("counted")
    return counted is not None and getattr(injector, "decider", None) is not None and \
        [getattr(injector, "function", None), getattr(injector, "caller", None),
         getattr(injector, "after", None)] == counted


_LADDERS: list[_Ladder] = []       # this worker process's: one job at a time


def forget_ladders() -> None:
    """Drop this worker's machine and snapshots (a benchmark's next round boots again)."""
    while _LADDERS:
        _LADDERS.pop().close()


def _ladder(job: dict) -> _Ladder | None:
    """The worker's ladder for `job`, made on its first variant; None (fresh boots) if the
    machine cannot be built."""
    key = json.dumps({name: value for name, value in job.items() if name != "clean_output"},
                     sort_keys=True, default=str)
    if _LADDERS and _LADDERS[0].key == key:
        return _LADDERS[0]
    forget_ladders()
    try:
        machine, _, watch, _ = _build(job, (), None, None)
    except EmuError:
        return None
    _LADDERS.append(_Ladder(key, machine, watch))
    return _LADDERS[0]


def classify(job: dict, machine, result, watch: _Watch) -> tuple[str, str, str]:
    """(class, detail, location) of a finished run."""
    lines = machine.serial_output().splitlines()
    where = machine.symbols.lookup(machine.cpu.reg(X.UC_X86_REG_RIP)).partition("+")[0]
    panic = re.compile(job["panic"])
    for line in lines:
        found = panic.search(line)
        if found:
            message = found.group(1) if found.groups() else line
            return "panic", message, message
    if watch.violations:
        first = watch.violations[0]
        return "violation", f"{first.rule} at {first.address:#x}", first.rule
    if watch.findings:
        first = watch.findings[0]
        return "heap-finding", f"{first.rule} by {first.caller}", \
            f"{first.rule} {first.caller.partition('+')[0]}"
    ends = {RunEnd.TRIPLE_FAULT: "triple-fault", RunEnd.CRASH: "crash",
            RunEnd.BUDGET: "hang", RunEnd.HALT: "halt"}
    if result.end in ends:
        return ends[result.end], result.message, where
    if result.end is not RunEnd.EXIT or result.guest_value not in job["accept_exit"]:
        return "exit", result.message, result.message
    rejected = [re.compile(pattern) for pattern in job.get("reject_output", ())]
    for line in lines:
        if any(pattern.search(line) for pattern in rejected):
            return "output", line, line
    if "clean_output" not in job:      # the clean run itself: nothing to compare with
        return "passed", "", ""
    clean = set(job["clean_output"])
    accepted = [re.compile(pattern) for pattern in job["accept_output"]]
    for line in lines:
        if line not in clean and not any(pattern.search(line) for pattern in accepted):
            return "output", line, line
    return "passed", "", ""


def minimize(job: dict, failing: Outcome) -> tuple[str, ...]:
    """The smallest subset of a failing variant's injections that fails the same way
    (delta debugging, Zeller's ddmin); a single injection is already minimal."""
    specs = list(failing.specs)
    chunks = 2
    while len(specs) >= 2:
        size = -(-len(specs) // chunks)
        subsets = [specs[i:i + size] for i in range(0, len(specs), size)]
        for subset in subsets + [[s for s in specs if s not in part] for part in subsets]:
            if subset and run_variant(job, failing.index, failing.n,
                                      tuple(subset)).signature == failing.signature:
                specs, chunks = subset, max(chunks - 1, 2)
                break
        else:
            if chunks >= len(specs):
                break
            chunks = min(len(specs), chunks * 2)
    return tuple(specs)
