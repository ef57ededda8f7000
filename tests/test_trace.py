"""Trace files: what `emu run --trace` writes (a versioned header, then events in order, then
GuestExit), that a crashed run still leaves a readable trace, and that read_trace refuses
anything that is not one, with a one-line TraceError."""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import fields

import pytest

from emu.cli import main
from emu.errors import TraceError
from emu.machine import MachineConfig
from emu.monitor.trace import read_trace


def traced_run(kernel, tmp_path, capsys, *args: str) -> tuple[int, dict, list[dict], str]:
    path = tmp_path / "run.jsonl"
    status = main(["run", "--quiet", str(kernel), "--trace", str(path), *args])
    err = capsys.readouterr().err
    header, events = read_trace(path)
    return status, header, list(events), err


def test_trace_header_events_and_final_exit(kernel, tmp_path, capsys):
    status, header, events, err = traced_run(kernel, tmp_path, capsys, "--cmdline", "test=int3")

    assert status == 0
    assert header["format"] == "emu-trace"
    assert header["version"] == 2
    assert header["kernel_sha256"] == hashlib.sha256(kernel.read_bytes()).hexdigest()
    config = MachineConfig(kernel=kernel, cmdline="test=int3")
    assert header["config"] == {name: (str(value) if name == "kernel" else
                                       list(value) if isinstance(value, tuple) else value)
                                for name, value in
                                ((f.name, getattr(config, f.name)) for f in fields(config))}

    counts = [event["icount"] for event in events]
    assert all(isinstance(c, int) for c in counts)
    assert counts == sorted(counts)
    assert counts[0] < counts[-1]

    breakpoints = [e for e in events if e["type"] == "ExceptionDelivered"
                   and e["kind"] != "external"]      # the PIT's interrupt at calibration
    assert [(e["vector"], e["kind"], e["cpl"]) for e in breakpoints] == [(3, "software", 0)]
    assert breakpoints[0]["handler_rip"] != 0
    serial = [e["text"] for e in events if e["type"] == "SerialOutput"]
    assert "test int3: executing int3" in serial
    # the breakpoint comes between the two lines around it
    index = {id(e): n for n, e in enumerate(events)}
    before = next(e for e in events if e.get("text") == "test int3: executing int3")
    after = next(e for e in events if e.get("text", "").startswith("test int3: returned"))
    assert index[id(before)] < index[id(breakpoints[0])] < index[id(after)]

    final = events[-1]
    assert final["type"] == "GuestExit"
    assert (final["status"], final["reason"]) == (0, "exit")
    assert sum(1 for e in events if e["type"] == "GuestExit") == 1
    summary = re.search(r"--- ([\d,]+) instructions", err)
    assert final["icount"] == int(summary[1].replace(",", ""))


def test_crashed_run_leaves_a_readable_trace(kernel, tmp_path, capsys):
    status, header, events, err = traced_run(kernel, tmp_path, capsys, "--cmdline",
                                             "test=triple")
    assert status == 70
    assert header["config"]["cmdline"] == "test=triple"
    final = events[-1]
    assert final["type"] == "GuestExit"
    assert (final["status"], final["reason"]) == (None, "triple-fault")
    delivered = [(e["vector"], e["kind"]) for e in events if e["type"] == "ExceptionDelivered"]
    assert (14, "fault") in delivered
    assert delivered[-1] == (8, "double")
    page_fault = next(e for e in events if e["type"] == "ExceptionDelivered" and e["vector"] == 14)
    assert page_fault["cr2"] == 0x1000
    assert [e["icount"] for e in events] == sorted(e["icount"] for e in events)


def test_halted_run_ends_its_trace_with_halt(kernel, tmp_path, capsys):
    status, _, events, _ = traced_run(kernel, tmp_path, capsys, "--cmdline", "test=halt")
    assert status == 72
    assert (events[-1]["type"], events[-1]["reason"]) == ("GuestExit", "halt")


def test_a_wild_access_is_the_last_event_at_the_crashing_instruction(kernel, tmp_path, capsys):
    status, _, events, _ = traced_run(kernel, tmp_path, capsys, "--cmdline", "test=wild")
    assert status == 70
    access, final = events[-2:]
    assert access["type"] == "MmioAccess" and access["address"] == 0xA0000
    assert (access["write"], access["size"]) == (False, 8)
    # the read did not retire: the run's count stops right before it
    assert access["icount"] == final["icount"] and final["reason"] == "crash"


def test_events_carry_virtual_time_and_the_boot(kernel, tmp_path, capsys):
    _, _, events, _ = traced_run(kernel, tmp_path, capsys)
    booted = events[0]
    assert booted["type"] == "Booted" and booted["icount"] == 0
    assert "memmap" in booted["answered"] and "module" in booted["ignored"]
    # Our kernel halts once, waiting for the PIT while it calibrates its timer (10 ms):
    # from then on virtual time is ahead of the instruction count by about 1,000,000.
    skipped = [event["vtime"] - event["icount"] for event in events]
    assert skipped == sorted(skipped) and skipped[0] == 0
    assert 990_000 < skipped[-1] < 1_010_000


# --- read_trace refuses what is not a trace ----------------------------------------------

HEADER = {"format": "emu-trace", "version": 2, "kernel_sha256": "0" * 64, "config": {}}
EVENT = {"type": "GuestExit", "icount": 5, "status": 0, "reason": "exit"}


def refused(path) -> str:
    with pytest.raises(TraceError) as info:
        header, events = read_trace(path)
        list(events)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message
    return message


def test_read_trace_rejects_an_empty_file(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    assert "empty" in refused(path)


def test_read_trace_names_the_line_that_is_not_json(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text("\n".join([json.dumps(HEADER), json.dumps(EVENT), "{not json",
                               json.dumps(EVENT)]) + "\n")
    assert f"{path}:3:" in refused(path)


def test_read_trace_reports_a_line_cut_short_by_a_crash(tmp_path):
    path = tmp_path / "cut.jsonl"
    line = json.dumps(EVENT)
    path.write_text(json.dumps(HEADER) + "\n" + line + "\n" + line[:len(line) // 2])
    assert f"{path}:3:" in refused(path)


def test_read_trace_rejects_another_version(tmp_path):
    path = tmp_path / "v3.jsonl"
    path.write_text(json.dumps(dict(HEADER, version=3)) + "\n" + json.dumps(EVENT) + "\n")
    message = refused(path)
    assert "version 3" in message and "version 2" in message


def test_read_trace_refuses_version_1_by_name(tmp_path):
    path = tmp_path / "v1.jsonl"
    path.write_text(json.dumps(dict(HEADER, version=1)) + "\n" + json.dumps(EVENT) + "\n")
    message = refused(path)
    assert "version 1 (before replay" in message and "record it again" in message


@pytest.mark.parametrize("content", [json.dumps({"name": "emu", "items": [1, 2]}),
                                     json.dumps([HEADER]), "[1, 2, 3]"])
def test_read_trace_rejects_json_that_is_not_a_trace(tmp_path, content):
    path = tmp_path / "other.json"
    path.write_text(content + "\n")
    message = refused(path)
    assert f"{path}:1:" in message or "not an emu trace" in message


def test_read_trace_rejects_an_event_without_icount(tmp_path):
    path = tmp_path / "no-icount.jsonl"
    path.write_text(json.dumps(HEADER) + "\n" + json.dumps({"type": "GuestExit"}) + "\n")
    assert f"{path}:2:" in refused(path)


def test_read_trace_rejects_binary_and_missing_files(tmp_path):
    binary = tmp_path / "kernel.elf"
    binary.write_bytes(b"\x7fELF\x02\x01\x01\x00" + bytes(range(128, 256)))
    assert "not UTF-8" in refused(binary)
    assert "trace" in refused(tmp_path / "nothing.jsonl") and \
        "not found" in refused(tmp_path / "nothing.jsonl")


def test_a_valid_trace_round_trips(tmp_path):
    path = tmp_path / "ok.jsonl"
    path.write_text(json.dumps(HEADER) + "\n" + json.dumps(EVENT) + "\n")
    header, events = read_trace(path)
    assert header == HEADER
    assert list(events) == [EVENT]
