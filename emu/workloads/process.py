"""Running a static Linux x86-64 program as a process of the project's kernel: the initrd
that carries it, the kernel command line that names it, the host's side of its standard
streams, and how its end becomes an exit status.

Owns: the program's initrd (packed by emu/workloads/initrd.py), the command line
(`quiet init=PATH argv0=... env=NAME=VALUE seed=N -- ARGS`, each word escaped as
guest/proc/init.c unescapes it), `HostConsole` (the HostStreams behind the guest's
descriptors 0, 1 and 2: byte-exact, stdout and stderr apart, stdin read on demand), kernel
lines as `emu: kernel: ...`, and
`run_program`, which turns a run into a ProgramResult with `emu exec`'s status
(emu/result.py's EXEC table).
Does not own: the machine, the kernel, the checkers, the command line of emu itself.
"""
from __future__ import annotations

import dataclasses
import errno
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from emu.events import InvariantViolation, Observer, SerialOutput
from emu.machine import Machine, MachineConfig
from emu.monitor import swapcheck
from emu.monitor.swapcheck import SwapChecker
from emu.result import (EXEC_CANNOT_RUN, EXEC_HARNESS_FAILURE, RunEnd, RunResult,
                        shell_status)
from emu.workloads.initrd import pack_initrd

GUEST_BIN = "/bin"
KERNEL_PREFIX = "emu: kernel: "
_PLAIN = frozenset(b"!\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[]^_`"
                   b"abcdefghijklmnopqrstuvwxyz{|}~")


@dataclass(frozen=True, slots=True)
class ProgramSpec:
    """What to run: the program (a host file), its arguments after argv[0], extra files
    for the initrd as (host file, guest path), the environment, and the random seed."""
    program: Path
    args: tuple[str, ...] = ()
    files: tuple[tuple[Path, str], ...] = ()
    env: tuple[str, ...] = ()
    seed: int = 0
    argv0: str | None = None           # default: the program as given

    @property
    def guest_path(self) -> str:
        return f"{GUEST_BIN}/{self.program.name}"


def escape_word(text: str | bytes) -> str:
    """A command-line word for guest/proc/init.c: bytes outside printable ASCII, and
    space, tab and backslash, become \\xHH; an empty word is \\x00 (it ends the string)."""
    data = os.fsencode(text) if isinstance(text, str) else text
    if not data:
        return "\\x00"
    return "".join(chr(b) if b in _PLAIN else f"\\x{b:02x}" for b in data)


def command_line(spec: ProgramSpec, extra: str = "") -> str:
    """The kernel command line that runs `spec` quietly as the first process."""
    words = ["quiet", f"init={escape_word(spec.guest_path)}",
             f"argv0={escape_word(spec.argv0 if spec.argv0 is not None else str(spec.program))}",
             f"seed={spec.seed}"]
    words += [f"env={escape_word(item)}" for item in spec.env]
    if extra:
        words.append(extra)
    return " ".join(words + ["--"] + [escape_word(arg) for arg in spec.args])




class HostConsole:
    """The host's side of the program's streams. `out` and `err` take bytes (and may raise
    BrokenPipeError when their reader is gone: the program then gets EPIPE, and SIGPIPE, as
    natively); `stdin` is a file descriptor read on demand (None: always at its end)."""

    def __init__(self, out: Callable[[bytes], None], err: Callable[[bytes], None],
                 stdin: int | None = None) -> None:
        self.out = out
        self.err = err
        self.stdin = stdin
        self.wait_status: int | None = None
        self.closed: set[int] = set()

    def write(self, stream: int, data: bytes) -> int:
        if stream in self.closed:
            return -errno.EPIPE
        try:
            (self.out if stream == 1 else self.err)(data)
        except BrokenPipeError:
            self.closed.add(stream)
            return -errno.EPIPE
        return len(data)

    def read(self, stream: int, size: int) -> bytes:
        if self.stdin is None:
            return b""
        try:
            return os.read(self.stdin, size)
        except OSError:
            return b""

    def exit(self, wait_status: int) -> None:
        self.wait_status = wait_status


class KernelLines(Observer):
    """The kernel's own console lines, as `emu: kernel: LINE` through `err`."""

    def __init__(self, err: Callable[[str], None]) -> None:
        self.err = err

    def on_serial_output(self, event: SerialOutput) -> None:
        self.err(KERNEL_PREFIX + event.text)


@dataclass(frozen=True, slots=True)
class ProgramResult:
    """How a program run ended: `status` is what `emu exec` exits with."""
    run: RunResult
    wait_status: int | None         # None: the kernel never reported one
    status: int
    machine: Machine
    swap: "SwapChecker | None" = None   # the swap checker, when the machine had a swap disk


def exec_status(run: RunResult, wait_status: int | None) -> int:
    """`emu exec`'s status: the program's (as a shell shows it) when the kernel ran to its
    clean end and reported one; 125 for anything else (crash, panic, budget, halt)."""
    if run.end is RunEnd.EXIT and run.guest_value == 0 and wait_status is not None:
        return shell_status(wait_status)
    if run.end is RunEnd.INTERRUPTED:
        return run.exit_status
    return EXEC_HARNESS_FAILURE


def prepare(spec: ProgramSpec, config: MachineConfig, initrd: Path) -> MachineConfig:
    """The MachineConfig that runs `spec`: the initrd packed at `initrd` as the first module
    and the command line naming the program (the config's own command line is kept after)."""
    if not spec.program.exists():
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", str(spec.program))
    pack_initrd([(spec.program, spec.guest_path), *spec.files], initrd)
    return dataclasses.replace(config, cmdline=command_line(spec, config.cmdline),
                               modules=(initrd, *config.modules))


def run_program(spec: ProgramSpec, config: MachineConfig, console: HostConsole,
                observers: Iterable[Observer] = (),
                attach: Callable[[Machine], None] | None = None,
                prepared: MachineConfig | None = None,
                on_swap_finding: Callable[[InvariantViolation], None] | None = None,
                swap_check: bool = True) -> ProgramResult:
    """Run `spec` on a machine made from `config` (kernel, memory, budget...). `attach` may
    add checkers before the run. `prepared`: prepare()'s config made already (a traced run
    keeps its initrd beside the trace); else the initrd lives in a temporary directory.
    With a swap disk the swap checker runs (emu/monitor/swapcheck.py) unless `swap_check`
    is False (a benchmark's baseline); `on_swap_finding` hears its findings. Raises ConfigError for bad input,
    FileNotFoundError when the program does not exist."""
    with tempfile.TemporaryDirectory(prefix="emu-exec-") as tmp:
        machine = Machine(prepared or prepare(spec, config, Path(tmp) / "initrd.tar"),
                          list(observers))
        machine.devices.hostio.host = console
        swap = swapcheck.attach(machine, on_finding=on_swap_finding) if swap_check else None
        if attach is not None:
            attach(machine)
        run = machine.run()
        if swap is not None:
            swap.finish()
    return ProgramResult(run, console.wait_status, exec_status(run, console.wait_status),
                         machine, swap)


__all__ = ["ProgramSpec", "ProgramResult", "HostConsole", "KernelLines", "run_program",
           "pack_initrd", "prepare", "command_line", "escape_word", "shell_status", "exec_status",
           "EXEC_CANNOT_RUN"]
