"""`emu trace export --perfetto`: the written file decodes with Perfetto's own protos, and
its tracks, slices, instants and counters match the events of the trace they came from.
(The `perfetto` package's TraceProcessor downloads its shell binary on first use, which a
machine without network cannot: the tests decode the protos, and rebuild the slices from
the begin and end events as the trace processor does, a stack per track.)"""
from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

from differential import program
from fuzzing import run_emu

from perfetto.protos.perfetto.trace.perfetto_trace_pb2 import Trace, TrackEvent

from emu.cli import main
from emu.export.perfetto import cr3_owners
from emu.monitor.trace import read_header, read_trace

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
    slices = rebuild_slices(trace)
    names = Counter(name for _, name, _, _ in slices)
    assert names["#PF"] == faults                     # each handler a slice, none an instant
    calls = Counter(e["name"] for e in records if e["type"] == "Syscall")
    assert {name: names[name] for name in calls} == calls     # named after the call
    assert sum(calls.values()) + names["exit"] == syscalls    # exit never returns
    assert names["exit"] == 1
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


def rebuild_slices(trace: Trace) -> list[tuple[str, str, int, int]]:
    """(track name, slice name, start, end) of every slice, as a trace processor pairs the
    begin and end events: a stack per track. Fails on an end without a begin, or a slice
    left open."""
    tracks = {p.track_descriptor.uuid: p.track_descriptor.name for p in trace.packet
              if p.HasField("track_descriptor")}
    stacks: dict[int, list] = defaultdict(list)
    out = []
    for packet in trace.packet:
        event = packet.track_event
        if not packet.HasField("track_event"):
            continue
        if event.type == TrackEvent.TYPE_SLICE_BEGIN:
            stacks[event.track_uuid].append((event.name, packet.timestamp))
        elif event.type == TrackEvent.TYPE_SLICE_END:
            name, start = stacks[event.track_uuid].pop()
            assert start <= packet.timestamp
            out.append((tracks[event.track_uuid], name, start, packet.timestamp))
    assert not any(stacks.values()), "a slice left open"
    return out


def test_handlers_and_system_calls_are_slices_on_their_process_tracks(tmp_path):
    """A forking program: each delivery is a slice on the thread track of the process that
    was current, ending at the InterruptReturn with its frame (checked against a matching
    of the trace's own events by frame); system calls are named after the call; the
    counters follow the samples."""
    trace = tmp_path / "fork.jsonl"
    ending = run_emu(["exec", "--trace", str(trace), "--trace-counters", "100000",
                      str(program("fork_cow"))], timeout=120)
    assert ending.status == 0, ending.err
    out = tmp_path / "fork.pftrace"
    assert main(["trace", "export", "--perfetto", str(trace), str(out)]) == 0
    _, events = read_trace(trace)
    records = list(events)
    exported = decode(out)
    slices = rebuild_slices(exported)
    ips = read_header(trace)["config"]["ips"]

    def ns(record: dict) -> int:
        return record["vtime"] * 1_000_000_000 // ips

    # The expected handler slices: each delivery ended by the next return with its frame.
    # The fault that killed its process (the child's segfault) never returns: the next
    # return with its frame is another process's, on a reused stack.
    killed = {e["rip"] for e in records
              if e["type"] == "UserFault" and e["resolution"] == "sigsegv"}
    expected, open_, unreturned = Counter(), defaultdict(list), 0
    for record in records:
        if record["type"] == "ExceptionDelivered" and record["vector"] != 256:
            open_[record["frame"]].append(record)
        elif record["type"] == "InterruptReturn" and open_[record["frame"]]:
            begun = open_[record["frame"]].pop()
            if begun["rip"] not in killed:
                expected[("#PF" if begun["vector"] == 14 else "other", ns(begun),
                          ns(record))] += 1
            else:
                unreturned += 1
    assert unreturned == 1
    calls_made = {e["name"] for e in records if e["type"] == "Syscall"}
    got = Counter(("#PF" if name == "#PF" else "other", start, end)
                  for track, name, start, end in slices if track.endswith(" handlers")
                  and name not in calls_made | {"exit", "syscall"})
    assert expected and expected - got == Counter()
    assert sum((got - expected).values()) == unreturned      # ended at its process's exit
    # System calls: one slice per Syscall event, on that pid's track, named by the call.
    calls = Counter((f"pid {e['pid']} handlers", e["name"]) for e in records
                    if e["type"] == "Syscall")
    assert calls[("pid 1 handlers", "fork")] == 3
    assert Counter((track, name) for track, name, _, _ in slices
                   if (track, name) in calls) == calls
    starts = {e["pid"] for e in records if e["type"] == "ProcessStart"}
    assert len(starts) == 4
    tracks = [p.track_descriptor for p in exported.packet if p.HasField("track_descriptor")]
    assert {t.process.pid for t in tracks if t.HasField("process")} == starts
    assert {t.thread.tid for t in tracks if t.HasField("thread")} == starts
    # Counters: every free-frames sample, and an RSS track per process that was sampled.
    samples = [e for e in records if e["type"] == "GuestCounters"]
    assert len(samples) > 10
    names = {t.uuid: t.name for t in tracks if t.HasField("counter")}
    values = defaultdict(list)
    for packet in exported.packet:
        event = packet.track_event
        if packet.HasField("track_event") and event.type == TrackEvent.TYPE_COUNTER:
            values[names[event.track_uuid]].append((packet.timestamp, event.counter_value))
    assert values["free frames"] == [(ns(e), e["free_frames"]) for e in samples
                                     if e["free_frames"] >= 0]
    assert values["heap pages"] and values["RSS pid 1 (pages)"]
    sampled = {pid for e in samples for pid, _ in e["rss"]}
    assert {f"RSS pid {pid} (pages)" for pid in sampled} <= set(values)
    peak = max(pages for e in samples for pid, pages in e["rss"] if pid == 2)
    assert max(v for _, v in values["RSS pid 2 (pages)"]) == peak > 0


def test_a_trace_without_returns_shows_deliveries_as_instants(tmp_path):
    trace = tmp_path / "filtered.jsonl"
    ending = run_emu(["exec", "--trace", str(trace), "--trace-events",
                      "exceptions,cr3,syscalls", str(program("hello"))], timeout=120)
    assert ending.status == 7, ending.err
    out = tmp_path / "filtered.pftrace"
    assert main(["trace", "export", "--perfetto", str(trace), str(out)]) == 0
    exported = decode(out)
    assert not rebuild_slices(exported) or all(name == "running" for _, name, _, _
                                               in rebuild_slices(exported))
    instants = Counter(p.track_event.name for p in exported.packet
                       if p.HasField("track_event")
                       and p.track_event.type == TrackEvent.TYPE_INSTANT)
    _, events = read_trace(trace)
    faults = sum(1 for e in events if e["type"] == "ExceptionDelivered" and e["vector"] == 14)
    assert faults and instants["#PF"] == faults


def test_a_load_with_no_process_event_after_it_belongs_to_its_roots_owner():
    """A CPU-bound process preempted before its next system call leaves no process event
    after a load of its root: the root's last owner has it, until that process exits (a
    root frame reused by another process is not the first one's)."""
    def load(root: int) -> dict:
        return {"type": "Cr3Written", "old": 0, "new": root | 0x18}   # PWT/PCD bits too

    def call(pid: int) -> dict:
        return {"type": "Syscall", "pid": pid}

    events = [load(0x1000), call(1), load(0x2000), call(2), load(0x1000), call(1),
              load(0x2000), load(0x1000), load(0x2000),             # 2 spins: no events
              {"type": "ProcessExit", "pid": 2}, load(0x1000), load(0x2000),  # 2's root freed
              load(0x9000)]                                         # the kernel's
    owners, _ = cr3_owners(events)
    assert owners == [1, 2, 1, 2, 1, 2, 1, None, None]


def test_a_spinning_child_that_is_preempted_keeps_its_own_track(tmp_path):
    """tests/programs/spin.c: the child writes once, then spins until killed; the tick
    switches away from it and back with no process event in between."""
    trace = tmp_path / "spin.jsonl"
    ending = run_emu(["exec", "--trace", str(trace), str(program("spin"))], timeout=120)
    assert ending.status == 0, ending.err
    records = list(read_trace(trace)[1])
    owners, _ = cr3_owners(records)
    roots = [e["new"] for e in records if e["type"] == "Cr3Written"]
    child = {root for root, owner in zip(roots, owners) if owner == 2}
    assert len(child) == 1
    assert sum(root in child for root in roots) >= 2           # switched back to it
    assert all(owner == 2 for root, owner in zip(roots, owners) if root in child)
