"""Inputs from outside the guest are events (issue 13 item 1): serial input
(`--serial-input`), keys (`--keys`) and the stdin of `emu exec` are recorded, and `emu replay`
feeds the serial input and stdin back from the trace, so a rerun needs neither the file
nor the terminal. A trace with an input event removed must diverge: the feeding is what
makes the replay match."""
from __future__ import annotations

from pathlib import Path

from differential import program
from fuzzing import run_emu

from emu.cli import main
from emu.monitor.trace import read_trace

LSR = 0x3fd
DATA_READY = 0x01


def _without(trace: Path, kind: str, out: Path) -> Path:
    lines = trace.read_text().splitlines(keepends=True)
    out.write_text("".join(line for line in lines if f'"type":"{kind}"' not in line))
    return out


def test_serial_input_is_an_event_and_a_replay_feeds_it_back(kernel, tmp_path, capsys):
    data = tmp_path / "typed.txt"
    data.write_bytes(b"ls -l\n")
    trace = tmp_path / "serial.jsonl"
    assert main(["run", "--quiet", str(kernel), "--cmdline", "test=int3", "--keys", "ab",
                 "--serial-input", str(data), "--trace", str(trace)]) == 0
    _, events = read_trace(trace)
    events = list(events)
    arrived = [e for e in events if e["type"] == "SerialInput"]
    assert [(e["port"], bytes.fromhex(e["data"])) for e in arrived] == [(0x3f8, b"ls -l\n")]
    assert [e["text"] for e in events if e["type"] == "KeyInput"] == ["ab"]
    # The guest sees it: the next status poll says a byte is waiting.
    after = events[events.index(arrived[0]) + 1]
    assert (after["port"], after["value"] & DATA_READY) == (LSR, DATA_READY)

    data.unlink()                          # the replay reads the trace, not the file
    capsys.readouterr()
    assert main(["replay", str(trace)]) == 0
    assert main(["replay", str(trace), "--compare", "mm"]) == 0

    capsys.readouterr()
    assert main(["replay", str(_without(trace, "SerialInput", tmp_path / "cut.jsonl"))]) == 75
    report = capsys.readouterr().out
    assert f"recorded: PortAccess @{after['icount']} port=0x3fd size=1 value=0x61" in report
    assert "value=0x60" in report


def test_a_missing_serial_input_file_is_one_line(kernel, tmp_path, capsys):
    assert main(["run", "--quiet", str(kernel), "--serial-input", str(tmp_path / "nope")]) == 2
    assert "nope" in capsys.readouterr().err


def test_the_stdin_of_emu_exec_is_replayed_from_the_trace(tmp_path, capsys):
    trace = tmp_path / "stdin.jsonl"
    ending = run_emu(["exec", "--trace", str(trace), str(program("stdin_pages"))],
                     stdin=b"hello", timeout=120)
    assert ending.status == 0 and ending.stdout == b"read 5 bytes\n"
    _, events = read_trace(trace)
    reads = [bytes.fromhex(e["data"]) for e in events if e["type"] == "HostInput"]
    assert reads == [b"hello", b""]                     # the data, then the end of stdin

    capsys.readouterr()
    assert main(["replay", str(trace)]) == 0            # our stdin is not the recording's
    cut = _without(trace, "HostInput", tmp_path / "cut.jsonl")
    (tmp_path / "cut.initrd.tar").write_bytes((tmp_path / "stdin.initrd.tar").read_bytes())
    capsys.readouterr()
    assert main(["replay", str(cut)]) == 75
    assert "observed: HostInput" in capsys.readouterr().out
