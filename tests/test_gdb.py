"""`emu run --gdb PORT` with the real gdb client: breakpoints by symbol, structures read by
name, single steps both ways, monitor commands, kill; and on a planted heap-corruption bug,
a watchpoint on the corrupted heap word and reverse-continue to the instruction that wrote
it. gdb comes from Debian's package (.ci/run installs it); without it the tests skip, except
under CI, where a missing gdb is a failure."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from emu.build import build_guest

ROOT = Path(__file__).resolve().parent.parent
TRACE = ROOT / "traces" / "malloclab" / "amptjp-bal.rep"
GDB = shutil.which("gdb")


@pytest.fixture(scope="module", autouse=True)
def gdb_present():
    if GDB is None:
        if os.environ.get("CI"):
            pytest.fail("gdb is missing under CI: .ci/run installs it (apt-get install gdb)")
        pytest.skip("gdb is not installed (Debian: apt-get install gdb)")


def session(kernel: Path, emu_args: list[str], commands: list[str]) -> tuple[str, int, str]:
    """Start `emu run --gdb 0`, run gdb's `commands` against it in batch mode; returns
    (gdb's output, emu's exit status, emu's stderr)."""
    emu = subprocess.Popen([sys.executable, "-m", "emu.cli", "run", "--quiet", str(kernel),
                            *emu_args, "--gdb", "0"], cwd=ROOT, stderr=subprocess.PIPE,
                           stdout=subprocess.DEVNULL, text=True)
    try:
        first = emu.stderr.readline()
        port = re.search(r"localhost:(\d+)", first)
        assert port, first
        script = ["set pagination off", "set confirm off",
                  f"target remote :{port.group(1)}", *commands]
        gdb = subprocess.run([GDB, "-q", "-batch", "-nx", str(kernel),
                              *[arg for command in script for arg in ("-ex", command)]],
                             capture_output=True, text=True, timeout=120)
        rest = emu.stderr.read()
        status = emu.wait(timeout=120)
    finally:
        if emu.poll() is None:
            emu.kill()
            emu.wait()
        emu.stderr.close()
    return gdb.stdout + gdb.stderr, status, first + rest


def values(output: str) -> dict[str, int]:
    """`printf "NAME=%lx\\n", ...` lines of a gdb session."""
    return {name: int(value, 16) for name, value in re.findall(r"^(\w+)=([0-9a-f]+)$", output,
                                                              re.M)}


def test_break_read_step_reverse_monitor_kill(kernel):
    output, status, err = session(kernel, [], [
        "break heap_init", "continue",
        'printf "BREAK=%lx\\n", $pc', "info symbol $pc",
        "print pmm_descriptor",                        # a structure, by name
        'printf "FREE=%lx\\n", pmm_descriptor.free_frames',
        'printf "EFER=%lx\\n", $efer', 'printf "CR3=%lx\\n", $cr3',
        "monitor icount", "stepi", 'printf "STEPPED=%lx\\n", $pc', "monitor icount",
        "reverse-stepi", 'printf "BACK=%lx\\n", $pc', "monitor icount",
        "monitor pt", "monitor phys 0x1000 16", "kill"])
    found = values(output)
    assert "heap_init" in output.split("BREAK=")[1].splitlines()[1]      # info symbol
    assert found["EFER"] & 0x500 == 0x500 and found["CR3"] > 0          # LME|LMA, paging
    assert re.search(r"\$1 = \{magic = .*free_frames = \d+", output, re.S), output
    assert 0 < found["FREE"] < 1 << 20
    counts = [int(n.replace(",", "")) for n in re.findall(r"([\d,]+) instructions retired",
                                                          output)]
    assert len(counts) == 3 and counts[1] == counts[0] + 1 and counts[2] == counts[0]
    assert found["STEPPED"] != found["BREAK"] and found["BACK"] == found["BREAK"]
    assert "page walk of" in output and "0x000000001000: " in output
    assert status == 77, err                   # killed by the debugger
    assert "killed by the debugger" in err


def test_reverse_continue_on_a_watchpoint_finds_the_heap_corruption_writer():
    """Planted bug 101: the list heap merges into a stale header and hands out blocks still
    in use; the replayer finds a block's contents changed at its kfree. A watchpoint on that
    word and reverse-continue land on the store that changed it: the allocator writing its
    free-list links into a live block."""
    kernel = build_guest(defines={"PLANT_BUG": "101"})
    output, status, err = session(kernel, ["--module", str(TRACE), "--cmdline",
                                           "replay=1 heap=list"], [
        "break error", "continue", "up",
        "set $word = (unsigned long *)s->p", 'printf "CORRUPT=%lx\\n", *$word',
        "watch -l *$word", "reverse-continue", "bt 1",
        'printf "BEFORE=%lx\\n", *$word', "stepi", 'printf "AFTER=%lx\\n", *$word',
        "detach"])
    found = values(output)
    assert "contents changed before kfree" in output       # gdb showed the caller's line
    assert re.search(r"#0 +free_push \(.*\) at heap/list\.c", output), output
    assert found["BEFORE"] != found["CORRUPT"] and found["AFTER"] == found["CORRUPT"]
    # Detached, the run goes on and ends exactly as it does without a debugger.
    alone = subprocess.run([sys.executable, "-m", "emu.cli", "run", "--quiet", str(kernel),
                            "--module", str(TRACE), "--cmdline", "replay=1 heap=list"],
                           cwd=ROOT, capture_output=True, text=True, timeout=120)
    ending = re.compile(r"--- ([\d,]+) instructions")
    assert status == alone.returncode
    assert ending.search(err).group(1) == ending.search(alone.stderr).group(1)
