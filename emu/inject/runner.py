"""Running a campaign end to end: the clean run, the variants on an executor, the groups of
failures and a checked reproducer for each, and the results files.

Owns: the order of a campaign and its outputs: `results.jsonl` (one line per variant, by
index), `summary.md` (outcomes by class, then each failure group with its reproducer
command), and `repro-K.jsonl` (the trace of group K's reproducer run alone).
Does not own: the campaign file (campaign.py), running a variant (variant.py), executors.
"""
from __future__ import annotations

import bisect
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from emu.errors import ConfigError, OutputError
from emu.inject.campaign import CLASSES, Campaign, Outcome, expand_points, reproducer, sample
from emu.inject.executors import Progress, run_dask, run_local
from emu.inject.spec import parse_spec
from emu.inject.variant import minimize, run_variant


@dataclass
class Group:
    signature: tuple[str, str]
    outcomes: list[Outcome]
    specs: tuple[str, ...] = ()            # the smallest reproducer's injections
    command: str = ""
    reproduces: bool = False
    trace: str = ""


@dataclass
class Report:
    campaign: Campaign
    calls: int | None
    outcomes: list[Outcome]
    groups: list[Group] = field(default_factory=list)

    def counts(self) -> Counter:
        return Counter(outcome.kind for outcome in self.outcomes)


def clean_run(campaign: Campaign) -> tuple[dict, int | None, list[int]]:
    """The workload without injection: it must pass. Returns the job for the variants
    (with the clean output), the calls of a fail-function template's function (for
    "..auto") and the instruction count of each of them."""
    job = campaign.job()
    counted = campaign.template.startswith("fail-function:")
    clean = run_variant(job, -1, 0, (), count=campaign.template if counted else None)
    if clean.kind != "passed":
        raise ConfigError(f"campaign {campaign.name}: the workload fails without injection "
                          f"({clean.kind}: {clean.detail}); fix it or its [accept] first")
    job["clean_output"] = clean.extra["output"]
    if counted:
        spec = parse_spec(campaign.template.replace("{n}", "1"))
        job["counted"] = [spec.params["function"], spec.params.get("caller"),
                          spec.number("after")]
    return job, clean.extra.get("calls"), clean.extra.get("call_times") or []


def start_point(job: dict, specs: tuple[str, ...], call_times: list[int]) -> tuple[int, int]:
    """Where a variant can start from a snapshot of the clean run, and the counted calls
    made by then: the latest instruction count before it can inject anything. A
    fail-function of the counted function with fail-nth=N changes nothing before its Nth
    call (the clean run's); with other knobs, nothing before the first. A timed injection
    starts one instruction before its `at`; anything else (the disk's, another function's)
    right after the machine is built."""
    points = []
    for spec in map(parse_spec, specs):
        counted = spec.kind == "fail-function" and job.get("counted") == [
            spec.params["function"], spec.params.get("caller"), spec.number("after")]
        if counted and call_times:
            nth = spec.knobs.fail_nth
            points.append(call_times[min(nth, len(call_times)) - 1] if nth else call_times[0])
        elif counted:
            points.append(0)
        elif spec.kind in ("ram", "irq", "spurious-pf"):
            points.append(max(0, spec.params["at"] - 1))
        else:
            points.append(0)
    point = min(points, default=0)
    return point, bisect.bisect_left(call_times, point)


def run_campaign(campaign: Campaign, out: Path, *, executor: str = "local",
                 scheduler: str = "local", workers: int | None = None,
                 sample_count: int | None = None, progress_stream=None,
                 snapshot: bool = True) -> Report:
    """`snapshot`: start every variant from a snapshot of the clean run instead of booting
    it (the same outcomes, faster: bench/campaign_speed.py measures it)."""
    job, calls, call_times = clean_run(campaign)
    points = sample(expand_points(campaign.points, calls), sample_count)
    tasks = [(index, n, campaign.specs(n)) for index, n in enumerate(points)]
    if snapshot:
        tasks = [(*task, start_point(job, task[2], call_times)) for task in tasks]
    progress = Progress(len(tasks), progress_stream)
    if executor == "dask":
        outcomes = run_dask(job, tasks, scheduler, workers, progress.update)
    else:
        outcomes = run_local(job, tasks, workers, progress.update)
    report = Report(campaign, calls, outcomes)
    report.groups = _groups(campaign, job, outcomes, out)
    write_results(report, out)
    return report


def _groups(campaign: Campaign, job: dict, outcomes: list[Outcome], out: Path) -> list[Group]:
    """Failures by signature, in order of first appearance, each with its smallest
    variant reduced and rerun alone (with a trace) to check that it reproduces."""
    by_signature: dict[tuple[str, str], Group] = {}
    for outcome in outcomes:
        if outcome.kind != "passed":
            by_signature.setdefault(outcome.signature,
                                    Group(outcome.signature, [])).outcomes.append(outcome)
    out.mkdir(parents=True, exist_ok=True)
    groups = list(by_signature.values())
    for number, group in enumerate(groups, 1):
        first = min(group.outcomes, key=lambda outcome: (len(outcome.specs), outcome.n))
        group.specs = minimize(job, first)
        alone = Outcome(first.index, first.n, group.specs, first.kind)
        group.command = reproducer(campaign, alone)
        trace = out / f"repro-{number}.jsonl"
        again = run_variant(job, first.index, first.n, group.specs, trace=str(trace))
        group.reproduces = again.signature == group.signature
        group.trace = trace.name
    return groups


def write_results(report: Report, out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "results.jsonl", "w", encoding="utf-8") as stream:
            for outcome in report.outcomes:
                stream.write(json.dumps(outcome.to_dict()) + "\n")
        (out / "summary.md").write_text(summary(report), encoding="utf-8")
    except OSError as exc:
        raise OutputError(f"cannot write the campaign's results in {out}: "
                          f"{exc.strerror}") from None


def summary(report: Report) -> str:
    campaign, counts = report.campaign, report.counts()
    lines = [f"# Campaign: {campaign.name}", "",
             f"Injection `{campaign.template}` at {len(report.outcomes)} points"
             + (f" (the clean run made {report.calls} calls)" if report.calls else "") + ".",
             "", "| outcome | runs |", "| --- | --- |"]
    lines += [f"| {kind} | {counts[kind]} |" for kind in CLASSES if counts[kind]]
    for number, group in enumerate(report.groups, 1):
        kind, where = group.signature
        points = ", ".join(str(outcome.n) for outcome in group.outcomes[:20])
        more = " ..." if len(group.outcomes) > 20 else ""
        lines += ["", f"## {number}. {kind}: {where}", "",
                  f"{len(group.outcomes)} runs (points {points}{more}); first: "
                  f"{group.outcomes[0].detail}", "",
                  f"Reproducer ({'reproduces alone' if group.reproduces else 'DOES NOT reproduce alone'}; "
                  f"trace {group.trace}):", "", "```sh", group.command, "```"]
    return "\n".join(lines) + "\n"
