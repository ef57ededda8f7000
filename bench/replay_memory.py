#!/usr/bin/env python
"""Host memory of `emu heap-replay` on a long trace: it must not grow with the trace.

    python bench/replay_memory.py [--ops N] [--heap KIND] [--json PATH]

Generates a malloc-lab trace of N operations (default 4,000,000: as many allocations as
frees, over 50,000 block ids, sizes 16 to 512 bytes, from a fixed seed), then runs the
heap-replay command's code path (the trace streamed and checked, the guest replaying it
under the outside heap checker) in a fresh process, which reports its peak resident memory
(ru_maxrss) and the guest RAM the run touched. The figure: peak host memory beyond the
guest RAM touched; the target is under 300 MB (issue 9). The trace file and the guest's
copy of it are not held in host memory.
"""
from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "replay_memory_results.json"
TARGET_MB = 300
IDS = 50_000
SEED = 4


def generate(path: Path, ops: int) -> None:
    """Alternating bursts of allocations and frees, every id freed by the end (-bal)."""
    rng = random.Random(SEED)
    free_ids = list(range(IDS))
    live: list[int] = []
    lines = []
    while len(lines) < ops:
        if live and (not free_ids or rng.random() < 0.5 or len(lines) + len(live) >= ops):
            block = live.pop(rng.randrange(len(live)))
            lines.append(f"f {block}")
            free_ids.append(block)
        else:
            block = free_ids.pop(rng.randrange(len(free_ids)))
            live.append(block)
            lines.append(f"a {block} {rng.randrange(16, 513)}")
    with open(path, "w") as out:
        out.write(f"{IDS}\n{len(lines)}\n")
        out.write("\n".join(lines) + "\n")


CHILD = """
import json, resource, sys, tempfile
from pathlib import Path
from emu.build import build_guest
from emu.workloads import heap_replay
kernel = build_guest()
with tempfile.TemporaryDirectory() as tmp:
    trace = heap_replay.stream_trace(Path(sys.argv[1]), Path(tmp))
    run = heap_replay.replay(kernel, trace, sys.argv[2], bare=False, record_calls=False,
                             memory=1 << 30, max_instructions=1 << 40)
o = run.outcome
print(json.dumps({"maxrss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                  "guest_resident_bytes": run.guest_resident, "ok": o.ok,
                  "integrity": o.integrity(), "ops": o.ops, "seconds": o.seconds}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=4_000_000)
    parser.add_argument("--heap", default="chained")
    parser.add_argument("--json", type=Path, default=RESULTS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "long.rep"
        generate(trace, args.ops)
        size = trace.stat().st_size
        child = subprocess.run([sys.executable, "-c", CHILD, str(trace), args.heap],
                               capture_output=True, text=True, check=False)
    if child.returncode != 0:
        print(child.stderr, file=sys.stderr)
        return 1
    figures = json.loads(child.stdout.strip().splitlines()[-1])
    beyond = figures["maxrss_bytes"] - figures["guest_resident_bytes"]
    figures.update(trace_bytes=size, heap=args.heap,
                   host_beyond_guest_mb=round(beyond / 2**20, 1), target_mb=TARGET_MB)
    print(f"| heap-replay, {figures['ops']:,} operations ({size / 2**20:.0f} MB trace), "
          f"{args.heap} | peak host memory beyond guest RAM: "
          f"{figures['host_beyond_guest_mb']} MB | target < {TARGET_MB} MB | "
          f"{'met' if beyond < TARGET_MB * 2**20 else 'NOT met'} | {figures['integrity']} |")
    args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0 if figures["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
