"""`emu heap-replay`: replay a malloc-lab trace on the guest's heap allocators, checked
from outside, and print a table (or JSON).

Exit 0 when every run was clean, 1 when an allocator broke integrity, the run's own status
(70-72) when one did not finish, 2 for a bad trace (refused before anything boots).
Not to be confused with the guest's `replay=` command-line option, which this drives.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from emu.commands import console
from emu.commands.options import count, kernel_path
from emu.hw.memmap import parse_memory_size
from emu.workloads import heap_replay

NAME = "heap-replay"
HELP = "replay a malloc-lab trace on the guest's heap allocators, checked from outside"


def add_arguments(replay: argparse.ArgumentParser) -> None:
    replay.add_argument("trace", type=Path, help="malloc-lab trace (a ID SIZE, r ID SIZE, "
                                                 "f ID after a 2- or 4-integer header)")
    replay.add_argument("--heap", default="all", choices=(*heap_replay.HEAP_KINDS, "all"),
                        help="allocator to run the trace on (default all)")
    replay.add_argument("--debug", action="store_true",
                        help="heapdebug=1: red zones, poison and checks in the guest")
    replay.add_argument("--bare", action="store_true",
                        help="replay=bare: the allocator alone, no checking in the guest (its "
                             "pure cost in instructions per operation)")
    replay.add_argument("--heap-cache", type=cache_pages, default=None, metavar="PAGES",
                        help="heapcache=PAGES: the most released heap pages the guest keeps "
                             f"mapped for reuse, 0 to {heap_replay.HEAP_CACHE_MAX_PAGES} "
                             "(default: a sixteenth of the RAM, at most that)")
    replay.add_argument("--json", action="store_true", help="print JSON instead of a table")
    replay.add_argument("--kernel", type=Path,
                        help="ELF kernel (default: build the project's own)")
    replay.add_argument("--memory", help="RAM size (default: the pc preset's)")
    replay.add_argument("--max-instructions", type=count, default=None,
                        help="stop a run after N instructions (default 5 billion)")


def cache_pages(text: str) -> int:
    """An argparse type: heapcache= pages, 0..HEAP_CACHE_MAX_PAGES."""
    try:
        value = int(text.replace("_", ""), 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 0 <= value <= heap_replay.HEAP_CACHE_MAX_PAGES:
        raise argparse.ArgumentTypeError(
            f"must be 0 to {heap_replay.HEAP_CACHE_MAX_PAGES} pages")
    return value


def execute(args) -> int:
    """The trace is read and checked (streamed to a canonical copy) before anything boots."""
    with tempfile.TemporaryDirectory(prefix="emu-heap-replay-") as tmp:
        trace = heap_replay.stream_trace(args.trace, Path(tmp))
        kernel = kernel_path(args.kernel)
        heaps = heap_replay.HEAP_KINDS if args.heap == "all" else (args.heap,)
        outcomes = heap_replay.replay_all(
            kernel, trace, heaps, bare=args.bare, debug=args.debug,
            memory=parse_memory_size(args.memory) if args.memory else None,
            max_instructions=args.max_instructions or heap_replay.DEFAULT_BUDGET,
            record_calls=False,
            extra_cmdline="" if args.heap_cache is None else f"heapcache={args.heap_cache}")
    console.out(heap_replay.render_json(trace, outcomes) if args.json
                else heap_replay.render_table(trace, outcomes))
    return heap_replay.worst_status(outcomes)
