"""Shared fixtures: the project's kernel, built once per session, and booting it with a
deadline so that a harness that never returns fails the test instead of hanging the suite."""
from __future__ import annotations

import signal
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from emu.build import build_guest
from emu.machine import Machine, MachineConfig, RunResult

pytest_plugins = ["pytester"]

RUN_DEADLINE = 30.0       # seconds; every kernel run in these tests takes well under one


class Hung(Exception):
    """The emulator did not return within the deadline."""


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Raise Hung in the main thread after `seconds`, and again every second after that
    (Unicorn callbacks may swallow one), until the block ends. No-op without SIGALRM."""
    if not hasattr(signal, "setitimer"):
        yield
        return

    def expire(signum, frame):
        raise Hung(f"the run did not finish within {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds, 1.0)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="session")
def kernel() -> Path:
    """The project's own kernel (guest/), built once for the whole session."""
    return build_guest()


@pytest.fixture
def boot(kernel):
    """boot(cmdline="", observers=(), **MachineConfig fields) -> (machine, result)."""
    def run(cmdline: str = "", observers=(), **options) -> tuple[Machine, RunResult]:
        machine = Machine(MachineConfig(kernel=kernel, cmdline=cmdline, **options), observers)
        with deadline(RUN_DEADLINE):
            result = machine.run()
        return machine, result
    return run
