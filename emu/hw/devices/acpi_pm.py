"""The ACPI fixed-hardware power management registers: the PM1a event block (PM1_STS,
PM1_EN), the PM1a control block (PM1_CNT) and the 32-bit power management timer, at one port
base (ACPI 6.x section 4.8 "ACPI Hardware Model": 4.8.3.1 PM1 Event Grouping, 4.8.3.2 PM1
Control Grouping, 4.8.3.3 Power Management Timer).

Owns: the status and enable bits and the SCI they raise, the PM timer's count on virtual time
and its TMR_STS (set each time bit 31 toggles), the power button, and sleep requests:
SLP_EN with SLP_TYP = the DSDT's `_S5_` value calls `on_power_off`.
Does not own: the FADT that tells the OS where these are (emu.hw.acpi), the reset register
(devices/reset.py), where the SCI goes (ISA IRQ 9, emu.hw.irq).

Layout (offsets from `PM_BASE` 0x600, the PM base QEMU's PC firmware programs, so the common
hard-coded `outw(0x604, 0x2000)` shutdown also works): PM1_STS 0x00 and PM1_EN 0x02 (PM1a_EVT_BLK,
4 bytes), PM1_CNT 0x04 (PM1a_CNT_BLK, 2 bytes), PM_TMR 0x08 (PM_TMR_BLK, 4 bytes, 32 bits:
the FADT sets TMR_VAL_EXT, so the timer wraps every 20 minutes rather than every 4.7 s).
No PM1b blocks, no PM2, no GPE blocks. The S5 sleep type is 0, as on QEMU's PC.
Modelled as documented behaviour, not refused:
- SCI_EN reads 1 and cannot be cleared: the FADT's SMI_CMD is 0, so the machine is always in
  ACPI mode (ACPI 4.8.2.5 "Legacy/ACPI Select").
- SLP_EN with any SLP_TYP other than S5 (S1-S4 sleep) is ignored: SLP_TYP is kept, SLP_EN
  reads 0. BM_STS, GBL_STS, RTC_STS and WAK_STS never set (no bus master, BIOS, RTC wake).
- Any access size is accepted at any offset; each byte goes to the register that holds it.
"""
from __future__ import annotations

from typing import Callable

from emu.hw.bus import Access, Device, Register
from emu.hw.clock import ACPI_PM_RATE, VirtualClock
from emu.hw.irq import IrqLine

PM_BASE = 0x600
PM_PORT_COUNT = 12
PM1_STS, PM1_EN, PM1_CNT, PM_TMR = 0x00, 0x02, 0x04, 0x08
PM1_EVT_LENGTH, PM1_CNT_LENGTH, PM_TMR_LENGTH = 4, 2, 4
SCI_IRQ = 9
SLP_TYP_S5 = 0

TMR_STS, BM_STS, GBL_STS, PWRBTN_STS, RTC_STS, WAK_STS = (
    0x0001, 0x0010, 0x0020, 0x0100, 0x0400, 0x8000)
TMR_EN, GBL_EN, PWRBTN_EN, RTC_EN = 0x0001, 0x0020, 0x0100, 0x0400
_EN_WRITABLE = TMR_EN | GBL_EN | PWRBTN_EN | RTC_EN
SCI_EN, BM_RLD, GBL_RLS = 0x0001, 0x0002, 0x0004
SLP_TYP_SHIFT, SLP_TYP_MASK, SLP_EN = 10, 0x1C00, 0x2000
_CNT_WRITABLE = BM_RLD | SLP_TYP_MASK
TIMER_TOGGLE_BIT = 31
_SIZES = {PM1_STS: 2, PM1_EN: 2, PM1_CNT: 2, PM_TMR: 4}


class AcpiPm(Device):
    registers = (
        Register(PM1_STS, "PM1_STS", size=2), Register(PM1_EN, "PM1_EN", size=2),
        Register(PM1_CNT, "PM1_CNT", size=2),
        Register(PM_TMR, "PM_TMR", size=4, access=Access.READ),
    )

    def __init__(self, clock: VirtualClock, on_power_off: Callable[[], None],
                 sci: IrqLine | None = None, name: str = "acpi-pm") -> None:
        super().__init__(name)
        self.clock = clock
        self.on_power_off = on_power_off
        self.sci = sci
        self.status = 0                  # latched status bits other than TMR_STS
        self.enable = 0
        self.control = SCI_EN
        self._toggles_seen = 0           # timer bit-31 toggles when TMR_STS was last cleared
        self._caught_up = 0

    # --- the timer --------------------------------------------------------------------------

    def timer_count(self, tick: int) -> int:
        return self.clock.count(ACPI_PM_RATE, tick)

    def _toggles(self, tick: int) -> int:
        return self.timer_count(tick) >> TIMER_TOGGLE_BIT

    def status_at(self, tick: int) -> int:
        timer = TMR_STS if self._toggles(tick) > self._toggles_seen else 0
        return self.status | timer

    def press_power_button(self) -> None:
        """The fixed power button (ACPI 4.8.2.2.1.1): PWRBTN_STS, and the SCI if enabled."""
        self.status |= PWRBTN_STS
        self._update_sci(self.clock.now())

    def _update_sci(self, tick: int) -> None:
        if self.sci is not None:
            self.sci.set(bool(self.status_at(tick) & self.enable))

    # --- the Timer contract (emu.hw.clock) ---------------------------------------------------

    def next_deadline(self) -> int | None:
        tick = self._caught_up
        if not self.enable & TMR_EN or self.status_at(tick) & self.enable:
            return None
        toggle = (self._toggles(tick) + 1) << TIMER_TOGGLE_BIT
        return self.clock.first_tick(ACPI_PM_RATE, toggle)

    def advance(self, now: int) -> None:
        if now < self._caught_up:
            return
        self._caught_up = now
        self._update_sci(now)

    # --- ports ------------------------------------------------------------------------------

    def _value(self, register: int, tick: int) -> int:
        if register == PM1_STS:
            return self.status_at(tick)
        if register == PM1_EN:
            return self.enable
        if register == PM1_CNT:
            return self.control
        return self.timer_count(tick) & 0xFFFFFFFF

    @staticmethod
    def _register_of(offset: int) -> tuple[int, int] | None:
        """(register, byte within it) for a port offset; None for a reserved byte."""
        for register, size in _SIZES.items():
            if register <= offset < register + size:
                return register, offset - register
        return None

    def read(self, offset: int, size: int) -> int:
        now = self.clock.now()
        self.advance(now)
        value = 0
        for index in range(size):
            place = self._register_of(offset + index)
            if place is not None:
                register, byte = place
                value |= (self._value(register, now) >> (8 * byte) & 0xFF) << (8 * index)
        return value

    def write(self, offset: int, size: int, value: int) -> None:
        now = self.clock.now()
        self.advance(now)
        parts: dict[int, list[int]] = {}                  # register -> [value, written mask]
        for index in range(size):
            place = self._register_of(offset + index)
            if place is not None:
                register, byte = place
                part = parts.setdefault(register, [0, 0])
                part[0] |= (value >> (8 * index) & 0xFF) << (8 * byte)
                part[1] |= 0xFF << (8 * byte)
        for register, (part, written) in parts.items():
            self._write_register(register, part, written, now)
        self._update_sci(now)
        deadline = self.next_deadline()
        if deadline is not None:
            self.clock.wake_at(deadline)

    def _write_register(self, register: int, value: int, written: int, now: int) -> None:
        if register == PM1_STS:                            # write 1 to clear
            if value & TMR_STS:
                self._toggles_seen = self._toggles(now)
            self.status &= ~value
        elif register == PM1_EN:
            self.enable = (self.enable & ~written) | (value & written & _EN_WRITABLE)
        elif register == PM1_CNT:
            kept = self.control & ~(written & _CNT_WRITABLE)
            self.control = kept | (value & written & _CNT_WRITABLE) | SCI_EN
            if value & SLP_EN and self.sleep_type == SLP_TYP_S5:
                self.on_power_off()

    @property
    def sleep_type(self) -> int:
        return (self.control & SLP_TYP_MASK) >> SLP_TYP_SHIFT
