"""The HPET through its MMIO registers (IA-PC HPET 1.0a), at exact ticks. The main counter's
expected values are computed here from the period in femtoseconds with fractions."""
from __future__ import annotations

from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st

from emu.hw.devices import hpet as H
from emu.hw.devices.hpet import Hpet
from hw_rig import LineProbe, ManualTime, ProbeLines

IPS = 100_000_000
TICKS_PER_COUNT = Fraction(IPS * H.HPET_PERIOD_FS, 10**15)     # 6.9841279 ticks


def counts_at(tick: int) -> int:
    return int(tick / TICKS_PER_COUNT)


def tick_of_count(count: int) -> int:
    exact = count * TICKS_PER_COUNT
    return int(exact) if exact.denominator == 1 else int(exact) + 1


def make() -> tuple[ManualTime, Hpet, ProbeLines, tuple[LineProbe, LineProbe]]:
    time = ManualTime(IPS)
    lines = ProbeLines()
    displaced = (LineProbe("pit"), LineProbe("rtc"))
    hpet = Hpet(time.clock, lines, legacy_displaced=[probe.line for probe in displaced])
    return time, hpet, lines, displaced


def timer_config(index: int) -> int:
    return H.TIMER_BASE + H.TIMER_STRIDE * index


def comparator(index: int) -> int:
    return timer_config(index) + H.T_COMPARATOR


def enable(hpet: Hpet, legacy: bool = False) -> None:
    hpet.write(H.GEN_CONF, 8, H.CONF_ENABLE | (H.CONF_LEGACY if legacy else 0))


def test_capabilities_and_period():
    _, hpet, _, _ = make()
    expected = (69_841_279 << 32) | 0x8086 << 16 | 0x8000 | 0x2000 | 2 << 8 | 0x01
    assert hpet.read(H.GCAP_ID, 8) == expected
    assert hpet.read(H.GCAP_ID, 4) == expected & 0xFFFFFFFF
    assert hpet.read(H.GCAP_ID + 4, 4) == 69_841_279
    hpet.write(H.GCAP_ID, 8, 0)
    assert hpet.read(H.GCAP_ID, 8) == expected
    config = hpet.read(timer_config(1), 8)
    assert config >> 32 == H.ROUTE_CAPABILITY
    assert config & (H.TN_PERIODIC_CAP | H.TN_SIZE_CAP) == H.TN_PERIODIC_CAP | H.TN_SIZE_CAP


def test_main_counter_runs_only_when_enabled():
    time, hpet, _, _ = make()
    time.at(1000)
    assert hpet.read(H.MAIN_COUNTER, 8) == 0
    enable(hpet)
    start = 1000
    for tick in (1000, 1006, 1007, 5000, 10**9):
        time.at(tick)
        assert hpet.read(H.MAIN_COUNTER, 8) == counts_at(tick) - counts_at(start)
    hpet.write(H.GEN_CONF, 8, 0)
    frozen = hpet.read(H.MAIN_COUNTER, 8)
    time.at(2 * 10**9)
    assert hpet.read(H.MAIN_COUNTER, 8) == frozen
    hpet.write(H.MAIN_COUNTER, 4, 0x1234)           # low half only
    assert hpet.read(H.MAIN_COUNTER, 8) == (frozen & ~0xFFFFFFFF) | 0x1234


@given(st.integers(0, 10**12), st.integers(0, 10**12))
def test_counter_is_a_pure_function_of_the_tick(enabled_at, later):
    time, hpet, _, _ = make()
    time.at(enabled_at)
    enable(hpet)
    time.at(enabled_at + later)
    first = hpet.read(H.MAIN_COUNTER, 8)
    assert hpet.read(H.MAIN_COUNTER, 8) == first
    assert hpet.read(H.MAIN_COUNTER + 4, 4) == first >> 32
    assert first == counts_at(enabled_at + later) - counts_at(enabled_at)


def test_one_shot_edge_on_its_ioapic_route():
    time, hpet, lines, _ = make()
    hpet.write(timer_config(2), 8, H.TN_INT_ENABLE | 21 << H.TN_ROUTE_SHIFT)
    enable(hpet)
    time.at(500)
    target = hpet.read(H.MAIN_COUNTER, 8) + 1000
    hpet.write(comparator(2), 8, target)
    expiry = tick_of_count(target)
    assert hpet.next_deadline() == expiry and time.wakes[-1] == expiry
    time.at(expiry - 1)
    hpet.advance(time.tick)
    assert lines.gsi[21].edges == 0
    time.at(expiry)
    hpet.advance(time.tick)
    assert lines.gsi[21].edges == 1 and not lines.gsi[21].level
    assert hpet.read(H.GINTR_STA, 8) == 0            # edge mode: status stays 0
    assert hpet.next_deadline() > 10**18              # next match only after the wrap


def test_periodic_mode_with_val_set():
    time, hpet, lines, _ = make()
    hpet.write(timer_config(0), 8, H.TN_INT_ENABLE | H.TN_PERIODIC | H.TN_VAL_SET
               | 20 << H.TN_ROUTE_SHIFT)
    hpet.write(comparator(0), 8, 300)                 # comparator and period
    hpet.write(comparator(0), 8, 100)                 # period only: VAL_SET cleared
    assert hpet.read(timer_config(0), 8) & H.TN_VAL_SET == 0
    assert hpet.read(comparator(0), 8) == 300
    enable(hpet)
    for k, value in enumerate((300, 400, 500)):
        assert hpet.next_deadline() == tick_of_count(value)
        time.at(tick_of_count(value))
        hpet.advance(time.tick)
        assert lines.gsi[20].edges == k + 1
        assert hpet.read(comparator(0), 8) == value + 100


def periodic_with_val_set(hpet: Hpet) -> None:
    hpet.write(timer_config(0), 8, H.TN_INT_ENABLE | H.TN_PERIODIC | H.TN_VAL_SET
               | 20 << H.TN_ROUTE_SHIFT)


def test_a_64_bit_write_split_in_halves_sets_the_whole_comparator():
    """The bus hands a 64-bit MMIO write over as two 32-bit halves, low first."""
    _, hpet, _, _ = make()
    periodic_with_val_set(hpet)
    hpet.write(comparator(0), 4, 300)
    hpet.write(comparator(0) + 4, 4, 0)
    assert hpet.read(comparator(0), 8) == 300          # not 0xffffffff_0000012c
    hpet.write(comparator(0), 4, 100)                  # a new write: the period only
    hpet.write(comparator(0) + 4, 4, 0)
    assert hpet.read(comparator(0), 8) == 300


def test_32_bit_writes_with_val_set_as_linux_makes_them():
    """Low half with VAL_SET (comparator and period), then the low half again (period)."""
    _, hpet, _, _ = make()
    hpet.write(comparator(0), 8, 0)
    periodic_with_val_set(hpet)
    hpet.write(comparator(0), 4, 5000)
    hpet.write(comparator(0), 4, 250)
    assert hpet.read(comparator(0), 8) == 5000
    hpet.write(comparator(0) + 4, 4, 7)               # a later high half: period only
    assert hpet.read(comparator(0), 8) == 5000


def test_periodic_catch_up_coalesces_and_keeps_the_phase():
    time, hpet, lines, _ = make()
    hpet.write(timer_config(0), 8, H.TN_INT_ENABLE | H.TN_PERIODIC | H.TN_VAL_SET
               | 20 << H.TN_ROUTE_SHIFT)
    hpet.write(comparator(0), 8, 100)
    enable(hpet)
    time.at(tick_of_count(1050))
    hpet.advance(time.tick)
    assert lines.gsi[20].edges == 1
    assert hpet.read(comparator(0), 8) == 1100
    assert hpet.next_deadline() == tick_of_count(1100)


def test_32bit_mode_compares_the_low_half_and_wraps():
    time, hpet, lines, _ = make()
    hpet.write(H.MAIN_COUNTER, 8, 0x1_FFFF_FFF0)
    hpet.write(timer_config(1), 8, H.TN_INT_ENABLE | H.TN_32BIT | 22 << H.TN_ROUTE_SHIFT)
    hpet.write(comparator(1), 8, 0xAB_0000_0010)
    assert hpet.read(comparator(1), 8) == 0x10
    enable(hpet)
    assert hpet.next_deadline() == tick_of_count(0x20)   # 0x2_0000_0010 after 0x20 counts
    time.at(tick_of_count(0x20))
    hpet.advance(time.tick)
    assert lines.gsi[22].edges == 1


def test_a_comparator_already_passed_waits_for_the_wrap():
    time, hpet, lines, _ = make()
    hpet.write(timer_config(1), 8, H.TN_INT_ENABLE | H.TN_32BIT | 22 << H.TN_ROUTE_SHIFT)
    enable(hpet)
    time.at(tick_of_count(5000))
    hpet.write(comparator(1), 8, 4000)
    assert hpet.next_deadline() == tick_of_count(4000 + (1 << 32))
    assert lines.gsi[22].edges == 0
    hpet.write(comparator(1), 8, 5000)                # equal to the counter: at once
    assert lines.gsi[22].edges == 1


def test_level_mode_status_holds_the_line_until_cleared():
    time, hpet, lines, _ = make()
    hpet.write(timer_config(2), 8, H.TN_LEVEL | H.TN_INT_ENABLE | 23 << H.TN_ROUTE_SHIFT)
    hpet.write(comparator(2), 8, 10)
    enable(hpet)
    time.at(tick_of_count(10))
    assert hpet.read(H.GINTR_STA, 8) == 0b100
    assert lines.gsi[23].level
    assert hpet.next_deadline() is None               # nothing more to raise
    hpet.write(H.GINTR_STA, 8, 0b011)                 # other bits: no effect
    assert lines.gsi[23].level
    hpet.write(H.GINTR_STA, 8, 0b100)
    assert not lines.gsi[23].level and hpet.read(H.GINTR_STA, 8) == 0


def test_level_status_without_interrupt_enable():
    time, hpet, lines, _ = make()
    hpet.write(timer_config(2), 8, H.TN_LEVEL | 23 << H.TN_ROUTE_SHIFT)
    hpet.write(comparator(2), 8, 10)
    enable(hpet)
    time.at(tick_of_count(10))
    assert hpet.read(H.GINTR_STA, 8) == 0b100
    assert not lines.gsi.get(23, LineProbe()).level
    hpet.write(timer_config(2), 8, H.TN_LEVEL | H.TN_INT_ENABLE | 23 << H.TN_ROUTE_SHIFT)
    assert lines.gsi[23].level                        # enabling raises the pending status


def test_legacy_replacement_takes_irq0_and_irq8():
    time, hpet, lines, (pit, rtc) = make()
    hpet.write(timer_config(0), 8, H.TN_INT_ENABLE)
    hpet.write(timer_config(1), 8, H.TN_INT_ENABLE)
    hpet.write(comparator(0), 8, 50)
    hpet.write(comparator(1), 8, 60)
    enable(hpet, legacy=True)
    assert not pit.line.connected and not rtc.line.connected
    time.at(tick_of_count(60))
    hpet.advance(time.tick)
    assert lines.isa[0].edges == 1 and lines.isa[8].edges == 1
    enable(hpet, legacy=False)
    assert pit.line.connected and rtc.line.connected


def test_routes_outside_the_capability_are_ignored():
    _, hpet, _, _ = make()
    hpet.write(timer_config(0), 8, 21 << H.TN_ROUTE_SHIFT)
    hpet.write(timer_config(0), 8, 5 << H.TN_ROUTE_SHIFT)
    assert (hpet.read(timer_config(0), 8) & H.TN_ROUTE_MASK) >> H.TN_ROUTE_SHIFT == 21


def test_halted_counter_matches_nothing_until_enabled():
    time, hpet, lines, _ = make()
    hpet.write(timer_config(0), 8, H.TN_INT_ENABLE | 20 << H.TN_ROUTE_SHIFT)
    hpet.write(comparator(0), 8, 0)                   # equal to the halted counter
    time.at(10_000)
    hpet.advance(time.tick)
    assert lines.gsi[20].edges == 0 and hpet.next_deadline() is None
    enable(hpet)                                      # the counter equals it: at once
    assert lines.gsi[20].edges == 1
