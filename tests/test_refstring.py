"""The reference-string recorder and Belady's OPT (emu/monitor/refstring.py): OPT against
the textbook and against a brute force, the recorded string against the one a program's
own generator predicts, and OPT as a lower bound for every replacement policy of the
kernel on the same program."""
from __future__ import annotations

import functools
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from differential import BUDGET, program
from emu.build import build_guest
from emu.machine import MachineConfig
from emu.monitor.refstring import ReferenceRecorder, opt_major_faults, opt_misses
from emu.monitor.swapcheck import POLICIES, read_descriptor
from emu.workloads.process import HostConsole, ProgramSpec, run_program

MASK64 = (1 << 64) - 1


def test_opt_counts_the_textbook_example():
    # Silberschatz, Operating System Concepts, 9.4.3: 9 faults with 3 frames.
    refs = [7, 0, 1, 2, 0, 3, 0, 4, 2, 3, 0, 3, 2, 1, 2, 0, 1, 7, 0, 1]
    assert opt_misses(refs, 3) == 9
    assert opt_misses(refs, 1) == sum(1 for i, p in enumerate(refs) if i == 0 or refs[i - 1] != p)
    assert opt_misses(refs, 6) == len(set(refs)) and opt_major_faults(refs, 6) == 0


def brute_force(refs: tuple, frames: int) -> int:
    """The fewest faults over every eviction choice (exponential: tiny strings only)."""
    @functools.lru_cache(maxsize=None)
    def best(i: int, resident: frozenset) -> int:
        if i == len(refs):
            return 0
        page = refs[i]
        if page in resident:
            return best(i + 1, resident)
        if len(resident) < frames:
            return 1 + best(i + 1, resident | {page})
        return 1 + min(best(i + 1, (resident - {victim}) | {page}) for victim in resident)
    return best(0, frozenset())


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(refs=st.lists(st.integers(0, 5), max_size=14), frames=st.integers(1, 4))
def test_opt_matches_a_brute_force_search(refs, frames):
    assert opt_misses(refs, frames) == brute_force(tuple(refs), frames)


def record(path: Path, args) -> tuple[list, bytes]:
    recorder, out = ReferenceRecorder(), bytearray()
    config = MachineConfig(kernel=build_guest(), max_instructions=BUDGET, memory=64 << 20)
    result = run_program(ProgramSpec(path, tuple(args)), config,
                         HostConsole(out.extend, lambda _: None), [], attach=recorder.attach)
    assert result.status == 0 and recorder.unknown == 0
    return recorder.refs, bytes(out)


def hotcold_pages(pages: int, hot: int, touches: int, percent: int = 90) -> list[int]:
    """The array pages tests/programs/hotcold.c touches, in order, from its own LCG."""
    order, x = list(range(pages)), 2463534242
    for _ in range(touches):
        x = (x * 6364136223846793005 + 1442695040888963407) & MASK64
        order.append((x >> 17) % hot if (x >> 33) % 100 < percent
                     else hot + (x >> 17) % (pages - hot))
    return [p for i, p in enumerate(order) if i == 0 or order[i - 1] != p]


def test_the_recorded_string_is_the_one_the_program_makes():
    """hotcold writes its 64 pages in order, then touches 300 chosen by a generator the
    test repeats, then frees the array: the recorded string, kept to the array's pages,
    is exactly that."""
    refs, out = record(program("hotcold"), ["256", "64", "300"])
    assert out == b"hotcold 64 pages, 16 hot: sum 185b\n"
    want = hotcold_pages(64, 16, 300)
    roots = {root for root, _ in refs}
    assert len(roots) == 1
    vpages = sorted({vpage for _, vpage in refs})
    found = []
    for base in vpages:                    # the array: the 64 pages whose string matches
        kept = [vpage - base for _, vpage in refs if base <= vpage < base + 64]
        kept = [p for i, p in enumerate(kept) if i == 0 or kept[i - 1] != p]
        # free() then reads the block's header, at the start of the first page
        if kept == want + [0]:
            found.append(base)
    assert len(found) == 1
    # Code, stack and libc data are in the string too: more pages than the array's.
    assert len(vpages) > 64 + 4


def test_opt_is_a_lower_bound_for_every_policy():
    """The same program with 24 user frames and swap, page by page (swap_cluster=1, no
    read-ahead): every policy's swap-ins are at least OPT's major faults on the string
    recorded without memory pressure, and its output is the same."""
    args = ["256", "32", "600"]
    refs, want = record(program("hotcold"), args)
    opt = opt_major_faults(refs, 24)
    assert opt > 0
    for policy in POLICIES:
        out = bytearray()
        config = MachineConfig(kernel=build_guest(), max_instructions=BUDGET, memory=64 << 20,
                               swap=8 << 20, swap_latency=500,
                               cmdline=f"user_mem=96K swap_policy={policy} swap_cluster=1")
        result = run_program(ProgramSpec(program("hotcold"), tuple(args)), config,
                             HostConsole(out.extend, lambda _: None), [])
        stats = read_descriptor(result.machine)[1]
        assert bytes(out) == want and result.swap.findings == []
        assert stats.readahead == 0 and stats.pages_in >= opt, (policy, stats.pages_in, opt)
