"""One variant of a campaign: boot the workload with its injections, run it with the
checkers, and say how it ended, in one of campaign.CLASSES.

Owns: `run_variant` (a pure function of plain data, so that local worker processes and
Dask workers run the same thing), the classification, and the delta debugging that shrinks
a failing set of injections.
Does not own: the campaign file, executors, the injectors and checkers themselves.

Classes, first match wins: `panic` (a serial line matches the panic pattern), `violation`
(the page-table/PMM checker), `heap-finding` (the outside heap checker), `triple-fault`,
`crash`, `hang` (the instruction budget), `halt`, `exit` (a guest exit value outside the
accepted ones), `output` (a serial line the clean run did not print and no accepted pattern
matches), else `passed`.
"""
from __future__ import annotations

import dataclasses
import re
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
    # Injectors last: their hooks must run after the checkers' at the same address.
    attach(machine, [parse_spec(spec) for spec in specs])
    return machine, counter, watch, observers


def run_variant(job: dict, index: int, n: int, specs: tuple[str, ...],
                count: str | None = None, trace: str | None = None) -> Outcome:
    """Run the workload of `job` (Campaign.job() plus "clean_output") with `specs`.
    `count`: a fail-function template whose calls to count (extra["calls"]); `trace`: write
    the run's trace there. Errors of the harness or the campaign become class `error`."""
    try:
        machine, counter, watch, observers = _build(job, specs, count, trace)
    except EmuError as exc:
        return Outcome(index, n, specs, "error", str(exc))
    try:
        result = machine.run()
    finally:
        for observer in observers:
            observer.close()
    kind, detail, location = classify(job, machine, result, watch)
    extra = {"calls": counter.decider.calls} if counter is not None else {}
    extra["output"] = machine.serial_output().splitlines()
    return Outcome(index, n, specs, kind, detail, location, result.instructions, extra)


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
