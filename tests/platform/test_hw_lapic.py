"""The local APIC through its MMIO registers (xAPIC, SDM vol. 3 ch. 11) on a clock the test
moves: priorities, EOI, spurious vectors, errors, self-IPIs and the timer in all its modes."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from emu.hw.clock import Rate
from emu.hw.devices import lapic as L
from emu.hw.devices.lapic import LocalApic
from hw_rig import ManualTime

DIVIDES = {0b0000: 2, 0b0001: 4, 0b0010: 8, 0b0011: 16, 0b1000: 32, 0b1001: 64,
           0b1010: 128, 0b1011: 1}


def make(apic_id: int = 0, **options) -> tuple[ManualTime, LocalApic]:
    time = ManualTime()
    apic = LocalApic(time.clock, apic_id, **options)
    apic.write(L.SVR, 4, 0x1FF)                       # software-enable, spurious 0xFF
    return time, apic


def rd(apic: LocalApic, offset: int) -> int:
    return apic.read(offset, 4)


def wr(apic: LocalApic, offset: int, value: int) -> None:
    apic.write(offset, 4, value)


def irr_has(apic: LocalApic, vector: int) -> bool:
    return bool(rd(apic, L.IRR_BASE + 0x10 * (vector // 32)) >> (vector % 32) & 1)


def test_power_up_values():
    time = ManualTime()
    apic = LocalApic(time.clock, apic_id=3)
    assert rd(apic, L.ID) == 3 << 24
    assert rd(apic, L.VERSION) == 0x00050014
    assert rd(apic, L.SVR) == 0xFF and rd(apic, L.DFR) == 0xFFFFFFFF
    for lvt in (L.LVT_TIMER, L.LVT_THERMAL, L.LVT_PERF, L.LVT_LINT0, L.LVT_LINT1, L.LVT_ERROR):
        assert rd(apic, lvt) == 0x00010000
    assert rd(apic, L.TPR) == rd(apic, L.PPR) == rd(apic, L.TIMER_INITIAL) == 0
    assert apic.read_apic_base_msr() == 0xFEE00900


def test_firmware_virtual_wire_state():
    time = ManualTime()
    apic = LocalApic(time.clock)
    apic.firmware_virtual_wire()
    assert rd(apic, L.SVR) == 0x1FF
    assert rd(apic, L.LVT_LINT0) == 0x700 and rd(apic, L.LVT_LINT1) == 0x400
    assert apic.passes_extint()


def test_register_sizes_and_slots():
    _, apic = make(apic_id=0x2A)
    assert apic.read(L.ID + 3, 1) == 0x2A
    assert apic.read(L.ID, 8) == 0x2A << 24          # bytes 4-15 of a slot read 0
    apic.write(L.TPR, 1, 0x50)                        # not a 32-bit store: ignored
    assert rd(apic, L.TPR) == 0
    apic.write(L.TPR, 8, 0x1234_0000_0060)            # 64-bit store: the low half counts
    assert rd(apic, L.TPR) == 0x60


def test_read_only_registers_ignore_writes():
    _, apic = make()
    for offset in (L.VERSION, L.PPR, L.ISR_BASE, L.IRR_BASE, L.TMR_BASE, L.TIMER_CURRENT):
        wr(apic, offset, 0xFFFFFFFF)
        assert rd(apic, offset) == (0x00050014 if offset == L.VERSION else 0)


def test_accept_acknowledge_eoi():
    _, apic = make()
    apic.accept_interrupt(0x41, level=False)
    assert irr_has(apic, 0x41) and apic.deliverable()
    assert apic.acknowledge() == 0x41
    assert rd(apic, L.ISR_BASE + 0x20) == 1 << 1 and not irr_has(apic, 0x41)
    assert rd(apic, L.PPR) == 0x40
    wr(apic, L.EOI, 0)
    assert rd(apic, L.ISR_BASE + 0x20) == 0 and rd(apic, L.PPR) == 0


def test_isr_nesting_and_priority_classes():
    _, apic = make()
    apic.accept_interrupt(0x51, False)
    assert apic.acknowledge() == 0x51
    apic.accept_interrupt(0x55, False)                # same class as the one in service
    assert not apic.deliverable()
    apic.accept_interrupt(0x62, False)                # a higher class preempts
    assert apic.acknowledge() == 0x62
    assert rd(apic, L.PPR) == 0x60
    wr(apic, L.EOI, 0)                                # retires 0x62, the highest
    assert rd(apic, L.PPR) == 0x50 and not apic.deliverable()
    wr(apic, L.EOI, 0)
    assert apic.acknowledge() == 0x55


def test_tpr_blocks_its_class_and_below():
    _, apic = make()
    wr(apic, L.TPR, 0x4F)
    apic.accept_interrupt(0x4A, False)
    assert not apic.deliverable() and rd(apic, L.PPR) == 0x4F
    apic.accept_interrupt(0x50, False)
    assert apic.acknowledge() == 0x50


def test_spurious_vector_when_nothing_is_deliverable():
    _, apic = make()
    wr(apic, L.SVR, 0x1EF)
    apic.accept_interrupt(0x30, False)
    wr(apic, L.TPR, 0xF0)                             # raised between INTR and INTA
    assert apic.acknowledge() == 0xEF
    assert rd(apic, L.ISR_BASE + 0x10) == 0 and irr_has(apic, 0x30)


def test_level_interrupt_sets_tmr_and_eoi_broadcasts():
    _, apic = make()
    seen = []
    apic.eoi_broadcast = seen.append
    apic.accept_interrupt(0x70, level=True)
    apic.accept_interrupt(0x60, level=False)
    assert rd(apic, L.TMR_BASE + 0x30) == 1 << 16
    assert apic.acknowledge() == 0x70
    wr(apic, L.EOI, 0)
    assert seen == [0x70]
    assert apic.acknowledge() == 0x60
    wr(apic, L.EOI, 0)
    assert seen == [0x70]                              # edge: no broadcast
    wr(apic, L.EOI, 0)                                 # nothing in service: ignored
    assert seen == [0x70]


def test_illegal_vectors_and_esr_write_then_read():
    _, apic = make()
    wr(apic, L.LVT_ERROR, 0xFE)
    apic.accept_interrupt(0x05, False)
    assert rd(apic, L.ESR) == 0                        # not latched until ESR is written
    wr(apic, L.ESR, 0)
    assert rd(apic, L.ESR) == L.ESR_RECEIVE_ILLEGAL_VECTOR
    assert irr_has(apic, 0xFE) and not irr_has(apic, 0x05)
    wr(apic, L.ESR, 0)
    assert rd(apic, L.ESR) == 0


def test_reserved_register_sets_illegal_register_address():
    _, apic = make()
    assert rd(apic, 0x2F0) == 0                        # no CMCI entry
    wr(apic, 0x3F0, 1)
    wr(apic, L.ESR, 0)
    assert rd(apic, L.ESR) == L.ESR_ILLEGAL_REGISTER


def test_self_ipi_shorthands_and_destinations():
    _, apic = make(apic_id=2)
    wr(apic, L.ICR_LOW, 0x00040000 | 0x40)            # shorthand self, fixed
    assert irr_has(apic, 0x40)
    wr(apic, L.ICR_LOW, 0x000C0000 | 0x41)            # all excluding self
    assert not irr_has(apic, 0x41)
    wr(apic, L.ICR_HIGH, 2 << 24)
    wr(apic, L.ICR_LOW, 0x42)                         # physical destination 2: us
    wr(apic, L.ICR_HIGH, 5 << 24)
    wr(apic, L.ICR_LOW, 0x43)                         # physical destination 5: nobody
    wr(apic, L.ICR_LOW, 0x00080000 | 0x44)            # all including self
    wr(apic, L.ICR_LOW, 0x00040400 | 0x45)            # NMI to self: not a vector
    assert [v for v in range(0x42, 0x46) if irr_has(apic, v)] == [0x42, 0x44]
    assert rd(apic, L.ICR_LOW) & (1 << 12) == 0        # delivery status idle
    assert rd(apic, L.ICR_HIGH) == 5 << 24
    wr(apic, L.ICR_LOW, 0x00040000 | 0x07)            # illegal vector
    wr(apic, L.ESR, 0)
    assert rd(apic, L.ESR) == L.ESR_SEND_ILLEGAL_VECTOR


def test_logical_destinations_flat_and_cluster():
    _, apic = make()
    wr(apic, L.LDR, 0x04 << 24)
    assert apic.accepts(True, 0x0C) and not apic.accepts(True, 0x03)
    wr(apic, L.DFR, 0x0FFFFFFF)                       # cluster model
    assert rd(apic, L.DFR) == 0x0FFFFFFF
    wr(apic, L.LDR, 0x21 << 24)                       # cluster 2, member bit 0
    assert apic.accepts(True, 0x23) and not apic.accepts(True, 0x13)
    assert apic.accepts(False, 0xFF)                  # broadcast


def test_software_disable_masks_lvts_and_holds_interrupts():
    _, apic = make()
    wr(apic, L.LVT_LINT0, 0x700)
    apic.accept_interrupt(0x80, False)
    wr(apic, L.SVR, 0x0FF)
    assert rd(apic, L.LVT_LINT0) == 0x10700 and not apic.passes_extint()
    wr(apic, L.LVT_ERROR, 0x33)                       # mask cannot be cleared
    assert rd(apic, L.LVT_ERROR) == 0x10033
    assert not apic.deliverable()
    apic.accept_interrupt(0x90, False)                # discarded
    wr(apic, L.SVR, 0x1FF)
    assert apic.acknowledge() == 0x80
    assert not irr_has(apic, 0x90)
    assert rd(apic, L.LVT_LINT0) == 0x10700            # still masked after re-enabling


def test_global_disable_returns_to_power_up_state():
    _, apic = make()
    wr(apic, L.TPR, 0x20)
    apic.write_apic_base_msr(0xFEE00000)
    assert apic.read_apic_base_msr() == 0xFEE00100
    assert rd(apic, L.VERSION) == 0 and apic.passes_extint()
    apic.write_apic_base_msr(0xFEE00800)
    assert rd(apic, L.TPR) == 0 and rd(apic, L.SVR) == 0xFF


# --- the timer ----------------------------------------------------------------------------

def arm(time: ManualTime, apic: LocalApic, mode: int, divide: int, count: int,
        vector: int = 0x40) -> int:
    wr(apic, L.LVT_TIMER, mode << 17 | vector)
    wr(apic, L.TIMER_DIVIDE, divide)
    start = time.tick
    wr(apic, L.TIMER_INITIAL, count)
    return start


@pytest.mark.parametrize("config,divisor", sorted(DIVIDES.items()))
def test_one_shot_expires_at_the_exact_tick_for_each_divide(config, divisor):
    time, apic = make()
    time.at(1000)
    start = arm(time, apic, 0, config, 50)
    expiry = start + 50 * divisor
    assert apic.next_deadline() == expiry and time.wakes[-1] == expiry
    time.at(expiry - 1)
    apic.advance(time.tick)
    assert not irr_has(apic, 0x40)
    assert rd(apic, L.TIMER_CURRENT) == 1
    time.at(expiry)
    apic.advance(time.tick)
    assert irr_has(apic, 0x40)
    assert rd(apic, L.TIMER_CURRENT) == 0 and apic.next_deadline() is None


@pytest.mark.parametrize("config,divisor", sorted(DIVIDES.items()))
def test_periodic_reloads_at_exact_ticks_for_each_divide(config, divisor):
    time, apic = make()
    start = arm(time, apic, 1, config, 7)
    period = 7 * divisor
    for k in range(1, 4):
        assert apic.next_deadline() == start + k * period
        time.at(start + k * period - 1)
        assert rd(apic, L.TIMER_CURRENT) == 1
        assert not irr_has(apic, 0x40)
        time.at(start + k * period)
        assert rd(apic, L.TIMER_CURRENT) == 7     # reloaded (the read catches up)
        assert apic.acknowledge() == 0x40
        wr(apic, L.EOI, 0)


def test_current_count_counts_down_in_divided_steps():
    time, apic = make()
    start = arm(time, apic, 0, 0b0001, 100)       # divide by 4
    for elapsed, expected in ((0, 100), (3, 100), (4, 99), (39, 91), (400, 0)):
        time.at(start + elapsed)
        assert rd(apic, L.TIMER_CURRENT) == expected


def test_timer_on_a_slower_input_clock():
    time = ManualTime()
    apic = LocalApic(time.clock, timer_rate=Rate(25_000_000))   # 4 ticks per input clock
    apic.write(L.SVR, 4, 0x1FF)
    time.at(6)                                    # mid-way between two input edges
    start = arm(time, apic, 0, 0b1011, 10)        # divide by 1
    assert apic.next_deadline() == 44             # input edges at 8, 12, ..., the tenth at 44
    assert start == 6


def test_masked_timer_counts_without_interrupting():
    time, apic = make()
    arm(time, apic, 1, 0b1011, 10)
    wr(apic, L.LVT_TIMER, 1 << 17 | L.LVT_MASKED | 0x40)
    time.at(25)
    apic.advance(25)
    assert not irr_has(apic, 0x40) and rd(apic, L.TIMER_CURRENT) == 5


def test_initial_count_zero_stops_the_timer():
    time, apic = make()
    arm(time, apic, 1, 0b1011, 10)
    wr(apic, L.TIMER_INITIAL, 0)
    assert apic.next_deadline() is None and rd(apic, L.TIMER_CURRENT) == 0


def test_divide_change_continues_from_the_current_count():
    time, apic = make()
    arm(time, apic, 0, 0b1011, 100)               # divide by 1
    time.at(40)
    wr(apic, L.TIMER_DIVIDE, 0b0000)              # divide by 2: 60 left, 120 ticks
    assert rd(apic, L.TIMER_DIVIDE) == 0
    assert apic.next_deadline() == 160


def test_tsc_deadline_mode():
    time, apic = make()
    wr(apic, L.LVT_TIMER, 2 << 17 | 0x50)
    assert rd(apic, L.LVT_TIMER) == 2 << 17 | 0x50
    wr(apic, L.TIMER_INITIAL, 1234)               # ignored in TSC-deadline mode
    assert rd(apic, L.TIMER_INITIAL) == 0 and rd(apic, L.TIMER_CURRENT) == 0
    time.at(100)
    apic.write_tsc_deadline_msr(5000)
    assert apic.read_tsc_deadline_msr() == 5000 and apic.next_deadline() == 5000
    time.at(4999)
    apic.advance(4999)
    assert not irr_has(apic, 0x50)
    time.at(5000)
    apic.advance(5000)
    assert irr_has(apic, 0x50) and apic.read_tsc_deadline_msr() == 0
    assert apic.next_deadline() is None


def test_tsc_deadline_in_the_past_fires_at_once_and_zero_disarms():
    time, apic = make()
    wr(apic, L.LVT_TIMER, 2 << 17 | 0x50)
    time.at(9000)
    apic.write_tsc_deadline_msr(10)
    assert irr_has(apic, 0x50)
    apic.write_tsc_deadline_msr(20000)
    apic.write_tsc_deadline_msr(0)
    assert apic.next_deadline() is None


def test_leaving_tsc_deadline_mode_disarms():
    time, apic = make()
    wr(apic, L.LVT_TIMER, 2 << 17 | 0x50)
    apic.write_tsc_deadline_msr(20000)
    wr(apic, L.LVT_TIMER, 0x50)                   # back to one-shot
    assert apic.read_tsc_deadline_msr() == 0 and apic.next_deadline() is None
    apic.write_tsc_deadline_msr(30000)            # ignored outside TSC-deadline mode
    assert apic.read_tsc_deadline_msr() == 0


# --- priority logic against a model --------------------------------------------------------

def model_pick(irr: set[int], isr: set[int], tpr: int) -> int | None:
    """The highest IRR vector whose class is above the processor priority's class."""
    isrv = max(isr, default=0)
    ppr = tpr if tpr >> 4 >= isrv >> 4 else isrv & 0xF0
    best = max(irr, default=None)
    return best if best is not None and best >> 4 > ppr >> 4 else None


vectors = st.sets(st.integers(16, 255), max_size=6)


@given(vectors, vectors, st.integers(0, 255))
def test_deliverable_matches_the_model(irr, isr, tpr):
    _, apic = make()
    for vector in irr:
        apic.accept_interrupt(vector, False)
    apic.isr = sum(1 << v for v in isr)
    wr(apic, L.TPR, tpr)
    expected = model_pick(irr, isr, tpr)
    assert apic.deliverable() == (expected is not None)
    assert apic.acknowledge() == (expected if expected is not None else 0xFF)


class ApicPriorityMachine(RuleBasedStateMachine):
    """Random accepts, INTAs, EOIs and TPR writes against the model."""

    def __init__(self) -> None:
        super().__init__()
        _, self.apic = make()
        self.irr: set[int] = set()
        self.isr: set[int] = set()
        self.tpr = 0

    @rule(vector=st.integers(16, 255))
    def accept(self, vector):
        self.apic.accept_interrupt(vector, False)
        self.irr.add(vector)

    @rule(tpr=st.integers(0, 255))
    def set_tpr(self, tpr):
        wr(self.apic, L.TPR, tpr)
        self.tpr = tpr

    @precondition(lambda self: bool(self.irr))
    @rule()
    def acknowledge(self):
        expected = model_pick(self.irr, self.isr, self.tpr)
        assert self.apic.acknowledge() == (expected if expected is not None else 0xFF)
        if expected is not None:
            self.irr.discard(expected)
            self.isr.add(expected)

    @rule()
    def eoi(self):
        wr(self.apic, L.EOI, 0)
        if self.isr:
            self.isr.discard(max(self.isr))

    @invariant()
    def registers_match(self):
        isr = sum(1 << v for v in self.isr)
        assert [rd(self.apic, L.ISR_BASE + 0x10 * i) for i in range(8)] == [
            (isr >> (32 * i)) & 0xFFFFFFFF for i in range(8)]
        isrv = max(self.isr, default=0)
        ppr = self.tpr if self.tpr >> 4 >= isrv >> 4 else isrv & 0xF0
        assert rd(self.apic, L.PPR) == ppr


TestApicPriority = ApicPriorityMachine.TestCase
TestApicPriority.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
