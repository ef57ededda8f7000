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


# ---- the command line: --until, snapshot files, --resume --------------------------------

from emu.cli import main                                      # noqa: E402
from emu.monitor.trace import read_trace                      # noqa: E402


def events_of(path) -> list[dict]:
    _, events = read_trace(path)
    return list(events)


def test_until_stops_at_an_exact_count_and_a_symbol(kernel, tmp_path, capsys):
    trace = tmp_path / "until.jsonl"
    assert main(["run", "--quiet", str(kernel), "--until", "123457", "--trace", str(trace)]) \
        == 76
    last = events_of(trace)[-1]
    assert (last["type"], last["icount"], last["reason"]) == ("GuestExit", 123457, "until")
    assert main(["run", "--quiet", str(kernel), "--until", "heap_init"]) == 76
    err = capsys.readouterr().err
    assert "stopped at the first execution of heap_init" in err
    assert "<heap_init+0x0>" in err                  # stopped before its first instruction
    assert main(["run", "--quiet", str(kernel), "--until", "no_such_function"]) == 2
    assert "no symbol 'no_such_function'" in capsys.readouterr().err


def test_a_saved_snapshot_resumes_in_a_new_process_exactly(kernel, tmp_path, capsys):
    full, rest, snap = tmp_path / "full.jsonl", tmp_path / "rest.jsonl", tmp_path / "s.emusnap"
    args = ["--module", str(SHORT), "--cmdline", "replay=1 heap=chained", "--check", "pt"]
    assert main(["run", "--quiet", str(kernel), *args, "--trace", str(full)]) == 0
    assert main(["run", "--quiet", str(kernel), *args, "--until", "300001",
                 "--save-snapshot", str(snap)]) == 76
    # A fresh process: the fixture's forked runner shares nothing with this one.
    from fuzzing import run_emu
    ending = run_emu(["run", "--quiet", "--resume", str(snap), "--check", "pt",
                      "--trace", str(rest)], timeout=60)
    assert ending.status == 0, ending.err
    expected = [e for e in events_of(full) if e["icount"] >= 300001]
    resumed = events_of(rest)
    assert resumed[0]["type"] == "Booted"            # the new machine's own boot, at 0
    assert resumed[1:] == expected
    capsys.readouterr()


def test_snapshot_every_writes_files_that_each_resume(kernel, tmp_path, capsys):
    directory = tmp_path / "snaps"
    assert main(["run", "--quiet", str(kernel), "--snapshot-every", "150000",
                 "--snapshot-dir", str(directory)]) == 0
    import re
    ran = int(re.search(r"--- ([\d,]+) instructions", capsys.readouterr().err)
              .group(1).replace(",", ""))
    files = sorted(directory.iterdir())
    assert [f.name for f in files] == [f"snapshot-{n:012d}.emusnap"
                                       for n in range(150000, ran, 150000)]
    assert len(files) >= 3
    assert main(["run", "--quiet", "--resume", str(files[1])]) == 0
    err = capsys.readouterr().err
    assert "resumed from" in err and f"--- {ran:,} instructions" in err   # the same end


def test_bad_snapshots_are_one_line(tmp_path, capsys):
    bogus = tmp_path / "bogus.emusnap"
    bogus.write_bytes(b"\x00\x01 not a snapshot\n")
    for path in (bogus, tmp_path / "missing.emusnap"):
        assert main(["run", "--resume", str(path)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "snapshot" in err[0]


def test_a_restore_takes_back_an_interrupt_held_in_another_timeline(kernel, tmp_path):
    """A tick that lands while IF is clear is held, and Unicorn is told to stop before every
    IF-setting instruction (its exit list, engine state no snapshot of registers or RAM
    holds). A restore to a moment with nothing held must turn that off again: the rest of
    the run is then the one an uninterrupted run makes. (A fault-injection campaign met
    this: a variant after one that ended with a tick held stopped at an `iretq`.)"""
    from emu.build import build_program
    from emu.workloads.process import HostConsole, ProgramSpec, prepare

    # Two CPU-bound processes: the tick runs (it stops while only one is runnable).
    config = prepare(ProgramSpec(build_program(ROOT / "tests/programs/spin.c"),
                                 ("race", "2", "20000")),
                     MachineConfig(kernel=kernel, cmdline="preempt_hz=100000"),
                     tmp_path / "initrd.tar")

    def fresh() -> tuple[Machine, bytearray]:
        out = bytearray()
        machine = Machine(config)
        machine.devices.hostio.host = HostConsole(out.extend, out.extend)
        return machine, out

    machine, out = fresh()
    result = machine.run()
    reference = (result.end, result.instructions, machine.serial_output(), bytes(out))

    machine, out = fresh()
    assert machine.advance(1_000) and not machine.cpu.interrupts.waiting_for_if()
    snapshot = machine.snapshot()
    try:
        point = 1_000
        while not machine.cpu.interrupts.waiting_for_if():
            point += 997
            assert point < reference[1] and machine.advance(point), "no tick was held"
        machine.restore(snapshot)
        out.clear()
        result = machine.run()
        assert (result.end, result.instructions, machine.serial_output(), bytes(out)) == \
            reference
    finally:
        snapshot.close()


def test_a_stop_right_after_an_iretq_to_user_mode_changes_nothing(kernel, tmp_path):
    """QEMU keeps the last fault "in flight" (Unicorn issue #1883), and a stop on the first
    user instruction after the #PF handler's iretq left it so: the process's next page
    fault arrived as #DF and the kernel panicked. Unicorn's #DF is never a real one here
    (the monitor delivers, and finds nested faults itself): the instruction runs again."""
    from emu.build import build_program
    from emu.events import ExceptionDelivered, InterruptReturn
    from emu.workloads.process import HostConsole, ProgramSpec, prepare

    config = prepare(ProgramSpec(build_program(ROOT / "tests/programs/memhog.c"), ("1",)),
                     MachineConfig(kernel=kernel), tmp_path / "initrd.tar")

    def run(stop: int | None = None) -> tuple:
        recorder = Recorder()
        machine = Machine(config, [recorder])
        machine.devices.hostio.host = HostConsole(lambda _: None, lambda _: None)
        if stop is not None:
            assert machine.advance(stop)
        result = machine.run()
        return result.instructions, machine.serial_output(), recorder.events

    reference = run()
    events = reference[2]
    # The first instruction back in ring 3 after each of a few user page faults.
    after_iretq = [b.icount + 1 for a, b in zip(events, events[1:])
                   if isinstance(a, ExceptionDelivered) and a.vector == 14 and a.cpl == 3
                   and isinstance(b, InterruptReturn)][10:13]
    assert len(after_iretq) == 3
    for stop in after_iretq:
        instructions, serial, _ = run(stop)
        assert "double fault" not in serial
        assert (instructions, serial) == reference[:2], stop


# A process touching fresh pages (a page fault every few instructions; no tick: it runs
# alone), and two CPU-bound processes preempted every thousand instructions (ticks held
# while IF is clear, and exits on the IF-setting instructions meanwhile).
PROCESS_RUNS = {"memhog": ("memhog", ("1",), ""),
                "race": ("spin", ("race", "2", "20000"), "preempt_hz=100000")}


@pytest.fixture(scope="module", params=sorted(PROCESS_RUNS))
def process_config(request, kernel, tmp_path_factory):
    from emu.build import build_program
    from emu.workloads.process import ProgramSpec, prepare
    name, args, cmdline = PROCESS_RUNS[request.param]
    return prepare(ProgramSpec(build_program(ROOT / f"tests/programs/{name}.c"), args),
                   MachineConfig(kernel=kernel, cmdline=cmdline),
                   tmp_path_factory.mktemp(request.param) / "initrd.tar")


def _process_run(config, stops=(), recorder=None) -> tuple:
    from emu.workloads.process import HostConsole
    out = bytearray()
    machine = Machine(config, [recorder] if recorder else [])
    machine.devices.hostio.host = HostConsole(out.extend, out.extend)
    for stop in stops:
        assert machine.advance(stop)
    result = machine.run()
    return (result.end, result.instructions, machine.serial_output(), bytes(out),
            dict(result.exceptions))


@pytest.fixture(scope="module")
def process_reference(process_config) -> tuple[tuple, list[int]]:
    """The run, and its edges: around every delivery and every return from a handler."""
    from emu.events import ExceptionDelivered, InterruptReturn
    recorder = Recorder()
    reference = _process_run(process_config, recorder=recorder)
    edges = sorted({e.icount + d for e in recorder.events
                    if isinstance(e, (ExceptionDelivered, InterruptReturn))
                    for d in (-1, 0, 1, 2) if 0 < e.icount + d < reference[1]})
    return reference, edges


@settings(max_examples=12, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_stops_anywhere_in_a_process_run_change_nothing(process_config, process_reference,
                                                       data):
    """Stopping at any instructions, in the kernel or in user mode, most of them next to a
    delivery or a return from a handler, leaves the rest of the run as it was (the guest's
    behaviour, its output and its exceptions). It found a #DF after a stop behind an iretq,
    a lost hlt, and a block cut by an exit counted one instruction long."""
    reference, edges = process_reference
    point = st.one_of(st.sampled_from(edges), st.integers(1, reference[1] - 1))
    stops = sorted(data.draw(st.lists(point, min_size=1, max_size=6, unique=True),
                             label="stops"))
    assert _process_run(process_config, stops) == reference


def test_a_stop_on_an_iretq_with_a_tick_held_changes_nothing(kernel, tmp_path):
    """A tick that came while IF was clear waits for the handler's `iretq` (Unicorn exits
    on the IF-setting instructions meanwhile). A block cut short by such an exit is one
    instruction longer in Unicorn's block cache than it is: a stop right before the `iretq`
    counted it so, and the rest of the run came out one instruction late."""
    from emu.build import build_program
    from emu.events import ExceptionDelivered, InterruptReturn
    from emu.workloads.process import ProgramSpec, prepare

    name, args, cmdline = PROCESS_RUNS["race"]
    config = prepare(ProgramSpec(build_program(ROOT / f"tests/programs/{name}.c"), args),
                     MachineConfig(kernel=kernel, cmdline=cmdline), tmp_path / "initrd.tar")
    recorder = Recorder()
    reference = _process_run(config, recorder=recorder)
    events = recorder.events
    before_held = [a.icount for a, b in zip(events, events[1:])
                   if isinstance(a, InterruptReturn) and isinstance(b, ExceptionDelivered)
                   and b.kind == "external" and b.icount == a.icount + 1][:4]
    assert len(before_held) == 4
    for stop in before_held:
        assert _process_run(config, [stop]) == reference, stop
