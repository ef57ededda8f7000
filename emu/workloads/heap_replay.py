"""Heap trace replay: a CS:APP malloc-lab trace run in the guest, measured from outside.

Owns: reading and validating traces (in Python, before anything boots), writing the
canonical text the guest replays (its first Limine module), running the guest with
`replay=1 heap=KIND` (or `replay=bare`), and turning what the run left into a
ReplayOutcome: the guest's own report (its `replay:` line and its `replay_result` record),
the outside heap checker's findings, and the instructions between the guest's markers.
Does not own: the allocators or the replayer (guest/heap/, guest/test/replay.c), the checker's
rules (heapcheck.py), the table and JSON (cli.py, bench/heap.py).

Trace format (traces/README.md): a header of two integers (block ids,
operations) or four (suggested heap size, ids, operations, weight), one per line, then one
operation per line: `a ID SIZE`, `r ID SIZE`, `f ID`. Blank lines are ignored. Besides the
syntax, a trace must make sense: an id is allocated only when it is not live, and
reallocated or freed only when it is.

Instructions per operation: the replayer writes 1 to port 0xf1 before the first operation
and 2 after the last; the marker device stamps both with the CPU's exact instruction count,
so the difference is exact and needs no per-instruction hook.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import struct
import tempfile
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

from emu.errors import ConfigError
from emu.inputs import check_input, display, read_input
from emu.events import HeapFinding, Marker, Observer
from emu.machine import Machine, MachineConfig
from emu.result import RunEnd
from emu.monitor.heapcheck import HeapCall, HeapChecker, describe, heap_bounds
from emu.monitor.symbols import read_object
from emu.monitor.profile import BlockProfile, ProfileRow

HEAP_KINDS = ("list", "buddy", "slab", "chained")
MARK_START, MARK_END = 1, 2
MAX_BLOCKS = 1 << 20               # ids: the replayer keeps one pointer per id
MAX_OPERATIONS = 1 << 24
MAX_SIZE = (1 << 32) - 1           # bytes per request
MAX_TRACE_BYTES = 1 << 30          # 16 M operations of at most 22 characters fit
DEFAULT_BUDGET = 5_000_000_000     # instructions: 4x the slowest trace known (list heap,
#                                    realloc-bal); a corrupted free list loops forever
HEAP_CACHE_MAX_PAGES = 8192        # guest/heap/heap.h: the most heapcache= allows
RESULT_SYMBOL = "replay_result"
RESULT_MAGIC = 0x594C5052          # "RPLY" read as a little-endian u32
# guest/test/replay.h: magic, heap kind, ops, errors, peak payload, peak footprint,
# utilization * 1e4, mode, debug, tsc
RESULT_LAYOUT = struct.Struct("<IIQQQQQIIQ")
RESULT_MODES = {1: "checked", 2: "bare", 3: "heaptest"}
REPLAY_LINE = re.compile(
    r"replay: heap=(?P<heap>\S+) ops=(?P<ops>\d+) errors=(?P<errors>\d+) "
    r"peak_payload=(?P<payload>\d+) peak_footprint=(?P<footprint>\d+) "
    r"utilization=(?P<utilization>[\d.]+)")
HEAPTEST_LINE = re.compile(r"^heap op (?P<n>\d+) (?P<id>\d+) 0x(?P<address>[0-9a-f]{16})$",
                           re.MULTILINE)
_OP_ARITY = {"a": 2, "r": 2, "f": 1}


# ---- traces -------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class TraceOp:
    kind: str              # "a", "r", "f"
    block: int
    size: int = 0          # 0 for "f"

    def line(self) -> str:
        return f"{self.kind} {self.block}" + (f" {self.size}" if self.kind != "f" else "")


@dataclass(frozen=True, slots=True)
class Trace:
    name: str
    blocks: int
    ops: tuple[TraceOp, ...]

    def text(self) -> str:
        """The canonical form the guest replays: two header lines, one op per line."""
        return f"{self.blocks}\n{len(self.ops)}\n" + "".join(op.line() + "\n" for op in self.ops)

    @property
    def operations(self) -> int:
        return len(self.ops)

    def write_module(self, path: Path) -> None:
        Path(path).write_text(self.text(), encoding="ascii")

    def peak_payload(self) -> int:
        """The highest sum of live requested bytes (the utilization's numerator)."""
        live: dict[int, int] = {}
        current = peak = 0
        for op in self.ops:
            if op.kind == "f":
                current -= live.pop(op.block)
            else:
                current += op.size - live.get(op.block, 0)
                live[op.block] = op.size
                peak = max(peak, current)
        return peak

    def live_at_end(self) -> dict[int, int]:
        """id -> size of the blocks the trace leaves allocated (none for -bal traces)."""
        live: dict[int, int] = {}
        for op in self.ops:
            if op.kind == "f":
                del live[op.block]
            else:
                live[op.block] = op.size
        return live

    @classmethod
    def from_ops(cls, ops: Iterable[TraceOp], name: str = "synthetic.rep",
                 blocks: int | None = None) -> "Trace":
        ops = tuple(ops)
        count = blocks if blocks is not None else 1 + max((op.block for op in ops), default=0)
        checker = _TraceChecker(name)
        checker._set_header([count, len(ops)], 1)
        for index, op in enumerate(ops):
            checker.apply(op, f"{name}: operation {index + 1}")
        return cls(name, count, ops)


def parse_trace(path: Path) -> Trace:
    """Read and validate a trace file into memory (tests, benchmarks: small traces; the
    command streams with stream_trace). Raises ConfigError with one line naming the file,
    the line and what is wrong."""
    data = read_input(path, "trace", MAX_TRACE_BYTES)
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise ConfigError(f"{display(path)} is not a malloc-lab trace (not ASCII text)") \
            from None
    return parse_trace_text(text, display(path))


def parse_trace_text(text: str, where: str = "trace") -> Trace:
    checker = _TraceChecker(where)
    ops = list(checker.read(enumerate(text.splitlines(), 1)))
    return Trace(Path(where).name, checker.blocks, tuple(ops))


@dataclass(frozen=True, slots=True)
class TraceFile:
    """A validated trace, streamed to disk in the canonical form the guest replays (its
    first Limine module): memory does not grow with the trace's length."""
    name: str
    blocks: int
    operations: int
    payload: int                 # the peak sum of live requested bytes
    module: Path

    def peak_payload(self) -> int:
        return self.payload

    def write_module(self, path: Path) -> None:
        os.link(self.module, path) if _same_device(self.module, path) else \
            shutil.copyfile(self.module, path)


def stream_trace(path: Path, directory: Path) -> TraceFile:
    """Validate a trace file line by line, writing its canonical form under `directory`.
    ConfigError as parse_trace; a file with more operations than its header promises is
    refused at the first extra line."""
    check_input(path, "trace", MAX_TRACE_BYTES)
    where = display(path)
    module = Path(directory) / "trace.canonical"
    checker = _TraceChecker(where)
    try:
        with open(path, "r", encoding="ascii") as source, open(module, "w") as out:
            ops = checker.read(enumerate(source, 1))
            first = next(ops, None)
            out.write(f"{checker.blocks}\n{checker.count}\n")
            if first is not None:
                out.write(first.line() + "\n")
            for op in ops:
                out.write(op.line() + "\n")
    except UnicodeDecodeError:
        raise ConfigError(f"{where} is not a malloc-lab trace (not ASCII text)") from None
    except OSError as exc:
        raise ConfigError(f"cannot read trace {where}: {exc.strerror}") from None
    return TraceFile(Path(path).name, checker.blocks, checker.count, checker.peak, module)


def _same_device(one: Path, other: Path) -> bool:
    try:
        return os.stat(one).st_dev == os.stat(Path(other).parent).st_dev
    except OSError:
        return False


class _TraceChecker:
    """Validates a trace as it is read: the header, each operation's syntax, and the
    semantics (an id is allocated only when not live, reallocated or freed only when live),
    with memory that depends on the number of block ids, not of operations."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.blocks = self.count = self.peak = 0
        self._sizes: array | None = None           # per id: size + 1 while live, else 0
        self._payload = 0

    def read(self, lines: Iterable[tuple[int, str]]) -> Iterator[TraceOp]:
        rows = ((number, line.split()) for number, line in lines)
        rows = ((number, words) for number, words in rows if words)
        pending = self._header(rows)
        seen = 0
        for number, words in _chain(pending, rows):
            seen += 1
            if seen > self.count:
                raise ConfigError(f"{self.where}:{number}: more operations than the "
                                  f"{self.count} the header promises")
            yield self._operation(number, words)
        if seen != self.count:
            raise ConfigError(f"{self.where}: the header says {self.count} operations, the "
                              f"file has {seen}")

    def _header(self, rows) -> tuple[int, list[str]] | None:
        """Reads the 2- or 4-integer header; returns the first operation row, if any."""
        header: list[int] = []
        last = 0
        for number, words in rows:
            last = number
            if len(words) != 1 or not words[0].isdigit():
                self._set_header(header, number)
                return number, words
            header.append(int(words[0]))
            if len(header) == 4:
                break
        self._set_header(header, last + 1)
        return None

    def _set_header(self, header: list[int], number: int) -> None:
        if len(header) == 4:
            blocks, count = header[1], header[2]
        elif len(header) == 2:
            blocks, count = header
        else:
            raise ConfigError(f"{self.where}:{number}: unparseable header: a malloc-lab trace "
                              "starts with 2 integers (ids, operations) or 4 (heap size, ids, "
                              "operations, weight), one per line")
        if not 0 < blocks <= MAX_BLOCKS:
            raise ConfigError(f"{self.where}: header says {blocks} block ids; expected 1 to "
                              f"{MAX_BLOCKS}")
        if count > MAX_OPERATIONS:
            raise ConfigError(f"{self.where}: header says {count} operations; at most "
                              f"{MAX_OPERATIONS} are supported")
        self.blocks, self.count = blocks, count
        self._sizes = array("Q", bytes(8 * blocks))

    def _operation(self, number: int, words: list[str]) -> TraceOp:
        at = f"{self.where}:{number}"
        kind = words[0]
        if kind not in _OP_ARITY:
            raise ConfigError(f"{at}: unknown operation {kind!r} (expected a, r or f)")
        if len(words) != 1 + _OP_ARITY[kind]:
            usage = "f ID" if kind == "f" else f"{kind} ID SIZE"
            raise ConfigError(f"{at}: {' '.join(words)!r} is not `{usage}`")
        if not all(word.isdigit() for word in words[1:]):
            raise ConfigError(f"{at}: {' '.join(words)!r}: ids and sizes are non-negative "
                              "integers")
        op = TraceOp(kind, int(words[1]), int(words[2]) if kind != "f" else 0)
        if op.size > MAX_SIZE:
            raise ConfigError(f"{at}: size {op.size} is too large (at most {MAX_SIZE})")
        self.apply(op, at)
        return op

    def apply(self, op: TraceOp, at: str) -> None:
        """The semantics of one operation; tracks the live payload and its peak."""
        if not 0 <= op.block < self.blocks:
            raise ConfigError(f"{at}: block id {op.block} out of range (the header says ids 0 "
                              f"to {self.blocks - 1})")
        sizes = self._sizes
        live = sizes[op.block]
        if op.kind == "a" and live:
            raise ConfigError(f"{at}: allocates block {op.block}, which is still allocated")
        if op.kind != "a" and not live:
            verb = "frees" if op.kind == "f" else "reallocates"
            raise ConfigError(f"{at}: {verb} block {op.block}, which is not allocated")
        self._payload -= live - 1 if live else 0
        if op.kind == "f":
            sizes[op.block] = 0
        else:
            sizes[op.block] = op.size + 1
            self._payload += op.size
            self.peak = max(self.peak, self._payload)


def _chain(first, rest):
    if first is not None:
        yield first
    yield from rest


# ---- running ------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ReplayOutcome:
    """One allocator on one trace. `errors` is the guest's count; `findings` the outside
    checker's; `instructions` the exact count between the markers (None if the guest never
    wrote both)."""
    heap: str
    trace: str
    bare: bool
    debug: bool
    ops: int
    reason: str                         # how the run ended: "exit", "crash", ...
    exit_status: int                    # what `emu run` would exit with
    message: str
    errors: int | None
    findings: tuple[HeapFinding, ...]
    peak_payload: int | None
    peak_footprint: int | None
    utilization: float | None
    instructions: int | None
    calls: int                          # outermost kmalloc-family calls between the markers
    inside_instructions: int            # instructions inside those calls
    expected_peak_payload: int | None   # the trace's own (None: not known)
    seconds: float
    guest_tsc: int | None = None        # the guest's own RDTSC difference (instructions)
    notes: tuple[str, ...] = ()

    @property
    def per_op(self) -> float | None:
        return self.instructions / self.ops if self.instructions is not None and self.ops \
            else None

    @property
    def inside_per_call(self) -> float | None:
        return self.inside_instructions / self.calls if self.calls else None

    @property
    def ok(self) -> bool:
        return (self.reason == "exit" and self.exit_status == 0 and self.errors == 0
                and not self.findings and not self.notes and self.instructions is not None)

    def integrity(self) -> str:
        """`ok`, or what went wrong, in a few words."""
        parts = [] if self.reason == "exit" else [f"{self.reason}: {self.message}"]
        if self.errors:
            parts.append(f"{self.errors} guest error{'s' * (self.errors != 1)}")
        if self.findings:
            rules: dict[str, int] = {}
            for finding in self.findings:
                rules[finding.rule] = rules.get(finding.rule, 0) + 1
            parts.append(", ".join(f"{rule} x{n}" for rule, n in rules.items()))
        parts.extend(self.notes)
        return "; ".join(parts) or "ok"

    def to_dict(self) -> dict:
        return {
            "heap": self.heap, "trace": self.trace, "mode": "bare" if self.bare else "checked",
            "debug": self.debug, "ops": self.ops, "ok": self.ok,
            "integrity": self.integrity(), "reason": self.reason,
            "exit_status": self.exit_status, "message": self.message,
            "errors": self.errors,
            "findings": [{"rule": f.rule, "address": f.address, "size": f.size,
                          "caller": f.caller, "detail": f.detail, "icount": f.icount}
                         for f in self.findings],
            "peak_payload": self.peak_payload, "peak_footprint": self.peak_footprint,
            "utilization": self.utilization, "instructions": self.instructions,
            "instructions_per_op": self.per_op, "calls": self.calls,
            "inside_instructions": self.inside_instructions,
            "inside_instructions_per_call": self.inside_per_call,
            "expected_peak_payload": self.expected_peak_payload, "guest_tsc": self.guest_tsc,
            "seconds": self.seconds, "notes": list(self.notes),
        }


class _Region(Observer):
    """Remembers the markers and what the checker had at the end marker."""

    def __init__(self, checker: HeapChecker | None) -> None:
        self.checker = checker
        self.start: int | None = None
        self.end: int | None = None
        self.live_at_start: dict[int, int] | None = None
        self.live_at_end: dict[int, int] | None = None
        self.at_start = self.at_end = (0, 0, 0)    # calls recorded, calls, instructions

    def on_marker(self, event: Marker) -> None:
        if event.value == MARK_START and self.start is None:
            self.start = event.icount
            if self.checker is not None:
                self.at_start = self.tally()
                self.live_at_start = self.checker.live_sizes()
        elif event.value == MARK_END and self.start is not None and self.end is None:
            self.end = event.icount
            if self.checker is not None:
                self.at_end = self.tally()
                self.live_at_end = self.checker.live_sizes()

    def tally(self) -> tuple[int, int, int]:
        checker = self.checker
        return len(checker.calls), checker.total_calls, checker.total_instructions

    def inside(self) -> tuple[list[HeapCall], int, int]:
        """The calls recorded between the markers (to the end of the run without an end
        marker), how many there were and the instructions inside them."""
        if self.checker is None or self.start is None:
            return [], 0, 0
        end = self.at_end if self.end is not None else self.tally()
        return (self.checker.calls[self.at_start[0]:end[0]], end[1] - self.at_start[1],
                end[2] - self.at_start[2])


@dataclass(slots=True)
class ReplayRun:
    """A finished replay with what the tests look at besides the outcome."""
    outcome: ReplayOutcome
    serial: str
    calls: list[HeapCall] = field(default_factory=list)     # outermost calls in the region
    live_at_start: dict[int, int] | None = None             # the checker's live blocks at
    live_at_end: dict[int, int] | None = None               # the start and end markers
    # heaptest=ops: (operation number, id, address returned) as the guest printed them
    addresses: list[tuple[int, int, int]] = field(default_factory=list)
    marks: tuple[int | None, int | None] = (None, None)     # icounts of the two markers
    guest_resident: int = 0                                 # host bytes of guest RAM touched
    # with `profile`: instructions inside the allocator calls between the markers, by
    # function (self), most first
    profile: list[ProfileRow] = field(default_factory=list)

    def region_live(self) -> dict[int, int] | None:
        """address -> size of the blocks allocated between the markers and live at the end
        (what the trace left allocated, as the outside checker sees it)."""
        if self.live_at_end is None:
            return None
        before = self.live_at_start or {}
        return {address: size for address, size in self.live_at_end.items()
                if before.get(address) != size}


def cmdline_for(heap: str, bare: bool = False, debug: bool = False, extra: str = "") -> str:
    words = [f"replay={'bare' if bare else '1'}", f"heap={heap}"]
    if debug:
        words.append("heapdebug=1")
    if extra:
        words.append(extra)
    return " ".join(words)


def replay(kernel: Path, trace: "Trace | TraceFile", heap: str, *, bare: bool = False,
           debug: bool = False,
           check: bool = True, memory: int | None = None,
           max_instructions: int | None = DEFAULT_BUDGET, observers=(),
           extra_cmdline: str = "", record_calls: bool = True,
           profile: bool = False) -> ReplayRun:
    """Boot `kernel` with `trace` as its module and `heap` selected; run it to the end.
    `record_calls` keeps every call in ReplayRun.calls (memory grows with the trace; the
    outcome's figures do not need it). `profile` fills ReplayRun.profile (a block hook:
    slower, the same guest instructions)."""
    _check_heap(heap)
    return _boot_and_replay(
        kernel, trace.name or "trace.rep", trace.write_module,
        cmdline_for(heap, bare, debug, extra_cmdline), heap=heap, ops=trace.operations,
        expected_payload=trace.peak_payload(), bare=bare, debug=debug, check=check,
        memory=memory, max_instructions=max_instructions, observers=observers,
        record_calls=record_calls, profile=profile and check)


def heaptest(kernel: Path, text: str, heap: str, ops: int, *, debug: bool = False,
             expected_payload: int | None = None, max_instructions: int | None = DEFAULT_BUDGET,
             name: str = "heaptest.ops") -> ReplayRun:
    """The guest's `heaptest=ops` mode (guest/test/replay.h): an op list with kmalloc_aligned
    (`a ID SIZE ALIGN`), kcalloc (`c ID COUNT SIZE`) and krealloc(p, 0) (`r ID 0`) besides
    the trace's operations; the guest prints the address each call returned, in
    `ReplayRun.addresses`. The text is the caller's to get right (the guest panics
    otherwise)."""
    _check_heap(heap)
    words = [f"heaptest=ops heap={heap}"] + (["heapdebug=1"] if debug else [])
    return _boot_and_replay(kernel, name, lambda path: path.write_text(text, encoding="ascii"),
                            " ".join(words), heap=heap, ops=ops,
                            expected_payload=expected_payload, bare=False, debug=debug,
                            check=True, memory=None, max_instructions=max_instructions,
                            observers=())


def _check_heap(heap: str) -> None:
    if heap not in HEAP_KINDS:
        raise ConfigError(f"unknown heap {heap!r}; choose one of {', '.join(HEAP_KINDS)} "
                          "or all")


def _boot_and_replay(kernel: Path, name: str, write_module: Callable[[Path], None],
                     cmdline: str, *, heap: str, ops: int, expected_payload: int | None,
                     bare: bool, debug: bool, check: bool, memory: int | None,
                     max_instructions: int | None, observers,
                     record_calls: bool = True, profile: bool = False) -> ReplayRun:
    with tempfile.TemporaryDirectory(prefix="emu-replay-") as tmp:
        module = Path(tmp) / name
        write_module(module)
        config = MachineConfig(kernel=Path(kernel), memory=memory, cmdline=cmdline,
                               modules=(module,), max_instructions=max_instructions)
        checker = HeapChecker(record_calls=record_calls) if check else None
        region = _Region(checker)
        machine = Machine(config, [region, *observers])
        if checker is not None:
            checker.bounds = heap_bounds(machine)
            checker.attach(machine)
        profiler = BlockProfile(lambda: region.start is not None and region.end is None and
                                checker.pending_calls() > 0).attach(machine) \
            if profile and checker is not None else None
        result = machine.run()
    serial = machine.serial_output()
    notes: list[str] = []
    panic = next((line.strip() for line in serial.splitlines() if line.startswith("panic:")),
                 None)
    reported = _read_report(machine, serial, notes if result.reason == "exit" and
                            panic is None else [])
    if reported is not None and reported["ops"] != ops:
        notes.append(f"guest replayed {reported['ops']} of {ops} operations")
    if reported is not None and expected_payload is not None and \
            reported["payload"] != expected_payload:
        notes.append(f"guest's peak payload {reported['payload']} is not the trace's "
                     f"{expected_payload}")
    calls, call_count, inside_instructions = region.inside()
    instructions = region.end - region.start if region.end is not None and \
        region.start is not None else None
    if panic is not None:
        notes.append(panic)
    elif result.reason == "exit" and instructions is None:
        notes.append("the guest did not write both markers to port 0xf1")
    outcome = ReplayOutcome(
        heap=heap, trace=name, bare=bare, debug=debug, ops=ops,
        reason=result.reason, exit_status=result.exit_status, message=result.message,
        errors=reported["errors"] if reported else None,
        findings=tuple(checker.findings) if checker else (),
        peak_payload=reported["payload"] if reported else None,
        peak_footprint=reported["footprint"] if reported else None,
        utilization=(reported["payload"] / reported["footprint"]
                     if reported and reported["footprint"] else None),
        instructions=instructions, calls=call_count, inside_instructions=inside_instructions,
        expected_peak_payload=expected_payload, seconds=result.seconds,
        guest_tsc=reported.get("tsc") if reported else None, notes=tuple(notes))
    addresses = [(int(m["n"]), int(m["id"]), int(m["address"], 16))
                 for m in HEAPTEST_LINE.finditer(serial)]
    return ReplayRun(outcome, serial, calls, region.live_at_start, region.live_at_end,
                     addresses, (region.start, region.end), machine.memory.resident_bytes(),
                     profiler.rows() if profiler is not None else [])


def _read_report(machine, serial: str, notes: list[str]) -> dict | None:
    """The guest's figures: the `replay_result` record if the kernel has one (exact), else
    the `replay:` line; a disagreement between the two is noted."""
    line = None
    for text in serial.splitlines():
        found = REPLAY_LINE.search(text)
        if found:
            line = {"ops": int(found["ops"]), "errors": int(found["errors"]),
                    "payload": int(found["payload"]), "footprint": int(found["footprint"])}
    record = _read_record(machine)
    if record is not None and line is not None and \
            {key: record[key] for key in line} != line:
        notes.append(f"the replay line {line} disagrees with replay_result {record}")
    if record is None and line is None:
        notes.append("the guest printed no `replay:` line")
    return record if record is not None else line


def _read_record(machine) -> dict | None:
    raw = read_object(machine, RESULT_SYMBOL, RESULT_LAYOUT.size)
    if raw is None:
        return None
    magic, _kind, ops, errors, payload, footprint, _e4, _mode, _debug, tsc = \
        RESULT_LAYOUT.unpack(raw)
    if magic != RESULT_MAGIC:
        return None
    return {"ops": ops, "errors": errors, "payload": payload, "footprint": footprint,
            "tsc": tsc}


def replay_all(kernel: Path, trace: "Trace | TraceFile", heaps: Iterable[str], **options) \
        -> list[ReplayOutcome]:
    """One outcome per heap, in order; an interrupted run (SIGINT/SIGTERM) is the last."""
    outcomes = []
    for heap in heaps:
        outcomes.append(replay(kernel, trace, heap, **options).outcome)
        if outcomes[-1].reason == RunEnd.INTERRUPTED:
            break
    return outcomes


def worst_status(outcomes: Iterable[ReplayOutcome]) -> int:
    """0 when every run was clean; 1 when a heap broke integrity (guest errors, checker
    findings); the run's own status (70 crash, 71 budget, 72 halt...) when one did not
    finish."""
    status = 0
    for outcome in outcomes:
        if outcome.reason != "exit":
            status = max(status, outcome.exit_status)
        elif not outcome.ok:
            status = max(status, 1)
    return status


# ---- presenting -----------------------------------------------------------------------------

MAX_FINDINGS_SHOWN = 10


def render_table(trace: Trace, outcomes: list[ReplayOutcome]) -> str:
    """A Markdown table, one row per allocator, then the findings (a few per allocator)."""
    bare = any(outcome.bare for outcome in outcomes)
    lines = [f"{trace.name}: {trace.operations:,} operations on {trace.blocks:,} block ids, "
             f"peak payload {trace.peak_payload():,} bytes "
             f"({'replay=bare' if bare else 'replay=1'})", "",
             "| heap | integrity | utilization | peak payload | peak footprint | "
             "instructions/op | in allocator/call |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for o in outcomes:
        lines.append(
            f"| {o.heap}{' (debug)' if o.debug else ''} | {o.integrity()} | "
            f"{_fixed(o.utilization, 4)} | {_count(o.peak_payload)} | "
            f"{_count(o.peak_footprint)} | {_fixed(o.per_op, 1)} | "
            f"{_fixed(o.inside_per_call, 1)} |")
    for o in outcomes:
        if not o.findings:
            continue
        lines += ["", f"{o.heap}: {len(o.findings)} finding"
                  f"{'s' * (len(o.findings) != 1)} of the outside checker:"]
        lines += ["  " + describe(f) for f in o.findings[:MAX_FINDINGS_SHOWN]]
        if len(o.findings) > MAX_FINDINGS_SHOWN:
            lines.append(f"  ... and {len(o.findings) - MAX_FINDINGS_SHOWN} more")
    return "\n".join(lines)


def render_json(trace: Trace, outcomes: list[ReplayOutcome]) -> str:
    return json.dumps({"trace": trace.name, "blocks": trace.blocks, "ops": trace.operations,
                       "peak_payload": trace.peak_payload(),
                       "results": [outcome.to_dict() for outcome in outcomes]}, indent=2)


def _fixed(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _count(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


__all__ = ["HEAP_KINDS", "Trace", "TraceOp", "TraceFile", "ReplayOutcome", "ReplayRun",
           "parse_trace", "stream_trace",
           "parse_trace_text", "replay", "heaptest", "replay_all", "worst_status", "render_table",
           "render_json"]
