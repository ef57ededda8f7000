"""An emu trace as a Perfetto trace (`emu trace export --perfetto TRACE OUT`).

Owns: the tracks, slices, instants and counters a trace becomes, written with the
`perfetto` package's protos (TracePacket, TrackDescriptor, TrackEvent):
  kernel              slices: each exception, interrupt or system call handled while no
                      process was current (boot, the kernel's own tests); instants: CR3
                      loads, `invlpg`s, checker findings, injections, process starts and
                      execs, the run's end
  process PID         a process (its pid and first program) with a thread track holding its
                      handlers as slices, from delivery to the `iretq` that returns from it
                      (InterruptReturn, matched by the frame's place on the kernel stack, so
                      a handler that switched stacks ends the right slice); a system call's
                      slice is named after the call (`write`, `fork`...) with its result;
                      and its RSS as a counter (`--trace-counters`)
  address space CR3   one track per address space: a slice from each CR3 load of it to the
                      next load of another
  counters            page faults, system calls and interrupts so far; with
                      `--trace-counters`: free frames, heap pages, swap slots used
A handler's slice goes to the process current at its delivery: the owner of the last CR3
loaded, learnt in a first pass (the first process event after a load names its pid; a load
followed by none, a CPU-bound process preempted before its next system call, belongs to
the owner of the same root's last load while that process lives). A
trace without InterruptReturn events (filtered out, or older) shows deliveries as instants.
A slice still open when its process exits (exit never returns) ends at the exit.
Time is virtual: an event's `vtime` in ticks, at the recorded `ips` ticks per second.
Does not own: reading traces (emu/monitor/trace.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

from emu.errors import OutputError
from emu.events import SYSCALL_VECTOR
from emu.inputs import display
from emu.x86 import PTE_ADDRESS_MASK, exception_short_name

PAGE_FAULT = 14
SEQUENCE = 1                    # one writer: every packet in one sequence
KERNEL = 1                      # track uuid; every other track gets the next free one
COUNTER_NAMES = ("page faults", "system calls", "interrupts")
GUEST_COUNTERS = {"free_frames": "free frames", "heap_pages": "heap pages",
                  "swap_slots": "swap slots used"}
PROCESS_EVENTS = ("Syscall", "UserFault", "ProcessExec")   # made by the current process
SYSCALL_SLICE = "syscall"       # a system call's slice until its Syscall event names it


@dataclass(slots=True)
class _Slice:
    track: int
    packet: object              # its SLICE_BEGIN packet (named again by a Syscall event)
    frame: int
    syscall: bool


@dataclass(slots=True)
class _Process:
    pid: int
    track: int                  # the process track (counters hang under it)
    thread: int                 # its handlers' slices
    rss: int | None = None      # its RSS counter track, once sampled
    open: list[_Slice] = field(default_factory=list)


class _Builder:
    def __init__(self, ips: int, paths: dict[int, str]) -> None:
        from perfetto.protos.perfetto.trace.perfetto_trace_pb2 import TrackEvent
        from perfetto.trace_builder.proto_builder import TraceProtoBuilder
        self.kinds = TrackEvent
        self.builder = TraceProtoBuilder()
        self.ips = ips
        self.paths = paths                        # pid -> its first program
        self._next_uuid = KERNEL
        self.spaces: dict[int, int] = {}          # CR3 -> track uuid
        self.counters: dict[str, int] = {}        # counter name -> track uuid
        self.counts = dict.fromkeys(COUNTER_NAMES, 0)
        self.processes: dict[int, _Process] = {}
        self.kernel_open: list[_Slice] = []       # slices on the kernel track
        self.stacks: dict[int, list[_Slice]] = {KERNEL: self.kernel_open}   # open, by track
        self.by_frame: dict[int, list[_Slice]] = {}
        self.open_space: int | None = None
        self._track(self._uuid(), "kernel")
        for name in COUNTER_NAMES:
            self.counter_track(name)

    def _uuid(self) -> int:
        uuid, self._next_uuid = self._next_uuid, self._next_uuid + 1
        return uuid

    def nanoseconds(self, record: dict) -> int:
        ticks = record.get("vtime", record.get("icount", 0))
        return int(ticks) * 1_000_000_000 // self.ips

    def _packet(self):
        packet = self.builder.add_packet()
        packet.trusted_packet_sequence_id = SEQUENCE
        return packet

    def _track(self, uuid: int, name: str, counter: bool = False, parent: int = 0):
        descriptor = self._packet().track_descriptor
        descriptor.uuid = uuid
        descriptor.name = name
        if parent:
            descriptor.parent_uuid = parent
        if counter:
            descriptor.counter.SetInParent()
        return descriptor

    def counter_track(self, name: str, parent: int = 0) -> int:
        uuid = self.counters.get(name)
        if uuid is None:
            uuid = self.counters[name] = self._uuid()
            self._track(uuid, name, counter=True, parent=parent)
        return uuid

    def process(self, pid: int, path: str = "") -> _Process:
        found = self.processes.get(pid)
        if found is None:
            path = self.paths.get(pid, path)
            track = self._uuid()
            descriptor = self._track(track, f"{path or 'process'} (pid {pid})")
            descriptor.process.pid = pid
            descriptor.process.process_name = path or f"pid {pid}"
            thread = self._track(self._uuid(), f"pid {pid} handlers", parent=track)
            thread.thread.pid = thread.thread.tid = pid
            thread.thread.thread_name = f"pid {pid} handlers"
            found = self.processes[pid] = _Process(pid, track, thread.uuid)
            self.stacks[thread.uuid] = found.open
        return found

    def _event(self, at: int, track: int, event_type, name: str = "",
               fields: dict | None = None):
        packet = self._packet()
        packet.timestamp = at
        event = packet.track_event
        event.type = event_type
        event.track_uuid = track
        if name:
            event.name = name
        annotate(event, fields or {})
        return packet

    def instant(self, at: int, name: str, track: int = KERNEL, **fields) -> None:
        self._event(at, track, self.kinds.TYPE_INSTANT, name, fields)

    def count(self, at: int, name: str) -> None:
        self.counts[name] += 1
        self.value(at, self.counters[name], self.counts[name])

    def value(self, at: int, track: int, value: int) -> None:
        packet = self._packet()
        packet.timestamp = at
        packet.track_event.type = self.kinds.TYPE_COUNTER
        packet.track_event.track_uuid = track
        packet.track_event.counter_value = value

    # ---- handler slices ----------------------------------------------------------------

    def begin(self, at: int, owner: _Process | None, frame: int, name: str, syscall: bool,
              fields: dict) -> None:
        stack = owner.open if owner else self.kernel_open
        track = owner.thread if owner else KERNEL
        packet = self._event(at, track, self.kinds.TYPE_SLICE_BEGIN, name, fields)
        piece = _Slice(track, packet, frame, syscall)
        stack.append(piece)
        self.by_frame.setdefault(frame, []).append(piece)

    def end(self, at: int, frame: int) -> bool:
        """End the latest open slice whose frame is `frame`, and those opened on its track
        after it (their returns never came); False if none is open."""
        pieces = self.by_frame.get(frame)
        if not pieces:
            return False
        piece = pieces[-1]
        stack = self.stacks[piece.track]
        while stack:
            top = stack.pop()
            self._close(at, top)
            if top is piece:
                break
        return True

    def _close(self, at: int, piece: _Slice) -> None:
        self._event(at, piece.track, self.kinds.TYPE_SLICE_END)
        pieces = self.by_frame[piece.frame]
        pieces.remove(piece)
        if not pieces:
            del self.by_frame[piece.frame]

    def end_all(self, at: int, stack: list[_Slice]) -> None:
        while stack:
            self._close(at, stack.pop())

    def name_syscall(self, owner: _Process, record: dict) -> bool:
        """Name the process's innermost open system call after its Syscall event."""
        for piece in reversed(owner.open):
            if piece.syscall:
                event = piece.packet.track_event
                event.name = str(record.get("name", SYSCALL_SLICE))
                annotate(event, {"result": record.get("result", 0),
                                 "number": record.get("number", 0)})
                piece.syscall = False           # named once
                return True
        return False

    # ---- address spaces ----------------------------------------------------------------

    def enter_space(self, at: int, cr3: int) -> None:
        if self.open_space == cr3:
            return
        self.leave_space(at)
        if cr3 not in self.spaces:
            self.spaces[cr3] = self._uuid()
            self._track(self.spaces[cr3], f"address space CR3={cr3:#x}")
        self._event(at, self.spaces[cr3], self.kinds.TYPE_SLICE_BEGIN, "running")
        self.open_space = cr3

    def leave_space(self, at: int) -> None:
        if self.open_space is not None:
            self._event(at, self.spaces[self.open_space], self.kinds.TYPE_SLICE_END)
            self.open_space = None


def annotate(event, fields: dict) -> None:
    for key, value in fields.items():
        annotation = event.debug_annotations.add()
        annotation.name = key
        if isinstance(value, int) and not isinstance(value, bool) and value < 0:
            annotation.int_value = value                   # a stride going down, an errno
        elif isinstance(value, int) and not isinstance(value, bool):
            annotation.uint_value = value & ((1 << 64) - 1)
        else:
            annotation.string_value = str(value)


def cr3_owners(events: Iterable[dict]) -> tuple[list[int | None], dict[int, str]]:
    """For each CR3 load of the trace, in order, the pid of the process it belongs to: the
    pid of the first process event after it, before the next load; else the owner of the
    last load of the same root, if that process has not exited since (None: no process,
    the kernel's own root); and each pid's first program."""
    owners: list[int | None] = []
    roots: list[int] = []
    exited: dict[int, int] = {}        # pid -> loads before its exit
    paths: dict[int, str] = {}
    waiting = False
    for record in events:
        kind = record.get("type")
        pid = record.get("pid")
        if kind in ("ProcessStart", "ProcessExec") and isinstance(pid, int):
            paths.setdefault(pid, str(record.get("path", "")))
        if kind == "Cr3Written":
            owners.append(None)
            roots.append(int(record.get("new", 0)) & PTE_ADDRESS_MASK)
            waiting = True
        elif waiting and kind in PROCESS_EVENTS and isinstance(pid, int):
            owners[-1] = pid
            waiting = False
        if kind == "ProcessExit" and isinstance(pid, int):
            exited[pid] = len(owners)
    last_owner: dict[int, int] = {}
    for index, root in enumerate(roots):
        known = last_owner.get(root)
        if owners[index] is None and known is not None and index < exited.get(known, index + 1):
            owners[index] = known
        if owners[index] is not None:
            last_owner[root] = owners[index]
    return owners, paths


class _Export:
    """One pass over the events, with the CR3 owners of a first pass."""

    def __init__(self, builder: _Builder, owners: list[int | None], slices: bool) -> None:
        self.b = builder
        self.owners = owners
        self.loads = 0
        self.current: _Process | None = None
        self.slices = slices

    def exception(self, at: int, record: dict) -> None:
        b = self.b
        vector = record.get("vector", 0)
        syscall = vector == SYSCALL_VECTOR
        fields = {"rip": record.get("rip", 0), "cpl": record.get("cpl", 0)}
        if syscall:
            b.count(at, "system calls")
            name = SYSCALL_SLICE
        else:
            fields["kind"] = record.get("kind", "")
            if vector == PAGE_FAULT:
                fields.update(cr2=record.get("cr2") or 0,
                              error_code=record.get("error_code") or 0)
                b.count(at, "page faults")
            elif record.get("kind") == "external":
                b.count(at, "interrupts")
            name = exception_short_name(vector)
        if self.slices and record.get("handler_rip") and record.get("frame"):
            b.begin(at, self.current, record["frame"], name, syscall, fields)
        else:
            b.instant(at, name, self._track(), **fields)

    def _track(self) -> int:
        return self.current.thread if self.current else KERNEL

    def cr3(self, at: int, record: dict) -> None:
        b = self.b
        owner = self.owners[self.loads] if self.loads < len(self.owners) else None
        self.loads += 1
        self.current = b.process(owner) if owner is not None else None
        b.instant(at, "CR3 load", old=record["old"], new=record["new"])
        b.enter_space(at, record["new"])

    def interrupt_return(self, at: int, record: dict) -> None:
        if not self.b.end(at, record.get("frame", 0)):
            self.b.instant(at, "return (no delivery)", self._track(),
                           frame=record.get("frame", 0))

    def syscall(self, at: int, record: dict) -> None:
        owner = self.b.process(record["pid"])
        if not self.b.name_syscall(owner, record):
            self.b.instant(at, str(record.get("name", SYSCALL_SLICE)), owner.thread,
                           result=record.get("result", 0))

    def process_exit(self, at: int, record: dict) -> None:
        owner = self.b.process(record["pid"], str(record.get("path", "")))
        if not record.get("wait_status", 0) & 0x7F:       # it called exit: never returns
            for piece in owner.open:
                if piece.syscall:
                    piece.packet.track_event.name = "exit"
        self.b.end_all(at, owner.open)
        self.b.instant(at, f"exit {record.get('status', '')}".strip(), owner.thread,
                       peak_rss=record.get("peak_rss", 0))
        if owner.rss is not None:
            self.b.value(at, owner.rss, 0)

    def counters(self, at: int, record: dict) -> None:
        b = self.b
        for key, name in GUEST_COUNTERS.items():
            value = record.get(key)
            if isinstance(value, int) and value >= 0:
                b.value(at, b.counter_track(name), value)
        for pid, pages in record.get("rss") or ():
            owner = b.process(pid)
            if owner.rss is None:
                owner.rss = b.counter_track(f"RSS pid {pid} (pages)", parent=owner.track)
            b.value(at, owner.rss, pages)


def build(header: dict, events: Iterable[dict],
          owners: tuple[list[int | None], dict[int, str]] | None = None) -> bytes:
    """The Perfetto trace (serialized) of a trace's header and events; `owners` is what
    cr3_owners found in the same events (None: no process is known)."""
    config = header.get("config") if isinstance(header.get("config"), dict) else {}
    run = header.get("run") if isinstance(header.get("run"), dict) else {}
    recorded = run.get("events")
    loads, paths = owners or ([], {})
    builder = _Builder(int(config.get("ips") or 100_000_000), paths)
    export = _Export(builder, loads,
                     slices=recorded is None or "InterruptReturn" in recorded)
    at = 0
    for record in events:
        at = builder.nanoseconds(record)
        kind = record.get("type")
        if kind == "ExceptionDelivered":
            export.exception(at, record)
        elif kind == "InterruptReturn":
            export.interrupt_return(at, record)
        elif kind == "Cr3Written":
            export.cr3(at, record)
        elif kind == "Syscall":
            export.syscall(at, record)
        elif kind == "ProcessStart":
            owner = builder.process(record["pid"], str(record.get("path", "")))
            builder.instant(at, f"start {record.get('path', '')}", owner.thread,
                            ppid=record.get("ppid", 0))
        elif kind == "ProcessExec":
            owner = builder.process(record["pid"], str(record.get("path", "")))
            builder.instant(at, f"exec {record.get('path', '')}", owner.thread)
        elif kind == "ProcessExit":
            export.process_exit(at, record)
        elif kind == "GuestCounters":
            export.counters(at, record)
        elif kind == "TlbFlush" and "count" in record:        # a run (trace.FlushRuns)
            builder.instant(at, f"invlpg x{record['count']}", address=record["address"],
                            stride=record["stride"], last_icount=record["last_icount"])
        elif kind == "TlbFlush":
            builder.instant(at, "invlpg", address=record["address"])
        elif kind in ("InvariantViolation", "HeapFinding"):
            builder.instant(at, f"finding {record['rule']}", address=record["address"],
                            detail=(str(record.get("detail", "")).splitlines() or [""])[0])
        elif kind == "Injection":
            builder.instant(at, f"injection {record['kind']}", target=record["target"],
                            detail=record["detail"])
        elif kind == "GuestExit":
            builder.instant(at, f"end: {record['reason']}")
    for owner in builder.processes.values():
        builder.end_all(at, owner.open)
    builder.end_all(at, builder.kernel_open)
    builder.leave_space(at)
    return builder.builder.serialize()


def export(trace: Path, out: Path) -> int:
    """Write the Perfetto form of `trace` to `out`; returns the bytes written. The trace
    is read twice (the CR3 owners first), streaming both times."""
    from emu.monitor.trace import read_trace

    def reading(use: Callable[[dict, Iterator[dict]], object]):
        header, events = read_trace(trace)
        try:
            return use(header, events)
        finally:
            events.close()
    owners = reading(lambda header, events: cr3_owners(events))
    data = reading(lambda header, events: build(header, events, owners))
    try:
        out.write_bytes(data)
    except OSError as exc:
        raise OutputError(f"cannot write {display(out)}: {exc.strerror}") from None
    return len(data)
