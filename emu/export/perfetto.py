"""An emu trace as a Perfetto trace (`emu trace export --perfetto TRACE OUT`).

Owns: the tracks, slices, instants and counters a trace becomes, written with the
`perfetto` package's protos (TracePacket, TrackDescriptor, TrackEvent):
  kernel              instants: each exception or interrupt delivered (#PF with CR2,
                      system calls, timer interrupts...), CR3 loads, `invlpg`s, checker
                      findings, injections, the run's end
  address space CR3   one track per address space (a process, for our kernel): a slice
                      from each CR3 load of it to the next load of another
  counters            page faults, system calls and interrupts so far
Time is virtual: an event's `vtime` in ticks, at the recorded `ips` ticks per second.
Does not own: reading traces (emu/monitor/trace.py).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from emu.errors import OutputError
from emu.events import SYSCALL_VECTOR
from emu.inputs import display
from emu.x86 import exception_short_name

PAGE_FAULT = 14
SEQUENCE = 1                    # one writer: every packet in one sequence
KERNEL, COUNTERS = 1, 2         # track uuids; address spaces and counters follow
COUNTER_NAMES = ("page faults", "system calls", "interrupts")


class _Builder:
    def __init__(self, ips: int) -> None:
        from perfetto.protos.perfetto.trace.perfetto_trace_pb2 import TrackEvent
        from perfetto.trace_builder.proto_builder import TraceProtoBuilder
        self.kinds = TrackEvent
        self.builder = TraceProtoBuilder()
        self.ips = ips
        self.spaces: dict[int, int] = {}          # CR3 -> track uuid
        self.counters = {name: COUNTERS + 1 + n for n, name in enumerate(COUNTER_NAMES)}
        self.counts = dict.fromkeys(COUNTER_NAMES, 0)
        self.open_space: int | None = None
        self._track(KERNEL, "kernel")
        for name, uuid in self.counters.items():
            self._track(uuid, name, counter=True)

    def nanoseconds(self, record: dict) -> int:
        ticks = record.get("vtime", record.get("icount", 0))
        return int(ticks) * 1_000_000_000 // self.ips

    def _packet(self):
        packet = self.builder.add_packet()
        packet.trusted_packet_sequence_id = SEQUENCE
        return packet

    def _track(self, uuid: int, name: str, counter: bool = False) -> None:
        descriptor = self._packet().track_descriptor
        descriptor.uuid = uuid
        descriptor.name = name
        if counter:
            descriptor.counter.SetInParent()

    def _event(self, at: int, track: int, event_type, name: str = "",
               fields: dict | None = None) -> None:
        packet = self._packet()
        packet.timestamp = at
        event = packet.track_event
        event.type = event_type
        event.track_uuid = track
        if name:
            event.name = name
        for key, value in (fields or {}).items():
            annotation = event.debug_annotations.add()
            annotation.name = key
            if isinstance(value, int) and not isinstance(value, bool) and value < 0:
                annotation.int_value = value                   # a stride going down
            elif isinstance(value, int) and not isinstance(value, bool):
                annotation.uint_value = value & ((1 << 64) - 1)
            else:
                annotation.string_value = str(value)

    def instant(self, at: int, name: str, **fields) -> None:
        self._event(at, KERNEL, self.kinds.TYPE_INSTANT, name, fields)

    def count(self, at: int, name: str) -> None:
        self.counts[name] += 1
        packet = self._packet()
        packet.timestamp = at
        packet.track_event.type = self.kinds.TYPE_COUNTER
        packet.track_event.track_uuid = self.counters[name]
        packet.track_event.counter_value = self.counts[name]

    def enter_space(self, at: int, cr3: int) -> None:
        if self.open_space == cr3:
            return
        self.leave_space(at)
        if cr3 not in self.spaces:
            self.spaces[cr3] = COUNTERS + 1 + len(COUNTER_NAMES) + len(self.spaces)
            self._track(self.spaces[cr3], f"address space CR3={cr3:#x}")
        self._event(at, self.spaces[cr3], self.kinds.TYPE_SLICE_BEGIN, "running")
        self.open_space = cr3

    def leave_space(self, at: int) -> None:
        if self.open_space is not None:
            self._event(at, self.spaces[self.open_space], self.kinds.TYPE_SLICE_END)
            self.open_space = None


def _exception(builder: _Builder, at: int, record: dict) -> None:
    vector = record.get("vector", 0)
    if vector == SYSCALL_VECTOR:
        builder.instant(at, "syscall", rip=record.get("rip", 0), cpl=record.get("cpl", 0))
        builder.count(at, "system calls")
        return
    fields = {"rip": record.get("rip", 0), "cpl": record.get("cpl", 0),
              "kind": record.get("kind", "")}
    if vector == PAGE_FAULT:
        fields.update(cr2=record.get("cr2") or 0, error_code=record.get("error_code") or 0)
        builder.count(at, "page faults")
    elif record.get("kind") == "external":
        builder.count(at, "interrupts")
    builder.instant(at, exception_short_name(vector), **fields)


def build(header: dict, events: Iterable[dict]) -> bytes:
    """The Perfetto trace (serialized) of a trace's header and events."""
    config = header.get("config") if isinstance(header.get("config"), dict) else {}
    builder = _Builder(int(config.get("ips") or 100_000_000))
    at = 0
    for record in events:
        at = builder.nanoseconds(record)
        kind = record.get("type")
        if kind == "ExceptionDelivered":
            _exception(builder, at, record)
        elif kind == "Cr3Written":
            builder.instant(at, "CR3 load", old=record["old"], new=record["new"])
            builder.enter_space(at, record["new"])
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
    builder.leave_space(at)
    return builder.builder.serialize()


def export(trace: Path, out: Path) -> int:
    """Write the Perfetto form of `trace` to `out`; returns the bytes written."""
    from emu.monitor.trace import read_trace
    header, events = read_trace(trace)
    try:
        data = build(header, events)
    finally:
        events.close()
    try:
        out.write_bytes(data)
    except OSError as exc:
        raise OutputError(f"cannot write {display(out)}: {exc.strerror}") from None
    return len(data)
