"""Trace size and cost (issue 13 item 4): `--trace-events` filters, zstd-compressed traces,
and the fast line encoder, which must write exactly what json.dumps would."""
from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emu.cli import main
from emu.errors import ConfigError, TraceError
from emu.events import (Booted, EventBus, Cr3Written, ExceptionDelivered, GuestExit, HeapFinding,
                        PortAccess, SerialOutput, TlbFlush)
from emu.monitor import trace_events
from emu.monitor.trace import TraceRecorder, event_line, last_event, read_trace

HEAP = ["--cmdline", "replay=1 heap=chained"]


def _reference_line(event, vtime: int) -> str:
    record = event.to_dict()
    record["vtime"] = vtime
    return json.dumps(record, separators=(",", ":")) + "\n"


numbers = st.integers(0, (1 << 64) - 1)
text = st.text(max_size=20)
events = st.one_of(
    st.builds(PortAccess, numbers, numbers, numbers, numbers, st.booleans()),
    st.builds(ExceptionDelivered, numbers, numbers, st.sampled_from(["fault", "syscall"]),
              numbers, st.none() | numbers, st.none() | numbers, st.integers(0, 3), numbers),
    st.builds(SerialOutput, numbers, numbers, text),
    st.builds(Booted, numbers, numbers, st.lists(text).map(tuple), st.lists(text).map(tuple)),
    st.builds(GuestExit, numbers, st.none() | numbers, text),
    st.builds(HeapFinding, numbers, text, numbers, numbers, text, text),
    st.builds(Cr3Written, numbers, numbers, numbers, numbers),
)


@given(events, numbers)
def test_the_fast_encoder_writes_what_json_dumps_writes(event, vtime):
    assert event_line(event, lambda _: vtime) == _reference_line(event, vtime)


def test_filter_names_groups_and_types():
    chosen = trace_events.parse("exceptions,cr3,TlbFlush")
    assert chosen.text == "Cr3Written,ExceptionDelivered,TlbFlush"
    assert chosen.keeps(TlbFlush(1, 2, 3))
    assert chosen.keeps(GuestExit(1, 0, "exit"))              # always: how the run ended
    assert not chosen.keeps(PortAccess(1, 0x3f8, 1, 65, True))
    syscalls = trace_events.parse("syscalls")
    assert syscalls.keeps(ExceptionDelivered(1, 256, "syscall", 0, None, None, 3, 0))
    assert not syscalls.keeps(ExceptionDelivered(1, 14, "fault", 0, 6, 0x1000, 3, 0))
    assert "ExceptionDelivered" in syscalls.recorded_types
    assert "Syscall" in syscalls.recorded_types              # the returns, with results
    assert "PortAccess" not in syscalls.recorded_types
    assert trace_events.parse(syscalls.text) == syscalls          # the header round-trips
    assert trace_events.parse("all").types is None
    with pytest.raises(ConfigError, match="no event group or type 'pagefaults'"):
        trace_events.parse("exceptions,pagefaults")


def test_a_filtered_trace_holds_only_its_types_and_replays(kernel, tmp_path, capsys):
    trace = tmp_path / "filtered.jsonl"
    assert main(["run", "--quiet", str(kernel), "--trace", str(trace), *HEAP,
                 "--module", "traces/malloclab/short1-bal.rep",
                 "--trace-events", "exceptions,cr3,syscalls"]) == 0
    header, recorded = read_trace(trace)
    types = {event["type"] for event in recorded}
    assert types == {"Booted", "Cr3Written", "ExceptionDelivered", "GuestExit"}
    assert header["run"]["trace_events"] == "Cr3Written,ExceptionDelivered,Syscall"
    capsys.readouterr()
    assert main(["replay", str(trace)]) == 0
    assert "replay matched" in capsys.readouterr().out


def test_a_replay_of_a_filtered_trace_still_finds_a_divergence(kernel, tmp_path, capsys):
    """The filter drops events from the comparison, not the comparison itself: another boot
    time moves the first timer interrupt, an exception the filtered trace holds."""
    trace = tmp_path / "filtered.jsonl"
    assert main(["run", "--quiet", str(kernel), "--trace", str(trace), "--cmdline",
                 "test=int3", "--trace-events", "exceptions"]) == 0
    capsys.readouterr()
    assert main(["replay", str(trace), "--set", "ips=50000000"]) == 75
    assert "ExceptionDelivered" in capsys.readouterr().out


def test_trace_events_needs_a_trace(kernel, capsys):
    assert main(["run", "--quiet", str(kernel), "--trace-events", "exceptions"]) == 2
    assert "add --trace FILE" in capsys.readouterr().err


def test_a_compressed_trace_reads_like_the_plain_one_and_replays(kernel, tmp_path, capsys):
    plain, packed = tmp_path / "run.jsonl", tmp_path / "run.jsonl.zst"
    for path in (plain, packed):
        assert main(["run", "--quiet", str(kernel), "--trace", str(path), "--cmdline",
                     "test=int3"]) == 0
    assert packed.read_bytes()[:4] == b"\x28\xb5\x2f\xfd"         # zstd's magic number
    assert packed.stat().st_size * 4 < plain.stat().st_size
    plain_header, plain_events = read_trace(plain)
    packed_header, packed_events = read_trace(packed)
    assert packed_header == plain_header
    assert list(packed_events) == list(plain_events)
    assert last_event(packed) == last_event(plain)
    capsys.readouterr()
    assert main(["replay", str(packed)]) == 0
    assert main(["trace", "export", "--perfetto", str(packed), str(tmp_path / "out.pftrace")]) \
        == 0


def test_a_compressed_trace_cut_short_reads_as_a_prefix(kernel, tmp_path, capsys):
    """A run killed mid-write leaves a compressed prefix: it reads up to the last complete
    compressed block (the recorder ends one at every flush, after whole lines), as a plain
    trace reads up to its last line."""
    packed = tmp_path / "run.jsonl.zst"
    assert main(["run", "--quiet", str(kernel), "--trace", str(packed), "--cmdline",
                 "test=int3"]) == 0
    _, whole = read_trace(packed)
    whole = list(whole)
    cut = tmp_path / "cut.jsonl.zst"
    cut.write_bytes(packed.read_bytes()[:packed.stat().st_size // 2])
    header, recorded = read_trace(cut)
    assert header["format"] == "emu-trace"
    prefix = list(recorded)
    assert 0 < len(prefix) < len(whole)
    assert prefix == whole[:len(prefix)]


def test_a_compressed_trace_cut_back_at_a_restore_reads_across_frames(tmp_path):
    """A snapshot restore cuts the file back to the snapshot's position: the zstd stream
    ends a frame there, and the reader reads the frames that follow."""
    path = tmp_path / "cut.jsonl.zst"
    recorder = TraceRecorder(path, {})
    recorder.on_event(PortAccess(1, 0x3f8, 1, 65, True))
    state = recorder.snapshot_state()
    recorder.on_event(PortAccess(2, 0x3f8, 1, 66, True))          # cut off by the restore
    recorder.restore_state(state)
    recorder.on_event(PortAccess(3, 0x3f8, 1, 67, True))
    recorder.on_event(GuestExit(4, 0, "exit"))
    recorder.close()
    _, recorded = read_trace(path)
    assert [(e["icount"], e.get("value")) for e in recorded] == [(1, 65), (3, 67), (4, None)]


def test_a_flush_flood_is_one_line_and_each_flush_asks_for_every_one(tmp_path):
    """A kernel that flushes a range page by page a million times makes one record, not a
    million lines; `each-flush` records them one by one. A flush from elsewhere, another
    stride or any recorded event between ends a run."""
    def record(events_spec: str, flushes) -> list[dict]:
        path = tmp_path / f"{events_spec}.jsonl"
        recorder = TraceRecorder(path, {}, trace_events.parse(events_spec))
        for event in flushes:
            recorder.on_event(event)
        recorder.close()
        return list(read_trace(path)[1])

    flood = [TlbFlush(10 + 3 * n, 0xffff8000, 0x1000 * n) for n in range(1_000_000)]
    [run] = record("all", flood)
    assert (run["icount"], run["address"], run["count"], run["stride"], run["last_icount"]) \
        == (10, 0, 1_000_000, 0x1000, 10 + 3 * 999_999)
    assert len(record("tlb,each-flush", flood[:1000])) == 1000

    broken = [TlbFlush(1, 0xa, 0x1000), TlbFlush(2, 0xa, 0x2000),   # a run of two
              TlbFlush(3, 0xb, 0x3000),                              # another rip
              TlbFlush(4, 0xb, 0x3000), TlbFlush(5, 0xb, 0x5000),   # stride 0, then 0x2000
              PortAccess(6, 0x80, 1, 0, True),                       # ends the run
              TlbFlush(7, 0xb, 0x5000), GuestExit(8, 0, "exit")]
    got = [(r["type"], r["icount"], r.get("count"), r.get("stride")) for r in
           record("all", broken)]
    assert got == [("TlbFlush", 1, 2, 0x1000), ("TlbFlush", 3, 2, 0), ("TlbFlush", 5, None, None),
                   ("PortAccess", 6, None, None), ("TlbFlush", 7, None, None),
                   ("GuestExit", 8, None, None)]

    # A filter that leaves PortAccess out never sees it: the run goes on across it.
    path = tmp_path / "tlb.jsonl"
    recorder = TraceRecorder(path, {}, trace_events.parse("tlb"))
    bus = EventBus([recorder])
    for event in [TlbFlush(4, 0xb, 0x3000), TlbFlush(5, 0xb, 0x5000),
                  PortAccess(6, 0x80, 1, 0, True), TlbFlush(7, 0xb, 0x7000),
                  GuestExit(8, 0, "exit")]:
        if bus.wants(type(event)):
            bus.emit(event)
    recorder.close()
    assert [(r["icount"], r.get("count")) for r in read_trace(path)[1]] == [(4, 3), (8, None)]


def test_a_trace_from_before_filters_replays_flush_by_flush(kernel, tmp_path, capsys):
    """A header without `run.trace_events` was written before filters and flush runs: its
    replay compares every flush on its own, as it was recorded."""
    trace = tmp_path / "each.jsonl"
    # Without the heap's page cache every free of a large block unmaps its pages.
    assert main(["run", "--quiet", str(kernel), "--trace", str(trace), "--cmdline",
                 "replay=1 heap=chained heapcache=0", "--module",
                 "traces/malloclab/coalescing-bal.rep", "--trace-events", "all,each-flush"]) == 0
    header_line, *lines = trace.read_text().splitlines(keepends=True)
    header = json.loads(header_line)
    assert header["run"].pop("trace_events") == "all,each-flush"
    header["run"].pop("events")
    old = tmp_path / "old.jsonl"
    old.write_text(json.dumps(header) + "\n" + "".join(lines))
    assert not any('"count":' in line for line in lines)
    flushes = [line for line in lines if line.startswith('{"type":"TlbFlush"')]
    assert len(flushes) > 1000               # runs of them, that a default trace coalesces
    capsys.readouterr()
    assert main(["replay", str(old)]) == 0
