#!/usr/bin/env python
"""Snapshot costs: taking and restoring a snapshot in memory, and saving one to a file, on
a 256 MiB and a 64 GiB `pc` machine.

    python bench/snapshot.py [--quick] [--repeats N] [--json PATH]

For each size the project's kernel boots with `selftest=pmm` (the PMM's self-tests touch
memory well after boot). The machine advances to the checkpoint after mm_init plus 10,000
instructions, takes a snapshot, runs 2,000,000 instructions more (the guest writes to RAM
and page tables meanwhile), and restores; this repeats `repeats` times on the same machine
(medians reported). "resident" is the guest RAM the snapshot holds (the pages copied back
on restore: RAM the guest never touched costs nothing); "file" is the size of the snapshot
file (`emu run --save-snapshot`, pages zlib-compressed). Every restore is checked: the
instruction count and the RAM read back match the snapshot.

Writes bench/snapshot_results.json and prints a Markdown table.
"""
from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

from emu.build import build_guest
from emu.machine import Machine, MachineConfig
from emu.snapshot import load, save
from common import host, quick_main

SIZES = {"256 MiB": 256 << 20, "64 GiB": 64 << 30}
AHEAD = 2_000_000


def measure(kernel: Path, memory: int, repeats: int) -> dict:
    machine = Machine(MachineConfig(kernel=kernel, memory=memory, cmdline="selftest=pmm"))
    start = _after_mm_init(kernel, memory)
    assert machine.advance(start)
    takes, restores, resident = [], [], 0
    for _ in range(repeats):
        began = time.perf_counter()
        snapshot = machine.snapshot()
        takes.append(time.perf_counter() - began)
        resident = snapshot.resident_bytes()
        probe = machine.memory.read(0x100000, 4096)
        assert machine.advance(machine.cpu.icount() + AHEAD)
        began = time.perf_counter()
        machine.restore(snapshot)
        restores.append(time.perf_counter() - began)
        assert machine.cpu.icount() == start and machine.memory.read(0x100000, 4096) == probe
        snapshot.close()
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "bench.emusnap"
        began = time.perf_counter()
        size = save(machine, path, {})
        saving = time.perf_counter() - began
        fresh = Machine(MachineConfig(kernel=kernel, memory=memory, cmdline="selftest=pmm"))
        began = time.perf_counter()
        load(path).apply(fresh)
        loading = time.perf_counter() - began
        assert fresh.cpu.icount() == start
    return {"memory": memory, "snapshot_at": start, "resident_bytes": resident,
            "take_seconds": statistics.median(takes),
            "restore_seconds": statistics.median(restores), "file_bytes": size,
            "save_seconds": saving, "load_seconds": loading}


def _after_mm_init(kernel: Path, memory: int) -> int:
    """The instruction count 10,000 after the mm_init checkpoint (port 0xf0)."""
    from emu.events import Checkpoint, Observer

    class First(Observer):
        at = None

        def on_checkpoint(self, event: Checkpoint) -> None:
            self.at = self.at if self.at is not None else event.icount
    first = First()
    machine = Machine(MachineConfig(kernel=kernel, memory=memory, cmdline="selftest=pmm"),
                      [first])
    machine.stop_at(icount=60_000_000)
    machine.run()
    return first.at + 10_000


def table(results: dict) -> str:
    rows = ["| machine | resident RAM held | take | restore | file | save | load |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in results["machines"].items():
        rows.append(f"| {name} | {r['resident_bytes'] / 2**20:.1f} MiB | "
                    f"{r['take_seconds'] * 1e3:.1f} ms | {r['restore_seconds'] * 1e3:.1f} ms | "
                    f"{r['file_bytes'] / 2**20:.2f} MiB | {r['save_seconds'] * 1e3:.0f} ms | "
                    f"{r['load_seconds'] * 1e3:.0f} ms |")
    return "\n".join(rows)


def measure_all(quick: bool, repeats: int) -> dict:
    kernel = build_guest()
    return {"host": host(), "repeats": repeats, "quick": quick,
            "machines": {name: measure(kernel, size, repeats) for name, size in SIZES.items()}}


def main(argv: list[str]) -> int:
    return quick_main(argv, __doc__, Path(__file__).with_name("snapshot_results.json"),
                      measure_all, table, 9, quick_help="3 repeats", repeats_help="repeats")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
