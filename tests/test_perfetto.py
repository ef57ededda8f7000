"""`emu trace export --perfetto`: the written file decodes with Perfetto's own protos, and
its tracks, slices, instants and counters match the events of the trace they came from."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from perfetto.protos.perfetto.trace.perfetto_trace_pb2 import Trace, TrackEvent

from emu.cli import main
from emu.monitor.trace import read_trace

GOLDEN = Path(__file__).resolve().parent.parent / "traces" / "golden"


def decode(path: Path) -> Trace:
    trace = Trace()
    trace.ParseFromString(path.read_bytes())
    return trace


def test_a_process_trace_exports_with_a_track_per_address_space(tmp_path, capsys):
    source = GOLDEN / "process-brk.jsonl"
    out = tmp_path / "process.pftrace"
    assert main(["trace", "export", "--perfetto", str(source), str(out)]) == 0
    assert "ui.perfetto.dev" in capsys.readouterr().err
    header, events = read_trace(source)
    records = list(events)
    trace = decode(out)
    tracks = {p.track_descriptor.uuid: p.track_descriptor for p in trace.packet
              if p.HasField("track_descriptor")}
    names = {t.name for t in tracks.values()}
    spaces = {e["new"] for e in records if e["type"] == "Cr3Written"}
    assert {f"address space CR3={cr3:#x}" for cr3 in spaces} <= names
    assert len(spaces) >= 2                           # the kernel's and the process's
    assert {"kernel", "page faults", "system calls"} <= names
    events_out = [p.track_event for p in trace.packet if p.HasField("track_event")]
    instants = Counter(e.name for e in events_out if e.type == TrackEvent.TYPE_INSTANT)
    exceptions = [e for e in records if e["type"] == "ExceptionDelivered"]
    faults = sum(1 for e in exceptions if e["vector"] == 14)
    syscalls = sum(1 for e in exceptions if e["vector"] == 256)
    assert faults > 10 and syscalls > 10
    assert instants["#PF"] == faults and instants["syscall"] == syscalls
    assert instants["CR3 load"] == sum(1 for e in records if e["type"] == "Cr3Written")
    assert instants["end: exit"] == 1
    begins = sum(1 for e in events_out if e.type == TrackEvent.TYPE_SLICE_BEGIN)
    ends = sum(1 for e in events_out if e.type == TrackEvent.TYPE_SLICE_END)
    assert begins == ends > 0                         # every slice closed
    counters = {uuid: t.name for uuid, t in tracks.items() if t.HasField("counter")}
    last = {}
    for event in events_out:
        if event.type == TrackEvent.TYPE_COUNTER:
            last[counters[event.track_uuid]] = event.counter_value
    assert last["page faults"] == faults and last["system calls"] == syscalls
    stamps = [p.timestamp for p in trace.packet if p.HasField("track_event")]
    assert stamps == sorted(stamps)                   # virtual time only moves forwards
    ips = header["config"]["ips"]
    assert stamps[-1] == records[-1]["vtime"] * 1_000_000_000 // ips


def test_bad_exports_are_one_line(tmp_path, capsys):
    source = GOLDEN / "boot.jsonl"
    assert main(["trace", "export", str(source), str(tmp_path / "x")]) == 2
    assert main(["trace", "export", "--perfetto", str(source), str(source)]) == 2
    assert main(["trace", "export", "--perfetto", str(tmp_path / "none"),
                 str(tmp_path / "x")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("emu: error:") for line in lines)
