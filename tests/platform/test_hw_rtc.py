"""The MC146818 RTC and CMOS through ports 0x70/0x71: dates from a boot time on virtual
time, rollovers, presentation modes, UIP timing, SET, and the three interrupts on IRQ 8.
Expected dates come from Python's datetime, not from the model's calendar code."""
from __future__ import annotations

import calendar
import datetime as dt

from hypothesis import given
from hypothesis import strategies as st

from emu.hw.devices import rtc as R
from emu.hw.devices.rtc import Mc146818Rtc, civil_from_days, days_from_civil
from hw_rig import LineProbe, ManualTime

IPS = 100_000_000


def unix(*args: int) -> int:
    return calendar.timegm(dt.datetime(*args).timetuple())


def make(boot: int) -> tuple[ManualTime, Mc146818Rtc, LineProbe]:
    time = ManualTime(IPS)
    probe = LineProbe("irq8")
    return time, Mc146818Rtc(time.clock, boot, probe.line), probe


def cmos(rtc: Mc146818Rtc, index: int) -> int:
    rtc.write(0, 1, index)
    return rtc.read(1, 1)


def cmos_write(rtc: Mc146818Rtc, index: int, value: int) -> None:
    rtc.write(0, 1, index)
    rtc.write(1, 1, value)


def shown(rtc: Mc146818Rtc) -> tuple[int, ...]:
    """(century, year, month, day, hours, minutes, seconds, weekday) as read."""
    return tuple(cmos(rtc, index) for index in (R.CENTURY, R.YEAR, R.MONTH, R.DAY, R.HOURS,
                                                 R.MINUTES, R.SECONDS, R.WEEKDAY))


def test_year_end_rollover_in_bcd():
    time, rtc, _ = make(unix(2023, 12, 31, 23, 59, 58))
    assert shown(rtc) == (0x20, 0x23, 0x12, 0x31, 0x23, 0x59, 0x58, 1)   # a Sunday
    time.at(2 * IPS - 1)
    assert cmos(rtc, R.SECONDS) == 0x59
    time.at(2 * IPS)
    assert shown(rtc) == (0x20, 0x24, 0x01, 0x01, 0x00, 0x00, 0x00, 2)   # Monday


def test_century_and_leap_days():
    time, rtc, _ = make(unix(2099, 12, 31, 23, 59, 59))
    time.at(IPS)
    assert shown(rtc)[:4] == (0x21, 0x00, 0x01, 0x01)
    time, rtc, _ = make(unix(2024, 2, 28, 23, 59, 59))
    time.at(IPS)
    assert shown(rtc)[2:4] == (0x02, 0x29)
    time, rtc, _ = make(unix(2100, 2, 28, 23, 59, 59))
    time.at(IPS)
    assert shown(rtc)[2:4] == (0x03, 0x01)                             # 2100 is not leap


def test_binary_and_12_hour_presentation():
    time, rtc, _ = make(unix(2031, 7, 4, 13, 5, 9))
    cmos_write(rtc, R.REG_B, R.B_BINARY)                               # binary, 12-hour
    assert shown(rtc) == (20, 31, 7, 4, 0x80 | 1, 5, 9, 6)
    cmos_write(rtc, R.REG_B, 0)                                        # BCD, 12-hour
    assert cmos(rtc, R.HOURS) == 0x81
    for hour, expected in ((0, 0x12), (12, 0x92), (11, 0x11), (23, 0x91)):
        _, other, _ = make(unix(2031, 7, 4, hour, 0, 0))
        cmos_write(other, R.REG_B, 0)
        assert cmos(other, R.HOURS) == expected


def test_update_in_progress_window():
    time, rtc, _ = make(unix(2024, 5, 1))
    window = 222_800                                                   # 2,228 us at 100 MHz
    for tick, uip in ((3 * IPS - window - 1, 0), (3 * IPS - window, 0x80),
                      (3 * IPS - 1, 0x80), (3 * IPS, 0)):
        time.at(tick)
        assert cmos(rtc, R.REG_A) == 0x26 | uip
    assert cmos(rtc, R.SECONDS) == 0x03


def test_set_bit_freezes_and_sets_the_time():
    time, rtc, _ = make(unix(2024, 5, 1, 10, 0, 0))
    cmos_write(rtc, R.REG_B, R.B_SET | R.B_UIE | R.B_24_HOUR)
    assert cmos(rtc, R.REG_B) == R.B_SET | R.B_24_HOUR                 # SET clears UIE
    for index, value in ((R.HOURS, 0x08), (R.MINUTES, 0x30), (R.SECONDS, 0x00),
                         (R.DAY, 0x15), (R.MONTH, 0x06), (R.YEAR, 0x25)):
        cmos_write(rtc, index, value)
    time.at(5 * IPS - 1000)                                            # in a UIP window
    assert cmos(rtc, R.REG_A) & R.A_UIP == 0
    assert shown(rtc)[:7] == (0x20, 0x25, 0x06, 0x15, 0x08, 0x30, 0x00)
    cmos_write(rtc, R.REG_B, R.B_24_HOUR)                              # 1,000 ticks before
    assert cmos(rtc, R.SECONDS) == 0x00                                # an update: the
    time.at(5 * IPS)                                                   # divider chain keeps
    assert cmos(rtc, R.SECONDS) == 0x01                                # its phase
    time.at(6 * IPS)
    assert rtc.seconds(time.tick) == unix(2025, 6, 15, 8, 30, 2)


def test_writing_a_field_while_running_and_normalising():
    time, rtc, _ = make(unix(2024, 1, 31, 12, 0, 0))
    cmos_write(rtc, R.MONTH, 0x02)                                     # 31 February ...
    assert cmos(rtc, R.MONTH) == 0x03 and cmos(rtc, R.DAY) == 0x02     # ... is 2 March
    cmos_write(rtc, R.WEEKDAY, 3)                                      # ignored:
    assert cmos(rtc, R.WEEKDAY) == 7                                   # a Saturday
    time.at(IPS)
    assert rtc.seconds(time.tick) == unix(2024, 3, 2, 12, 0, 1)


def test_periodic_interrupt_and_register_c():
    time, rtc, irq = make(unix(2024, 1, 1))
    cmos_write(rtc, R.REG_B, R.B_PIE | R.B_24_HOUR)                    # A = 0x26: 1024 Hz
    first = -(-IPS // 1024)                                            # 97,657 ticks
    assert rtc.next_deadline() == first and time.wakes[-1] == first
    time.at(first - 1)
    rtc.advance(time.tick)
    assert not irq.level
    time.at(first)
    rtc.advance(time.tick)
    assert irq.level and irq.edges == 1
    assert rtc.next_deadline() is None                                 # held until C is read
    assert cmos(rtc, R.REG_C) == R.C_IRQF | R.C_PF
    assert not irq.level and cmos(rtc, R.REG_C) == 0
    assert rtc.next_deadline() == -(-2 * IPS // 1024)


def test_update_ended_interrupt():
    time, rtc, irq = make(unix(2024, 1, 1))
    cmos_write(rtc, R.REG_B, R.B_UIE | R.B_24_HOUR)
    assert rtc.next_deadline() == IPS
    time.at(IPS)
    rtc.advance(time.tick)
    assert irq.level
    assert cmos(rtc, R.REG_C) == R.C_IRQF | R.C_UF | R.C_PF            # PF sets unasked


def test_alarm_interrupt_at_the_matching_second():
    time, rtc, irq = make(unix(2024, 1, 1, 6, 59, 58))
    for index, value in ((R.HOURS_ALARM, 0x07), (R.MINUTES_ALARM, 0x00),
                         (R.SECONDS_ALARM, 0x03)):
        cmos_write(rtc, index, value)
    cmos_write(rtc, R.REG_B, R.B_AIE | R.B_24_HOUR)
    assert rtc.next_deadline() == 5 * IPS
    time.at(5 * IPS - 1)
    rtc.advance(time.tick)
    assert not irq.level
    time.at(5 * IPS)
    rtc.advance(time.tick)
    assert irq.level
    assert cmos(rtc, R.REG_C) & (R.C_IRQF | R.C_AF) == R.C_IRQF | R.C_AF
    assert rtc.next_deadline() == (5 + 86400) * IPS                    # same time tomorrow


def test_dont_care_alarm_matches_every_second():
    time, rtc, irq = make(unix(2024, 1, 1))
    for index in (R.HOURS_ALARM, R.MINUTES_ALARM, R.SECONDS_ALARM):
        cmos_write(rtc, index, 0xC0)
    cmos_write(rtc, R.REG_B, R.B_AIE | R.B_24_HOUR)
    assert rtc.next_deadline() == IPS


def test_register_d_c_and_plain_cmos_bytes():
    time = ManualTime(IPS)
    rtc = Mc146818Rtc(time.clock, 0, cmos={0x10: 0x40, 0x34: 0x12})
    assert cmos(rtc, R.REG_D) == R.D_VRT
    cmos_write(rtc, R.REG_D, 0)
    cmos_write(rtc, R.REG_C, 0xFF)
    assert cmos(rtc, R.REG_D) == R.D_VRT and cmos(rtc, R.REG_C) == 0
    assert cmos(rtc, 0x10) == 0x40 and cmos(rtc, 0x34) == 0x12
    cmos_write(rtc, 0x7F, 0xA5)
    assert cmos(rtc, 0x7F) == 0xA5
    rtc.write(0, 1, 0x80 | R.REG_A)                                    # NMI-disable bit
    assert rtc.read(1, 1) == 0x26
    assert rtc.read(0, 1) == 0xFF


@given(st.integers(-719_162, 2_932_896))          # the years 1-9999 datetime knows
def test_calendar_arithmetic_matches_datetime(days):
    date = dt.date(1970, 1, 1) + dt.timedelta(days=days)
    assert civil_from_days(days) == (date.year, date.month, date.day)
    assert days_from_civil(date.year, date.month, date.day) == days
