"""Time travel without a debugger (emu/gdb/travel.py): breakpoints stop before their
instruction in both directions, a watchpoint watches physical bytes (a store through another
mapping of the frame triggers it), reverse steps and continues land on exact instruction
counts, and going back past every hit reaches the start."""
from __future__ import annotations

import pytest

from pathlib import Path

from unicorn import x86_const as X

from emu.gdb.travel import StopKind, TimeTravel, WatchKind
from emu.machine import Machine, MachineConfig

ROOT = Path(__file__).resolve().parent.parent
SHORT = ROOT / "traces" / "malloclab" / "short1-bal.rep"


def build(kernel) -> tuple[Machine, TimeTravel]:
    machine = Machine(MachineConfig(kernel=kernel, modules=(SHORT,),
                                    cmdline="replay=1 heap=chained"))
    return machine, TimeTravel(machine, chunk=50_000)


def rip(machine: Machine) -> int:
    return machine.cpu.reg(X.UC_X86_REG_RIP)


def test_breakpoints_both_ways_and_back_to_the_start(kernel):
    machine, travel = build(kernel)
    try:
        kfree = machine.symbols.address_of("kfree")
        travel.breakpoints.add(kfree)
        first = travel.cont()
        assert first.kind is StopKind.BREAKPOINT and rip(machine) == kfree
        at_first = travel.icount()
        assert travel.step().kind is StopKind.STEP and travel.icount() == at_first + 1
        assert travel.cont().kind is StopKind.BREAKPOINT and rip(machine) == kfree
        at_second = travel.icount()
        assert at_second > at_first + 1
        assert travel.reverse_cont().kind is StopKind.BREAKPOINT
        assert travel.icount() == at_first and rip(machine) == kfree
        assert travel.reverse_step().kind is StopKind.STEP
        assert travel.icount() == at_first - 1
        travel.breakpoints.clear()
        assert travel.reverse_cont().kind is StopKind.BEGIN and travel.icount() == 0
        assert travel.cont().kind is StopKind.ENDED
    finally:
        travel.close()


def test_a_watchpoint_on_an_alias_catches_stores_through_the_heap_mapping(kernel):
    machine, travel = build(kernel)
    try:
        travel.breakpoints.add(machine.symbols.address_of("kfree"))
        assert travel.cont().kind is StopKind.BREAKPOINT
        block = machine.cpu.reg(X.UC_X86_REG_RDI)              # kfree(p): a live block
        freed_at = travel.icount()
        paddr = machine.cpu.state.translate(block)
        alias = machine.boot.hhdm_offset + paddr               # the same frame, by the HHDM
        assert alias != block
        travel.breakpoints.clear()
        travel.watch(alias, 8, WatchKind.WRITE)
        stop = travel.reverse_cont()
        assert stop.kind is StopKind.WATCHPOINT and stop.address == alias
        writer = travel.icount()
        assert writer < freed_at
        before = machine.memory.read(paddr, 8)
        assert travel.step().kind is StopKind.WATCHPOINT       # the stepped store hits
        assert travel.icount() == writer + 1
        assert machine.memory.read(paddr, 8) != before
    finally:
        travel.close()
