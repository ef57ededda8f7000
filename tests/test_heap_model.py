"""The guest's heap allocators against a Python model, in the guest.

A Hypothesis state machine builds a random sequence of malloc / realloc / free (up to 200
operations, then frees of what is left for balanced sequences; sizes from 1 byte to three
pages) while a Python model keeps the live blocks (id -> size). At the end of each example
the sequence becomes a malloc-lab trace, the kernel replays it (`replay=1 heap=KIND`, with
the outside heap checker), and:
- the guest reports no errors, exits 0, replays every operation and measures the same peak
  payload as the model;
- the outside checker reports nothing (no overlap, misalignment, block outside the heap,
  double or invalid free);
- the calls the checker saw between the markers are the trace's operations, one to one
  (kmalloc / krealloc / kfree with the model's sizes and the addresses earlier calls
  returned);
- the live blocks the checker sees at the end marker are the model's live blocks (none for
  balanced sequences, which free everything, like the -bal traces).
A second machine drives the guest's `heaptest=ops` mode, which adds kmalloc_aligned, kcalloc
and krealloc(p, 0) and prints the address of every allocation: the printed addresses must be
what the checker saw returned, aligned as asked, and the live blocks again the model's.
Each example boots a kernel, so there are few of them, derandomized (15 and 8 per allocator;
about 40 s for the file).
"""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (RuleBasedStateMachine, initialize, precondition, rule,
                                 run_state_machine_as_test)

from conftest import deadline
from emu.workloads.heap_replay import HEAP_KINDS, Trace, TraceOp, heaptest, replay

MAX_OPS = 200
EXAMPLES = 15
RUN_SECONDS = 60.0
SMALL = st.one_of(st.integers(1, 256), st.sampled_from([8, 16, 24, 32, 48, 64, 128, 256]))
LARGE = st.one_of(st.integers(257, 3 * 4096), st.sampled_from([512, 2048, 4096, 8192]))
SIZES = st.one_of(SMALL, LARGE)
ALIGNS = st.sampled_from([32, 64, 128, 256, 512, 4096])
SETTINGS = settings(max_examples=EXAMPLES, stateful_step_count=MAX_OPS, derandomize=True,
                    deadline=None, database=None, print_blob=False,
                    suppress_health_check=[HealthCheck.too_slow])
OPLIST_SETTINGS = settings(SETTINGS, max_examples=8, stateful_step_count=120)


def heap_model(kernel, heap: str) -> type[RuleBasedStateMachine]:
    class HeapModel(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.ops: list[TraceOp] = []
            self.live: dict[int, int] = {}       # block id -> size, as the trace leaves it
            self.balanced = False

        @initialize(balanced=st.booleans())
        def choose(self, balanced: bool) -> None:
            self.balanced = balanced

        def _pick(self, index: int) -> int:
            ids = sorted(self.live)
            return ids[index % len(ids)]

        # Two allocation rules to one free: the live set grows to tens of blocks, so the
        # allocators split, fragment and coalesce.
        @precondition(lambda self: len(self.ops) < MAX_OPS)
        @rule(size=SMALL)
        def malloc_small(self, size: int) -> None:
            self._malloc(size)

        @precondition(lambda self: len(self.ops) < MAX_OPS)
        @rule(size=LARGE)
        def malloc_large(self, size: int) -> None:
            self._malloc(size)

        def _malloc(self, size: int) -> None:
            block = len(self.ops)                # a fresh id per allocation
            self.ops.append(TraceOp("a", block, size))
            self.live[block] = size

        @precondition(lambda self: self.live and len(self.ops) < MAX_OPS)
        @rule(index=st.integers(min_value=0), size=SIZES)
        def realloc(self, index: int, size: int) -> None:
            block = self._pick(index)
            self.ops.append(TraceOp("r", block, size))
            self.live[block] = size

        @precondition(lambda self: self.live and len(self.ops) < MAX_OPS)
        @rule(index=st.integers(min_value=0))
        def free(self, index: int) -> None:
            block = self._pick(index)
            self.ops.append(TraceOp("f", block))
            del self.live[block]

        def teardown(self) -> None:
            if self.balanced:
                for block in sorted(self.live):
                    self.ops.append(TraceOp("f", block))
                self.live.clear()
            if not self.ops:
                return
            trace = Trace.from_ops(self.ops, name="model.rep", blocks=len(self.ops))
            with deadline(RUN_SECONDS):
                run = replay(kernel, trace, heap)
            check_run(run, trace, self.live)

    HeapModel.__name__ = f"HeapModel_{heap}"
    return HeapModel


def check_run(run, trace: Trace, model_live: dict[int, int]) -> None:
    outcome = run.outcome
    assert outcome.reason == "exit" and outcome.exit_status == 0, \
        f"{outcome.message}\n{run.serial[-2000:]}"
    assert outcome.errors == 0, run.serial[-2000:]
    assert outcome.findings == (), [f"{f.rule} {f.address:#x} {f.detail}"
                                    for f in outcome.findings]
    assert outcome.notes == ()
    assert outcome.instructions is not None and outcome.instructions > 0
    assert outcome.peak_payload == trace.peak_payload()

    # The calls between the markers are the trace, one to one.
    address: dict[int, int] = {}
    assert len(run.calls) == len(trace.ops), [c.function for c in run.calls][:20]
    for number, (op, call) in enumerate(zip(trace.ops, run.calls)):
        where = f"operation {number + 1} ({op.line()}): {call}"
        if op.kind == "a":
            assert call.function == "kmalloc" and call.requested == op.size, where
            assert call.result, where
            address[op.block] = call.result
        elif op.kind == "r":
            assert call.function == "krealloc", where
            assert call.arguments == (address[op.block], op.size), where
            assert call.result, where
            address[op.block] = call.result
        else:
            assert call.function == "kfree", where
            assert call.arguments == (address.pop(op.block),), where
        assert call.result is None or call.result % 16 == 0, where

    # What the checker holds at the end marker is what the model holds.
    expected = {address[block]: size for block, size in model_live.items()}
    assert run.region_live() == expected


@pytest.mark.parametrize("heap", HEAP_KINDS)
def test_heap_matches_the_model(kernel, heap):
    run_state_machine_as_test(heap_model(kernel, heap), settings=SETTINGS)


def oplist_model(kernel, heap: str) -> type[RuleBasedStateMachine]:
    """Ops are tuples: ("a", id, size, align) with align 0 for kmalloc, ("c", id, count,
    size), ("r", id, size), ("f", id)."""
    class OpListModel(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.ops: list[tuple] = []
            self.live: dict[int, int] = {}

        def _new(self, op: tuple, size: int) -> None:
            self.ops.append(op)
            self.live[op[1]] = size

        def _pick(self, index: int) -> int:
            ids = sorted(self.live)
            return ids[index % len(ids)]

        @precondition(lambda self: len(self.ops) < MAX_OPS)
        @rule(size=SIZES)
        def malloc(self, size: int) -> None:
            self._new(("a", len(self.ops), size, 0), size)

        @precondition(lambda self: len(self.ops) < MAX_OPS)
        @rule(size=SIZES, align=ALIGNS)
        def malloc_aligned(self, size: int, align: int) -> None:
            self._new(("a", len(self.ops), size, align), size)

        @precondition(lambda self: len(self.ops) < MAX_OPS)
        @rule(count=st.integers(1, 16), size=st.integers(1, 512))
        def calloc(self, count: int, size: int) -> None:
            self._new(("c", len(self.ops), count, size), count * size)

        @precondition(lambda self: self.live and len(self.ops) < MAX_OPS)
        @rule(index=st.integers(min_value=0), size=st.one_of(st.just(0), SIZES))
        def realloc(self, index: int, size: int) -> None:
            block = self._pick(index)
            self.ops.append(("r", block, size))
            if size:
                self.live[block] = size
            else:
                del self.live[block]              # krealloc(p, 0) frees p

        @precondition(lambda self: self.live and len(self.ops) < MAX_OPS)
        @rule(index=st.integers(min_value=0))
        def free(self, index: int) -> None:
            block = self._pick(index)
            self.ops.append(("f", block))
            del self.live[block]

        def teardown(self) -> None:
            if not self.ops:
                return
            text = f"{len(self.ops)}\n{len(self.ops)}\n" + \
                "".join(" ".join(map(str, op)) + "\n" for op in self.ops)
            with deadline(RUN_SECONDS):
                run = heaptest(kernel, text, heap, ops=len(self.ops))
            check_oplist_run(run, self.ops, self.live)

    OpListModel.__name__ = f"OpListModel_{heap}"
    return OpListModel


def check_oplist_run(run, ops: list[tuple], model_live: dict[int, int]) -> None:
    outcome = run.outcome
    assert outcome.reason == "exit" and outcome.exit_status == 0, \
        f"{outcome.message}\n{run.serial[-2000:]}"
    assert outcome.errors == 0 and outcome.notes == (), run.serial[-2000:]
    assert outcome.findings == (), [f"{f.rule} {f.address:#x} {f.detail}"
                                    for f in outcome.findings]
    printed = {n: (block, address) for n, block, address in run.addresses}
    assert sorted(printed) == [n for n, op in enumerate(ops) if op[0] != "f"]
    assert len(run.calls) == len(ops)
    address: dict[int, int] = {}
    for n, (op, call) in enumerate(zip(ops, run.calls)):
        where = f"operation {n} {op}: {call}"
        kind, block = op[0], op[1]
        if kind == "f":
            assert call.function == "kfree" and call.arguments == (address.pop(block),), where
            continue
        assert printed[n] == (block, call.result), where    # what the guest got, we saw
        if kind == "a" and op[3]:
            assert call.function == "kmalloc_aligned", where
            assert call.arguments == (op[2], op[3]) and call.result % op[3] == 0, where
        elif kind == "a":
            assert call.function == "kmalloc" and call.arguments == (op[2],), where
        elif kind == "c":
            assert call.function == "kcalloc" and call.arguments == (op[2], op[3]), where
        else:
            assert call.function == "krealloc", where
            assert call.arguments == (address[block], op[2]), where
        if kind == "r" and op[2] == 0:
            assert call.result == 0, where
            del address[block]
        else:
            assert call.result and call.result % 16 == 0, where
            address[block] = call.result
    assert run.region_live() == {address[block]: size for block, size in model_live.items()}


@pytest.mark.parametrize("heap", HEAP_KINDS)
def test_heaptest_ops_match_the_model(kernel, heap):
    run_state_machine_as_test(oplist_model(kernel, heap), settings=OPLIST_SETTINGS)
