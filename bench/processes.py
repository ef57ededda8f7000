#!/usr/bin/env python
"""Process and virtual-memory benchmarks: static Linux programs run by the project's kernel.

    python bench/processes.py [--quick] [--repeats N] [--json PATH]

Every workload is bench/programs/vm.c or a test program of tests/programs/, built by zig as
a static musl executable and run as the kernel's first process (`emu exec`'s path:
emu.workloads.process.run_program) on the default `pc` machine (256 MiB).

(a) demand-zero fault: `vm touch 1000` maps 1,000 anonymous pages and writes one byte to
    each. Each fault is measured from the delivery of vector 14 from ring 3 (the
    ExceptionDelivered event's count: the instructions retired before the faulting store,
    so the first instruction of the #PF stub is the next one) to the `iretq` that returns
    to ring 3 (a code hook on the kernel's one `iretq`, in isr_return, that reads the CS of
    the frame), both ends included. Only faults on the mapped region count (the program
    prints its bounds); the first of them also allocates the page-table page. REP string
    instructions count once per iteration, as the counter counts them.
(b) mmap + touch + munmap: `vm cycle N P` maps P anonymous pages, writes each, unmaps them,
    N times; the cost per page is the difference of the exact instruction counts of two
    runs (N1 and N2 cycles) / ((N2 - N1) * P), which cancels boot, start and exit. User
    mode included (the loop, musl's wrappers): everything one page costs the program.
(c) fork + exit + wait: `vm fork N 16` touches 16 MiB of anonymous memory, then N times
    forks a child that exits at once and waits for it; per fork by the same difference.
(e) preemption: `spin race 6 200000` (tests/programs/spin.c: parent and child each run 6
    rounds of CPU-bound work and print a line per round) at preempt_hz=PREEMPT_HZ. A tick
    from ring 3 is measured as the faults of (a) are, from its delivery to the `iretq` back
    to ring 3; when that `iretq` runs in another address space, the tick preempted the
    process: the interrupt, a switch through the scheduler (FPU state, FS base, CR3) and
    the return into the other process. A tick that finds nobody waiting (the other
    process asleep in wait4) stops the timer until a process waits again, so a
    single-process run (`vm touch`) takes no tick at all.
(d) host slowdown: wall time of `emu exec PROGRAM ARGS` (the whole command: Python start,
    kernel boot, the program, exit) against the native run of the same executable
    (pinned as the differential tests pin it), medians of interleaved rounds; also the
    emulated run alone (`Machine.run()`) and its rate in guest MIPS.

Targets (issue 11): (a) at most 1,500 instructions per demand-zero fault (judged on the
median of the region's faults). Instruction counts are exact and deterministic (checked:
two runs of (a) must agree), so (a)-(c) run once; (d) is timed. Prints Markdown tables and
writes bench/processes_results.json.
"""
from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

from capstone import CS_ARCH_X86, CS_MODE_64, Cs
from unicorn import x86_const as X

from emu.build import build_guest, build_program
from emu.events import ExceptionDelivered, Observer
from emu.machine import Machine, MachineConfig
from emu.workloads.process import HostConsole, ProgramSpec, run_program
from emu.x86 import PAGE_FAULT
from common import host, interleaved_rounds, quick_main

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "processes_results.json"
VM = Path(__file__).resolve().parent / "programs" / "vm.c"
TARGET_FAULT = 1_500
TOUCH_PAGES = 1_000
CYCLES = {1: (1_000, 2_000), 64: (100, 200)}           # pages per cycle: (N1, N2)
QUICK_CYCLES = {1: (100, 200), 64: (10, 20)}
FORK_MIB = 16
FORKS = (20, 40)
PREEMPT_HZ = 10_000            # a tick every 10,000 instructions: about 1,000 in the race
RACE = ("race", "6", "200000")
QUICK_RACE = ("race", "2", "50000")
QUICK_FORKS = (2, 4)
# (d): a memory hog (24 MiB, sequential then random touch) and musl's malloc under stress.
SLOWDOWN = (("memhog", ("24",)), ("malloc_stress", ("3000",)))
QUICK_SLOWDOWN = (("memhog", ("4",)),)
BUDGET = 5_000_000_000


class ReturnTimer(Observer):
    """Instructions from the delivery of `vector` from ring 3 to the `iretq` back to ring 3
    (perhaps into another process), both included. `spans` holds (CR2, switched,
    instructions): switched when CR3 at the `iretq` is not CR3 at the delivery. Another
    exception delivered in between abandons the measurement (none can be: the kernel's
    handlers run with interrupts off, so a tick lands between faults)."""

    def __init__(self, vector: int) -> None:
        self.vector = vector
        self.spans: list[tuple[int, bool, int]] = []
        self._start: tuple[int, int, int] | None = None
        self._machine: Machine | None = None

    def on_exception(self, event: ExceptionDelivered) -> None:
        if event.vector == self.vector and event.cpl == 3:
            self._start = (event.icount, event.cr2 or 0, self._machine.cpu.cr3())
        else:
            self._start = None

    def attach(self, machine: Machine) -> None:
        self._machine = machine
        machine.hooks.on_execute(_iretq_address(machine), self._on_iretq)

    def _on_iretq(self, uc, address: int, size: int, _data) -> None:
        if self._start is None:
            return
        cpu = self._machine.cpu
        frame_cs = int.from_bytes(cpu.read_virtual(uc.reg_read(X.UC_X86_REG_RSP) + 8, 8),
                                  "little")
        if frame_cs & 3 == 3:
            started, cr2, cr3 = self._start
            self.spans.append((cr2, cpu.cr3() != cr3, cpu.time_stamp(address) - started + 1))
            self._start = None


def differential():
    """tests/differential.py: how the tests pin a native run, and our kernel's facts."""
    sys.path.insert(0, str(ROOT / "tests"))
    import differential as module
    return module


def _iretq_address(machine: Machine) -> int:
    """The kernel's one `iretq`: the end of isr_return (guest/arch/x86_64/isr.S)."""
    start = machine.symbols.address_of("isr_return")
    if start is None:
        raise RuntimeError("the kernel has no isr_return symbol")
    code = machine.cpu.read_virtual(start, 128)
    for address, _size, mnemonic, _ in Cs(CS_ARCH_X86, CS_MODE_64).disasm_lite(code, start):
        if mnemonic == "iretq":
            return address
    raise RuntimeError("no iretq within 128 bytes of isr_return")


def _run(kernel: Path, program: Path, args: tuple[str, ...], observers=(), attach=None,
         cmdline: str = ""):
    """One run of `program args` as the first process; (instructions, stdout, seconds)."""
    out, err = bytearray(), bytearray()
    result = run_program(ProgramSpec(program, args),
                         MachineConfig(kernel=kernel, max_instructions=BUDGET, cmdline=cmdline),
                         HostConsole(out.extend, err.extend), list(observers), attach=attach)
    if result.status != 0:
        raise RuntimeError(f"{program.name} {' '.join(args)} ended with status "
                           f"{result.status} ({result.run.message}): {bytes(err)!r}")
    return result.run.instructions, bytes(out), result.run.seconds


def demand_zero(kernel: Path, vm: Path) -> dict:
    runs = []
    for _ in range(2):
        timer = ReturnTimer(PAGE_FAULT)
        _, out, _ = _run(kernel, vm, ("touch", str(TOUCH_PAGES)), [timer], timer.attach)
        runs.append(([(cr2, n) for cr2, _, n in timer.spans], out))
    if runs[0] != runs[1]:
        raise RuntimeError("two runs of `vm touch` measured different faults: not "
                           "deterministic")
    faults, out = runs[0]
    low, high = (int(word, 16) for word in out.split()[1:3])
    region = [n for cr2, n in faults if low <= cr2 < high]
    if len(region) != TOUCH_PAGES:
        raise RuntimeError(f"{len(region)} faults on the region, {TOUCH_PAGES} expected")
    median = statistics.median(region)
    return {"pages": TOUCH_PAGES, "faults_on_region": len(region),
            "median": median, "min": min(region), "max": max(region),
            "first": region[0], "steady": statistics.median(region[1:]),
            "histogram": {str(n): region.count(n) for n in sorted(set(region))},
            "other_faults_of_the_run": [n for cr2, n in faults if not low <= cr2 < high],
            "target": TARGET_FAULT, "met": median <= TARGET_FAULT}


def per_step(kernel: Path, vm: Path, args, n1: int, n2: int) -> dict:
    """Instructions per step of `vm MODE N ...` from runs with N1 and N2 steps."""
    i1 = _run(kernel, vm, (args[0], str(n1), *args[1:]))[0]
    i2 = _run(kernel, vm, (args[0], str(n2), *args[1:]))[0]
    return {"n": [n1, n2], "instructions": [i1, i2], "per_step": (i2 - i1) / (n2 - n1)}


def ticks_of(kernel: Path, program: Path, args: tuple[str, ...]) -> list[tuple[bool, int]]:
    """(switched, instructions) of each tick from ring 3 of `program args` at
    preempt_hz=PREEMPT_HZ."""
    timer = ReturnTimer(differential().TIMER_VECTOR)
    _run(kernel, program, args, [timer], timer.attach, cmdline=f"preempt_hz={PREEMPT_HZ}")
    return [(switched, n) for _, switched, n in timer.spans]


def ticks(kernel: Path, program: Path, args: tuple[str, ...]) -> dict:
    """The ticks of `program args` by whether they switched to another process:
    {"switch"|"alone": {"ticks", "median", "min", "max"}}. A tick that finds nobody waiting
    also stops the timer until somebody does."""
    spans = ticks_of(kernel, program, args)
    out = {}
    for name, switched in (("switch", True), ("alone", False)):
        found = [n for s, n in spans if s == switched]
        if found:
            out[name] = {"ticks": len(found), "median": statistics.median(found),
                         "min": min(found), "max": max(found)}
    return out


def _native(path: Path, args: tuple[str, ...]) -> tuple[float]:
    _pin_limits = differential()._pin_limits
    started = time.perf_counter()
    subprocess.run([str(path), *args], check=True, stdout=subprocess.DEVNULL,
                   preexec_fn=_pin_limits, env={})
    return (time.perf_counter() - started,)


def _emu_exec(path: Path, args: tuple[str, ...]) -> tuple[float]:
    emu = Path(sys.executable).with_name("emu")
    started = time.perf_counter()
    subprocess.run([str(emu), "exec", str(path), *args], check=True,
                   stdout=subprocess.DEVNULL)
    return (time.perf_counter() - started,)


def slowdown(kernel: Path, cases, repeats: int) -> dict:
    out = {}
    for name, args in cases:
        path = build_program(ROOT / "tests" / "programs" / f"{name}.c")
        rounds = interleaved_rounds({
            "native": lambda: _native(path, args),
            "emu_exec": lambda: _emu_exec(path, args),
            "run_only": lambda: _run(kernel, path, args)[2:],
        }, repeats)
        median = {k: statistics.median(s[0] for s in v) for k, v in rounds.items()}
        instructions = _run(kernel, path, args)[0]
        out[f"{name} {' '.join(args)}"] = {
            "native_seconds": median["native"], "emu_exec_seconds": median["emu_exec"],
            "run_seconds": median["run_only"], "instructions": instructions,
            "guest_mips": instructions / median["run_only"] / 1e6,
            "slowdown": median["emu_exec"] / median["native"],
            "run_slowdown": median["run_only"] / median["native"],
            "samples_seconds": {k: [s[0] for s in v] for k, v in rounds.items()}}
    return out


def measure(quick: bool, repeats: int) -> dict:
    kernel, vm = build_guest(), build_program(VM)
    cycles = QUICK_CYCLES if quick else CYCLES
    forks = QUICK_FORKS if quick else FORKS
    cycle = {}
    for pages, (n1, n2) in cycles.items():
        step = per_step(kernel, vm, ("cycle", str(pages)), n1, n2)
        step["pages"] = pages
        step["per_page"] = step["per_step"] / pages
        cycle[str(pages)] = step
    fork = per_step(kernel, vm, ("fork", str(FORK_MIB)), *forks)
    fork["mib"] = FORK_MIB
    fork["per_resident_page"] = fork["per_step"] / (FORK_MIB << 20 >> 12)
    spin = build_program(ROOT / "tests" / "programs" / "spin.c")
    preemption = {"hz": PREEMPT_HZ, **ticks(kernel, spin, QUICK_RACE if quick else RACE),
                  "single_process_ticks": len(ticks_of(kernel, vm, ("touch", str(TOUCH_PAGES))))}
    return {"quick": quick, "repeats": repeats, "statistic": "median", "host": host(),
            "kernel": kernel.name, "machine": "pc, 256 MiB",
            "demand_zero_fault": demand_zero(kernel, vm),
            "mmap_touch_munmap": cycle, "fork_exit_wait": fork, "preemption": preemption,
            "slowdown": slowdown(kernel, QUICK_SLOWDOWN if quick else SLOWDOWN, repeats)}


def table(results: dict) -> str:
    f, fork = results["demand_zero_fault"], results["fork_exit_wait"]
    spread = ", ".join(f"{int(n):,} x{count}" for n, count in f["histogram"].items())
    lines = ["| benchmark | guest instructions | target | met |", "| --- | --- | --- | --- |",
             f"| (a) demand-zero fault, #PF entry to `iretq` (median of {f['pages']:,}: "
             f"{spread}) | {f['median']:,.0f} | <= {f['target']:,} | "
             f"{'**yes**' if f['met'] else '**no**'} |"]
    for pages, c in results["mmap_touch_munmap"].items():
        lines.append(f"| (b) anonymous mmap + touch + munmap of {pages} page(s), per page | "
                     f"{c['per_page']:,.0f} | - | - |")
    lines.append(f"| (c) fork + exit + wait of a process with {fork['mib']} MiB resident | "
                 f"{fork['per_step']:,.0f} ({fork['per_resident_page']:.0f} per page) | - | - |")
    preemption = results["preemption"]
    for label, key in (("(e) a tick that preempts one CPU-bound process for another, tick "
                        "entry to the other's `iretq`", "switch"),
                       ("(e') a tick that finds nobody waiting (and stops the timer)",
                        "alone")):
        t = preemption.get(key)
        if t is not None:
            lines.append(f"| {label} (median of {t['ticks']:,} at {preemption['hz']:,} Hz; "
                         f"{t['min']:,} to {t['max']:,}) | {t['median']:,.0f} | - | - |")
    lines.append(f"| (e'') ticks in a single-process run (`vm touch`) | "
                 f"{preemption['single_process_ticks']} | - | - |")
    lines += ["", "| (d) program | native | `emu exec` | slowdown | emulated run alone | "
              "guest instructions | guest MIPS |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, s in results["slowdown"].items():
        lines.append(f"| `{name}` | {s['native_seconds']:.3f} s | {s['emu_exec_seconds']:.2f} s "
                     f"| **{s['slowdown']:.0f}x** | {s['run_seconds']:.2f} s "
                     f"({s['run_slowdown']:.0f}x) | {s['instructions']:,} | "
                     f"{s['guest_mips']:.0f} |")
    note = (f"\n(d): medians of {results['repeats']} interleaved rounds on "
            f"{results['host']['cpus']} CPUs (load average "
            f"{results['host']['load_average'][0]:.2f}).")
    return "\n".join(lines) + "\n" + note


def main(argv: list[str] | None = None) -> int:
    return quick_main(argv, __doc__, RESULTS, measure, table, 7,
                      quick_help="fewer cycles and forks, one small program timed, "
                                 "3 rounds (for the test)",
                      repeats_help="rounds of (d)")


if __name__ == "__main__":
    sys.exit(main())
