"""The 8259A pair through its ports (as the bus calls the devices: offset, size, value),
following the 8259A datasheet's initialisation and operation command words."""
from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from emu.hw.devices.pic import Elcr, Pic8259, PicPair
from hw_rig import remap_pics as remap

MASTER_BASE, SLAVE_BASE = 0x20, 0x28


def unmask_all(pair: PicPair) -> None:
    pair.master.write(1, 1, 0x00)
    pair.slave.write(1, 1, 0x00)


def pulse(pair: PicPair, irq: int) -> None:
    pair.set_input(irq, True)
    pair.set_input(irq, False)


def read_isr(chip: Pic8259) -> int:
    chip.write(0, 1, 0x0B)            # OCW3: read ISR
    return chip.read(0, 1)


def read_irr(chip: Pic8259) -> int:
    chip.write(0, 1, 0x0A)            # OCW3: read IRR
    return chip.read(0, 1)


def test_firmware_state_is_bios_bases_with_everything_masked():
    pair = PicPair()
    assert pair.master.read(1, 1) == 0xFF and pair.slave.read(1, 1) == 0xFF
    pulse(pair, 1)
    assert not pair.pending()
    assert read_irr(pair.master) == 0x02          # latched, only masked
    pair.master.write(1, 1, 0xFD)
    assert pair.pending() and pair.acknowledge() == 0x08 + 1


def test_icw_sequence_remaps_and_unmasks():
    pair = PicPair()
    remap(pair)
    assert pair.master.read(1, 1) == 0 and pair.slave.read(1, 1) == 0   # ICW1 clears IMR
    pulse(pair, 1)
    assert pair.pending()
    assert pair.acknowledge() == MASTER_BASE + 1
    assert read_isr(pair.master) == 0x02
    assert not pair.pending()
    pair.master.write(0, 1, 0x20)                 # OCW2 non-specific EOI
    assert read_isr(pair.master) == 0


def test_icw_sequence_without_icw3_in_single_mode_and_without_icw4():
    chip = Pic8259("solo", 0x08, cascade=0)
    chip.write(0, 1, 0x12)                        # ICW1: SNGL, no IC4
    chip.write(1, 1, 0x40)                        # ICW2; the next port-1 write is OCW1
    chip.write(1, 1, 0xFE)
    assert chip.read(1, 1) == 0xFE and chip.vector_base == 0x40
    assert not chip.auto_eoi


def test_slave_interrupt_goes_through_master_ir2():
    pair = PicPair()
    remap(pair)
    pulse(pair, 12)
    assert pair.pending()
    assert pair.acknowledge() == SLAVE_BASE + 4
    assert read_isr(pair.master) == 0x04 and read_isr(pair.slave) == 0x10
    pair.slave.write(0, 1, 0x20)
    pair.master.write(0, 1, 0x20)
    assert pair.in_service() == 0


def test_fully_nested_priority_and_preemption():
    pair = PicPair()
    remap(pair)
    pulse(pair, 3)
    pulse(pair, 5)
    assert pair.acknowledge() == MASTER_BASE + 3
    assert not pair.pending()                     # 5 is below 3, which is in service
    pulse(pair, 0)
    assert pair.pending() and pair.acknowledge() == MASTER_BASE + 0   # 0 preempts 3
    pair.master.write(0, 1, 0x20)                 # EOI retires 0 (the highest in service)
    assert read_isr(pair.master) == 0x08
    assert not pair.pending()
    pair.master.write(0, 1, 0x63)                 # specific EOI for IR3
    assert pair.acknowledge() == MASTER_BASE + 5


def test_edges_latch_once_and_masked_edges_wait():
    pair = PicPair()
    remap(pair)
    pair.master.write(1, 1, 0x01)                 # mask IR0
    pulse(pair, 0)
    pulse(pair, 0)
    assert not pair.pending() and read_irr(pair.master) == 0x01
    pair.master.write(1, 1, 0x00)
    assert pair.acknowledge() == MASTER_BASE
    pair.master.write(0, 1, 0x20)
    assert not pair.pending()                     # two edges, one request


def test_held_edge_line_needs_a_new_rising_edge():
    pair = PicPair()
    remap(pair)
    pair.set_input(4, True)
    assert pair.acknowledge() == MASTER_BASE + 4
    pair.master.write(0, 1, 0x20)
    assert not pair.pending()                     # still high, but no new edge
    pair.set_input(4, False)
    pair.set_input(4, True)
    assert pair.pending()


def test_level_mode_follows_the_line_and_a_dropped_request_is_spurious_irq7():
    pair = PicPair()
    remap(pair)
    elcr = Elcr(pair)
    elcr.write(0, 2, 0x0800)                      # IRQ11 level sensitive
    assert elcr.read(0, 2) == 0x0800
    pair.set_input(11, True)
    assert pair.pending()
    assert pair.acknowledge() == SLAVE_BASE + 3
    pair.slave.write(0, 1, 0x20)
    pair.master.write(0, 1, 0x20)
    assert pair.pending()                         # still asserted: requested again
    pair.set_input(11, False)
    assert read_irr(pair.slave) == 0


def test_spurious_irq7_on_the_master_sets_no_isr_bit():
    pair = PicPair()
    remap(pair, icw4=0x01)
    pair.master.level_triggered = True            # as ICW1 LTIM would
    pair.set_input(5, True)
    assert pair.pending()
    pair.set_input(5, False)                      # gone before INTA
    assert pair.acknowledge() == MASTER_BASE + 7
    assert read_isr(pair.master) == 0


def test_spurious_irq15_leaves_master_ir2_in_service():
    pair = PicPair()
    remap(pair)
    Elcr(pair).write(1, 1, 0x02)                  # IRQ9 level (the SCI)
    pair.set_input(9, True)                       # slave INT rises: master IR2 latches
    pair.set_input(9, False)                      # the slave's request goes away
    assert pair.pending()                         # the master's edge latch stays
    assert pair.acknowledge() == SLAVE_BASE + 7
    assert read_isr(pair.slave) == 0 and read_isr(pair.master) == 0x04
    pair.master.write(0, 1, 0x20)
    assert pair.in_service() == 0


def test_elcr_keeps_irq0_1_2_8_13_edge():
    pair = PicPair()
    elcr = Elcr(pair)
    elcr.write(0, 2, 0xFFFF)
    assert elcr.read(0, 2) == 0xDEF8


def test_rotate_on_non_specific_eoi_makes_the_serviced_level_lowest():
    pair = PicPair()
    remap(pair)
    pulse(pair, 1)
    assert pair.acknowledge() == MASTER_BASE + 1
    pair.master.write(0, 1, 0xA0)                 # rotate on non-specific EOI
    pulse(pair, 1)
    pulse(pair, 6)
    assert pair.acknowledge() == MASTER_BASE + 6  # 2 is now highest, 1 lowest


def test_set_priority_and_rotate_on_specific_eoi():
    pair = PicPair()
    remap(pair)
    pair.master.write(0, 1, 0xC4)                 # IR4 lowest: 5 highest
    pulse(pair, 3)
    pulse(pair, 5)
    assert pair.acknowledge() == MASTER_BASE + 5
    pair.master.write(0, 1, 0xE5)                 # rotate on specific EOI 5: 6 highest
    pulse(pair, 6)
    assert pair.acknowledge() == MASTER_BASE + 6


def test_auto_eoi_sets_no_isr_bit():
    pair = PicPair()
    remap(pair, icw4=0x03)
    pulse(pair, 2 + 1)
    assert pair.acknowledge() == MASTER_BASE + 3
    assert read_isr(pair.master) == 0


def test_poll_command_acknowledges_without_inta():
    pair = PicPair()
    remap(pair)
    pulse(pair, 6)
    pair.master.write(0, 1, 0x0C)                 # OCW3 poll
    assert pair.master.read(0, 1) == 0x86
    assert read_isr(pair.master) == 0x40
    pair.master.write(0, 1, 0x0C)
    assert pair.master.read(0, 1) == 0x00         # nothing requesting


def test_special_mask_mode_lets_lower_levels_in():
    pair = PicPair()
    remap(pair)
    pulse(pair, 1)
    assert pair.acknowledge() == MASTER_BASE + 1
    pulse(pair, 4)
    assert not pair.pending()
    pair.master.write(0, 1, 0x68)                 # OCW3 set special mask mode
    pair.master.write(1, 1, 0x02)                 # mask the level in service
    assert pair.acknowledge() == MASTER_BASE + 4
    pair.master.write(0, 1, 0x48)                 # reset special mask mode
    assert read_isr(pair.master) == 0x12


def test_special_fully_nested_mode_lets_the_slave_interrupt_itself():
    pair = PicPair()
    remap(pair, icw4=0x11)                        # master SFNM
    pair.slave.write(0, 1, 0x11)
    for value in (SLAVE_BASE, 0x02, 0x01):
        pair.slave.write(1, 1, value)
    pulse(pair, 12)
    assert pair.acknowledge() == SLAVE_BASE + 4
    pulse(pair, 9)                                # higher priority on the slave
    assert pair.pending() and pair.acknowledge() == SLAVE_BASE + 1


def test_word_access_reaches_both_ports():
    pair = PicPair()
    remap(pair)
    pair.master.write(0, 2, 0x5A0B)               # OCW3 read ISR, then IMR 0x5A
    assert pair.master.read(1, 1) == 0x5A
    assert pair.master.read(0, 2) == 0x5A00


def _model_highest(irr: int, imr: int, isr: int, lowest: int) -> int | None:
    """Fully nested mode, from the datasheet's description: the highest-priority unmasked
    request wins if no in-service level has equal or higher priority."""
    order = [(lowest + 1 + step) % 8 for step in range(8)]
    for ir in order:
        if isr >> ir & 1:
            return None
        if (irr & ~imr) >> ir & 1:
            return ir
    return None


@given(st.integers(0, 255), st.integers(0, 255), st.integers(0, 255), st.integers(0, 7))
def test_priority_resolution_matches_the_datasheet_model(irr, imr, isr, lowest):
    chip = Pic8259("model", 0x20, cascade=0)
    chip.write(1, 1, imr)
    chip.write(0, 1, 0xC0 | lowest)               # set priority
    chip.isr = isr
    for ir in range(8):
        if irr >> ir & 1:
            chip.set_input(ir, True)
    assert chip.highest_request() == _model_highest(irr, imr, isr, lowest)
