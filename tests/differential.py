"""Running the test programs of tests/programs/ natively and under the project's kernel, so
that tests can compare the two.

`program(name)` builds tests/programs/NAME.c once per session (zig cc, static musl, -O1,
cached by content in the emu build cache). `native(path, args)` runs it on the host with the
limits the guest has pinned (RLIMIT_STACK 8 MiB, no core files, transparent huge pages off,
an empty environment unless given); `emulated(path, args)` runs it as the first process of
the kernel through emu.workloads.process and keeps its streams apart. Both return an Outcome
with the shell-style status.
"""
from __future__ import annotations

import ctypes
import functools
import os
import re
import resource
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from emu.build import build_guest, build_program
from emu.machine import MachineConfig
from emu.workloads.process import HostConsole, KernelLines, ProgramSpec, run_program

PROGRAMS = Path(__file__).resolve().parent / "programs"
STACK_LIMIT = 8 << 20
PR_SET_THP_DISABLE = 41
NATIVE_TIMEOUT = 60
BUDGET = 3_000_000_000
# The vector of our kernel's timer tick (guest/dev/timer.h), to tell its deliveries apart.
TIMER_VECTOR = int(re.search(r"#define TIMER_VECTOR (0x[0-9a-f]+)",
                             (PROGRAMS.parent.parent / "guest/dev/timer.h").read_text())[1], 16)


@dataclass
class Outcome:
    stdout: bytes
    stderr: bytes
    status: int
    kernel_lines: list[str] = field(default_factory=list)
    result: object = None

    @property
    def out(self) -> str:
        return self.stdout.decode("utf-8", "replace")


@functools.lru_cache(maxsize=None)
def program(name: str) -> Path:
    return build_program(PROGRAMS / f"{name}.c")


def _pin_limits() -> None:
    resource.setrlimit(resource.RLIMIT_STACK, (STACK_LIMIT, resource.RLIM_INFINITY))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0)


def native(path: Path, args=(), stdin: bytes = b"", env: dict | None = None,
           cwd: Path | None = None) -> Outcome:
    proc = subprocess.run([str(path), *args], input=stdin, capture_output=True,
                          env=env or {}, preexec_fn=_pin_limits, timeout=NATIVE_TIMEOUT,
                          cwd=cwd)
    status = proc.returncode if proc.returncode >= 0 else 128 - proc.returncode
    return Outcome(proc.stdout, proc.stderr, status)


def emulated(path: Path, args=(), env: dict | None = None, files=(), observers=(),
             attach=None, budget: int = BUDGET, memory: int | None = None,
             cmdline: str = "", argv0: str | None = None, seed: int = 0,
             stdin_fd: int | None = None) -> Outcome:
    out, err, lines = bytearray(), bytearray(), []
    console = HostConsole(out.extend, err.extend, stdin_fd)
    spec = ProgramSpec(Path(path), tuple(args), tuple(files),
                       tuple(f"{k}={v}" for k, v in (env or {}).items()), seed,
                       argv0 if argv0 is not None else str(path))
    config = MachineConfig(kernel=build_guest(), max_instructions=budget, memory=memory,
                           cmdline=cmdline)
    result = run_program(spec, config, console, [KernelLines(lines.append), *observers],
                         attach=attach)
    return Outcome(bytes(out), bytes(err), result.status, lines, result)
