"""Swapping end to end: a program larger than the memory its processes may use runs under
emu exec with a swap disk and prints what it prints natively, the swap checker finds
nothing on the correct kernel, and each planted swap bug (guest/test/planted.h, 401-404)
is caught by the rule that claims it."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from differential import BUDGET, native, program
from emu.build import build_guest
from emu.events import Observer
from emu.inject import attach, parse_spec
from emu.machine import MachineConfig
from emu.monitor.swapcheck import read_descriptor
from emu.workloads.process import HostConsole, KernelLines, ProgramSpec, run_program

SWAP = 32 << 20
HOG_ARGS = ["512", "500"]   # KiB, random touches
MEMORY = 64 << 20
USER_MEM = "256K"           # 64 frames for user pages: the hog below needs 512 KiB and more


class SwapEvents(Observer):
    def __init__(self) -> None:
        self.outs: list = []
        self.ins: list = []
        self.injections: list = []

    def on_injection(self, event) -> None:
        self.injections.append(event)

    def on_swap_out(self, event) -> None:
        self.outs.append(event)

    def on_swap_in(self, event) -> None:
        self.ins.append(event)


def run_swapped(path: Path, args=(), policy: str = "clock", plant: int = 0,
                user_mem: str | None = USER_MEM, latency: int = 2000, inject=(),
                memory: int = MEMORY, swap: int = SWAP, files=()):
    out, err, lines = bytearray(), bytearray(), []
    events = SwapEvents()
    kernel = build_guest(defines={"PLANT_BUG": str(plant)}) if plant else build_guest()
    limit = f"user_mem={user_mem} " if user_mem else ""
    config = MachineConfig(kernel=kernel, max_instructions=BUDGET, memory=memory,
                           cmdline=f"{limit}swap_policy={policy}", swap=swap,
                           swap_latency=latency)
    spec = ProgramSpec(Path(path), tuple(args), tuple(files), argv0=str(path))
    result = run_program(spec, config, HostConsole(out.extend, err.extend, None),
                         [KernelLines(lines.append), events],
                         attach=lambda machine: attach(machine, map(parse_spec, inject)))
    stats = read_descriptor(result.machine)
    return bytes(out), result, stats[1] if stats else None, events, lines


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["clock", "fifo", "random"])
def test_a_hog_larger_than_user_memory_prints_what_it_prints_natively(policy):
    hog = program("swaphog")
    want = native(hog, HOG_ARGS)
    out, result, stats, events, lines = run_swapped(hog, HOG_ARGS, policy=policy)
    assert (out, result.status) == (want.stdout, want.status), lines
    assert stats is not None and stats.policy == policy
    assert stats.pages_out > 64 and stats.pages_in > 0
    assert len(events.outs) == stats.pages_out + stats.clean_drops
    assert len(events.ins) == stats.pages_in + stats.cache_hits
    assert result.swap.findings == []


def test_without_a_limit_nothing_swaps_and_the_checker_stays_quiet():
    hog = program("swaphog")
    out, result, stats, events, _ = run_swapped(hog, ["256", "100"], user_mem="64M")
    assert out == native(hog, ["256", "100"]).stdout
    assert stats.pages_out == 0 and events.outs == [] and result.swap.findings == []


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["clock", "fifo", "random"])
def test_a_working_set_four_times_the_ram_runs_as_natively_under_each_policy(policy):
    """Issue 12's Done means: 64 MiB of data on a 16 MiB machine with a 128 MiB disk, no
    user_mem cap, written and read sequentially, touched at random and looped over."""
    hog, args = program("swaphog"), ["65536", "3000"]
    out, result, stats, events, lines = run_swapped(hog, args, policy=policy, user_mem=None,
                                                    memory=16 << 20, swap=128 << 20)
    assert (out, result.status) == (native(hog, args).stdout, 0), lines[-5:]
    assert stats.pages_out > 16384 and stats.pages_in > 16384 and stats.oom_kills == 0
    assert result.swap.findings == []


@pytest.mark.slow
@pytest.mark.parametrize("plant,rule", [(401, "DIRTY_DROPPED"), (402, "SWAP_CONTENT"),
                                        (403, "SLOT_REUSED"), (404, "SWAP_ENTRY_INVALID")])
def test_each_planted_swap_bug_is_caught_by_its_rule(plant, rule):
    out, result, stats, events, lines = run_swapped(program("swaphog"), HOG_ARGS, plant=plant)
    rules = {finding.rule for finding in result.swap.findings}
    assert rule in rules, (rules, lines[-5:])


# --- the disk injector (issue 14) against the swapping code ------------------------------

def test_a_failed_swap_write_keeps_the_page_in_memory_and_marks_the_slot_bad():
    hog = program("swaphog")
    out, result, stats, events, lines = run_swapped(
        hog, HOG_ARGS, inject=["disk:fault=ioerr,op=write,nth=20"])
    assert (out, result.status) == (native(hog, HOG_ARGS).stdout, 0), lines[-5:]
    assert [e.kind for e in events.injections] == ["disk"]
    failed = [line for line in lines if "swap: writing slots " in line]
    assert len(failed) == 1 and " pages stay in memory" in failed[0], lines[-5:]
    first, last = map(int, failed[0].split("slots ")[1].split()[0].split("-"))
    pages = last - first + 1
    assert f"request 20 (write of {pages * 4096} bytes): I/O error" in \
        events.injections[0].detail and f"their {pages} pages" in failed[0]
    assert stats.io_errors == 1 and stats.pages_out > 64
    assert first * 8 == int(events.injections[0].target.split()[1])  # the cluster that failed
    assert all(not first <= e.slot <= last for e in events.outs)  # is never handed out again
    assert result.swap.findings == []


def test_a_failed_swap_read_ends_the_process_with_sigbus_and_a_report():
    out, result, stats, events, lines = run_swapped(
        program("swaphog"), HOG_ARGS, inject=["disk:fault=ioerr,op=read,nth=3"])
    assert result.wait_status is not None and result.wait_status & 0x7F == 7   # SIGBUS
    assert any("bus error at 0x" in line and "could not be read back from swap" in line
               for line in lines), lines[-5:]
    assert stats.io_errors == 1 and stats.pages_in == 2
    assert len(events.injections) == 1 and result.swap.findings == []


def test_a_torn_swap_write_is_caught_when_the_page_comes_back():
    """The disk says OK but only the first sector of a cluster's write landed: the guest
    cannot know, and the swap checker must see a page of it come back different."""
    out, result, stats, events, lines = run_swapped(
        program("swaphog"), HOG_ARGS, inject=["disk:fault=torn,sectors=8..65535,nth=10,land=1"])
    assert len(events.injections) == 1, events.injections
    found = re.search(r"write of (\d+) bytes\): torn: 1 of (\d+) sectors land",
                      events.injections[0].detail)
    assert found and int(found[1]) == int(found[2]) * 512, events.injections[0].detail
    first = int(events.injections[0].target.split()[1]) // 8
    torn = range(first, first + int(found[2]) // 8)
    content = [f for f in result.swap.findings if f.rule == "SWAP_CONTENT"]
    assert content and int(content[0].detail.split("from slot ")[1].split()[0]) in torn, \
        [f.rule for f in result.swap.findings]


def test_late_swap_completions_change_nothing_the_program_sees():
    hog = program("swaphog")
    out, result, stats, events, lines = run_swapped(
        hog, HOG_ARGS, inject=["disk:fault=delay,probability=25,seed=3,ticks=300000"])
    assert (out, result.status) == (native(hog, HOG_ARGS).stdout, 0), lines[-5:]
    assert len(events.injections) > 10 and stats.io_errors == 0
    assert result.swap.findings == []


def test_emu_run_prints_the_swap_summary(tmp_path, capsys):
    from emu.cli import main
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "swaphog").write_bytes(program("swaphog").read_bytes())
    status = main(["run", "--quiet", "--initrd", str(tmp_path), "--swap", "32M",
                   "--swap-latency", "2000", "--cmdline",
                   f"user_mem={USER_MEM} init=/bin/swaphog -- {' '.join(HOG_ARGS)}"])
    err = capsys.readouterr().err
    assert status == 0, err[-800:]
    line = next(line for line in err.splitlines() if line.startswith("--- swap (clock): "))
    pages_out = int(line.split(": ")[1].split()[0])
    assert pages_out > 64 and " bytes written, " in line and " reclaim scans, 0 OOM kills" \
        in line and line.endswith("; 0 swap-check findings")


def test_emu_pt_lists_the_swapped_out_pages_with_their_slots(tmp_path, capsys):
    """Stopped halfway through the hog, its address space has pages in swap: each listed
    run's slots agree with the entries' own encoding (checked against swapped_pages)."""
    import tarfile
    from emu.cli import main
    archive = tmp_path / "initrd.tar"
    with tarfile.open(archive, "w", format=tarfile.USTAR_FORMAT) as tar:
        tar.add(program("swaphog"), arcname="bin/swaphog")
    assert main(["pt", "--module", str(archive), "--swap", "32M", "--swap-latency", "2000",
                 "--max-instructions", "5000000", "--cmdline",
                 f"user_mem={USER_MEM} init=/bin/swaphog -- {' '.join(HOG_ARGS)}"]) == 0
    out = capsys.readouterr().out.splitlines()
    at = next(i for i, line in enumerate(out) if line.startswith("swapped out: "))
    pages = int(out[at].split()[2])
    runs = out[at + 1:]
    assert pages > 16 and runs
    listed = 0
    for line in runs:
        span, _, slots = line.partition(" -> ")
        start, end = (int(part, 16) for part in span.split()[0].split("-"))
        first, _, last = slots.split()[1].partition("..")
        assert (end - start) // 4096 == int(last or first) - int(first) + 1
        listed += (end - start) // 4096
    assert listed == pages


# --- random touch, write and munmap sequences against a model -----------------------------

ARENA = 64                      # tests/programs/memscript.c's arena, in pages
SMALL_USER_MEM = "64K"          # 16 frames for user pages: the arena's pages must swap


def swap_operations():
    pages = st.integers(0, ARENA - 1)
    return st.one_of(
        st.builds(lambda o, n: f"m{o},{min(n, ARENA - o)},3", pages, st.integers(1, 24)),
        st.builds(lambda o, n: f"u{o},{min(n, ARENA - o)}", pages, st.integers(1, 8)),
        st.builds(lambda o, b: f"w{o},{b}", pages, st.integers(1, 120)),
        st.builds(lambda o: f"t{o}", pages))


def model_output(ops) -> list[str]:
    """What memscript prints for m (read-write only), u, w and t, from the arena's pages
    alone (None: not accessible; else the first byte); its `c` line (residency) is left out
    since which pages are in memory is the kernel's business."""
    arena: list[int | None] = [None] * ARENA
    lines = []
    for op in ops:
        first, *rest = (int(v) for v in op[1:].split(","))
        if op[0] in "mu":
            for page in range(first, first + rest[0]):
                arena[page] = 0 if op[0] == "m" else None
            lines.append(f"{op} ok")
        elif op[0] == "w":
            if arena[first] is None:
                lines += [f"{op} fail", "  errno 14"]
            else:
                arena[first] = rest[0]
                lines.append(f"{op} ok")
        else:
            lines.append(f"{op} unreadable errno 14" if arena[first] is None
                         else f"{op} = {arena[first]}")
    lines.append("a " + "".join("." if v is None else "w" for v in arena))
    lines.append("".join(f"{i}:{v} " for i, v in enumerate(arena) if v is not None))
    return lines


@settings(max_examples=6, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(swap_operations(), min_size=1, max_size=30))
def test_random_touch_write_munmap_sequences_with_swap_match_a_model(ops):
    # Every page of the arena is mapped and written first, so that the 16 user frames
    # cannot hold them and the random sequence runs against pages in swap.
    prefix = [f"m0,{ARENA},3", *(f"w{page},{page + 1}" for page in range(ARENA))]
    ops = [*prefix, *ops]
    out, result, stats, events, lines = run_swapped(program("memscript"), ["/none", *ops],
                                                    user_mem=SMALL_USER_MEM, latency=500)
    assert result.status == 0, lines[-5:]
    got = [line for line in out.decode().splitlines() if not line.startswith("c ")]
    assert got == model_output(ops)
    assert stats.pages_out > ARENA // 2 and stats.pages_in > 0
    assert result.swap.findings == []


def test_a_traced_swap_run_with_disk_injections_replays_exactly(tmp_path, capsys):
    """The trace holds the swap checker's events and the injections; a replay attaches the
    same checker and injector, so every event recurs at its instruction."""
    from emu.cli import main
    trace = tmp_path / "swap.jsonl"
    assert main(["exec", "--swap", "32M", "--swap-latency", "2000", "--cmdline",
                 f"user_mem={USER_MEM}", "--inject",
                 "disk:fault=delay,probability=30,seed=2,ticks=5000", "--trace", str(trace),
                 str(program("swaphog")), "256", "100"]) == 0
    text = trace.read_text()
    assert '"type":"SwapOut"' in text and '"kind":"disk"' in text
    capsys.readouterr()
    assert main(["replay", str(trace)]) == 0
    assert capsys.readouterr().out.startswith("replay matched: ")


def test_with_ram_and_swap_exhausted_the_hog_is_killed_with_a_report():
    """64 user frames and a 64 KiB disk (15 slots) cannot hold 1 MiB: the hog, alone and so
    the largest, gets SIGKILL (137), the kernel says why, and counts the kill."""
    out, result, stats, events, lines = run_swapped(program("swaphog"), ["1024", "10"],
                                                    swap=64 << 10)
    assert (result.status, result.wait_status) == (137, 9)
    killed = [line for line in lines if "out of memory at 0x" in line]
    assert len(killed) == 1 and "(RSS " in killed[0] and \
        "user frames 64 of 64, swap 60 of 60 KiB in use): killed " in killed[0] and \
        killed[0].endswith(", the largest of 1 processes"), lines[-5:]
    assert stats.oom_kills == 1 and stats.pages_out == 15 and result.swap.findings == []


OOM_LINE = re.compile(r"(\S+)\[(\d+)\]: out of memory at 0x[0-9a-f]+ rip 0x[0-9a-f]+ "
                      r"\(RSS (\d+) KiB; user frames (\d+) of (\d+), swap (\d+) of (\d+) KiB in "
                      r"use\): killed (\S+)\[(\d+)\], RSS (\d+) KiB, the largest of (\d+) "
                      r"processes$")


def test_the_oom_killer_kills_the_largest_process_and_the_next_program_runs():
    """The hog (200 KiB) sleeps while its parent writes 120 KiB more than RAM and swap have
    left: the parent's own fault finds no frame, and the victim is the hog, whose RSS is the
    larger. The parent keeps running with its pages intact, sees the hog's SIGKILL, and
    runs the next program, which prints its output."""
    hello = program("hello")
    args = ["200", "120", "/bin/hello"]
    out, result, stats, events, lines = run_swapped(
        program("oomkill"), args, swap=64 << 10, files=[(hello, "/bin/hello")])
    assert result.status == 0, lines[-5:]
    assert out.decode().splitlines() == ["parent: 30 pages, 0 wrong",
                                         "hog: killed by signal 9", "hello, world",
                                         "/bin/hello: exited 7"]
    found = [m for m in map(OOM_LINE.search, lines) if m]
    assert len(found) == 1, lines[-5:]
    faulting_pid, faulting_rss, frames, limit, swap_used, swap_size = \
        (int(found[0][i]) for i in (2, 3, 4, 5, 6, 7))
    victim_pid, victim_rss, candidates = (int(found[0][i]) for i in (9, 10, 11))
    assert (faulting_pid, victim_pid, candidates) == (1, 2, 2)
    assert victim_rss > faulting_rss and (frames, swap_used) == (limit, swap_size)
    assert stats.oom_kills == 1 and result.swap.findings == []
    # Natively nothing runs out: the hog wakes at the end of its pipe and exits 0.
    assert native(program("oomkill"), ["200", "120", str(hello)]).stdout.decode().splitlines()[:2] \
        == ["parent: 30 pages, 0 wrong", "hog: exited 0"]


@pytest.mark.parametrize("command", ["exec", "run"])
def test_strict_ends_the_run_at_the_first_swap_finding(command, tmp_path, capsys):
    """A torn write comes back different: without --strict the run goes on and prints the
    finding; with it the run ends there, as for any checker (exec: 125, run: 73)."""
    from emu.cli import main
    torn = "disk:fault=torn,sectors=8..65535,nth=10,land=1"
    machine = ["--swap", "32M", "--swap-latency", "2000", "--inject", torn]
    if command == "exec":
        argv = ["exec", *machine, "--cmdline", f"user_mem={USER_MEM}",
                str(program("swaphog")), *HOG_ARGS]
    else:
        (tmp_path / "bin").mkdir()
        (tmp_path / "bin" / "swaphog").write_bytes(program("swaphog").read_bytes())
        argv = ["run", "--quiet", "--initrd", str(tmp_path), *machine, "--cmdline",
                f"user_mem={USER_MEM} init=/bin/swaphog -- {' '.join(HOG_ARGS)}"]
    assert main(argv) in (0, 1)                       # the program's own status
    assert "emu: swap check: SWAP_CONTENT" in capsys.readouterr().err
    assert main([*argv[:1], "--strict", *argv[1:]]) == (125 if command == "exec" else 73)
    err = capsys.readouterr().err
    assert "swap check SWAP_CONTENT at 0x" in err and "emu: swap check:" not in err
