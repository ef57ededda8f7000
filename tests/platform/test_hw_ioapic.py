"""The IOAPIC through IOREGSEL/IOWIN (82093AA datasheet), delivering to a real local APIC."""
from __future__ import annotations

from emu.hw.devices import ioapic as IO
from emu.hw.devices import lapic as L
from emu.hw.devices.ioapic import IoApic
from emu.hw.devices.lapic import LocalApic
from hw_rig import ManualTime


def make(apic_id: int = 0) -> tuple[IoApic, LocalApic]:
    time = ManualTime()
    lapic = LocalApic(time.clock, apic_id)
    lapic.write(L.SVR, 4, 0x1FF)
    ioapic = IoApic(apic_id=1, apic_bus=lapic)
    lapic.eoi_broadcast = ioapic.end_of_interrupt
    return ioapic, lapic


def reg_read(ioapic: IoApic, index: int) -> int:
    ioapic.write(0x00, 4, index)
    return ioapic.read(0x10, 4)


def reg_write(ioapic: IoApic, index: int, value: int) -> None:
    ioapic.write(0x00, 4, index)
    ioapic.write(0x10, 4, value)


def program(ioapic: IoApic, pin: int, low: int, destination: int = 0) -> None:
    reg_write(ioapic, 0x11 + 2 * pin, destination << 24)
    reg_write(ioapic, 0x10 + 2 * pin, low)


def irr(lapic: LocalApic) -> set[int]:
    bits = sum(lapic.read(L.IRR_BASE + 0x10 * i, 4) << (32 * i) for i in range(8))
    return {v for v in range(256) if bits >> v & 1}


def test_identification_registers():
    ioapic, _ = make()
    assert reg_read(ioapic, 0x00) == 1 << 24
    assert reg_read(ioapic, 0x01) == 0x00170011
    assert reg_read(ioapic, 0x02) == 1 << 24
    reg_write(ioapic, 0x00, 0x0A00_0000)
    assert reg_read(ioapic, 0x00) == 0x0A00_0000 and reg_read(ioapic, 0x02) == 0x0A00_0000
    reg_write(ioapic, 0x01, 0)                        # read-only
    assert reg_read(ioapic, 0x01) == 0x00170011
    assert reg_read(ioapic, 0x3F) == 0                # beyond the table


def test_redirection_entries_reset_masked_and_keep_read_only_bits():
    ioapic, _ = make()
    for pin in range(24):
        assert reg_read(ioapic, 0x10 + 2 * pin) == IO.MASKED
        assert reg_read(ioapic, 0x11 + 2 * pin) == 0
    reg_write(ioapic, 0x10, 0xFFFFFFFF)
    assert reg_read(ioapic, 0x10) == 0x0001AFFF         # delivery status, remote IRR read 0
    reg_write(ioapic, 0x11, 0xFFFFFFFF)
    assert reg_read(ioapic, 0x11) == 0xFF000000
    assert ioapic.read(0x00, 1) == 0x11                 # IOREGSEL reads back


def test_iowin_ignores_sub_dword_writes_and_byte_ioregsel_works():
    ioapic, _ = make()
    ioapic.write(0x00, 1, 0x12)
    ioapic.write(0x10, 2, 0x0030)
    assert reg_read(ioapic, 0x12) == IO.MASKED
    ioapic.write(0x00, 1, 0x12)
    assert ioapic.read(0x12, 1) == 0x01                 # byte 2 of the entry: the mask bit


def test_edge_entry_delivers_on_rising_edges_only_when_unmasked():
    ioapic, lapic = make()
    program(ioapic, 4, 0x31)
    ioapic.set_input(4, True)
    assert irr(lapic) == {0x31}
    ioapic.set_input(4, True)                           # no edge
    assert lapic.acknowledge() == 0x31 and irr(lapic) == set()
    ioapic.set_input(4, False)
    program(ioapic, 4, IO.MASKED | 0x31)
    ioapic.set_input(4, True)                           # lost while masked
    program(ioapic, 4, 0x31)
    assert irr(lapic) == set()


def test_level_entry_uses_remote_irr_until_eoi():
    ioapic, lapic = make()
    program(ioapic, 9, IO.TRIGGER_LEVEL | 0x39)
    ioapic.set_input(9, True)
    assert reg_read(ioapic, 0x10 + 18) & IO.REMOTE_IRR
    assert lapic.acknowledge() == 0x39
    assert lapic.read(L.TMR_BASE + 0x10, 4) == 1 << (0x39 - 32)
    ioapic.set_input(9, False)
    ioapic.set_input(9, True)                           # remote IRR set: no new message
    assert irr(lapic) == set()
    lapic.write(L.EOI, 4, 0)                            # broadcast clears remote IRR ...
    assert irr(lapic) == {0x39}                         # ... and the pin is still asserted
    assert lapic.acknowledge() == 0x39
    ioapic.set_input(9, False)
    lapic.write(L.EOI, 4, 0)
    assert not reg_read(ioapic, 0x10 + 18) & IO.REMOTE_IRR and irr(lapic) == set()


def test_unmasking_an_asserted_level_pin_delivers():
    ioapic, lapic = make()
    program(ioapic, 10, IO.MASKED | IO.TRIGGER_LEVEL | 0x3A)
    ioapic.set_input(10, True)
    assert irr(lapic) == set()
    program(ioapic, 10, IO.TRIGGER_LEVEL | 0x3A)
    assert irr(lapic) == {0x3A}


def test_switching_to_edge_clears_remote_irr():
    ioapic, lapic = make()
    program(ioapic, 11, IO.TRIGGER_LEVEL | 0x3B)
    ioapic.set_input(11, True)
    program(ioapic, 11, IO.MASKED | 0x3B)
    assert not reg_read(ioapic, 0x10 + 22) & IO.REMOTE_IRR


def test_active_low_polarity():
    ioapic, lapic = make()
    ioapic.set_input(5, True)                           # idle high
    program(ioapic, 5, IO.POLARITY_LOW | IO.TRIGGER_LEVEL | 0x35)
    assert irr(lapic) == set()
    ioapic.set_input(5, False)
    assert irr(lapic) == {0x35}


def test_destinations():
    ioapic, lapic = make(apic_id=3)
    program(ioapic, 1, 0x41, destination=3)
    program(ioapic, 2, 0x42, destination=4)
    program(ioapic, 3, 0x43, destination=0xFF)
    lapic.write(L.LDR, 4, 0x01 << 24)
    program(ioapic, 6, IO.DEST_LOGICAL | 0x46, destination=0x01)
    program(ioapic, 7, IO.DEST_LOGICAL | 0x47, destination=0x02)
    for pin in (1, 2, 3, 6, 7):
        ioapic.set_input(pin, True)
    assert irr(lapic) == {0x41, 0x43, 0x46}


def test_non_fixed_delivery_modes_send_nothing():
    ioapic, lapic = make()
    for pin, mode in ((1, 1), (2, 2), (3, 4), (4, 5), (5, 7)):
        program(ioapic, pin, mode << 8 | (0x50 + pin))
        ioapic.set_input(pin, True)
    assert irr(lapic) == {0x51}                         # lowest priority: this CPU
