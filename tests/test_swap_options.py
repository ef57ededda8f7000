"""The swap disk's options on the command line: what the kernel is told, the trace header,
the files (a temporary one never left behind, a kept one never overwritten by an output),
and one line with the fix for every bad value."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile

import pytest

from emu.cli import main
from emu.hw.blockdev import VIRTIO_BLK_BASE

ANNOUNCED = "virtio_mmio.device=4K@0xfeb00000:5"


def one_line_error(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("emu: error: "), err
    return lines[0]


def test_the_kernel_hears_of_the_disk_on_its_command_line(boot):
    machine, result = boot(cmdline="x=1", swap=1 << 20)
    assert result.exit_status == 0
    assert f'cmdline: "{ANNOUNCED} x=1"' in machine.serial_output()
    assert machine.swap.base == VIRTIO_BLK_BASE and machine.swap.disk.size == 1 << 20
    assert machine.bus.mmio_owner(VIRTIO_BLK_BASE).device is machine.swap.transport
    _, result = boot()
    assert machine.config.swap == 1 << 20


def test_no_swap_no_device_and_no_announcement(boot):
    machine, _ = boot()
    assert machine.swap is None and "virtio_mmio" not in machine.serial_output()
    assert machine.bus.mmio_owner(VIRTIO_BLK_BASE) is None


def test_the_temporary_disk_is_never_a_visible_file(kernel, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert main(["run", "--quiet", str(kernel), "--swap", "2M"]) == 0
    assert list(tmp_path.iterdir()) == []


def test_a_kept_swap_file_is_hashed_into_the_trace_header(kernel, tmp_path, capsys):
    swap = tmp_path / "swap.img"
    swap.write_bytes(b"\x5a" * (1 << 20))
    trace = tmp_path / "t.jsonl"
    assert main(["run", "--quiet", str(kernel), "--swap-file", str(swap), "--swap-latency",
                 "0", "--trace", str(trace)]) == 0
    header = json.loads(trace.read_text().splitlines()[0])
    config, inputs = header["config"], header["inputs"]
    assert config["swap_file"] == str(swap) and config["swap_latency"] == 0
    (recorded,) = [entry for entry in inputs if entry["field"] == "swap_file"]
    assert recorded["path"] == str(swap)
    assert recorded["sha256"] == hashlib.sha256(b"\x5a" * (1 << 20)).hexdigest()
    assert swap.read_bytes() == b"\x5a" * (1 << 20)         # kept as it was


@pytest.mark.parametrize("output", ["--trace", "--screenshot"])
def test_no_output_may_overwrite_the_swap_file(kernel, tmp_path, capsys, output):
    swap = tmp_path / "swap.img"
    swap.write_bytes(bytes(1 << 20))
    link = tmp_path / "link"
    os.symlink(swap, link)
    assert main(["run", str(kernel), "--swap-file", str(swap), output, str(link)]) == 2
    assert "is the swap file" in one_line_error(capsys.readouterr().err)
    assert swap.read_bytes() == bytes(1 << 20)


@pytest.mark.parametrize("args, fragment", [
    (["--swap", "1000"], "too small for a swap device; give at least 64K"),
    (["--swap", "101K"], "not a whole number of 4 KiB swap slots (try 106,496)"),
    (["--swap", "2T"], "above 1 TiB"),
    (["--swap", "lots"], "bad size 'lots'"),
    (["--swap", "1M", "--no-platform"], "drop --no-platform"),
    (["--swap", "1M", "--swap-file", "x"], "not both"),
    (["--swap-file", "/nonexistent/swap"], "truncate -s 128M"),
    (["--swap-file", "/dev/zero"], "character device"),
    (["--swap", "1M", "--swap-latency", "-1"], "argument --swap-latency"),
    (["--swap", "1M", "--swap-latency", str(10**13)], "--swap-latency"),
])
def test_bad_swap_options_are_one_line_with_the_fix(kernel, capsys, args, fragment):
    assert main(["run", str(kernel), *args]) == 2
    assert fragment in one_line_error(capsys.readouterr().err)


def test_the_kernel_itself_cannot_be_the_swap_file(kernel, capsys):
    before = kernel.read_bytes()
    assert main(["run", str(kernel), "--swap-file", str(kernel)]) == 2
    assert "is the kernel" in one_line_error(capsys.readouterr().err)
    assert kernel.read_bytes() == before


def test_a_swap_file_too_small_or_ragged_is_refused(kernel, tmp_path, capsys):
    small = tmp_path / "small"
    small.write_bytes(bytes(4096))
    assert main(["run", str(kernel), "--swap-file", str(small)]) == 2
    assert "too small" in one_line_error(capsys.readouterr().err)
    ragged = tmp_path / "ragged"
    ragged.write_bytes(bytes((1 << 20) + 512))
    assert main(["run", str(kernel), "--swap-file", str(ragged)]) == 2
    assert "4 KiB swap slots" in one_line_error(capsys.readouterr().err)
