"""Snapshots: a machine taken back to an earlier instruction runs the rest exactly as an
uninterrupted run does (Hypothesis picks the points and the order of restores), files
resume in a new process, and `--until` stops at exact counts and symbols."""
from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emu.events import Observer
from emu.machine import Machine, MachineConfig
from emu.monitor import heapcheck
from emu.monitor.checks import attach as attach_page_checks

ROOT = Path(__file__).resolve().parent.parent
SHORT = ROOT / "traces" / "malloclab" / "short1-bal.rep"


class Recorder(Observer):
    """Keeps every event (its list is part of the snapshot like any observer's state)."""

    def __init__(self) -> None:
        self.events: list = []

    def on_event(self, event) -> None:
        self.events.append(event)


def build(kernel) -> tuple[Machine, Recorder]:
    recorder = Recorder()
    config = MachineConfig(kernel=kernel, modules=(SHORT,), cmdline="replay=1 heap=chained")
    machine = Machine(config, [recorder])
    attach_page_checks(machine, every=50_000)
    heapcheck.attach(machine)
    return machine, recorder


def outcome(machine: Machine, recorder: Recorder, result) -> tuple:
    return (result.end, result.instructions, result.guest_value, tuple(recorder.events),
            machine.serial_output(), dict(result.exceptions))


@pytest.fixture(scope="module")
def reference(kernel) -> tuple:
    machine, recorder = build(kernel)
    result = machine.run()
    return outcome(machine, recorder, result)


@settings(max_examples=12, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_restores_in_any_order_give_the_same_rest_of_run(kernel, reference, data):
    end = reference[1]
    points = sorted(data.draw(st.lists(st.integers(1, end - 1), min_size=1, max_size=4,
                                       unique=True), label="points"))
    order = data.draw(st.permutations(range(len(points))), label="order")
    machine, recorder = build(kernel)
    snapshots = []
    for point in points:
        assert machine.advance(point)
        assert machine.cpu.icount() == point
        snapshots.append(machine.snapshot())
    try:
        for index in order:
            machine.restore(snapshots[index])
            assert machine.cpu.icount() == points[index]
            assert all(event.icount <= points[index] for event in recorder.events)
            assert outcome(machine, recorder, machine.run()) == reference
    finally:
        for snapshot in snapshots:
            snapshot.close()


def test_a_restore_undoes_guest_memory_writes(kernel):
    machine, _ = build(kernel)
    assert machine.advance(100_000)
    snapshot = machine.snapshot()
    try:
        hhdm_page = 0x200000
        before = machine.memory.read(hhdm_page, 4096)
        machine.memory.write(hhdm_page, b"\xaa" * 4096)
        untouched = 0x9000000                     # never touched by the guest: not resident
        machine.memory.write(untouched, b"\x55" * 64)
        machine.restore(snapshot)
        assert machine.memory.read(hhdm_page, 4096) == before
        assert machine.memory.read(untouched, 64) == bytes(64)
    finally:
        snapshot.close()
