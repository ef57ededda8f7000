"""Each way emu used to fail a hostile user (issue 9's list), as a test: bad input ends in
one line and status 2, closed or full outputs end cleanly, caches heal, no input is
overwritten, messages name the real problem. Commands run in a fork (tests/fuzzing.py).
The signal cases are in test_signals.py, the count with --check-every in test_machine.py,
damaged kernel caches in test_build.py."""
from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from emu.engine import icount
from fuzzing import run_emu

CORPUS = Path(__file__).resolve().parent / "fuzz_corpus"
TRACES = Path(__file__).resolve().parent.parent / "traces" / "malloclab"


def refused(ending, *words: str) -> str:
    """The one stderr line of a status-2 ending, which must hold every word."""
    assert ending.problems() == [], (ending.problems(), ending.err)
    assert ending.status == 2, (ending.status, ending.err)
    line = ending.err.strip()
    for word in words:
        assert word in line, (word, line)
    return line


@pytest.mark.parametrize("name, words", [
    ("region-ints.toml", ["[[region]] #1", "table", "not 1"]),
    ("region-bool.toml", ["[[region]] #1", "not True"]),
    ("region-table-then-int.toml", ["[[region]] #2", "not 5"]),
    ("region-strings.toml", ["[[region]] #1", "not 'usable'"]),
    ("too-small.toml", ["RAM too small", "add USABLE regions"]),
])
def test_memory_map_files_are_refused_naming_the_entry(kernel, name, words):
    line = refused(run_emu(["run", str(kernel), "--memmap", str(CORPUS / name)]), *words)
    assert "unknown key 'u'" not in line and "--memory" not in line


def test_a_full_trace_device_is_one_line(kernel):
    refused(run_emu(["run", "--quiet", str(kernel), "--trace", "/dev/full"]),
            "cannot write trace /dev/full", "No space left")


def test_arguments_that_are_not_utf8_reach_the_guest_as_bytes(kernel, tmp_path):
    module = Path(os.fsdecode(os.fsencode(tmp_path) + b"/mod-\xff.bin"))
    module.write_bytes(b"module data")
    trace = Path(os.fsdecode(os.fsencode(tmp_path) + b"/trace-\xfe.jsonl"))
    ending = run_emu(["run", str(kernel), "--cmdline", os.fsdecode(b"x=\xff\xfe"),
                      "--module", str(module), "--trace", str(trace)])
    assert ending.problems() == [] and ending.status == 0, ending.err
    assert b'cmdline: "x=\xef\xbf\xbd\xef\xbf\xbd"' in ending.stdout   # printed by the guest
    assert trace.exists() and b"GuestExit" in trace.read_bytes()


def test_a_missing_module_with_a_non_utf8_name_is_one_line(kernel, tmp_path):
    missing = os.fsdecode(os.fsencode(tmp_path) + b"/\xff-missing.bin")
    refused(run_emu(["run", str(kernel), "--module", missing]), "module", "not found",
            "\\udcff")


def test_a_closed_pipe_ends_the_run_quietly(kernel):
    ending = run_emu(["run", str(kernel)], close_stdout_after=10)   # `emu run | head -c 10`
    assert ending.problems() == []
    assert ending.status == 141 and ending.err == "", (ending.status, ending.err)


@pytest.mark.parametrize("argv", [
    ["run"], ["heap-replay", str(TRACES / "short1-bal.rep"), "--heap", "list"], ["build"],
])
def test_a_full_standard_output_is_one_line(kernel, argv):
    if argv[0] == "run":
        argv = argv + [str(kernel)]
    refused(run_emu(argv, stdout_path="/dev/full"), "standard output", "No space left")


@pytest.mark.parametrize("cache", ["dev-null", "file", "truncated-library"])
def test_a_damaged_or_unusable_counter_cache_still_runs(kernel, tmp_path, cache):
    # run_emu forks this process: a counter library an earlier test loaded here would be
    # inherited, and the child would never look at its own cache.
    icount.load_library.cache_clear()
    env = dict(os.environ)
    env.pop("EMU_CACHE_DIR", None)
    if cache == "dev-null":
        env["XDG_CACHE_HOME"] = "/dev/null"
    elif cache == "file":
        (tmp_path / "f").write_text("x")
        env["XDG_CACHE_HOME"] = str(tmp_path / "f")
    else:
        env["EMU_CACHE_DIR"] = str(tmp_path / "cache")
        first = run_emu(["run", "--quiet", str(kernel)], env=env, timeout=120)
        assert first.status == 0, first.err
        (library,) = (tmp_path / "cache" / "icount").glob("icount-*.so")
        library.write_bytes(library.read_bytes()[:4096])      # loading this would crash
    ending = run_emu(["run", "--quiet", str(kernel)], env=env, timeout=120)
    assert ending.problems() == [] and ending.status == 0, ending.err


@pytest.mark.parametrize("argv, words", [
    (["run", "--memmap", "/dev/zero"], ["memory map file /dev/zero", "character device"]),
    (["run", "--module", "/dev/zero"], ["module /dev/zero", "character device"]),
    (["heap-replay", "/dev/zero"], ["trace /dev/zero", "character device"]),
])
def test_endless_inputs_are_refused_before_they_are_read(kernel, argv, words):
    if argv[0] == "run":
        argv = argv + [str(kernel)]
    ending = run_emu(argv)
    refused(ending, *words)
    assert ending.seconds < 5 and ending.growth < 100 << 20


def test_a_trace_never_overwrites_the_kernel(kernel, tmp_path):
    copy = tmp_path / "k.elf"
    copy.write_bytes(kernel.read_bytes())
    refused(run_emu(["run", str(copy), "--trace", str(copy)]), "is the kernel")
    assert copy.read_bytes() == kernel.read_bytes()


@pytest.mark.parametrize("what", ["directory", "dev-null"])
def test_a_kernel_that_is_not_a_file_is_named(tmp_path, what):
    path = str(tmp_path) if what == "directory" else "/dev/null"
    kind = "a directory" if what == "directory" else "a character device"
    line = refused(run_emu(["run", path]), kind)
    assert "not found" not in line


def _mutated(kernel: Path, tmp_path: Path, name: str, edit) -> Path:
    data = bytearray(kernel.read_bytes())
    edit(data)
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _first_load(data: bytearray) -> int:
    phoff, = struct.unpack_from("<Q", data, 32)
    return phoff


def test_an_elf_of_class_0_is_not_called_32_bit(kernel, tmp_path):
    path = _mutated(kernel, tmp_path, "c0.elf", lambda d: d.__setitem__(4, 0))
    line = refused(run_emu(["run", str(path)]), "invalid ELF class")
    assert "32-bit" not in line


def test_a_segment_that_wraps_is_named(kernel, tmp_path):
    def edit(data):
        at = _first_load(data)
        vaddr, = struct.unpack_from("<Q", data, at + 16)
        struct.pack_into("<Q", data, at + 40, (1 << 64) - vaddr + 0x1000)   # p_memsz
    line = refused(run_emu(["run", str(_mutated(kernel, tmp_path, "w.elf", edit))]),
                   "wraps past the top of the address space")
    assert "more memory" not in line


def test_an_unaligned_segment_is_refused_not_run(kernel, tmp_path):
    def edit(data):
        at = _first_load(data)
        vaddr, = struct.unpack_from("<Q", data, at + 16)
        struct.pack_into("<Q", data, at + 16, vaddr + 8)
    refused(run_emu(["run", str(_mutated(kernel, tmp_path, "u.elf", edit))]),
            "not aligned like its file offset")


def test_an_argument_error_is_one_line_not_the_usage_block():
    line = refused(run_emu(["run", "--max-instructions", "lots"]), "--max-instructions")
    assert "usage:" not in line


def test_a_screenshot_to_a_device_writes_into_it_and_never_replaces_it(kernel):
    import stat
    ending = run_emu(["run", "--quiet", str(kernel), "--screenshot", "/dev/null"])
    assert ending.status == 0, ending.err
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    refused(run_emu(["run", "--quiet", str(kernel), "--screenshot", "/dev/full"]),
            "cannot write screenshot /dev/full")
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)
