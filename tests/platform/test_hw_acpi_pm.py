"""The ACPI PM1 event/control blocks, the PM timer and the 0xCF9 reset register through their
ports. The PM timer's expected count is computed here from 315/88 MHz with fractions."""
from __future__ import annotations

from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st

from emu.hw.devices import acpi_pm as P
from emu.hw.devices.acpi_pm import AcpiPm
from emu.hw.devices.reset import ResetControl, ResetReason
from hw_rig import LineProbe, ManualTime

IPS = 100_000_000
TICKS_PER_COUNT = Fraction(IPS * 88, 315_000_000)


def pm_count(tick: int) -> int:
    return int(tick / TICKS_PER_COUNT)


def first_tick_of(count: int) -> int:
    exact = count * TICKS_PER_COUNT
    return int(exact) if exact.denominator == 1 else int(exact) + 1


def make() -> tuple[ManualTime, AcpiPm, LineProbe, list[str]]:
    time = ManualTime(IPS)
    sci = LineProbe("sci")
    events: list[str] = []
    return time, AcpiPm(time.clock, lambda: events.append("off"), sci.line), sci, events


@given(st.integers(0, 10**13))
def test_pm_timer_is_a_pure_function_of_the_tick(tick):
    time, pm, _, _ = make()
    time.at(tick)
    value = pm.read(P.PM_TMR, 4)
    assert value == pm_count(tick) & 0xFFFFFFFF
    assert pm.read(P.PM_TMR, 4) == value
    assert pm.read(P.PM_TMR + 2, 2) == value >> 16


def test_pm_timer_is_read_only():
    time, pm, _, _ = make()
    time.at(10**6)
    before = pm.read(P.PM_TMR, 4)
    pm.write(P.PM_TMR, 4, 0)
    assert pm.read(P.PM_TMR, 4) == before


def test_timer_overflow_status_raises_the_sci_when_enabled():
    time, pm, sci, _ = make()
    toggle = first_tick_of(1 << 31)
    pm.write(P.PM1_EN, 2, P.TMR_EN)
    assert pm.next_deadline() == toggle and time.wakes[-1] == toggle
    time.at(toggle - 1)
    pm.advance(time.tick)
    assert not sci.level and pm.read(P.PM1_STS, 2) & P.TMR_STS == 0
    time.at(toggle)
    pm.advance(time.tick)
    assert sci.level and pm.read(P.PM1_STS, 2) & P.TMR_STS
    assert pm.next_deadline() is None
    pm.write(P.PM1_STS, 2, P.TMR_STS)                     # write 1 to clear
    assert not sci.level and pm.read(P.PM1_STS, 2) == 0
    assert pm.next_deadline() == first_tick_of(2 << 31)


def test_power_button_status_and_enable():
    time, pm, sci, _ = make()
    pm.press_power_button()
    assert pm.read(P.PM1_STS, 2) == P.PWRBTN_STS and not sci.level
    pm.write(P.PM1_EN, 2, P.PWRBTN_EN | 0x8000)           # bit 15 is not an enable
    assert pm.read(P.PM1_EN, 2) == P.PWRBTN_EN
    assert sci.level
    pm.write(P.PM1_STS + 1, 1, P.PWRBTN_STS >> 8)         # byte write to the high half
    assert not sci.level and pm.read(P.PM1_STS, 4) == P.PWRBTN_EN << 16


def test_sci_en_is_always_set():
    _, pm, _, _ = make()
    assert pm.read(P.PM1_CNT, 2) == P.SCI_EN
    pm.write(P.PM1_CNT, 2, 0)
    assert pm.read(P.PM1_CNT, 2) == P.SCI_EN


def test_s5_sleep_powers_off_as_the_qemu_shortcut_does():
    _, pm, _, events = make()
    pm.write(P.PM1_CNT, 2, 0x2000)                        # outw(0x604, 0x2000)
    assert events == ["off"]
    pm.write(P.PM1_CNT + 1, 1, 0x20)                      # SLP_EN in the high byte alone
    assert events == ["off", "off"]


def test_other_sleep_types_are_ignored():
    _, pm, _, events = make()
    pm.write(P.PM1_CNT, 2, P.SLP_EN | 5 << P.SLP_TYP_SHIFT)
    assert events == []
    assert pm.read(P.PM1_CNT, 2) == P.SCI_EN | 5 << P.SLP_TYP_SHIFT   # SLP_EN reads 0
    pm.write(P.PM1_CNT, 2, P.SLP_EN | P.SLP_TYP_S5 << P.SLP_TYP_SHIFT)
    assert events == ["off"]


def test_reserved_bytes_read_zero():
    _, pm, _, _ = make()
    pm.write(6, 2, 0xFFFF)
    assert pm.read(6, 2) == 0


def test_reset_control_register():
    reasons: list[ResetReason] = []
    cf9 = ResetControl(reasons.append)
    cf9.write(0, 1, 0x02)                                 # SYS_RST alone: no reset yet
    assert reasons == [] and cf9.read(0, 1) == 0x02
    cf9.write(0, 1, 0x06)
    cf9.write(0, 1, 0x0E)
    cf9.write(0, 1, 0x04)
    assert reasons == [ResetReason.CF9_HARD, ResetReason.CF9_FULL, ResetReason.CF9_SOFT]
    assert cf9.read(0, 1) == 0x00
