"""The `emu` command line: a run in-process and as a real process, the summary, the exit
statuses, one-line errors for bad input, screenshots and modules."""
from __future__ import annotations

import os
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from emu.cli import main

REPO = Path(__file__).resolve().parent.parent
SUMMARY = re.compile(r"^--- [\d,]+ instructions in \d+\.\d{3} s \(\d+\.\d MIPS\)$", re.MULTILINE)


def one_line_error(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("emu: error: "), err
    assert "Traceback" not in err
    return lines[0]


def test_run_in_process_prints_serial_and_summary(kernel, capsys):
    status = main(["run", str(kernel)])
    out, err = capsys.readouterr()

    assert status == 0
    assert "emu guest kernel" in out and "kmain: done" in out     # live serial output
    assert "--- guest exited with 0" in err
    assert SUMMARY.search(err), err
    assert "Traceback" not in err


def test_quiet_run_prints_no_serial(kernel, capsys):
    assert main(["run", "--quiet", str(kernel)]) == 0
    out, err = capsys.readouterr()
    assert out == ""
    assert SUMMARY.search(err), err


def test_run_as_a_process_builds_and_boots_the_default_kernel(kernel):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, "-m", "emu.cli", "run", "--quiet"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    assert SUMMARY.search(proc.stderr), proc.stderr
    assert "instructions" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_guest_exit_value_and_crash_statuses(kernel, capsys):
    assert main(["run", "--quiet", str(kernel), "--cmdline", "test=pf"]) == 1   # panic()
    capsys.readouterr()
    assert main(["run", "--quiet", str(kernel), "--cmdline", "test=triple"]) == 70
    _, err = capsys.readouterr()
    assert err.startswith("=== guest crash: triple fault at RIP")
    assert "backtrace:" in err
    assert "--- exceptions: " in err and "#PF x1" in err


def test_missing_kernel_is_one_line_status_2(tmp_path, capsys):
    missing = tmp_path / "nope.elf"
    assert main(["run", str(missing)]) == 2
    out, err = capsys.readouterr()
    line = one_line_error(err)
    assert str(missing) in line
    assert out == ""


def test_bad_memory_size_is_one_line_status_2(kernel, capsys):
    assert main(["run", str(kernel), "--memory", "12Q"]) == 2
    assert "'12Q'" in one_line_error(capsys.readouterr().err)


def test_unknown_memmap_is_one_line_status_2(kernel, capsys):
    assert main(["run", str(kernel), "--memmap", "nosuch"]) == 2
    line = one_line_error(capsys.readouterr().err)
    assert "'nosuch'" in line and "pc, tiny, fragmented" in line


def test_missing_module_is_one_line_status_2(kernel, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(kernel), "--module", "missing.bin"]) == 2
    assert "missing.bin" in one_line_error(capsys.readouterr().err)


def test_unwritable_trace_is_one_line_status_2(kernel, tmp_path, capsys):
    assert main(["run", "--quiet", str(kernel), "--trace",
                 str(tmp_path / "no" / "such" / "dir" / "t.jsonl")]) == 2
    assert "cannot write trace" in one_line_error(capsys.readouterr().err)


@pytest.mark.parametrize("value", ["0", "-3", "lots"])
def test_max_instructions_must_be_positive(kernel, capsys, value):
    assert main(["run", str(kernel), f"--max-instructions={value}"]) == 2
    err = capsys.readouterr().err
    assert "argument --max-instructions" in one_line_error(err)   # not the usage block
    assert "Traceback" not in err


def test_screenshot_of_a_kernel_without_framebuffer_is_refused_before_it_runs(
        kernel, tmp_path, capsys, monkeypatch):
    """Found on a public kernel with no framebuffer request: the refusal came after a run
    of minutes, and took its summary with it."""
    from dataclasses import replace
    from emu.commands import run as run_command
    configured = run_command.machine_config
    monkeypatch.setattr(run_command, "machine_config",
                        lambda args: replace(configured(args), framebuffer=None))
    path = tmp_path / "out.png"
    assert main(["run", str(kernel), "--screenshot", str(path)]) == 2
    captured = capsys.readouterr()
    assert "asked for no framebuffer" in one_line_error(captured.err)
    assert captured.out == "" and not path.exists()          # the guest never ran


def test_screenshot_is_a_640x480_png(kernel, tmp_path, capsys):
    path = tmp_path / "out.png"
    assert main(["run", "--quiet", str(kernel), "--screenshot", str(path)]) == 0
    data = path.read_bytes()

    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks = []
    offset = 8
    while offset < len(data):
        length, kind = struct.unpack(">I4s", data[offset:offset + 8])
        body = data[offset + 8:offset + 8 + length]
        (crc,) = struct.unpack(">I", data[offset + 8 + length:offset + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF, kind
        chunks.append((kind, body))
        offset += 12 + length
    assert offset == len(data)
    assert chunks[0][0] == b"IHDR" and chunks[-1][0] == b"IEND"
    width, height, depth, color = struct.unpack(">IIBB", chunks[0][1][:10])
    assert (width, height) == (640, 480)
    assert (depth, color) == (8, 2)                    # 8-bit RGB
    pixels = zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT"))
    assert len(pixels) == height * (1 + 3 * width)


def test_module_is_listed_by_the_kernel(kernel, tmp_path, capsys):
    module = tmp_path / "hello-module.bin"
    module.write_bytes(b"hello from the host\n")
    assert main(["run", str(kernel), "--module", str(module)]) == 0
    out = capsys.readouterr().out
    assert "modules: 1" in out
    assert re.search(r'module 0: \S*hello-module\.bin "hello-module\.bin" 20 bytes at 0x', out), out


def test_no_count_runs_without_the_counter_and_refuses_what_needs_it(kernel, capsys):
    from emu.cli import main
    assert main(["run", str(kernel), "--quiet", "--no-count"]) == 0
    err = capsys.readouterr().err
    assert "instructions not counted" in err and "MIPS" not in err
    for extra in (["--max-instructions", "1000"], ["--trace", "t.jsonl"]):
        assert main(["run", str(kernel), "--quiet", "--no-count", *extra]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("emu: error:") and "--no-count" in lines[0]
