"""Timer preemption: the kernel's local APIC tick (preempt_hz=N on its command line, default
100, 0 off) takes the CPU from a process running in user mode and gives it to the next
runnable one. tests/programs/spin.c has two CPU-bound processes that print one line per
round ("race"), and a child that never enters the kernel, which its parent can kill only if
the child is preempted (the differential case "spin" in test_differential.py)."""
from __future__ import annotations

import pytest

from differential import TIMER_VECTOR, emulated, native, program
from emu.events import Cr3Written, ExceptionDelivered, Observer

ROUNDS = 6
RACE = ("race", str(ROUNDS), "200000")      # about 0.8 M instructions a round: a tick or so
SEQUENTIAL = [f"parent {r}" for r in range(ROUNDS)] + [f"child {r}" for r in range(ROUNDS)]


class Switches(Observer):
    """Ticks, system calls and CR3 loads, in order: (icount, what, detail)."""

    def __init__(self) -> None:
        self.events = []

    def on_exception(self, event: ExceptionDelivered) -> None:
        if event.vector == TIMER_VECTOR:
            self.events.append((event.icount, "tick", event.cpl, event.rip))
        elif event.kind == "syscall":
            self.events.append((event.icount, "syscall", event.rip))

    def on_cr3_write(self, event: Cr3Written) -> None:
        self.events.append((event.icount, "cr3", event.old, event.new))

    def preemptions(self) -> int:
        """Ticks from ring 3 whose next event is a load of another address space: the
        process was switched out without asking (no system call in between)."""
        return sum(a[1] == "tick" and a[2] == 3 and b[1] == "cr3" and b[2] != b[3]
                   for a, b in zip(self.events, self.events[1:]))


def race(cmdline: str = ""):
    switches = Switches()
    got = emulated(program("spin"), RACE, cmdline=cmdline, observers=[switches])
    return got, switches


def test_two_cpu_bound_processes_take_turns_on_the_timer_tick():
    got, switches = race()
    want = native(program("spin"), RACE)
    lines = got.out.splitlines()
    assert got.status == want.status == 0, got.kernel_lines
    assert sorted(lines) == sorted(want.out.splitlines())    # the order is the host's own
    assert lines != SEQUENTIAL and lines.index("child 0") < lines.index(f"parent {ROUNDS - 1}")
    assert switches.preemptions() >= 4, switches.events


def test_without_the_tick_the_parent_runs_all_its_rounds_first():
    """The control: preempt_hz=0 (no tick), a process runs until it blocks or exits."""
    got, switches = race("preempt_hz=0")
    assert got.status == 0 and got.out.splitlines() == SEQUENTIAL
    assert not any(e[1] == "tick" for e in switches.events)
    assert switches.preemptions() == 0


def test_a_process_alone_is_never_interrupted_by_the_tick():
    """The tick runs only while a process waits for the CPU: a single process, even at
    the highest rate, takes none (each would stop the emulator for nothing)."""
    switches = Switches()
    got = emulated(program("memhog"), ("4",), cmdline="preempt_hz=100000",
                   observers=[switches])
    assert got.status == 0 and not any(e[1] == "tick" for e in switches.events)


def test_preemption_is_the_same_instruction_for_instruction_in_every_run():
    first, again = race(), race()
    assert first[0].out == again[0].out
    assert first[0].result.run.instructions == again[0].result.run.instructions
    assert first[1].events == again[1].events and first[1].preemptions() > 0


def test_preempt_hz_sets_the_rate_of_the_tick():
    def ticks(hz: int) -> int:
        return sum(e[1] == "tick" for e in race(f"preempt_hz={hz}")[1].events)

    slow, fast = ticks(100), ticks(1000)
    assert slow >= 5 and 9 * slow <= fast <= 11 * slow + 2, (slow, fast)


def test_without_the_tick_a_spinning_child_starves_its_parent():
    """The control of the differential case "spin": the parent never runs again, and
    the run ends at its instruction budget."""
    got = emulated(program("spin"), cmdline="preempt_hz=0", budget=30_000_000)
    assert got.status == 125 and got.out == ""
    assert emulated(program("spin")).out == "the spinning child ended by signal 9\n"


def test_a_tick_rate_beyond_the_limit_is_refused_in_one_report():
    got = emulated(program("spin"), RACE, cmdline="preempt_hz=1000000")
    assert got.status == 125 and got.out == ""
    assert got.kernel_lines == ["emu: kernel: panic: init: preempt_hz=1000000 is more than "
                                "100000"], got.kernel_lines


@pytest.mark.parametrize("value, says", [
    ("abc", "preempt_hz=abc is not a decimal number"),
    ("", "preempt_hz= needs a decimal number"),
    ("18446744073709551616", "preempt_hz=18446744073709551616 is more than "
                             "18446744073709551615"),            # 2^64: no silent wrap
    ("1" * 30, "preempt_hz= is 30 characters long: no 64-bit number is"),
])
def test_a_bad_number_on_the_command_line_is_one_panic_line(value, says):
    got = emulated(program("hello"), cmdline=f"preempt_hz={value}")
    assert got.status == 125 and got.out == ""
    assert got.kernel_lines == [f"emu: kernel: panic: cmdline: {says}"], got.kernel_lines
