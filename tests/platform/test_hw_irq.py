"""Interrupt routing: ISA lines through the 8259 pair or the IOAPIC to the CPU's INTA, and
which controller answers as the kernel reprograms them."""
from __future__ import annotations

import pytest

from emu.errors import ConfigError
from emu.hw.devices import ioapic as IO
from emu.hw.devices import lapic as L
from emu.hw.devices.ioapic import IoApic
from emu.hw.devices.lapic import LocalApic
from emu.hw.devices.pic import PicPair
from emu.hw.irq import InterruptRouting
from hw_rig import ManualTime, remap_pics as remap


class Board:
    def __init__(self) -> None:
        self.time = ManualTime()
        self.pic = PicPair()
        self.ioapic = IoApic(apic_id=1)
        self.lapic = LocalApic(self.time.clock)
        self.lapic.firmware_virtual_wire()
        self.routing = InterruptRouting(self.pic, self.ioapic, self.lapic)

    def ioapic_entry(self, pin: int, low: int) -> None:
        self.ioapic.write(0, 4, 0x11 + 2 * pin)
        self.ioapic.write(0x10, 4, 0)
        self.ioapic.write(0, 4, 0x10 + 2 * pin)
        self.ioapic.write(0x10, 4, low)

    def mask_pics(self) -> None:
        self.pic.master.write(1, 1, 0xFF)
        self.pic.slave.write(1, 1, 0xFF)


def test_legacy_path_through_the_8259_in_virtual_wire_mode():
    board = Board()
    keyboard = board.routing.isa_line(1, "kbd")
    remap(board.pic)
    keyboard.pulse()
    assert board.routing.pic_routed() and board.routing.pending()
    assert board.routing.acknowledge() == 0x21
    assert not board.routing.pending()
    board.pic.master.write(0, 1, 0x20)


def test_firmware_state_delivers_nothing():
    board = Board()
    for irq in (0, 1, 8, 9, 12):
        board.routing.isa_line(irq, f"irq{irq}").pulse()
    assert not board.routing.pending()


def test_irq0_reaches_ioapic_pin_2_through_the_override():
    board = Board()
    timer = board.routing.isa_line(0, "pit")
    assert board.routing.gsi_of(0) == 2 and board.routing.gsi_of(1) == 1
    board.mask_pics()
    board.ioapic_entry(2, 0x30)
    board.ioapic_entry(0, 0x99)                       # pin 0 is not IRQ0
    timer.pulse()
    assert board.routing.pending()
    assert board.routing.acknowledge() == 0x30
    assert not board.routing.pending()
    board.lapic.write(L.EOI, 4, 0)
    assert board.lapic.isr == 0


def test_level_sci_through_the_ioapic_with_eoi_broadcast():
    board = Board()
    sci = board.routing.isa_line(9, "sci")
    board.mask_pics()
    board.ioapic_entry(9, IO.TRIGGER_LEVEL | 0x39)
    sci.raise_()
    assert board.routing.acknowledge() == 0x39
    board.lapic.write(L.EOI, 4, 0)                    # source still asserted: again
    assert board.routing.acknowledge() == 0x39
    sci.lower()
    board.lapic.write(L.EOI, 4, 0)
    assert not board.routing.pending()


def test_masked_lint0_closes_the_8259_path():
    board = Board()
    line = board.routing.isa_line(3, "com2")
    remap(board.pic)
    board.lapic.write(L.LVT_LINT0, 4, L.LVT_MASKED | 0x700)
    line.pulse()
    assert not board.routing.pic_routed() and not board.routing.pending()
    assert board.routing.acknowledge() == 0xFF        # the LAPIC's spurious vector
    board.lapic.write(L.LVT_LINT0, 4, 0x700)
    assert board.routing.acknowledge() == 0x23


def test_globally_disabled_lapic_passes_the_8259_directly():
    board = Board()
    line = board.routing.isa_line(4, "com1")
    remap(board.pic)
    board.lapic.write_apic_base_msr(0xFEE00000)
    line.pulse()
    assert board.routing.pending() and board.routing.acknowledge() == 0x24


def test_lapic_answers_before_the_8259_when_both_request():
    board = Board()
    remap(board.pic)
    board.routing.isa_line(1, "kbd").pulse()
    board.ioapic_entry(12, 0x6C)
    board.routing.isa_line(12, "mouse").pulse()       # IOAPIC pin 12 and slave IR4
    board.pic.slave.write(1, 1, 0xFF)
    assert board.routing.acknowledge() == 0x6C
    assert board.routing.acknowledge() == 0x21


def test_spurious_answers_follow_the_controller_in_charge():
    board = Board()
    remap(board.pic)
    assert board.routing.acknowledge() == 0x27        # 8259 path open: IRQ7
    board.lapic.write(L.LVT_LINT0, 4, L.LVT_MASKED)
    board.lapic.write(L.SVR, 4, 0x1EF)
    assert board.routing.acknowledge() == 0xEF        # APIC path: the SVR vector


def test_lines_on_one_input_are_wired_or_and_can_be_disconnected():
    board = Board()
    board.mask_pics()
    board.ioapic_entry(8, IO.TRIGGER_LEVEL | 0x48)
    rtc = board.routing.isa_line(8, "rtc")
    hpet = board.routing.isa_line(8, "hpet")
    rtc.raise_()
    hpet.raise_()
    assert board.routing.acknowledge() == 0x48
    rtc.lower()
    board.lapic.write(L.EOI, 4, 0)
    assert board.routing.acknowledge() == 0x48        # hpet still holds the input high
    hpet.connected = False
    board.lapic.write(L.EOI, 4, 0)
    assert not board.routing.pending()


def test_gsi_lines_reach_only_the_ioapic():
    board = Board()
    remap(board.pic)
    board.ioapic_entry(20, 0x70)
    board.routing.gsi_line(20, "hpet2").pulse()
    assert board.routing.acknowledge() == 0x70
    assert board.pic.master.irr == 0 and board.pic.slave.irr == 0


def test_impossible_lines_are_refused():
    board = Board()
    with pytest.raises(ConfigError):
        board.routing.isa_line(2, "cascade")
    with pytest.raises(ConfigError):
        board.routing.isa_line(16, "nothing")
    with pytest.raises(ConfigError):
        board.routing.gsi_line(24, "nothing")
