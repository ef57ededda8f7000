"""The process monitor and the process rules (emu/monitor/processes.py,
emu/monitor/checks/rules/, PROCESS_RULES): the tracepoints become events with the right
contents, deterministically; the correct kernel gives no finding over programs of
tests/programs and comes back to its PMM baseline; each planted bug 301-306
(guest/test/planted.h) is caught by its rule; the command lines show the summary."""
from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import pytest

import differential
from differential import PROGRAMS, program
from emu.build import build_guest
from emu.events import Observer, ProcessExec, ProcessExit, ProcessStart, Syscall, UserFault
from emu.machine import MachineConfig
from emu.monitor import checks, processes
from emu.monitor.checks import PROCESS_RULES, RULE_IDS
from emu.monitor.syscalls import SYSCALL_NAMES, syscall_name
from emu.workloads.process import HostConsole, KernelLines, ProgramSpec, run_program
from fuzzing import run_emu

DATA = PROGRAMS / "remap.c"


class Recorder(Observer):
    def __init__(self) -> None:
        self.events = []

    def on_event(self, event) -> None:
        if isinstance(event, (Syscall, UserFault, ProcessStart, ProcessExec, ProcessExit)):
            self.events.append(event)


@functools.lru_cache(maxsize=None)
def planted(bug: int) -> Path:
    return build_guest(defines={"PLANT_BUG": str(bug)})


def watched(name: str, args=(), kernel: Path | None = None, files=(), check: bool = True):
    """Run a test program with the process monitor (and the checker); returns (outcome,
    monitor, checker, recorder)."""
    out, err, lines = bytearray(), bytearray(), []
    attached = {}
    recorder = Recorder()

    def attach(machine) -> None:
        attached["monitor"] = processes.attach(machine)
        if check:
            attached["checker"] = checks.attach(machine)

    spec = ProgramSpec(program(name), tuple(args), tuple(files), (), 0, name)
    config = MachineConfig(kernel=kernel or build_guest(), max_instructions=differential.BUDGET)
    result = run_program(spec, config, HostConsole(out.extend, err.extend),
                         [KernelLines(lines.append), recorder], attach=attach)
    return result, attached["monitor"], attached.get("checker"), recorder, lines


def rules_found(checker) -> set[str]:
    return {violation.rule for violation in checker.violations}


# --- The system call table ---------------------------------------------------------------

def test_the_syscall_names_are_those_of_the_linux_headers_zig_ships():
    import ziglang
    header = Path(ziglang.__file__).parent / "lib/libc/include/x86-linux-any/asm/unistd_64.h"
    names = {int(n): name for name, n in
             re.findall(r"#define __NR_(\w+)\s+(\d+)", header.read_text())}
    assert names and SYSCALL_NAMES == names
    assert syscall_name(60) == "exit" and syscall_name(4000) == "syscall_4000"


def test_the_kernels_syscall_numbers_are_linuxs():
    text = (Path(__file__).parent.parent / "guest/proc/linux.h").read_text()
    numbers = [(name, n) for name, n in re.findall(r"SYS_(\w+) = (\d+),", text)
               if name != "COUNT"]             # SYS_COUNT: the size of its table
    assert len(numbers) > 50
    for name, number in numbers:
        assert SYSCALL_NAMES[int(number)] == name, (name, number)


# --- Events ------------------------------------------------------------------------------

def test_events_of_a_forking_program_are_complete_and_deterministic():
    first = watched("fork_cow", check=False)
    again = watched("fork_cow", check=False)
    result, monitor, _, recorder, _ = first
    assert result.status == 0
    assert recorder.events == again[3].events          # same run, same events, same counts
    events = recorder.events
    starts = [e for e in events if isinstance(e, ProcessStart)]
    exits = {e.pid: e for e in events if isinstance(e, ProcessExit)}
    assert [e.pid for e in starts] == [1, 2, 3, 4] and starts[1].ppid == 1
    assert set(exits) == {1, 2, 3, 4}
    assert exits[1].status == 0 and exits[2].status == 42 and exits[3].status == 139
    assert exits[3].wait_status == 11 and exits[1].peak_rss > 1 << 20
    faults = [e for e in events if isinstance(e, UserFault)]
    resolutions = {e.resolution for e in faults}
    assert {"zero-fill", "file", "copy-on-write", "sigsegv"} <= resolutions
    segv = next(e for e in faults if e.resolution == "sigsegv")
    assert segv.pid == 3 and segv.address == 0 and segv.access == "write" and segv.user
    assert segv.region is None
    cow = sum(e.resolution == "copy-on-write" for e in faults if e.pid == 2)
    assert dict(exits[2].faults)["copy-on-write"] == cow > 0
    calls = [e for e in events if isinstance(e, Syscall)]
    forks = [e for e in calls if e.name in ("fork", "vfork", "clone")]
    assert forks and forks[0].number in (56, 57, 58) and forks[0].result == 2
    writes = [e for e in calls if e.name in ("write", "writev")]
    assert writes and all(e.result >= 0 and len(e.args) == 6 for e in writes)
    assert all(e.implemented for e in calls)
    stats = monitor.processes
    assert stats[1].wait_status == 0 and stats[3].faults["sigsegv"] == 1
    assert monitor.baseline is not None and monitor.baseline[0] == monitor.baseline[1]


def test_an_unimplemented_call_is_reported_once_by_name():
    result, monitor, _, recorder, _ = watched("unimplemented", check=False)
    assert result.status == 0
    assert [(u.number, u.name, u.pid) for u in monitor.unimplemented.values()] == \
        [(98, "getrusage", 1), (1000, "syscall_1000", 1)]
    calls = [e for e in recorder.events if isinstance(e, Syscall) and not e.implemented]
    assert [(e.name, e.result) for e in calls] == [("getrusage", -38), ("syscall_1000", -38)] * 2
    assert "unimplemented system calls: getrusage (98), syscall_1000 (1000)" in \
        monitor.summary_lines()
    assert processes.unimplemented_line(monitor.unimplemented[98]).startswith(
        "emu: unimplemented system call getrusage (number 98), first by pid 1 "
        "/bin/unimplemented")


# --- The correct kernel ------------------------------------------------------------------

@pytest.mark.parametrize("name, args, files, status", [
    ("hello", (), (), 7),
    ("fork_cow", (), (), 0),
    ("exec", (), (), 0),
    ("mmap_ops", (), (), 0),
    ("remap", ("/data/file",), ((DATA, "/data/file"),), 0),
    ("pipes", (), (), 0),
    ("brk", (), (), 0),
])
def test_the_correct_kernel_gives_no_finding_and_comes_back_to_its_baseline(name, args, files,
                                                                              status):
    result, monitor, checker, _, lines = watched(name, args, files=files)
    assert result.status == status, lines
    assert checker.violations == [], "\n".join(f"{v.rule} {v.address:#x} {v.detail}"
                                               for v in checker.violations[:5])
    assert checker.process_checks >= 3
    baseline, final = monitor.baseline
    assert baseline == final > 0
    assert processes.baseline_text(baseline, final).startswith("PMM back at its baseline")


# --- Planted bugs ------------------------------------------------------------------------

MEMSCRIPT_FILES = ((DATA, "/data"),)       # memscript.c maps argv[1]


@pytest.mark.parametrize("bug, name, args, rule", [
    (301, "hello", (), "USER_FRAME_LEAK"),
    (302, "fork_cow", (), "SHARED_WRITABLE"),
    (303, "fork_cow", (), "REFCOUNT_MISMATCH"),
    (304, "hello", (), "USER_FRAME_LEAK"),
    (305, "memscript", ("/data", "m0,4,3", "t1", "u0,4"), "USER_KERNEL_FRAME"),
    (306, "memscript", ("/data", "m0,4,3", "w0,1", "w3,1", "u0,4", "c"),
     "PAGE_OUTSIDE_REGIONS"),
])
def test_each_planted_bug_is_caught_by_its_rule(bug, name, args, rule):
    files = MEMSCRIPT_FILES if name == "memscript" else ()
    _, monitor, checker, _, _ = watched(name, args, kernel=planted(bug), files=files)
    assert rule in rules_found(checker), [(v.rule, v.detail) for v in checker.violations[:4]]
    if bug in (301, 304):                  # and the PMM does not come back
        assert "PMM_BASELINE" in rules_found(checker)
        baseline, final = monitor.baseline
        assert final < baseline


def test_each_process_rule_has_a_planted_bug_and_is_documented():
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    for rule in PROCESS_RULES:
        assert rule.id in RULE_IDS and rule.meaning.endswith(").")
        assert f"| `{rule.id}` | {rule.meaning} | {rule.example} |" in readme
    planted_h = (Path(__file__).parent.parent / "guest/test/planted.h").read_text()
    for bug in (301, 302, 303, 304, 305, 306):
        assert f" {bug} " in planted_h


def test_the_leak_names_the_exited_process():
    _, _, checker, _, _ = watched("hello", kernel=planted(304))
    leak = [v for v in checker.violations if v.rule == "USER_FRAME_LEAK"]
    assert any("still allocated after it exited" in v.detail for v in leak)
    assert any("no live process maps them" in v.detail and "pid 1" in v.detail for v in leak)


# --- Command lines -----------------------------------------------------------------------

def test_exec_summary_goes_to_stderr_only_when_asked():
    plain = run_emu(["exec", str(program("fork_cow"))], timeout=120)
    assert "processes:" not in plain.err and plain.status == 0
    asked = run_emu(["exec", "--summary", str(program("fork_cow"))], timeout=120)
    assert asked.status == 0 and asked.stdout == plain.stdout
    assert "emu: processes: 4" in asked.err
    assert re.search(r"emu:   pid 3 \S+: killed by SIGSEGV \(139\), \d+ system calls, "
                     r"faults: .*sigsegv 1", asked.err), asked.err
    assert "emu: PMM back at its baseline" in asked.err


def test_exec_check_reports_a_planted_bug_and_strict_ends_with_125():
    found = run_emu(["exec", "--kernel", str(planted(304)), "--check",
                     str(program("hello"))], timeout=120)
    assert found.status == 7                       # the program's own
    assert "emu: invariant violation USER_FRAME_LEAK" in found.err
    strict = run_emu(["exec", "--kernel", str(planted(304)), "--strict",
                      str(program("hello"))], timeout=120)
    assert strict.status == 125 and "USER_FRAME_LEAK" in strict.err
    clean = run_emu(["exec", "--check", str(program("hello"))], timeout=120)
    assert clean.status == 7 and "violation" not in clean.err


def test_run_prints_the_summary_and_traces_the_events(tmp_path):
    from emu.workloads.process import pack_initrd
    initrd = tmp_path / "initrd.tar"
    pack_initrd([(program("hello"), "/bin/hello")], initrd)
    trace = tmp_path / "trace.jsonl"
    ending = run_emu(["run", "--quiet", "--module", str(initrd), "--cmdline",
                      "quiet init=/bin/hello", "--trace", str(trace)], timeout=120)
    assert ending.status == 0, ending.err
    assert "--- processes: 1" in ending.err
    assert re.search(r"---   pid 1 /bin/hello: exit 7, \d+ system calls", ending.err)
    assert "--- PMM back at its baseline" in ending.err
    types = [json.loads(line)["type"] for line in trace.read_text().splitlines()[1:]]
    for kind in ("ProcessExec", "ProcessStart", "Syscall", "UserFault", "ProcessExit"):
        assert kind in types
    syscall = next(json.loads(line) for line in trace.read_text().splitlines()[1:]
                   if json.loads(line)["type"] == "Syscall")
    assert set(syscall) >= {"pid", "number", "name", "args", "result", "implemented"}


def test_run_names_each_unimplemented_call_once_as_it_comes(tmp_path):
    from emu.workloads.process import pack_initrd
    initrd = tmp_path / "initrd.tar"
    pack_initrd([(program("unimplemented"), "/bin/u")], initrd)
    ending = run_emu(["run", "--quiet", "--module", str(initrd), "--cmdline",
                      "quiet init=/bin/u"], timeout=120)
    assert ending.status == 0, ending.err
    assert ending.err.count("emu: unimplemented system call") == 2
    assert "emu: unimplemented system call getrusage (number 98), first by pid 1 /bin/u" \
        in ending.err
    assert "--- unimplemented system calls: getrusage (98), syscall_1000 (1000)" in ending.err
