#!/usr/bin/env python
"""Monitor benchmarks, reported as ratios measured in one run.

    python bench/run.py [--quick] [--repeats N] [--json PATH]

(a) compute: the guest kernel with `test=compute` (a sieve of Eratosthenes, about 37 M
    instructions) under the monitor (`Machine.run()`, construction excluded) against bare
    Unicorn running the same kernel from the same RAM and boot registers with no monitor
    hooks (only port I/O for the UART and the debug exit, and an INTR hook that stops).
    Both runs must print the same serial text and exit with 0, so the monitor runs without
    the PC platform (bare Unicorn has none, and our kernel sets the platform up when it is
    there; bench/pc_platform.py measures what the platform costs); the monitor's
    instruction count is used for both MIPS figures.
(b) page faults: a loop on a 128 MiB BareMachine (tests/bare.py) touching N distinct
    not-present pages; the guest's #PF handler (reached through the IDT, delivered by the
    monitor) maps the page and iretq retries the store.
(c) bare Unicorn MIPS on the compute code against the 127 M instructions/s of
    docs/BENCHMARKS.md (that figure is for fib, not this sieve).

Diagnostics (same loop): bare Unicorn plus one monitor ingredient at a time (the C
instruction counter; a C block hook that only counts blocks, the floor any per-block counter
pays in Unicorn 2.1; an unbounded unmapped-memory hook, which emu/bus.py avoids by bounding
its hooks to the holes), to show where the monitor's time goes.

Machines are shared and noisy: variants are interleaved (the order rotates every round),
each is repeated, and the median is reported. Prints a Markdown table and writes
bench/results.json.
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import statistics
import sys
import time
from pathlib import Path


from capstone import CS_ARCH_X86, CS_MODE_64, Cs
from unicorn import (UC_ARCH_X86, UC_HOOK_INSN, UC_HOOK_INTR, UC_HOOK_MEM_FETCH_PROT,
                     UC_HOOK_MEM_UNMAPPED, UC_MODE_64, Uc)
from unicorn import x86_const as X

from emu.arch import paging
from emu.bare import PD, BareMachine, P, W
from emu.boot import limine, loader
from emu.build import build_guest
from emu.cpu import NOWHERE
from emu.engine import icount
from emu.engine.icount import InstructionCounter
from emu.hw import memmap as memmaps
from emu.hw.devices.pc import COM1, DEBUG_EXIT_PORT, Uart16550
from emu.hw.memory import PhysicalMemory
from emu.machine import Machine, MachineConfig

from common import host, interleaved_rounds, publish

DESCRIPTIONS = {
    "bare+blockhook": "bare + a C block hook that only counts blocks (the floor of any counter)",
    "bare+icount": "bare + the C instruction counter (UC_HOOK_BLOCK)",
    "bare+memhook": "bare + an unbounded UNMAPPED\\|FETCH_PROT hook (what emu/bus.py avoids)",
}
RESULTS = Path(__file__).resolve().parent / "results.json"
CMDLINE = "test=compute"
COMPUTE_MARKER = "test compute:"
TARGET_RATIO = 0.9
TARGET_FAULTS_PER_S = 40_000
FULL_ROUND_TRIP_FAULTS_PER_S = 7_000       # docs/BENCHMARKS.md: about 140 us per fault
REFERENCE_BARE_MIPS = 127.0                # docs/BENCHMARKS.md: bare Unicorn, fib, zig cc -O2
MEMORY_HOOK = UC_HOOK_MEM_UNMAPPED | UC_HOOK_MEM_FETCH_PROT   # what emu/bus.py installs


# ---- (a) and (c): the compute kernel ----------------------------------------------------

class BareKernel:
    """The kernel booted exactly as Machine boots it (same memory map, RAM, loader, boot
    registers), on a Unicorn with none of the monitor's hooks. `extras` adds one monitor
    ingredient for the diagnostics: "icount" (the C block counter), "blockhook" (a C block
    hook that only counts blocks), "memhook" (an unbounded UNMAPPED|FETCH_PROT hook, which
    the bus avoids by bounding its hooks to the physical ranges that are not RAM)."""

    def __init__(self, kernel: Path, extras: tuple[str, ...] = ()) -> None:
        config = MachineConfig(kernel, cmdline=CMDLINE)
        memmap = memmaps.resolve_memmap(config.memmap, config.memory)
        self.uc = uc = Uc(UC_ARCH_X86, UC_MODE_64)
        self.memory = PhysicalMemory(uc)
        for base, length in memmap.backed_ranges():
            self.memory.add(base, length)
        boot_config = loader.BootConfig(cmdline=config.cmdline, boot_time=config.boot_time,
                                        framebuffer=config.framebuffer)
        self.boot = loader.boot(kernel, self.memory, memmap, boot_config)
        limine.enter_kernel(uc, self.boot)
        self.uart = Uart16550()
        self.exit_value: int | None = None
        self.interrupt: int | None = None
        uc.hook_add(UC_HOOK_INSN, self._out, None, 1, 0, X.UC_X86_INS_OUT)
        uc.hook_add(UC_HOOK_INSN, self._in, None, 1, 0, X.UC_X86_INS_IN)
        uc.hook_add(UC_HOOK_INTR, self._intr)
        self.counter = None
        if "icount" in extras:
            self._disasm = Cs(CS_ARCH_X86, CS_MODE_64)
            self.counter = InstructionCounter(uc, self._count_block)
        if "memhook" in extras:
            uc.hook_add(MEMORY_HOOK, _no_memory)
        if "blockhook" in extras:
            self._blocks = _install_block_floor(uc)

    def _out(self, uc, port, size, value, _data) -> None:
        if port == DEBUG_EXIT_PORT:
            self.exit_value = value
            uc.emu_stop()
        elif COM1 <= port < COM1 + 8:
            self.uart.write(port - COM1, size, value)

    def _in(self, uc, port, size, _data) -> int:
        if COM1 <= port < COM1 + 8:
            return self.uart.read(port - COM1, size)
        return 0

    def _intr(self, uc, vector, _data) -> None:
        self.interrupt = vector
        uc.emu_stop()

    def _count_block(self, address: int, size: int) -> int:
        cr3 = self.uc.reg_read(X.UC_X86_REG_CR3)
        code = b""
        while len(code) < size:
            vaddr = address + len(code)
            chunk = min(size - len(code), 0x1000 - (vaddr & 0xFFF))
            paddr = paging.walk(self.memory.read_u64, cr3, vaddr).paddr
            code += self.memory.read(paddr, chunk)
        return sum(1 for _ in self._disasm.disasm_lite(code, address)) or 1

    def run(self) -> float:
        started = time.perf_counter()
        self.uc.emu_start(self.boot.entry, NOWHERE)
        seconds = time.perf_counter() - started
        if self.exit_value != 0 or self.interrupt is not None:
            raise RuntimeError(f"bare run ended with exit {self.exit_value}, "
                               f"interrupt {self.interrupt}")
        return seconds

    def serial(self) -> str:
        uart = self.uart
        return "\n".join(uart.lines) + ("\n" + uart.partial if uart.partial else "")


def _no_memory(uc, access, address, size, value, _data) -> bool:
    return False


def _install_block_floor(uc) -> ctypes.Array:
    """icount.c's block-counting hook: the least a UC_HOOK_BLOCK costs. Returns the
    counter's memory (first field: blocks executed), which must outlive the hook."""
    memory = icount.new_counter_memory()
    icount.hook_blocks(uc, "icount_block_floor", memory)
    return memory


def monitor_run(kernel: Path, count: bool = True, platform: bool = True
                ) -> tuple[float, int, str]:
    """Machine.run() timed alone (construction excluded); `count=False` is `--no-count`,
    `platform=False` is `--no-platform`."""
    machine = Machine(MachineConfig(kernel, cmdline=CMDLINE, count_instructions=count,
                                    platform=platform))
    gc.collect()
    started = time.perf_counter()
    result = machine.run()
    seconds = time.perf_counter() - started
    if result.reason != "exit" or result.guest_value != 0:
        raise RuntimeError(f"monitor run ended with {result.reason}: {result.message}")
    return seconds, result.instructions, machine.serial_output()


def bare_run(kernel: Path, extras: tuple[str, ...] = ()) -> tuple[float, int | None, str]:
    bare = BareKernel(kernel, extras)
    gc.collect()
    seconds = bare.run()
    count = bare.counter.raw if bare.counter is not None else None
    if "blockhook" in extras:       # blocks, not instructions
        count = ctypes.c_uint64.from_buffer(bare._blocks).value
    return seconds, count, bare.serial()


# ---- (b) page faults --------------------------------------------------------------------

BIG_RAM = 128 << 20
DEMAND_BASE = 16 << 20           # first demand-paged virtual (= physical) page
DEMAND_TABLES = 0x600000         # their page tables: inside the identity-mapped first 8 MiB


class BigBareMachine(BareMachine):
    """BareMachine with 128 MiB of RAM and `pages` not-present 4 KiB pages from 16 MiB on,
    identity-mapped once present. Their page tables are contiguous at DEMAND_TABLES, so the
    PTE of virtual v is at DEMAND_TABLES + 8 * ((v - DEMAND_BASE) >> 12)."""

    def __init__(self, pages: int, platform: bool = False) -> None:
        tables = -(-pages // 512)
        if DEMAND_BASE + pages * 4096 > BIG_RAM or DEMAND_TABLES + tables * 4096 > 8 << 20:
            raise ValueError(f"{pages} demand pages do not fit in {BIG_RAM >> 20} MiB")
        super().__init__(ram=BIG_RAM, platform=platform)
        first_pde = DEMAND_BASE >> 21
        for i in range(tables):      # PTEs start zero: not present
            self.u64(PD + 8 * (first_pde + i), (DEMAND_TABLES + 0x1000 * i) | P | W)


def page_fault_run(pages: int, platform: bool = False) -> tuple[float, int, int]:
    """(seconds of run(), #PFs delivered, instructions retired); `platform`: with the PC
    platform's devices on the bus and its interrupt controller on the CPU."""
    machine = BigBareMachine(pages, platform)
    main = f"""
        mov rcx, {pages}
        mov rax, {DEMAND_BASE}
    touch:
        mov qword ptr [rax], rcx
        add rax, 4096
        dec rcx
        jnz touch
        hlt
    """
    handler = f"""
        push rax
        push rbx
        mov rax, cr2
        mov rbx, rax
        sub rbx, {DEMAND_BASE}
        shr rbx, 12
        and rax, -4096
        or rax, 3
        mov qword ptr [{DEMAND_TABLES} + rbx*8], rax
        pop rbx
        pop rax
        add rsp, 8
        iretq
    """
    labels = machine.load(main, pf=handler)
    machine.gate(14, labels["pf"])
    machine.boot()
    gc.collect()
    started = time.perf_counter()
    outcome = machine.run(budget=100 * pages + 1000)
    seconds = time.perf_counter() - started
    faults = machine.cpu.exceptions_by_vector.get(14, 0)
    if outcome != "halt" or faults != pages or set(machine.cpu.exceptions_by_vector) != {14}:
        raise RuntimeError(f"page-fault loop ended with {outcome}, "
                           f"exceptions {machine.cpu.exceptions_by_vector}")
    for n in (0, pages // 2, pages - 1):      # every store landed in its own page
        if machine.memory.read_u64(DEMAND_BASE + 4096 * n) != pages - n:
            raise RuntimeError(f"demand page {n} does not hold its value")
    return seconds, faults, machine.cpu.icount()


# ---- the run ----------------------------------------------------------------------------

def measure(quick: bool, repeats: int, pages: int, diagnostics: bool) -> dict:
    kernel = build_guest()
    variants = {
        "monitor": lambda: monitor_run(kernel, platform=False),
        "monitor_no_count": lambda: monitor_run(kernel, count=False, platform=False),
        "bare": lambda: bare_run(kernel),
        "page_faults": lambda: page_fault_run(pages),
    }
    if diagnostics:
        variants.update({
            "bare+blockhook": lambda: bare_run(kernel, ("blockhook",)),
            "bare+icount": lambda: bare_run(kernel, ("icount",)),
            "bare+memhook": lambda: bare_run(kernel, ("memhook",)),
        })
    names = list(variants)
    outputs = interleaved_rounds(variants, repeats)
    samples = {name: [out[0] for out in runs] for name, runs in outputs.items()}
    details = {name: runs[-1] for name, runs in outputs.items()}
    median = {name: statistics.median(values) for name, values in samples.items()}
    fastest = {name: min(values) for name, values in samples.items()}

    _, instructions, _ = details["monitor"]
    bare_serial = details["bare"][2]
    if COMPUTE_MARKER not in bare_serial:
        raise RuntimeError(f"the guest did not print {COMPUTE_MARKER!r}")
    for name, out in details.items():      # every compute variant ran the same code
        if name != "page_faults" and out[2] != bare_serial:
            raise RuntimeError(f"{name} printed other serial output than bare Unicorn")
    compute_line = next(line for line in bare_serial.splitlines() if COMPUTE_MARKER in line)
    monitor_s, bare_s = median["monitor"], median["bare"]
    bare_mips = instructions / bare_s / 1e6
    pf_s = median["page_faults"]
    _, faults, pf_instructions = details["page_faults"]
    faults_per_s = faults / pf_s

    results = {
        "quick": quick,
        "repeats": repeats,
        "statistic": "median",
        "host": host(),
        "compute": {
            "kernel": kernel.name,
            "cmdline": CMDLINE,
            "guest_result": compute_line,
            "instructions": instructions,
            "monitor_seconds": monitor_s,
            "bare_seconds": bare_s,
            "monitor_mips": instructions / monitor_s / 1e6,
            "bare_mips": bare_mips,
            "ratio": bare_s / monitor_s,
            "ratio_of_fastest_runs": fastest["bare"] / fastest["monitor"],
            "no_count_seconds": median["monitor_no_count"],
            "no_count_ratio": bare_s / median["monitor_no_count"],
            "target_ratio": TARGET_RATIO,
        },
        "page_faults": {
            "faults": faults,
            "seconds": pf_s,
            "faults_per_second": faults_per_s,
            "us_per_fault": pf_s / faults * 1e6,
            "instructions": pf_instructions,
            "instructions_per_fault": pf_instructions / faults,
            "target_faults_per_second": TARGET_FAULTS_PER_S,
            "ratio_to_target": faults_per_s / TARGET_FAULTS_PER_S,
            "full_round_trip_faults_per_second": FULL_ROUND_TRIP_FAULTS_PER_S,
            "ratio_to_full_round_trip": faults_per_s / FULL_ROUND_TRIP_FAULTS_PER_S,
        },
        "bare_reference": {
            "bare_mips": bare_mips,
            "reference_mips": REFERENCE_BARE_MIPS,
            "ratio": bare_mips / REFERENCE_BARE_MIPS,
            "note": "reference is bare Unicorn on fib; this workload is a sieve",
        },
        "fastest_seconds": fastest,
        "samples_seconds": samples,
    }
    if diagnostics:
        counted = details["bare+icount"][1]     # the counter does not change what runs
        results["compute"]["bare_instructions_counted"] = counted
        results["compute"]["same_instruction_count"] = counted == instructions
        blocks = details["bare+blockhook"][1]
        results["compute"]["blocks_executed"] = blocks
        results["diagnostics"] = {
            name: {"seconds": median[name], "ratio_bare_over_this": bare_s / median[name],
                   "fastest_seconds": fastest[name],
                   "ns_per_block_over_bare": (median[name] - bare_s) / blocks * 1e9,
                   "ratio_of_fastest_runs": fastest["bare"] / fastest[name],
                   "instructions_counted": details[name][1]}
            for name in names if name not in ("monitor", "monitor_no_count", "bare",
                                              "page_faults")}
    return results


def table(results: dict) -> str:
    c, p, r = results["compute"], results["page_faults"], results["bare_reference"]
    lines = [
        "| benchmark | measured | reference | ratio |",
        "| --- | --- | --- | --- |",
        f"| (a) monitor vs bare Unicorn, `test=compute` ({c['instructions'] / 1e6:.1f} M "
        f"instructions) | monitor {c['monitor_seconds']:.3f} s ({c['monitor_mips']:.0f} MIPS), "
        f"bare {c['bare_seconds']:.3f} s ({c['bare_mips']:.0f} MIPS) | target >= "
        f"{c['target_ratio']} | {c['ratio']:.2f} (bare time / monitor time; fastest runs "
        f"{c['ratio_of_fastest_runs']:.2f}) |",
        f"| (a') the same with `--no-count` (no instruction counter) | monitor "
        f"{c['no_count_seconds']:.3f} s | target >= {c['target_ratio']} | "
        f"{c['no_count_ratio']:.2f} |",
        f"| (b) #PF round trips, {p['faults']:,} distinct pages | {p['faults_per_second']:,.0f} "
        f"faults/s ({p['us_per_fault']:.1f} us, {p['instructions_per_fault']:.1f} instructions "
        f"per fault) | target {p['target_faults_per_second']:,}/s; full-register round trip "
        f"{p['full_round_trip_faults_per_second']:,}/s | {p['ratio_to_target']:.2f} of target; "
        f"{p['ratio_to_full_round_trip']:.1f}x full round trip |",
        f"| (c) bare Unicorn on the compute code | {r['bare_mips']:.0f} M instructions/s | "
        f"{r['reference_mips']:.0f} M/s (fib, docs/BENCHMARKS.md) | {r['ratio']:.2f} |",
    ]
    if "diagnostics" in results:
        fastest = results["fastest_seconds"]
        per_block = 1e9 / c["blocks_executed"]
        lines += ["", f"| compute kernel variant ({c['blocks_executed'] / 1e6:.1f} M blocks) | "
                  "median s | bare / this | fastest s | bare / this (fastest) | ns per block "
                  "over bare |", "| --- | --- | --- | --- | --- | --- |",
                  f"| bare Unicorn | {c['bare_seconds']:.3f} | 1.00 | {fastest['bare']:.3f} "
                  "| 1.00 | 0 |"]
        for name, d in results["diagnostics"].items():
            lines.append(f"| {DESCRIPTIONS.get(name, name)} | {d['seconds']:.3f} | "
                         f"{d['ratio_bare_over_this']:.2f} | {d['fastest_seconds']:.3f} | "
                         f"{d['ratio_of_fastest_runs']:.2f} | {d['ns_per_block_over_bare']:.2f} |")
        for label, seconds, ratio, fast, fast_ratio in (
                ("monitor (`Machine.run()`)", c["monitor_seconds"], c["ratio"],
                 fastest["monitor"], c["ratio_of_fastest_runs"]),
                ("monitor with `--no-count`", c["no_count_seconds"], c["no_count_ratio"],
                 fastest["monitor_no_count"], fastest["bare"] / fastest["monitor_no_count"])):
            lines.append(f"| {label} | {seconds:.3f} | {ratio:.2f} | {fast:.3f} | "
                         f"{fast_ratio:.2f} | {(seconds - c['bare_seconds']) * per_block:.2f} |")
    note = (f"\nMedians of {results['repeats']} interleaved runs on {results['host']['cpus']} "
            f"CPUs (load average {results['host']['load_average'][0]:.2f}); guest printed "
            f"\"{c['guest_result']}\".")
    return "\n".join(lines) + "\n" + note


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="3 rounds, 2,000 page faults, no diagnostics (for the test)")
    parser.add_argument("--repeats", type=int, help="rounds of every variant (default 11; 3 "
                        "with --quick)")
    parser.add_argument("--pages", type=int, help="pages touched by the #PF loop (default "
                        "20000; 2000 with --quick)")
    parser.add_argument("--no-diagnostics", action="store_true")
    parser.add_argument("--json", type=Path, default=RESULTS, help=f"default {RESULTS}")
    args = parser.parse_args(argv)
    repeats = args.repeats or (3 if args.quick else 11)
    if repeats < 3:
        parser.error("--repeats must be at least 3")
    pages = args.pages or (2000 if args.quick else 20_000)
    diagnostics = not (args.quick or args.no_diagnostics)
    started = time.perf_counter()
    results = measure(args.quick, repeats, pages, diagnostics)
    results["wall_seconds"] = time.perf_counter() - started
    publish(args.json, results, table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
