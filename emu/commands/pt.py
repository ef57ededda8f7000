"""`emu pt`: run a kernel and list an address space, like QEMU's `info mem`.

Owns: choosing the address space (the CR3 live at the end, `--cr3`, or the one live at the
Nth guest checkpoint) and printing it: one line per range of equal permissions and
contiguous frames, then the bytes mapped per permission, then (with a swap disk) the pages
swapped out, one line per run of consecutive pages in consecutive slots. Exit 0, or 2 when
there is no address space to list.
Does not own: walking page tables (emu/arch/paging.py).
"""
from __future__ import annotations

import argparse

from emu.arch.paging import MappedRange, mapped_ranges
from emu.commands import console
from emu.commands.options import add_machine_options, attach_injections, count, machine_config
from emu.errors import ConfigError, UnbackedAccess
from emu.events import Checkpoint, Observer
from emu.hw.memmap import format_size
from emu.machine import Machine
from emu.x86 import PAGE_SIZE, PTE_ADDRESS_MASK

NAME = "pt"
HELP = "run a kernel and list an address space (like QEMU's `info mem`)"


def add_arguments(pt: argparse.ArgumentParser) -> None:
    add_machine_options(pt)
    pt.add_argument("--cr3", type=lambda text: int(text, 0), default=None,
                    help="list the tables at this physical address (default: the CR3 live "
                         "at the end of the run)")
    pt.add_argument("--at-checkpoint", type=count, default=None, metavar="N",
                    help="list the address space live at the Nth guest checkpoint")


class _AtCheckpoint(Observer):
    """Takes the picture of the address space live at the Nth checkpoint."""

    def __init__(self, machine: Machine, wanted: int) -> None:
        self.machine = machine
        self.wanted = wanted
        self.seen = 0
        self.picture: tuple[int, str, list[MappedRange]] | None = None

    def on_checkpoint(self, event: Checkpoint) -> None:
        self.seen += 1
        if self.seen == self.wanted:
            cr3 = self.machine.cpu.cr3()
            self.picture = (cr3, f"at checkpoint #{self.seen} (number {event.number}, "
                                 f"instruction {event.icount:,})", _listing(self.machine, cr3))


def _listing(machine: Machine, cr3: int) -> list[MappedRange]:
    try:
        return mapped_ranges(machine.memory.read_u64, cr3, machine.cpu.nxe())
    except UnbackedAccess as exc:
        raise ConfigError(f"no page tables at CR3 {cr3:#x}: {exc}") from None


def execute(args) -> int:
    machine = Machine(machine_config(args))
    watcher = _AtCheckpoint(machine, args.at_checkpoint)
    if args.at_checkpoint:
        machine.events.subscribe(watcher)
    attach_injections(machine)
    result = machine.run()
    if args.at_checkpoint:
        if watcher.picture is None:
            raise ConfigError(f"the guest reached {watcher.seen} checkpoints, not "
                              f"{args.at_checkpoint}")
        cr3, when, ranges = watcher.picture
    elif args.cr3 is not None:
        cr3, when = args.cr3, "given with --cr3"
        ranges = _listing(machine, cr3)
    else:
        cr3, when = machine.cpu.cr3(), f"at the end of the run ({result.reason})"
        ranges = _listing(machine, cr3)
    console.err(f"--- {result.message}")       # only now: a refusal above is one line
    for line in address_space_lines(cr3, when, ranges):
        console.out(line)
    if machine.swap is not None:
        from emu.monitor.swapcheck import swapped_pages
        for line in swapped_lines(swapped_pages(machine, cr3 & PTE_ADDRESS_MASK)):
            console.out(line)
    return 0


def swapped_lines(pages: list[tuple[int, int]]) -> list[str]:
    """`swapped out: N pages`, then runs of consecutive pages in consecutive slots:
    start-end size -> slots A..B."""
    runs: list[list[int]] = []                       # [start, end, first slot, last slot]
    for vaddr, slot in pages:
        if runs and runs[-1][1] == vaddr and runs[-1][3] + 1 == slot:
            runs[-1][1], runs[-1][3] = vaddr + PAGE_SIZE, slot
        else:
            runs.append([vaddr, vaddr + PAGE_SIZE, slot, slot])
    lines = [f"swapped out: {len(pages)} pages ({format_size(len(pages) * PAGE_SIZE)})"]
    lines += [f"{start:016x}-{end:016x} {format_size(end - start):>16} -> "
              f"{'slot ' + str(first) if first == last else f'slots {first}..{last}'}"
              for start, end, first, last in runs]
    return lines


def address_space_lines(cr3: int, when: str, ranges: list[MappedRange]) -> list[str]:
    """The header, one line per range (MappedRange.describe: start-end size perms ->
    physical; perms w/r, u/s, x/-), and the bytes mapped per permission."""
    lines = [f"address space of CR3 {cr3:#x}, {when}: {len(ranges)} ranges",
             f"{'start':16} {'end':16} {'size':16} prm -> physical"]
    lines += [r.describe() for r in ranges]
    totals: dict[str, int] = {}
    for r in ranges:
        totals[r.perms] = totals.get(r.perms, 0) + r.end - r.start
    lines.append(f"mapped: {format_size(sum(totals.values()))}" +
                 "".join(f", {perms} {format_size(size)}"
                         for perms, size in sorted(totals.items())))
    return lines
