"""`emu exec` and the first slice of processes: a static program's output reaches the
host byte for byte, stdout and stderr apart, and emu exits with the program's status."""
from __future__ import annotations

import os

import pytest

from differential import emulated, native, program
from fuzzing import run_emu


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
