"""The CPU layer: Unicorn made to behave as an x86-64 CPU where it does not (exception and
interrupt delivery through the guest IDT, SYSCALL, the user-mode I/O permission check, a
virtual TSC), exact instruction counts, and the run loop.

May import: emu.x86, emu.arch, emu.errors, emu.events, emu.result, emu.engine, emu.hw.
Imported by: emu.monitor, emu.machine and above. Modules: core (Cpu, the run loop), state,
counting, system, delivery, syscall, iogate, interrupts, scan, tsc.
"""
from emu.cpu.core import NOWHERE, Cpu
from emu.cpu.state import Registers

__all__ = ["Cpu", "NOWHERE", "Registers"]
