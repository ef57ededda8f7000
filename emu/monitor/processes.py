"""The process monitor: watches the guest kernel's processes through its tracepoints and
turns what they record into events, a per-process summary, and the PMM baseline check.

Owns: hooking the tracepoints of guest/proc/trace.h (`trace_syscall`,
`trace_syscall_unimplemented`, `trace_fault`, `trace_proc`: empty, never-inlined functions;
a single-address code hook at each entry reads the record through RDI, the layouts are
trace.h's), the Syscall, UserFault, ProcessStart, ProcessExec and ProcessExit events, the
statistics per process (faults by resolution, system calls, peak RSS), each unimplemented
system call reported once by name, and reading the PMM measure before the first process
and after the last one from `proc_descriptor` (guest/proc/proc.h) when the kernel says the
last one is gone (checkpoint CHECKPOINT_PROCS_DONE).
Does not own: the record layouts of the process table (emu/monitor/proctable.py), the
rules about user address spaces (emu/monitor/checks/), printing (the commands).

Cost: the tracepoints are empty functions the kernel calls whether or not anyone watches,
so the guest runs the same instructions either way; a run without this monitor installs no
hook. An event is built only when some observer wants its type.
"""
from __future__ import annotations

import signal
import struct
from dataclasses import dataclass, field
from typing import Callable

from unicorn import x86_const as X

from emu.errors import GuestMemoryError
from emu.events import (Checkpoint, Observer, ProcessExec, ProcessExit, ProcessStart, Syscall,
                        UserFault)
from emu.monitor import proctable
from emu.monitor.proctable import ACCESSES, FAULT_KINDS, c_string
from emu.monitor.syscalls import syscall_name
from emu.result import shell_status
from emu.x86 import PAGE_SIZE

SYSCALL_RECORD = struct.Struct("<II6Qq")                # struct trace_syscall, 64 bytes
FAULT_RECORD = struct.Struct("<IIQQIIQQ")               # struct trace_fault, 48 bytes
PROC_RECORD = struct.Struct(f"<IIIIQQ{len(FAULT_KINDS)}Q64s")  # struct trace_proc, 160 bytes
PROC_START, PROC_EXEC, PROC_EXIT = 1, 2, 3              # enum trace_proc_event
CHECKPOINT_PROCS_DONE = 6                               # guest/test/checkpoint.h
TRACEPOINTS = ("trace_syscall", "trace_syscall_unimplemented", "trace_fault", "trace_proc")


@dataclass(slots=True)
class ProcessStats:
    """One process as the monitor saw it. `faults` counts every fault of its whole life (all
    its images); `syscalls` and `peak_rss_pages` are the kernel's figures."""
    pid: int
    ppid: int
    path: str
    syscalls: int = 0
    peak_rss_pages: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    wait_status: int | None = None          # None while it runs

    def describe(self) -> str:
        end = "still running" if self.wait_status is None else ending(self.wait_status)
        faults = ", ".join(f"{kind} {count:,}" for kind, count in self.faults.items())
        return (f"pid {self.pid} {self.path}: {end}, {self.syscalls:,} system calls, "
                f"faults: {faults or 'none'}, peak RSS {size_text(self.peak_rss_pages * PAGE_SIZE)}")


@dataclass(frozen=True, slots=True)
class Unimplemented:
    number: int
    name: str
    pid: int                                # the first process that asked
    path: str


def ending(wait_status: int) -> str:
    """`exit 3` or `killed by SIGSEGV (139)`."""
    number = wait_status & 0x7F
    if not number:
        return f"exit {(wait_status >> 8) & 0xFF}"
    try:
        name = signal.Signals(number).name
    except ValueError:
        name = f"signal {number}"
    return f"killed by {name} ({shell_status(wait_status)})"


def size_text(size: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if size >= 1 << shift:
            return f"{size / (1 << shift):.1f} {unit}"
    return f"{size} bytes"


class ProcessMonitor(Observer):
    """Attach to a machine (built, not run) with `attach`; `processes` then holds every
    process seen (by pid, in order of appearance), `unimplemented` each unimplemented
    system call once, and `baseline` the PMM measure (before the first process, after the
    last) once the kernel has said its last process is gone. `on_unimplemented` is called
    the first time a call is found unimplemented."""

    def __init__(self, on_unimplemented: Callable[[Unimplemented], None] | None = None) -> None:
        self.on_unimplemented = on_unimplemented
        self.processes: dict[int, ProcessStats] = {}
        self.unimplemented: dict[int, Unimplemented] = {}
        self.baseline: tuple[int, int] | None = None
        self._pending_unimplemented: tuple[int, int] | None = None   # (pid, number)

    def attach(self, machine) -> bool:
        """Hook the tracepoints of `machine`'s kernel; False (nothing hooked) when the kernel
        has none of them (a kernel without processes)."""
        self._cpu = machine.cpu
        self._events = machine.events
        self._symbols = machine.symbols
        self._reg = machine.cpu.state.fast_reg
        handlers = dict(zip(TRACEPOINTS, (self._on_syscall, self._on_unimplemented,
                                          self._on_fault, self._on_proc)))
        found = False
        for name, handler in handlers.items():
            address = machine.symbols.address_of(name)
            if address is not None:
                machine.hooks.on_execute(address, handler)
                found = True
        if found:
            machine.events.subscribe(self)
        return found

    # ---- the tracepoints ------------------------------------------------------------------

    def _record(self, layout: struct.Struct) -> tuple:
        return layout.unpack(self._cpu.read_virtual(self._reg(X.UC_X86_REG_RDI), layout.size))

    def _stats(self, pid: int) -> ProcessStats:
        stats = self.processes.get(pid)
        if stats is None:                   # a tracepoint before its start (never, today)
            stats = self.processes[pid] = ProcessStats(pid, 0, "?")
        return stats

    def _on_unimplemented(self, uc, address: int, size: int, _data) -> None:
        pid, number, *_ = self._record(SYSCALL_RECORD)
        self._pending_unimplemented = (pid, number)
        if number not in self.unimplemented:
            found = Unimplemented(number, syscall_name(number), pid, self._stats(pid).path)
            self.unimplemented[number] = found
            if self.on_unimplemented is not None:
                self.on_unimplemented(found)

    def _on_syscall(self, uc, address: int, size: int, _data) -> None:
        pid, number, *rest = self._record(SYSCALL_RECORD)
        implemented = self._pending_unimplemented != (pid, number)
        self._pending_unimplemented = None
        if self._events.wants(Syscall):
            self._events.emit(Syscall(self._cpu.time_stamp(address), pid, number,
                                      syscall_name(number), tuple(rest[:6]), rest[6],
                                      implemented))

    def _on_fault(self, uc, address: int, size: int, _data) -> None:
        pid, kind, fault_address, rip, access, user, start, end = self._record(FAULT_RECORD)
        resolution = FAULT_KINDS[kind] if kind < len(FAULT_KINDS) else f"kind {kind}"
        faults = self._stats(pid).faults
        faults[resolution] = faults.get(resolution, 0) + 1
        if self._events.wants(UserFault):
            self._events.emit(UserFault(
                self._cpu.time_stamp(address), pid, fault_address, rip,
                ACCESSES[access] if access < len(ACCESSES) else f"access {access}",
                resolution, bool(user), (start, end) if start or end else None))

    def _on_proc(self, uc, address: int, size: int, _data) -> None:
        pid, event, ppid, wait_status, peak, syscalls, *rest = self._record(PROC_RECORD)
        path = c_string(rest[-1])
        icount = self._cpu.time_stamp(address)
        if event == PROC_START:
            self.processes[pid] = ProcessStats(pid, ppid, path, syscalls, peak)
            if self._events.wants(ProcessStart):
                self._events.emit(ProcessStart(icount, pid, ppid, path))
            return
        stats = self._stats(pid)
        stats.path = path
        stats.syscalls = syscalls
        stats.peak_rss_pages = max(stats.peak_rss_pages, peak)
        if event == PROC_EXEC:
            if self._events.wants(ProcessExec):
                self._events.emit(ProcessExec(icount, pid, path))
        elif event == PROC_EXIT:
            stats.wait_status = wait_status
            if self._events.wants(ProcessExit):
                self._events.emit(ProcessExit(
                    icount, pid, path, wait_status, shell_status(wait_status),
                    stats.peak_rss_pages * PAGE_SIZE, syscalls,
                    tuple((kind, count) for kind, count in stats.faults.items() if count)))

    # ---- the PMM baseline -----------------------------------------------------------------

    def on_checkpoint(self, event: Checkpoint) -> None:
        if event.number == CHECKPOINT_PROCS_DONE:
            self.baseline = read_baseline(self._cpu.read_virtual, self._symbols)

    # ---- for humans -----------------------------------------------------------------------

    def summary_lines(self) -> list[str]:
        """The per-process summary, the unimplemented calls and the PMM baseline; nothing
        when no process ran."""
        if not self.processes:
            return []
        lines = [f"processes: {len(self.processes)}"]
        lines += ["  " + stats.describe() for stats in self.processes.values()]
        if self.unimplemented:
            lines.append("unimplemented system calls: " + ", ".join(
                f"{u.name} ({u.number})" for u in self.unimplemented.values()))
        if self.baseline is not None:
            lines.append(baseline_text(*self.baseline))
        return lines


def read_baseline(read, symbols) -> tuple[int, int] | None:
    """(baseline_frames, final_frames) from the kernel's proc_descriptor, or None."""
    symbol = symbols.data(proctable.DESCRIPTOR_SYMBOL)
    if symbol is None:
        return None
    try:
        descriptor = proctable.read_descriptor(read, symbol[0])
    except GuestMemoryError:
        return None
    if descriptor is None or not descriptor.final_frames:
        return None
    return descriptor.baseline_frames, descriptor.final_frames


def baseline_text(baseline: int, final: int) -> str:
    if baseline == final:
        return (f"PMM back at its baseline after the last process: {final:,} frames free or "
                f"held by the heap and the page tables")
    return (f"PMM NOT back at its baseline after the last process: {final:,} frames free or "
            f"held by the heap and the page tables, {baseline:,} before the first "
            f"({baseline - final:,} frames missing)")


def unimplemented_line(found: Unimplemented) -> str:
    return (f"emu: unimplemented system call {found.name} (number {found.number}), first by "
            f"pid {found.pid} {found.path}")


def attach(machine, on_unimplemented: Callable[[Unimplemented], None] | None = None
           ) -> ProcessMonitor | None:
    """A ProcessMonitor on `machine`, or None if its kernel has no tracepoints."""
    monitor = ProcessMonitor(on_unimplemented)
    return monitor if monitor.attach(machine) else None
