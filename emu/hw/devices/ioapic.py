"""The I/O APIC at 0xFEC00000, as the Intel 82093AA datasheet (order number 290566)
describes it: IOREGSEL at offset 0x00, IOWIN at 0x10, and behind them the ID, version and
arbitration registers and 24 redirection table entries.

Owns: the redirection table (vector, delivery mode, destination mode, polarity, trigger
mode, mask, destination; read-only delivery status and remote IRR), edge detection and level
re-delivery on its 24 input pins, and clearing remote IRR when the local APIC broadcasts an
EOI for a level-triggered vector (datasheet 3.2.4, "Remote IRR").
Does not own: which device drives which pin (emu.hw.irq) or what the local APIC does with
the message (devices/lapic.py, through `apic_bus`).

Modelled as documented behaviour, not refused:
- Delivery modes fixed and lowest priority go to the local APIC (one CPU: lowest priority is
  that CPU when the destination names it). SMI, NMI, INIT and ExtINT entries deliver nothing
  (no SMM, no second CPU; the 8259 reaches the CPU through LINT0 instead of pin 0).
- Delivery is instantaneous, so the delivery status bit always reads 0 (idle).
- Writing an entry with edge trigger mode clears its remote IRR (what Linux's mask-and-retrigger
  EOI for version 0x11 IOAPICs, which have no EOI register, relies on).
- IOREGSEL accepts any access size at offset 0 (the index is its low byte); IOWIN takes 32-bit
  writes only, other sizes are ignored; reads of any size return the selected register's
  bytes. Unknown register indexes read 0 and ignore writes.
- Rewriting an edge-triggered entry delivers nothing, even if it changes the polarity; a
  level-triggered entry is re-evaluated at once (unmasking an asserted pin delivers).
"""
from __future__ import annotations

from typing import Protocol

from emu.hw.bus import Device, Register

IOAPIC_BASE = 0xFEC00000
IOAPIC_SIZE = 0x1000
IOAPIC_PINS = 24
IOAPIC_VERSION = 0x11                    # the 82093AA
_IOREGSEL, _IOWIN = 0x00, 0x10
_REG_ID, _REG_VERSION, _REG_ARBITRATION = 0x00, 0x01, 0x02
_REG_TABLE = 0x10

# Redirection entry bits (datasheet 3.2.4)
VECTOR_MASK = 0xFF
DELIVERY_MODE_SHIFT = 8
DELIVERY_FIXED, DELIVERY_LOWEST = 0, 1
DEST_LOGICAL = 1 << 11
DELIVERY_STATUS = 1 << 12
POLARITY_LOW = 1 << 13
REMOTE_IRR = 1 << 14
TRIGGER_LEVEL = 1 << 15
MASKED = 1 << 16
DEST_SHIFT = 56
_WRITABLE = 0xFF00_0000_0001_AFFF      # everything but delivery status and remote IRR


class ApicBus(Protocol):
    """Where the IOAPIC's interrupt messages go (the local APIC, one CPU)."""

    def accepts(self, logical: bool, destination: int) -> bool: ...

    def accept_interrupt(self, vector: int, level: bool) -> None: ...


class IoApic(Device):
    registers = (Register(_IOREGSEL, "IOREGSEL", size=4), Register(_IOWIN, "IOWIN", size=4))

    def __init__(self, apic_id: int = 0, name: str = "ioapic",
                 apic_bus: ApicBus | None = None, pin_count: int = IOAPIC_PINS) -> None:
        super().__init__(name)
        self.apic_id = apic_id & 0xF
        self.apic_bus = apic_bus
        self.pin_count = pin_count
        self.select = 0
        self.entries = [MASKED] * pin_count
        self.levels = [False] * pin_count

    # --- pins -------------------------------------------------------------------------------

    def asserted(self, pin: int) -> bool:
        """The pin's logical state: its electrical level through the entry's polarity."""
        return self.levels[pin] != bool(self.entries[pin] & POLARITY_LOW)

    def set_input(self, pin: int, level: bool) -> None:
        if not 0 <= pin < self.pin_count:
            return
        was = self.asserted(pin)
        self.levels[pin] = bool(level)
        now = self.asserted(pin)
        if self.entries[pin] & TRIGGER_LEVEL:
            self._service_level(pin)
        elif now and not was:
            self._deliver(pin)

    def _service_level(self, pin: int) -> None:
        """A level-triggered pin delivers while asserted, unmasked and not awaiting EOI."""
        entry = self.entries[pin]
        if self.asserted(pin) and not entry & (MASKED | REMOTE_IRR):
            if self._deliver(pin):
                self.entries[pin] |= REMOTE_IRR

    def _deliver(self, pin: int) -> bool:
        """Send the pin's interrupt message; True if the local APIC accepted it."""
        entry = self.entries[pin]
        mode = (entry >> DELIVERY_MODE_SHIFT) & 7
        if entry & MASKED or mode not in (DELIVERY_FIXED, DELIVERY_LOWEST):
            return False
        bus = self.apic_bus
        destination = entry >> DEST_SHIFT
        if bus is None or not bus.accepts(bool(entry & DEST_LOGICAL), destination):
            return False
        bus.accept_interrupt(entry & VECTOR_MASK, bool(entry & TRIGGER_LEVEL))
        return True

    def end_of_interrupt(self, vector: int) -> None:
        """The local APIC's EOI broadcast for a level-triggered `vector`: clear remote IRR
        of every entry with that vector, and re-deliver those whose pin is still asserted."""
        for pin, entry in enumerate(self.entries):
            if entry & REMOTE_IRR and entry & VECTOR_MASK == vector:
                self.entries[pin] = entry & ~REMOTE_IRR
                self._service_level(pin)

    # --- registers --------------------------------------------------------------------------

    def read(self, offset: int, size: int) -> int:
        if offset < _IOWIN:
            value, base = self.select, _IOREGSEL
        elif offset < _IOWIN + 4:
            value, base = self._read_register(self.select), _IOWIN
        else:
            return 0
        return (value >> (8 * (offset - base))) & ((1 << (8 * size)) - 1)

    def write(self, offset: int, size: int, value: int) -> None:
        if offset == _IOREGSEL:
            self.select = value & 0xFF
        elif offset == _IOWIN and size == 4:
            self._write_register(self.select, value)

    def _read_register(self, index: int) -> int:
        if index == _REG_ID:
            return self.apic_id << 24
        if index == _REG_VERSION:
            return (self.pin_count - 1) << 16 | IOAPIC_VERSION
        if index == _REG_ARBITRATION:
            return self.apic_id << 24
        pin, high = self._entry_index(index)
        if pin is None:
            return 0
        return (self.entries[pin] >> (32 if high else 0)) & 0xFFFFFFFF

    def _write_register(self, index: int, value: int) -> None:
        if index == _REG_ID:
            self.apic_id = (value >> 24) & 0xF
            return
        pin, high = self._entry_index(index)
        if pin is None:
            return
        shift = 32 if high else 0
        old = self.entries[pin]
        merged = (old & ~(0xFFFFFFFF << shift)) | (value << shift)
        entry = (old & ~_WRITABLE) | (merged & _WRITABLE)
        if not entry & TRIGGER_LEVEL:
            entry &= ~REMOTE_IRR
        self.entries[pin] = entry
        if entry & TRIGGER_LEVEL:
            self._service_level(pin)

    def _entry_index(self, index: int) -> tuple[int | None, bool]:
        pin = (index - _REG_TABLE) >> 1
        if index < _REG_TABLE or pin >= self.pin_count:
            return None, False
        return pin, bool(index & 1)

    def entry(self, pin: int) -> int:
        """The 64-bit redirection entry of `pin`, for tests and reports."""
        return self.entries[pin]
