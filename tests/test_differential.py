"""Differential tests: the programs of tests/programs/ run natively on the host and as a
process of the project's kernel under `emu exec`, with the same standard output and exit
status (and, for faults, the kernel's one report line). The native side is pinned to the
guest's conditions (tests/differential.py): RLIMIT_STACK 8 MiB, no core files, no
transparent huge pages, an empty environment.

A Hypothesis test drives tests/programs/memscript.c with random sequences of memory system
calls on a 64-page arena and compares every line it prints (return codes, errno values,
residency, access, contents)."""
from __future__ import annotations

import difflib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from differential import PROGRAMS, emulated, native, program

DATA = PROGRAMS / "remap.c"          # some bytes both sides can read as a file


def same(name: str, args=(), files=(), native_args=None, argv0_guest: bool = False,
         **options):
    """Run `name` both ways; assert the same stdout and status; return the emulated one."""
    path = program(name)
    want = native(path, native_args if native_args is not None else args)
    argv0 = f"/bin/{path.name}" if argv0_guest else None
    got = emulated(path, args, files=files, argv0=argv0, **options)
    if argv0_guest:
        want.stdout = want.stdout.replace(str(path).encode(), argv0.encode())
    assert got.status == want.status, (got.status, want.status, got.kernel_lines)
    assert got.out == want.out, "\n".join(difflib.unified_diff(
        want.out.splitlines(), got.out.splitlines(), "native", "emu", lineterm=""))
    return got


CASES = {
    "mmap_ops": dict(),
    "remap": dict(args=("/data/file",), files=((DATA, "/data/file"),),
                  native_args=(str(DATA),)),
    "files": dict(args=("/etc/data",), files=((DATA, "/etc/data"),),
                  native_args=(str(DATA),)),
    "brk": dict(),
    "stack": dict(),
    "fork_cow": dict(),
    "exec": dict(argv0_guest=True),
    "pipes": dict(),
    "misc": dict(),
    "fork_many": dict(args=("6", "2", "1")),
    "args": dict(args=("a", "b c"), argv0_guest=True),
    "hello": dict(),
    "spin": dict(),               # the parent runs again only if the child is preempted
    "madvise": dict(args=("/data/file",), files=((DATA, "/data/file"),),
                    native_args=(str(DATA),)),
    "pipeline": dict(args=("4",), argv0_guest=True),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_same_output_and_status(name):
    same(name, **CASES[name])


# The programs with more than one process, where the tick decides who runs when.
MULTI_PROCESS = ("exec", "fork_cow", "fork_many", "pipeline", "pipes", "spin")


@pytest.mark.slow
@pytest.mark.parametrize("name", MULTI_PROCESS)
def test_the_same_output_when_a_tick_comes_every_thousand_instructions(name):
    """preempt_hz=100000, the highest rate: processes are preempted at a thousand times
    as many points as by default, in the middle of whatever user code they run."""
    same(name, cmdline="preempt_hz=100000", **CASES[name])


@pytest.mark.parametrize("case, signal, report", [
    ("null", 11, "segfault at 0x10 rip"), ("write-rodata", 11, "write, region"),
    ("write-text", 11, "r-x"), ("exec-data", 11, "execute, region"),
    ("prot-none", 11, "read, region"), ("unmapped", 11, "write, no mapping"),
    ("kernel-half", 11, "no mapping"), ("ud2", 4, "#UD invalid opcode"),
    ("abort", 6, None), ("kill", 15, None)])
def test_fatal_signals_end_as_natively_with_one_report_line(case, signal, report):
    got = same("segv", (case,))
    assert got.status == 128 + signal
    if report is None:
        assert got.kernel_lines == []
    else:
        assert len(got.kernel_lines) == 1 and report in got.kernel_lines[0], got.kernel_lines


def test_a_signal_ignored_is_ignored():
    assert same("segv", ("ignored",)).status == 3


def test_the_stack_grows_to_its_limit_and_no_further():
    same("stack", ("7000",))
    over = same("stack", ("100", "over"))
    assert over.status == 139 and "no mapping" in over.kernel_lines[0]


def test_a_sequential_memory_hog_of_24_mib():
    same("memhog", ("24",))


def test_a_random_touch_hog_of_32_mib():
    got = same("randtouch", ("32", "12345"))
    assert "resident after touching in random order: 8192" in got.out


@pytest.mark.slow
def test_musl_malloc_under_stress():
    same("malloc_stress", ("3000",))


# ---- random sequences of memory system calls ---------------------------------------------

OFFSETS = st.integers(0, 15)
LENGTHS = st.integers(1, 6)
PROTS = st.sampled_from([0, 1, 3, 5, 7])


def operations():
    return st.one_of(
        st.builds(lambda o, n, p: f"m{o},{n},{p}", OFFSETS, LENGTHS, PROTS),
        st.builds(lambda o, n, p: f"n{o},{n},{p}", OFFSETS, LENGTHS, PROTS),
        st.builds(lambda o, n, p: f"f{o},{n},{p}", OFFSETS, LENGTHS, st.sampled_from([1, 3])),
        st.builds(lambda o, n: f"u{o},{n}", OFFSETS, LENGTHS),
        st.builds(lambda o, n, p: f"p{o},{n},{p}", OFFSETS, LENGTHS, PROTS),
        st.builds(lambda o, n, m: f"r{o},{n},{m}", OFFSETS, LENGTHS, LENGTHS),
        st.builds(lambda o, n, m, t: f"x{o},{n},{m},{t}", OFFSETS, LENGTHS, LENGTHS,
                  st.integers(20, 40)),
        st.builds(lambda o, n: f"d{o},{n}", OFFSETS, LENGTHS),
        st.builds(lambda o, b: f"w{o},{b}", st.integers(0, 45), st.integers(1, 120)),
        st.builds(lambda o: f"t{o}", st.integers(0, 45)),
        st.just("c"), st.just("a"))


@settings(max_examples=20, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(operations(), min_size=1, max_size=25))
def test_random_memory_system_calls_match_linux(ops):
    same("memscript", ("/data", *ops), files=((DATA, "/data"),),
         native_args=(str(DATA), *ops))


@pytest.mark.parametrize("ops", [
    ("f0,3,1", "c", "a", "t2"),     # file pages past the end: SIGBUS natively, EFAULT in write
    ("m0,6,3", "x1,2,1,20", "c", "a"),  # MREMAP_FIXED shrinking from a region's middle
])
def test_memory_system_call_cases_found_by_hypothesis(ops):
    same("memscript", ("/data", *ops), files=((DATA, "/data"),), native_args=(str(DATA), *ops))
