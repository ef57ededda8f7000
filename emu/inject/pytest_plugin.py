"""The pytest plugin (entry point `pytest11: emu`; `-p no:emu` turns it off): fixtures that
boot a kernel with a configuration, run a workload with injections and hand back what
happened, a marker for the machine configuration, and campaign points to parametrize over.

    import pytest
    from emu.inject.pytest_plugin import campaign_points

    @pytest.mark.emu(cmdline="replay=1 heap=list", modules=["traces/short1-bal.rep"])
    @pytest.mark.parametrize("spec", campaign_points("kmalloc.toml", sample=5))
    def test_kmalloc_failures_are_survived(emu_run, spec):
        run = emu_run(inject=[spec], checks=("pt", "heap"))
        assert run.end == "exit" and not run.violations and not run.findings

Owns: the `emu` marker, the `emu_kernel` and `emu_run` fixtures, `EmuRun`, and
`campaign_points`. Imports nothing heavy when pytest loads it (emu itself is imported by
the fixtures when a test uses them).
Does not own: machines, injectors, checkers, campaigns (it uses their public surface).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

MARKER = ("emu(**options): the machine of the test's emu_run: MachineConfig fields such as "
          "cmdline, modules, memory (bytes or \"64M\"), memmap, max_instructions, kernel")


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", MARKER)


def pytest_addoption(parser) -> None:
    parser.addoption("--emu-kernel", default=None,
                     help="the kernel emu_run boots (default: build the project's own)")


@dataclass
class EmuRun:
    """What one run did: how it ended, what it printed, and its events."""
    end: str                       # RunEnd value: "exit", "crash", "budget", ...
    exit_value: int | None
    instructions: int
    output: str                    # the serial console
    events: list = field(default_factory=list)
    machine: object = None

    def of_type(self, name: str) -> list:
        return [event for event in self.events if type(event).__name__ == name]

    @property
    def injections(self) -> list:
        return self.of_type("Injection")

    @property
    def violations(self) -> list:
        return self.of_type("InvariantViolation")

    @property
    def findings(self) -> list:
        return self.of_type("HeapFinding")


@pytest.fixture(scope="session")
def emu_kernel(request) -> Path:
    """The kernel the tests boot: --emu-kernel, or the project's own, built once."""
    chosen = request.config.getoption("--emu-kernel")
    if chosen:
        return Path(chosen)
    from emu.build import build_guest
    return build_guest()


@pytest.fixture
def emu_run(request, emu_kernel):
    """`emu_run(inject=(), checks=(), **options) -> EmuRun`: boot the kernel with the
    test's `emu` marker options (overridden by `options`), attach the checkers ("pt",
    "heap") and then the injections (--inject specs), run it to the end."""
    marker = request.node.get_closest_marker("emu")
    defaults = dict(marker.kwargs) if marker else {}

    def run(inject=(), checks=(), **options) -> EmuRun:
        return _run(emu_kernel, {**defaults, **options}, tuple(inject), tuple(checks))
    return run


def _run(kernel: Path, options: dict, inject: tuple, checks: tuple) -> EmuRun:
    from emu.events import Observer
    from emu.hw.memmap import parse_memory_size
    from emu.inject import attach, parse_spec
    from emu.machine import Machine, MachineConfig

    class Recorder(Observer):
        def __init__(self) -> None:
            self.events: list = []

        def on_event(self, event) -> None:
            self.events.append(event)

    options = dict(options)
    if isinstance(options.get("memory"), str):
        options["memory"] = parse_memory_size(options["memory"])
    options["modules"] = tuple(Path(module) for module in options.get("modules", ()))
    options["kernel"] = Path(options.get("kernel", kernel))
    recorder = Recorder()
    machine = Machine(MachineConfig(injections=inject, **options), [recorder])
    if "pt" in checks:
        from emu.monitor.checks import attach as attach_checks
        attach_checks(machine)
    if "heap" in checks:
        from emu.monitor import heapcheck
        heapcheck.attach(machine)
    attach(machine, [parse_spec(spec) for spec in inject])      # last: see emu.inject
    result = machine.run()
    return EmuRun(result.end.value, result.guest_value, result.instructions,
                  machine.serial_output(), recorder.events, machine)


def campaign_points(path, sample: int | None = None) -> list:
    """pytest.param(spec, id="n=N") for each point of a campaign file (a clean run counts
    "..auto" at collection time), `sample` of them spread over the range if given."""
    from emu.inject.campaign import expand_points, load_campaign
    from emu.inject.campaign import sample as spread
    from emu.inject.runner import clean_run
    campaign = load_campaign(Path(path))
    calls = clean_run(campaign)[1] if campaign.points.endswith("auto") else None
    return [pytest.param(campaign.specs(n)[0], id=f"n={n}")
            for n in spread(expand_points(campaign.points, calls), sample)]
