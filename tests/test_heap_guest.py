"""Tests of the guest kernel's heaps (guest/heap/) through its own trace replayer
(guest/test/replay.c), driven by the command line: `replay=1|bare heap=KIND [heapdebug=1]`
replays the first module as a malloc-lab trace, checking every block in the guest, and
prints one `replay:` line; `heaptest=ops` replays an op list and prints every address.

Every trace of traces/malloclab replays with no error on every heap, with and without
debug mode; the figures printed and the `replay_result` record the kernel exports agree;
the replayer's peak payload is the trace's own; the heaps' debug checks stop the planted
bugs (PLANT_BUG=101..104) and the misuses of the op list, with their messages.

The whole matrix takes about two minutes (realloc-bal alone about 3 s a run, most of it the
replayer checking a 600 KB block before each of its 4,800 reallocations), so it is marked
slow; the short traces and amptjp-bal run in every pass.
"""
from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from emu.build import build_guest
from emu.machine import Machine, MachineConfig, RunResult

TRACES = Path(__file__).resolve().parent.parent / "traces" / "malloclab"
HEAPS = ("list", "buddy", "slab", "chained")
ALL_TRACES = tuple(sorted(p.stem for p in TRACES.glob("*.rep")))
FAST_TRACES = ("short1-bal", "short2-bal", "amptjp-bal")
PEER_TRACES = ("amptjp-bal", "binary-bal", "binary2-bal", "cccp-bal", "coalescing-bal",
               "cp-decl-bal", "expr-bal", "random-bal", "random2-bal", "realloc-bal",
               "realloc2-bal")         # the 11 of the shared BENCHMARKS.md
EXIT_OK, EXIT_PANIC = 0, 1
BUDGET = 5_000_000_000                 # instructions; the longest run needs under 1 G
MARKER_PORT = 0xf1
HEAP_BASE, HEAP_END = 0xFFFF_C000_0000_0000, 0xFFFF_C400_0000_0000

RESULT = struct.Struct("<IIQQQQQIIQ")   # guest/test/replay.h: replay_result, 64 bytes
RESULT_MAGIC = 0x594C5052               # "RPLY"
MODE_CHECKED, MODE_BARE, MODE_HEAPTEST = 1, 2, 3
HEAP_KIND = {"list": 1, "buddy": 2, "slab": 3, "chained": 4}
REPLAY_LINE = re.compile(
    r"^replay: heap=(?P<heap>\S+) ops=(?P<ops>\d+) errors=(?P<errors>\d+) "
    r"peak_payload=(?P<payload>\d+) peak_footprint=(?P<footprint>\d+) "
    r"utilization=(?P<utilization>\d\.\d{4})$", re.M)
HEAP_OP = re.compile(r"^heap op (\d+) (\d+) 0x([0-9a-f]{16})$", re.M)


@dataclass(frozen=True, slots=True)
class Replay:
    result: RunResult
    output: str
    record: tuple | None       # replay_result's fields, None until its magic is written

    def line(self) -> re.Match:
        found = REPLAY_LINE.findall(self.output)
        assert len(found) == 1, self.output[-3000:]
        return REPLAY_LINE.search(self.output)

    def panic(self) -> str | None:
        found = re.search(r"^panic: (.*)$", self.output, re.M)
        return found.group(1) if found else None


@lru_cache(maxsize=None)
def result_address(kernel: Path) -> int:
    with kernel.open("rb") as stream:
        symbol = ELFFile(stream).get_section_by_name(".symtab").get_symbol_by_name(
            "replay_result")
    assert symbol and symbol[0]["st_size"] == RESULT.size
    return symbol[0]["st_value"]


def replay(kernel: Path, module: Path, cmdline: str) -> Replay:
    machine = Machine(MachineConfig(kernel=kernel, cmdline=cmdline, modules=(module,),
                                    max_instructions=BUDGET))
    if machine.bus.port_owner(MARKER_PORT) is None:        # a monitor without the marker
        machine.bus.ignore_ports(MARKER_PORT, 1, fill=0, name="marker")
    result = machine.run()
    raw = machine.cpu.read_virtual(result_address(kernel) + machine.symbols.slide,
                                   RESULT.size)
    record = RESULT.unpack(raw)
    return Replay(result, machine.serial_output(),
                  record if record[0] == RESULT_MAGIC else None)


def trace_path(name: str) -> Path:
    return TRACES / f"{name}.rep"


def trace_figures(name: str) -> tuple[int, int]:
    """(operations, peak payload) of a trace, computed here."""
    lines = trace_path(name).read_text().split("\n")
    ops = [line.split() for line in lines if line.strip() and not line.strip().isdigit()]
    live: dict[str, int] = {}
    payload = peak = 0
    for op in ops:
        if op[0] == "f":
            payload -= live.pop(op[1])
        else:
            payload += int(op[2]) - live.get(op[1], 0)
            live[op[1]] = int(op[2])
            peak = max(peak, payload)
    return len(ops), peak


@pytest.fixture(scope="module")
def kernel() -> Path:
    return build_guest()


def check_clean_replay(run: Replay, trace: str, heap: str, debug: bool,
                       mode: int = MODE_CHECKED) -> float:
    """Asserts a replay ran clean and its two reports agree; returns the utilization."""
    assert run.result.reason == "exit", run.result.report or run.output[-3000:]
    assert run.result.guest_value == EXIT_OK, run.output[-3000:]
    line = run.line()
    ops, peak = trace_figures(trace)
    assert line["heap"] == heap
    assert (int(line["ops"]), int(line["errors"])) == (ops, 0)
    assert int(line["payload"]) == peak
    footprint = int(line["footprint"])
    assert footprint > 0 and footprint % 4096 == 0
    utilization = int(line["payload"]) / footprint
    assert line["utilization"] == f"{int(peak * 10000 // footprint) / 10000:.4f}"
    assert run.record is not None, "replay_result has no magic"
    magic, kind, r_ops, errors, r_payload, r_footprint, e4, mode_, r_debug, tsc = run.record
    assert (kind, r_ops, errors, r_payload, r_footprint) == (HEAP_KIND[heap], ops, 0, peak,
                                                            footprint)
    assert f"{e4 // 10000}.{e4 % 10000:04d}" == line["utilization"]
    assert (mode_, r_debug) == (mode, int(debug))
    assert 0 < tsc < run.result.instructions
    return utilization


def matrix(traces):
    """(trace, heap, debug) triples, slow unless the trace is in FAST_TRACES."""
    for trace in traces:
        marks = () if trace in FAST_TRACES else (pytest.mark.slow,)
        for heap in HEAPS:
            for debug in (False, True):
                yield pytest.param(trace, heap, debug, marks=marks,
                                   id=f"{trace}-{heap}{'-debug' if debug else ''}")


# ---- every trace, every heap, normal and debug ---------------------------------------------

@pytest.mark.parametrize("trace, heap, debug", list(matrix(ALL_TRACES)))
def test_trace_replays_clean(kernel, trace, heap, debug):
    cmdline = f"replay=1 heap={heap}" + (" heapdebug=1" if debug else "")
    run = replay(kernel, trace_path(trace), cmdline)
    check_clean_replay(run, trace, heap, debug)
    if debug:
        assert "(debug)" in run.output


@pytest.mark.parametrize("heap", HEAPS)
def test_bare_replay_brackets_the_allocator_alone(kernel, heap):
    run = replay(kernel, trace_path("short2-bal"), f"replay=bare heap={heap}")
    check_clean_replay(run, "short2-bal", heap, False, mode=MODE_BARE)
    checked = replay(kernel, trace_path("short2-bal"), f"replay=1 heap={heap}")
    assert run.line()["utilization"] == checked.line()["utilization"]
    assert run.record[-1] < checked.record[-1]        # the checks cost instructions


@pytest.mark.slow
def test_best_heap_utilization_meets_the_target(kernel):
    """Mean utilization over the 11 peer traces: the chained heap beats TLSF's 0.791."""
    utilization = {}
    for trace in PEER_TRACES:
        run = replay(kernel, trace_path(trace), "replay=bare heap=chained")
        utilization[trace] = check_clean_replay(run, trace, "chained", False, MODE_BARE)
    mean = sum(utilization.values()) / len(utilization)
    assert mean >= 0.80, utilization


# ---- the op list and the misuses ----------------------------------------------------------

OPS = """a 0 100
a 1 64 64
c 2 10 24
a 3 5000 4096
a 4 20 1024
r 0 300
r 1 10
a 5 0
f 2
r 3 0
a 6 3000000000
f 0
a 2 1 256
f 1
f 2
f 4
"""
# op index -> (id, alignment) of the ops that return a block; None: NULL expected
EXPECTED = {0: (0, 16), 1: (1, 64), 2: (2, 16), 3: (3, 4096), 4: (4, 1024), 5: (0, 16),
            6: (1, 16), 7: None, 9: None, 10: None, 12: (2, 256)}


@pytest.mark.parametrize("debug", (False, True), ids=("normal", "debug"))
@pytest.mark.parametrize("heap", HEAPS)
def test_heaptest_prints_every_address(kernel, tmp_path, heap, debug):
    module = tmp_path / "ops.txt"
    module.write_text(OPS)
    run = replay(kernel, module, f"heaptest=ops heap={heap} heapdebug={int(debug)}")
    assert run.result.guest_value == EXIT_OK, run.output[-3000:]
    printed = {int(n): (int(block), int(address, 16))
               for n, block, address in HEAP_OP.findall(run.output)}
    assert sorted(printed) == sorted(EXPECTED)
    for n, expected in EXPECTED.items():
        block, address = printed[n]
        if expected is None:
            assert address == 0
            continue
        assert block == expected[0]
        assert HEAP_BASE <= address < HEAP_END and address % expected[1] == 0
    assert re.search(rf"^heaptest: heap={heap} ops=16 errors=0 live=0$", run.output, re.M)
    assert run.record is not None and run.record[7] == MODE_HEAPTEST


MISUSES = {
    "double-free": ("a 0 100\na 1 40\nf 0\nd 0\n", "kfree: double free of 0x{addr}"),
    "invalid-free": ("a 0 100\na 1 40\ni 0 16\n", "kfree: invalid free of 0x{addr}"),
    "overflow": ("a 0 100\no 0 100\nf 0\n",
                 "kfree: red zone after the block overwritten, block 0x{addr}"),
    "write-after-free": ("a 0 100\nf 0\nu 0\na 1 100\na 2 100\na 3 100\n",
                         "kmalloc: freed memory was written after kfree, at 0x{addr}"),
}


@pytest.mark.parametrize("misuse", MISUSES)
@pytest.mark.parametrize("heap", HEAPS)
def test_debug_mode_stops_misuse(kernel, tmp_path, heap, misuse):
    ops, message = MISUSES[misuse]
    module = tmp_path / "ops.txt"
    module.write_text(ops)
    run = replay(kernel, module, f"heaptest=ops heap={heap} heapdebug=1")
    assert run.result.guest_value == EXIT_PANIC, run.output[-3000:]
    pattern = re.escape(message).replace(re.escape("{addr}"), "[0-9a-f]+")
    assert re.fullmatch(pattern + rf" \(heap={heap}\)", run.panic() or ""), run.output[-2000:]


@pytest.mark.parametrize("heap", HEAPS)
@pytest.mark.parametrize("misuse", ("double-free", "invalid-free"))
def test_frees_are_checked_without_debug_mode_too(kernel, tmp_path, heap, misuse):
    ops, message = MISUSES[misuse]
    module = tmp_path / "ops.txt"
    module.write_text(ops)
    run = replay(kernel, module, f"heaptest=ops heap={heap}")
    assert run.result.guest_value == EXIT_PANIC, run.output[-3000:]
    assert (run.panic() or "").startswith(message.split(" 0x")[0]), run.output[-2000:]


# ---- the chained heap's large runs (guest/heap/large.c) ------------------------------------

PAGE = 4096
RUN_OPS = """a 0 20000
a 1 20000
a 2 8000
f 0
f 1
a 3 8000
r 3 40000
f 2
a 4 4096
f 3
f 4
"""


def test_large_runs_split_merge_grow_in_place_and_give_the_top_back(kernel, tmp_path):
    module = tmp_path / "ops.txt"
    module.write_text(RUN_OPS)
    run = replay(kernel, module, "heaptest=ops heap=chained")   # no red zones: exact pages
    assert run.result.guest_value == EXIT_OK, run.output[-3000:]
    at = {int(n): int(address, 16) for n, _block, address in HEAP_OP.findall(run.output)}
    first = at[0]
    assert first % PAGE == 0 and at[1] == first + 5 * PAGE and at[2] == first + 10 * PAGE
    assert at[5] == first             # the two freed neighbours merged; the run split
    assert at[6] == first             # grown in place into the free rest of the merged run
    assert at[8] == at[2]             # the top run went back, the next one starts there
    assert re.search(r"^heaptest: heap=chained ops=11 errors=0 live=0$", run.output, re.M)


def test_large_run_table_outgrows_its_static_page(kernel, tmp_path):
    """300 large blocks live at once: the descriptors move from the static page to the
    window; the heap's checks (heapdebug=1) walk every run before and after."""
    blocks = 300
    ops = [f"a {i} {5000 + 4096 * (i % 3)}" for i in range(blocks)]
    ops += [f"f {i}" for i in range(0, blocks, 2)] + [f"a {i} 6000" for i in range(0, blocks, 2)]
    ops += [f"f {i}" for i in range(blocks)]
    module = tmp_path / "ops.txt"
    module.write_text("\n".join(ops) + "\n")
    run = replay(kernel, module, "heaptest=ops heap=chained heapdebug=1")
    assert run.result.guest_value == EXIT_OK, run.output[-3000:]
    addresses = [int(address, 16) for _n, _block, address in HEAP_OP.findall(run.output)]
    assert len(set(addresses[:blocks])) == blocks and 0 not in addresses
    assert re.search(rf"^heaptest: heap=chained ops={len(ops)} errors=0 live=0$", run.output,
                     re.M)


def test_a_large_run_freed_twice_is_a_double_free(kernel, tmp_path):
    module = tmp_path / "ops.txt"
    module.write_text("a 0 20000\na 1 20000\nf 0\nd 0\n")
    run = replay(kernel, module, "heaptest=ops heap=chained")
    assert run.result.guest_value == EXIT_PANIC, run.output[-3000:]
    assert re.fullmatch(r"kfree: double free of 0x[0-9a-f]+ \(heap=chained\)", run.panic() or "")


# ---- planted bugs ---------------------------------------------------------------------------

# bug -> heap, a trace that catches it (the fastest), the check's message
PLANTED = {
    101: ("list", "short1-bal",
          r"merge_next: header of a block already merged into its neighbour at 0x[0-9a-f]+"),
    102: ("list", "amptjp-bal",
          r"merge_next: block smaller than a header and its links at 0x[0-9a-f]+"),
    103: ("slab", "short1-bal",
          r"heap_check: bitmap disagrees with the free count of slab 0x[0-9a-f]+"),
    104: ("buddy", "short1-bal", r"heap_check: free buddies not merged at 0x[0-9a-f]+"),
}


@pytest.mark.parametrize("bug", PLANTED)
def test_debug_checks_catch_planted_bug(bug):
    heap, trace, message = PLANTED[bug]
    planted = build_guest(defines={"PLANT_BUG": str(bug)})
    run = replay(planted, trace_path(trace), f"replay=1 heap={heap} heapdebug=1")
    assert run.result.reason == "exit" and run.result.guest_value == EXIT_PANIC, \
        run.result.report or run.output[-3000:]
    assert re.fullmatch(message + rf" \(heap={heap}\)", run.panic() or ""), run.output[-2000:]
    assert run.record is None            # the replay never finished


# ---- the command line -----------------------------------------------------------------------

@pytest.mark.parametrize("cmdline, message", [
    ("replay=1 heap=tlsf", "heap_init: unknown heap=tlsf (use list, buddy, slab or chained)"),
    ("replay=1 heap=list heapfit=worst", "heap_init: unknown heapfit=worst (use first or best)"),
    ("replay=2", "replay: unknown replay=2 (use 1 or bare)"),
])
def test_bad_options_panic(kernel, cmdline, message):
    run = replay(kernel, trace_path("short1-bal"), cmdline)
    assert run.result.guest_value == EXIT_PANIC
    assert run.panic() == message


def test_best_fit_is_a_choice(kernel):
    first = replay(kernel, trace_path("short2-bal"), "replay=1 heap=list")
    best = replay(kernel, trace_path("short2-bal"), "replay=1 heap=list heapfit=best")
    for run in (first, best):
        check_clean_replay(run, "short2-bal", "list", False)


def test_boot_reports_the_default_heap(kernel):
    machine = Machine(MachineConfig(kernel=kernel))
    result = machine.run()
    assert result.guest_value == EXIT_OK
    assert re.search(r"^heap: chained, debug off, range 0xffffc00000000000-0xffffc3ffffffffff$",
                     machine.serial_output(), re.M)
