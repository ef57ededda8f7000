"""Record the golden traces again: `python traces/golden/update.py [NAME...]`.

Run it (from any directory) when a change to the kernel or the harness is meant to change
what a golden run does; `tests/test_replay.py` replays every trace listed here and fails at
the first event that differs. Each recipe is an `emu run` command line, or a program run
by `emu exec` (whose initrd is kept beside its trace); inputs are named relative to the
repository so the traces hold no machine's paths.
"""
from __future__ import annotations

import os
import shutil
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
# name -> a program of tests/programs run by `emu exec` (its initrd is kept beside the trace)
PROGRAMS: dict[str, str] = {
    "process-brk": "brk",          # the program break grown, shrunk and regrown: demand paging
}


def record(name: str) -> int:
    from emu.cli import main
    trace = f"traces/golden/{name}.jsonl"
    if name in RECIPES:
        return main(["run", "--quiet", "--trace", trace, *RECIPES[name]])
    from emu.build import build_program
    # A copy under the repository, so that the trace names no machine's path (argv[0]).
    program = Path("traces/golden") / PROGRAMS[name]
    source = ROOT / "tests" / "programs" / f"{PROGRAMS[name]}.c"
    shutil.copy(build_program(source, flags=("-O1", "-s")), program)     # -s: a small initrd
    try:
        return main(["exec", "--trace", trace, str(program)])
    finally:
        program.unlink()


def main(names: list[str]) -> int:
    known = [*RECIPES, *PROGRAMS]
    unknown = sorted(set(names) - set(known))
    if unknown:
        print(f"no golden trace {', '.join(unknown)}; known: {', '.join(known)}",
              file=sys.stderr)
        return 2
    os.chdir(ROOT)
    for name in names or known:
        status = record(name)
        print(f"{name}: recorded (emu run exited {status})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
