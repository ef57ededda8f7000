"""`emu exec` and the first slice of processes: a static program's output reaches the
host byte for byte, stdout and stderr apart, and emu exits with the program's status."""
from __future__ import annotations

import os
import shutil
import tarfile

import pytest

from differential import emulated, native, program
from fuzzing import run_emu

from emu.inputs import file_sha256
from emu.monitor.trace import read_header


def test_hello_writes_both_streams_and_exits_with_its_status():
    hello = program("hello")
    got = emulated(hello)
    assert (got.stdout, got.stderr, got.status) == (b"hello, world\n", b"to stderr\n", 7)
    assert got.kernel_lines == []
    want = native(hello)
    assert (want.stdout, want.stderr, want.status) == (got.stdout, got.stderr, got.status)


def test_arguments_and_environment_reach_the_program_exactly():
    args = ("plain", "two words", "", "tab\there", "back\\slash", "caf\u00e9", "--", "-x")
    env = {"HOME": "/", "X": "a b=c"}
    got = emulated(program("args"), args, env=env, argv0="args")
    want = native(program("args"), args, env=env)
    assert got.out == want.out.replace(str(program("args")), "args")
    assert got.status == want.status == len(args) + 1


def test_the_command_line_exits_as_the_program_did():
    ending = run_emu(["exec", str(program("hello"))], timeout=60)
    assert ending.status == 7
    assert ending.stdout == b"hello, world\n"
    assert ending.stderr == b"to stderr\n"


def test_a_missing_program_is_127_and_a_file_that_is_no_program_126(tmp_path):
    missing = run_emu(["exec", str(tmp_path / "nope")], timeout=60)
    assert missing.status == 127 and "No such file" in missing.err
    text = tmp_path / "text"
    text.write_text("not an ELF\n")
    cannot = run_emu(["exec", str(text)], timeout=60)
    assert cannot.status == 126 and "emu: kernel: init: cannot run" in cannot.err


def test_bad_options_are_125_with_one_line():
    ending = run_emu(["exec", "--memory", "lots", str(program("hello"))], timeout=60)
    assert ending.status == 125
    assert len(ending.err.splitlines()) == 1 and ending.err.startswith("emu: error: ")


# ---- emu run --initrd --------------------------------------------------------------------

def _hello_tree(root):
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "hello").write_bytes(program("hello").read_bytes())
    (root / "bin" / "hello").chmod(0o755)
    return root


def test_run_packs_a_directory_as_the_initrd_and_init_runs_from_it(tmp_path):
    tree = _hello_tree(tmp_path / "root")
    ending = run_emu(["run", "--quiet", "--initrd", str(tree), "--cmdline", "init=/bin/hello"],
                     timeout=60)
    assert ending.status == 0, ending.err
    assert ending.stdout == b"hello, world\n"           # the program's fd 1, byte for byte
    assert ending.err.startswith("to stderr\n")          # its fd 2, before the summary


def test_a_traced_run_keeps_its_packed_initrd_and_replays_from_a_clean_directory(tmp_path):
    """The directory is packed beside the trace (not in a temporary directory gone after
    the run), the header names it by hash, and a replay elsewhere, with the tree and the
    recording directory gone, finds it beside the trace."""
    tree = _hello_tree(tmp_path / "root")
    recorded = tmp_path / "recorded"
    recorded.mkdir()
    trace = recorded / "hello.jsonl"
    ending = run_emu(["run", "--quiet", "--initrd", str(tree), "--cmdline", "init=/bin/hello",
                      "--trace", str(trace)], timeout=60)
    assert ending.status == 0, ending.err
    kept = recorded / "hello.initrd.tar"
    assert kept.is_file()
    (entry,) = [e for e in read_header(trace)["inputs"] if e["field"] == "modules"]
    assert (entry["path"], entry["sha256"]) == (str(kept), file_sha256(kept))
    clean = tmp_path / "clean"
    clean.mkdir()
    for path in (trace, kept):
        path.rename(clean / path.name)
    shutil.rmtree(tree)
    recorded.rmdir()
    replay = run_emu(["replay", "hello.jsonl"], cwd=clean, timeout=120)
    assert replay.status == 0, replay.err
    assert "hello.initrd.tar" not in replay.err           # found without a word
    # Without the archive the replay names what it misses, in one line.
    (clean / kept.name).unlink()
    missing = run_emu(["replay", "hello.jsonl"], cwd=clean, timeout=60)
    assert missing.status == 2 and "hello.initrd.tar" in missing.err, missing.err


def test_a_trace_inside_the_initrd_directory_is_refused_in_one_line(tmp_path):
    tree = _hello_tree(tmp_path / "root")
    (tree / "t.initrd.tar").write_bytes(b"")
    ending = run_emu(["run", "--initrd", str(tree), "--trace", str(tree / "t.jsonl")],
                     timeout=60)
    assert ending.status == 2 and len(ending.err.splitlines()) == 1, ending.err
    assert "where it would be packed" in ending.err


def test_run_takes_a_ustar_archive_as_it_is(tmp_path):
    tree = _hello_tree(tmp_path / "root")
    archive = tmp_path / "root.tar"
    with tarfile.open(archive, "w", format=tarfile.GNU_FORMAT) as tar:   # `tar cf`'s format
        tar.add(tree / "bin", "bin")
    ending = run_emu(["run", "--initrd", str(archive), "--cmdline", "init=/bin/hello"],
                     timeout=60)
    assert ending.status == 0, ending.err
    out = ending.stdout.decode()
    assert "initrd: indexed" in out and "hello, world\n" in out
    assert "init: exited with wait status 0x700" in out


def test_run_refuses_an_initrd_the_kernel_would_misread_in_one_line(tmp_path):
    tree = _hello_tree(tmp_path / "root")
    long_name = tmp_path / "long.tar"
    with tarfile.open(long_name, "w", format=tarfile.GNU_FORMAT) as tar:
        tar.add(tree / "bin" / "hello", "bin/" + "x" * 120)       # a GNU long-name header
    compressed = tmp_path / "root.tar.gz"
    with tarfile.open(compressed, "w:gz", format=tarfile.USTAR_FORMAT) as tar:
        tar.add(tree / "bin", "bin")
    truncated = tmp_path / "short.tar"
    with tarfile.open(truncated, "w", format=tarfile.USTAR_FORMAT) as tar:
        tar.add(tree / "bin" / "hello", "bin/hello")
    truncated.write_bytes(truncated.read_bytes()[:2048])
    os.mkfifo(tree / "fifo")
    cases = {long_name: "type 'L'", compressed: "no USTAR header at offset 0",
             truncated: "runs past the end", tree: "FIFO", tmp_path / "nope": "No such file",
             tmp_path / "empty": "holds no files"}
    (tmp_path / "empty").mkdir()
    for path, why in cases.items():
        ending = run_emu(["run", "--initrd", str(path), "--cmdline", "init=/bin/hello"],
                         timeout=60)
        assert ending.status == 2 and len(ending.err.splitlines()) == 1, (path, ending.err)
        assert why in ending.err, (path, ending.err)
