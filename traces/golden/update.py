"""Record the golden traces again: `python traces/golden/update.py [NAME...]`.

Run it (from any directory) when a change to the kernel or the harness is meant to change
what a golden run does; `tests/test_replay.py` replays every trace listed here and fails at
the first event that differs. Each recipe is an `emu run` command line; inputs are named
relative to the repository so the traces hold no machine's paths.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent

# name -> the options of `emu run` (the project's own kernel, built from guest/)
RECIPES: dict[str, list[str]] = {
    "boot": [],
    "heap-replay": ["--module", "traces/malloclab/short1-bal.rep",
                    "--cmdline", "replay=1 heap=chained", "--check", "heap"],
}


def record(name: str) -> int:
    from emu.cli import main
    return main(["run", "--quiet", "--trace", str(HERE / f"{name}.jsonl"), *RECIPES[name]])


def main(names: list[str]) -> int:
    unknown = sorted(set(names) - set(RECIPES))
    if unknown:
        print(f"no golden trace {', '.join(unknown)}; known: {', '.join(RECIPES)}",
              file=sys.stderr)
        return 2
    os.chdir(ROOT)
    for name in names or list(RECIPES):
        status = record(name)
        print(f"{name}: recorded (emu run exited {status})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
