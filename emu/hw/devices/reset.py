"""The reset control register at port 0xCF9 (Intel ICH/PCH "RST_CNT"), which the ACPI FADT's
RESET_REG points at, and the reasons a machine can be reset.

Owns: RST_CNT's bits (SYS_RST bit 1, RST_CPU bit 2, FULL_RST bit 3) and turning a write that
sets RST_CPU into `on_reset(reason)`; `ResetReason`, shared with the 8042's reset line.
Does not own: what a reset does to the machine (the callback's owner stops or restarts it).
Port 0xCF9 sits inside the PCI CONFIG_ADDRESS dword (0xCF8-0xCFB): the PCI host forwards byte
accesses at 0xCF9 here (devices/pci.py).
"""
from __future__ import annotations

from enum import Enum
from typing import Callable

from emu.hw.bus import Device, Register

RESET_CONTROL_PORT = 0xCF9
SYS_RST, RST_CPU, FULL_RST = 0x02, 0x04, 0x08
FADT_RESET_VALUE = SYS_RST | RST_CPU          # 0x06, a hard reset


class ResetReason(Enum):
    CF9_SOFT = "soft reset through port 0xCF9 (INIT)"
    CF9_HARD = "hard reset through port 0xCF9"
    CF9_FULL = "full reset (power cycle) through port 0xCF9"
    KEYBOARD_CONTROLLER = "the 8042 keyboard controller pulsed the reset line"


class ResetControl(Device):
    """A write with RST_CPU set resets: hard if SYS_RST, a power cycle if FULL_RST too, soft
    (INIT) otherwise. SYS_RST and FULL_RST are kept and read back; RST_CPU reads 0."""
    registers = (Register(0, "RST_CNT"),)

    def __init__(self, on_reset: Callable[[ResetReason], None],
                 name: str = "reset-control") -> None:
        super().__init__(name)
        self.on_reset = on_reset
        self.value = 0

    def read(self, offset: int, size: int) -> int:
        return self.value

    def write(self, offset: int, size: int, value: int) -> None:
        self.value = value & (SYS_RST | FULL_RST)
        if not value & RST_CPU:
            return
        if value & FULL_RST:
            self.on_reset(ResetReason.CF9_FULL)
        elif value & SYS_RST:
            self.on_reset(ResetReason.CF9_HARD)
        else:
            self.on_reset(ResetReason.CF9_SOFT)
