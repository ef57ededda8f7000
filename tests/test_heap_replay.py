"""Heap replay and the outside heap checker.

The checker's rules are tested on a bare machine (tests/bare.py) with a fake heap in
assembly that misbehaves on purpose: a bump allocator whose pointer the test moves
backwards (overlap), to an odd address (misalignment) or past the heap (outside the heap),
and callers that free twice or free what nobody allocated. Each finding must name its rule
and its caller. Then the marker port, trace validation, and `emu heap-replay` on the real
kernel: the table, --json, --bare, and bad traces refused in one line before booting.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from emu.bare import CODE, DEMAND, BareMachine
from emu.build import build_guest
from emu.hw.bus import Bus
from emu.cli import main
from emu.hw.devices.pc import MARKER_PORT, install_pc_devices
from emu.errors import ConfigError
from emu.events import HeapFinding, Marker, Observer
from emu.monitor.heapcheck import HeapChecker, describe
from emu.workloads.heap_replay import Trace, TraceOp, parse_trace, parse_trace_text, replay
from emu.monitor.symbols import Symbol, Symbols
from unicorn import x86_const as X

HEAP, HEAP_END = 0x200000, 0x280000
NEXT = 0x1F0000             # the fake heap's bump pointer

# A bump allocator: kmalloc rounds up to 16 bytes; kcalloc and kmalloc_aligned tail-call
# kmalloc (kmalloc_aligned ignores the alignment: a bug the checker must see when the bump
# pointer is not aligned enough); krealloc calls kmalloc and kfree (nested calls the checker
# must not count); kfree does nothing.
FAKE_HEAP = dict(
    kmalloc=f"""
        mov rcx, {NEXT}
        mov rax, qword ptr [rcx]
        add rdi, 15
        and rdi, -16
        add qword ptr [rcx], rdi
        ret
    """,
    kcalloc="""
        imul rdi, rsi
        jmp {kmalloc}
    """,
    kmalloc_aligned="""
        jmp {kmalloc}
    """,
    kfree="""
        ret
    """,
    krealloc="""
        push rbx
        push rdi
        mov rdi, rsi
        call {kmalloc}
        mov rbx, rax
        pop rdi
        call {kfree}
        mov rax, rbx
        pop rbx
        ret
    """,
)
KMALLOC_INSTRUCTIONS = 6


class Collect(Observer):
    def __init__(self) -> None:
        self.findings: list[HeapFinding] = []
        self.marks: list[Marker] = []

    def on_heap_finding(self, event: HeapFinding) -> None:
        self.findings.append(event)

    def on_marker(self, event: Marker) -> None:
        self.marks.append(event)


def run_fake_heap(main_code: str, bounds=((HEAP, HEAP_END),), heap=(), pending=0,
                  **callers):
    """Run `main_code` (then hlt) with the fake heap (entries replaced by `heap`) and
    `callers` (routines, each its own symbol) under the checker, the heap's range being
    `bounds` (None: unknown). Returns (checker, collected events, routine addresses)."""
    collect = Collect()
    machine = BareMachine(observers=[collect])
    routines = dict(FAKE_HEAP, **dict(heap), **callers)
    labels = machine.load(f"mov rcx, {NEXT}\nmov qword ptr [rcx], {HEAP}\n{main_code}\nhlt",
                          **routines)
    symbols = Symbols([Symbol("main", CODE, 0x1000)] +
                      [Symbol(name, address, 0x1000) for name, address in labels.items()],
                      [(CODE, CODE + 0x1000 * (len(labels) + 1))])
    checker = HeapChecker(bounds=(lambda: list(bounds)) if bounds is not None else None,
                          record_calls=True)
    checker.install(machine.hooks, machine.cpu, symbols, machine.events)
    machine.boot()
    assert machine.run() == "halt"
    assert checker.pending_calls() == pending
    return checker, collect, labels


def rules(checker: HeapChecker) -> list[str]:
    return [finding.rule for finding in checker.findings]


# ---- the checker's rules ------------------------------------------------------------------

def test_clean_calls_leave_no_findings_and_the_right_live_blocks():
    checker, collect, _ = run_fake_heap("call {user}", user="""
        mov rdi, 40
        call {kmalloc}
        mov rdi, rax
        call {kfree}
        mov rdi, 4
        mov rsi, 8
        call {kcalloc}
        mov rdi, rax
        mov rsi, 100
        call {krealloc}
        mov rdi, 24
        mov rsi, 16
        call {kmalloc_aligned}
        ret
    """)
    assert checker.findings == [] and collect.findings == []
    # krealloc's inner kmalloc/kfree and the tail calls of kcalloc/kmalloc_aligned are
    # parts of one outermost call each
    assert [call.function for call in checker.calls] == \
        ["kmalloc", "kfree", "kcalloc", "krealloc", "kmalloc_aligned"]
    assert [call.requested for call in checker.calls] == [40, 0, 32, 100, 24]
    assert all(call.caller.startswith("user+") for call in checker.calls)
    assert checker.live_sizes() == {HEAP + 48 + 32: 100, HEAP + 48 + 32 + 112: 24}


def test_instructions_inside_a_call_are_exact():
    checker, _, _ = run_fake_heap("""
        mov rdi, 16
        call {kmalloc}
        mov rdi, 3
        mov rsi, 16
        call {kcalloc}
    """)
    kmalloc, kcalloc = checker.calls
    assert kmalloc.instructions == KMALLOC_INSTRUCTIONS          # its body, ret included
    assert kcalloc.instructions == 2 + KMALLOC_INSTRUCTIONS      # imul, jmp, then kmalloc's
    assert checker.stats["kmalloc"].calls == 1


def test_double_free_names_the_caller():
    checker, collect, _ = run_fake_heap("call {allocate}\ncall {release}\ncall {again}",
                                        allocate="""
        mov rdi, 32
        call {kmalloc}
        mov rbx, rax
        ret
    """, release="""
        mov rdi, rbx
        call {kfree}
        ret
    """, again="""
        nop
        mov rdi, rbx
        call {kfree}
        ret
    """)
    assert rules(checker) == ["double-free"]
    finding = checker.findings[0]
    assert (finding.address, finding.size) == (HEAP, 32)
    assert finding.caller.startswith("again+")
    assert "allocate+" in finding.detail               # who allocated it
    assert collect.findings == checker.findings         # and it went out as an event
    assert describe(finding).startswith(f"double-free {HEAP:#x} (32 bytes) by again+")


def test_free_of_a_pointer_never_allocated():
    checker, _, _ = run_fake_heap("call {wild}\ncall {interior}", wild="""
        mov rdi, 0x234560
        call {kfree}
        ret
    """, interior="""
        mov rdi, 64
        call {kmalloc}
        lea rdi, [rax + 16]
        call {kfree}
        xor edi, edi
        call {kfree}
        ret
    """)
    assert rules(checker) == ["invalid-free", "invalid-free"]      # kfree(NULL) is fine
    wild, interior = checker.findings
    assert wild.address == 0x234560 and wild.caller.startswith("wild+")
    assert interior.address == HEAP + 16 and interior.caller.startswith("interior+")
    assert "inside the live block" in interior.detail


def test_krealloc_of_a_freed_block_is_a_double_free():
    checker, _, _ = run_fake_heap("call {stale}", stale="""
        mov rdi, 32
        call {kmalloc}
        mov rbx, rax
        mov rdi, rax
        call {kfree}
        mov rdi, rbx
        mov rsi, 64
        call {krealloc}
        ret
    """)
    assert rules(checker) == ["double-free"]
    assert checker.findings[0].caller.startswith("stale+")


def test_overlapping_blocks():
    checker, _, _ = run_fake_heap(f"""
        call {{first}}
        mov rcx, {NEXT}
        mov qword ptr [rcx], {HEAP + 32}
        call {{second}}
    """, first="""
        mov rdi, 64
        call {kmalloc}
        ret
    """, second="""
        mov rdi, 16
        call {kmalloc}
        ret
    """)
    assert rules(checker) == ["overlap"]
    finding = checker.findings[0]
    assert (finding.address, finding.size) == (HEAP + 32, 16)
    assert finding.caller.startswith("second+")
    assert f"{HEAP:#x} (64 bytes" in finding.detail and "first+" in finding.detail


def test_misaligned_blocks():
    checker, _, _ = run_fake_heap(f"""
        mov rcx, {NEXT}
        mov qword ptr [rcx], {HEAP + 8}
        call {{odd}}
        mov rcx, {NEXT}
        mov qword ptr [rcx], {HEAP + 0x1010}
        call {{aligned}}
    """, odd="""
        mov rdi, 16
        call {kmalloc}
        ret
    """, aligned="""
        mov rdi, 16
        mov rsi, 64
        call {kmalloc_aligned}
        ret
    """)
    assert rules(checker) == ["misaligned", "misaligned"]
    odd, aligned = checker.findings
    assert odd.address == HEAP + 8 and odd.caller.startswith("odd+")
    assert "16-byte" in odd.detail
    assert aligned.address == HEAP + 0x1010 and aligned.caller.startswith("aligned+")
    assert "64-byte" in aligned.detail


def test_block_outside_the_heap():
    main_code = f"""
        mov rcx, {NEXT}
        mov qword ptr [rcx], {HEAP_END - 16}
        call {{edge}}
    """
    edge = """
        mov rdi, 32
        call {kmalloc}
        ret
    """
    checker, _, _ = run_fake_heap(main_code, edge=edge)
    assert rules(checker) == ["outside-heap"]
    assert checker.findings[0].caller.startswith("edge+")
    assert f"[{HEAP:#x}, {HEAP_END:#x})" in checker.findings[0].detail
    unbounded, _, _ = run_fake_heap(main_code, bounds=None, edge=edge)
    assert unbounded.findings == []                    # no range known: rule skipped


def test_block_on_an_unmapped_page_of_the_heap():
    # the range is the heap's, but the block's pages are not present (the bare machine's
    # demand-paged area): outside the heap's pages
    checker, _, _ = run_fake_heap(f"""
        mov rcx, {NEXT}
        mov qword ptr [rcx], {DEMAND + 0x1000}
        call {{unmapped}}
    """, bounds=[(HEAP, DEMAND + 0x200000)], unmapped="""
        mov rdi, 64
        call {kmalloc}
        ret
    """)
    assert rules(checker) == ["outside-heap"]
    finding = checker.findings[0]
    assert finding.caller.startswith("unmapped+")
    assert f"page {DEMAND + 0x1000:#x} is not mapped" in finding.detail


def test_a_bad_free_is_reported_even_if_kfree_never_returns():
    # the real heap panics on a double free it can see: the finding must come at entry
    checker, collect, _ = run_fake_heap("call {twice}", heap={"kfree": """
        cmp rdi, r15
        je dead
        mov r15, rdi
        ret
    dead:
        hlt
    """}, pending=1, twice="""
        xor r15, r15
        mov rdi, 32
        call {kmalloc}
        mov rbx, rax
        mov rdi, rax
        call {kfree}
        mov rdi, rbx
        call {kfree}
        ret
    """)
    assert rules(checker) == ["double-free"]
    assert collect.findings[0].caller.startswith("twice+")


def test_a_jump_to_a_return_address_is_not_a_return():
    # `join` is the instruction after the call; reaching it by a jump first (a join point)
    # must neither complete a call nor confuse the next real return.
    checker, _, _ = run_fake_heap("call {user}", user="""
        mov r12, 2
        xor eax, eax
        jmp join
    again:
        mov rdi, 48
        call {kmalloc}
    join:
        dec r12
        jnz again
        mov rdi, 16
        call {kmalloc}
        ret
    """)
    assert [call.requested for call in checker.calls] == [48, 16]
    assert checker.findings == []


def test_install_needs_the_kmalloc_family():
    machine = BareMachine()
    symbols = Symbols([Symbol("main", CODE, 0x100)], [(CODE, CODE + 0x100)])
    with pytest.raises(ConfigError, match="kmalloc and kfree"):
        HeapChecker().install(machine.hooks, machine.cpu, symbols, machine.events)


# ---- the marker port ----------------------------------------------------------------------

def test_marker_port_stamps_exact_instruction_counts():
    collect = Collect()
    machine = BareMachine(observers=[collect])
    bus = Bus(machine.uc, machine.events, machine.hooks)
    devices = install_pc_devices(
        bus, on_exit=lambda value: None,
        clock=lambda: machine.cpu.time_stamp(machine.uc.reg_read(X.UC_X86_REG_RIP)))
    machine.load(f"""
        mov dx, {MARKER_PORT}
        mov eax, 1
        out dx, eax
        mov ecx, 10
    spin:
        dec ecx
        jnz spin
        mov eax, 2
        out dx, al
        nop
        hlt
    """)
    machine.boot()
    assert machine.run() == "halt"
    (start, one), (end, two) = devices.marker.marks
    assert (one, two) == (1, 2)
    # out, mov, 10 x (dec, jnz), mov: 23 instructions from the first out to the second
    assert end - start == 23
    assert [(m.icount, m.value) for m in collect.marks] == devices.marker.marks


# ---- traces -------------------------------------------------------------------------------

def test_both_header_forms_and_the_canonical_text(tmp_path):
    four = tmp_path / "four.rep"
    four.write_text("20000\n3\n4\n1\na 0 10\na 2 7\nr 0 30\nf 0\n\n")
    trace = parse_trace(four)
    assert (trace.blocks, len(trace.ops)) == (3, 4)
    assert trace.text() == "3\n4\na 0 10\na 2 7\nr 0 30\nf 0\n"
    assert parse_trace_text(trace.text()) == Trace("trace", 3, trace.ops)
    assert trace.peak_payload() == 37
    assert trace.live_at_end() == {2: 7}


@pytest.mark.parametrize("text, message", [
    ("", r"t\.rep:1: unparseable header"),
    ("6\nx\na 0 1\n", r"t\.rep:2: unparseable header"),
    ("2\n1\nm 0 8\n", r"t\.rep:3: unknown operation 'm'"),
    ("2\n1\na 2 8\n", r"t\.rep:3: block id 2 out of range \(the header says ids 0 to 1\)"),
    ("2\n1\na 0\n", r"t\.rep:3: 'a 0' is not `a ID SIZE`"),
    ("2\n1\na 0 -4\n", r"non-negative integers"),
    ("2\n3\na 0 8\nf 0\n", r"the header says 3 operations, the file has 2"),
    ("2\n2\na 0 8\nf 1\n", r"t\.rep:4: frees block 1, which is not allocated"),
    ("2\n2\na 0 8\na 0 8\n", r"t\.rep:4: allocates block 0, which is still allocated"),
])
def test_bad_traces_are_refused_with_the_line(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_trace_text(text, "t.rep")


def test_synthetic_traces_are_checked_too():
    with pytest.raises(ConfigError, match="reallocates block 0"):
        Trace.from_ops([TraceOp("r", 0, 8)])
    assert Trace.from_ops([TraceOp("a", 3, 8), TraceOp("f", 3)]).blocks == 4


# ---- `emu heap-replay` and `emu run --check heap` on the real kernel ----------------------

TRACES = Path(__file__).resolve().parent.parent / "traces" / "malloclab"
needs_traces = pytest.mark.skipif(not TRACES.is_dir(), reason=f"no malloc-lab traces in {TRACES}")
ROW = re.compile(r"^\| (?P<heap>\w+) \| (?P<integrity>[^|]+) \| (?P<utilization>[\d.]+) \| "
                 r"(?P<payload>[\d,]+) \| (?P<footprint>[\d,]+) \| (?P<per_op>[\d.]+) \| "
                 r"(?P<inside>[\d.]+) \|$", re.MULTILINE)


def one_line_error(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("emu: error: "), err
    return lines[0]


@needs_traces
def test_heap_replay_prints_a_table(kernel, capsys):
    status = main(["heap-replay", str(TRACES / "short1-bal.rep"), "--heap", "list",
                   "--kernel", str(kernel)])
    out, err = capsys.readouterr()
    assert status == 0, out + err
    assert out.startswith("short1-bal.rep: 12 operations on 6 block ids, peak payload 8,144 "
                          "bytes (replay=1)")
    assert "| heap | integrity | utilization | peak payload | peak footprint | " \
           "instructions/op | in allocator/call |" in out
    rows = list(ROW.finditer(out))
    assert [row["heap"] for row in rows] == ["list"]
    row = rows[0]
    assert row["integrity"].strip() == "ok"
    assert row["payload"] == "8,144"
    assert 0 < float(row["utilization"]) <= 1
    assert float(row["per_op"]) > 0 and float(row["inside"]) > 0


@needs_traces
def test_heap_replay_json_for_every_allocator(kernel, capsys):
    status = main(["heap-replay", str(TRACES / "short2-bal.rep"), "--json",
                   "--kernel", str(kernel)])
    out, err = capsys.readouterr()
    assert status == 0, out + err
    report = json.loads(out)
    assert (report["trace"], report["ops"], report["peak_payload"]) == \
        ("short2-bal.rep", 12, 18314)
    results = report["results"]
    assert [r["heap"] for r in results] == ["list", "buddy", "slab", "chained"]
    for r in results:
        assert r["ok"] and r["integrity"] == "ok" and r["errors"] == 0, r
        assert r["findings"] == [] and r["mode"] == "checked"
        assert r["peak_payload"] == r["expected_peak_payload"] == 18314
        assert r["peak_footprint"] >= r["peak_payload"]
        assert r["utilization"] == pytest.approx(18314 / r["peak_footprint"])
        assert r["instructions"] > 0
        assert r["instructions_per_op"] == pytest.approx(r["instructions"] / 12)
        assert r["calls"] == 12                     # every operation seen by the checker


@needs_traces
def test_heap_replay_bare_mode(kernel, capsys):
    status = main(["heap-replay", str(TRACES / "short1-bal.rep"), "--heap", "chained",
                   "--bare", "--json", "--kernel", str(kernel)])
    out, err = capsys.readouterr()
    assert status == 0, out + err
    (result,) = json.loads(out)["results"]
    assert result["mode"] == "bare" and result["ok"]
    assert result["instructions_per_op"] > 0


@pytest.mark.parametrize("content, message", [
    (None, "not found"),
    ("12\nab\na 0 8\n", "unparseable header"),
    ("2\n2\na 0 8\nx 0\n", "unknown operation 'x'"),
    ("2\n2\na 0 8\nf 7\n", "block id 7 out of range"),
])
def test_bad_traces_fail_in_one_line_before_booting(tmp_path, capsys, content, message):
    trace = tmp_path / "bad.rep"
    if content is not None:
        trace.write_text(content)
    # a kernel that does not exist: the trace must be refused before anyone looks for it
    status = main(["heap-replay", str(trace), "--kernel", str(tmp_path / "no-kernel.elf")])
    out, err = capsys.readouterr()
    assert status == 2 and out == ""
    line = one_line_error(err)
    assert message in line and str(trace) in line


@needs_traces
def test_run_check_heap_reports_the_calls(kernel, capsys):
    status = main(["run", "--quiet", "--check", "heap", str(kernel), "--cmdline",
                   "replay=1 heap=buddy", "--module", str(TRACES / "short1-bal.rep")])
    _, err = capsys.readouterr()
    assert status == 0, err
    summary = [line for line in err.splitlines() if line.startswith("--- heap checks:")]
    assert len(summary) == 1 and summary[0].endswith("findings: none"), err
    assert "invariant checks" not in err               # heap only: no page-table checker
    assert main(["run", "--quiet", "--check", "heap,pt", str(kernel)]) == 0
    _, err = capsys.readouterr()
    assert "--- heap checks:" in err and "--- invariant checks:" in err


def test_unknown_check_is_one_line(kernel, capsys):
    assert main(["run", "--quiet", "--check", "heap,tlb", str(kernel)]) == 2
    assert "unknown check" in one_line_error(capsys.readouterr().err)


@needs_traces
def test_marker_count_agrees_with_the_guests_own_clock(kernel):
    # the replayer reads RDTSC (the instruction count under emu) just inside the markers
    run = replay(kernel, parse_trace(TRACES / "short2-bal.rep"), "slab")
    outcome = run.outcome
    assert outcome.ok, outcome.integrity()
    assert outcome.guest_tsc is not None
    assert 0 <= outcome.instructions - outcome.guest_tsc <= 16
    start, end = run.marks
    assert end - start == outcome.instructions
    assert all(start < call.entry_icount < call.return_icount < end for call in run.calls)


@needs_traces
def test_planted_heap_bug_is_caught_outside(capsys):
    # bug 101: the list heap coalesces with its previous block first, then merges the next
    # block into a stale header: blocks still in use are handed out again
    planted = build_guest(defines={"PLANT_BUG": "101"})
    trace = TRACES / "amptjp-bal.rep"
    status = main(["run", "--quiet", "--check", "heap", "--strict", str(planted),
                   "--cmdline", "replay=bare heap=list", "--module", str(trace)])
    _, err = capsys.readouterr()
    assert status == 73, err
    assert "heap finding overlap at 0x" in err
    assert re.search(r"overlap 0x[0-9a-f]+ \(\d+ bytes\) by run_bare\+0x[0-9a-f]+: overlaps "
                     r"the live block 0x[0-9a-f]+", err), err

    # heap-replay goes on after a finding: the corrupted list then loops until the budget
    status = main(["heap-replay", str(trace), "--heap", "list", "--bare", "--json",
                   "--kernel", str(planted), "--max-instructions", "100000000"])
    out, _ = capsys.readouterr()
    assert status == 71
    (result,) = json.loads(out)["results"]
    assert result["reason"] == "budget" and not result["ok"]
    assert {finding["rule"] for finding in result["findings"]} == {"overlap"}
    assert all(f["caller"].startswith("run_bare+") for f in result["findings"])
