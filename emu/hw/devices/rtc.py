"""The MC146818A real-time clock and CMOS RAM behind ports 0x70 (index) and 0x71 (data),
following the Motorola MC146818A datasheet ("Address Map", "Time, Calendar and Alarm
Locations", "Registers A-D", "Update Cycle", "Interrupts").

Owns: the time and calendar (seconds to year, plus the century byte at 0x32 that ACPI's FADT
CENTURY field names) counted from a boot time in UNIX seconds as virtual time passes; BCD or
binary and 12- or 24-hour presentation; setting the time (SET bit); the update-in-progress
flag; the periodic, alarm and update-ended interrupts and register C's flags on IRQ 8; and the
plain CMOS bytes.
Does not own: where IRQ 8 goes (emu.hw.irq) or the NMI mask (port 0x70 bit 7 is ignored).

Virtual timing: second k of the run ends at tick k * ips, when the registers show the next
second and the update-ended flag sets. UIP reads 1 during the 2,228 us before that (244 us of
warning plus the 1,984 us update cycle of a 32.768 kHz time base), so a reader that sees UIP=0
has at least 2,228 us of stable registers, as the datasheet promises 244 us. The periodic
interrupt runs at 32768 >> (RS - 1) Hz (RS 1 and 2: 256 and 128 Hz), in phase with tick 0.
Modelled as documented behaviour, not refused:
- The time is kept as a count of seconds: changing DM (binary/BCD) or 24/12 changes how it is
  shown at once (the chip would need the time rewritten). The day of the week is derived
  from the date; writes to register 6 are ignored.
- Time register writes out of range (hour 25, 31 February) are normalised by date arithmetic:
  31 February 2024 becomes 2 March 2024.
- Divider bits DV and daylight saving (DSE) are stored and have no effect; SQWE has no pin.
- Port 0x70 reads 0xFF (the index register is write-only on PC chipsets).
"""
from __future__ import annotations

from emu.hw.bus import Access, Device, Register
from emu.hw.clock import Rate, VirtualClock
from emu.hw.irq import IrqLine

RTC_PORT = 0x70
RTC_IRQ = 8
CENTURY = 0x32
SECONDS, SECONDS_ALARM, MINUTES, MINUTES_ALARM, HOURS, HOURS_ALARM = range(6)
WEEKDAY, DAY, MONTH, YEAR = 6, 7, 8, 9
REG_A, REG_B, REG_C, REG_D = 0x0A, 0x0B, 0x0C, 0x0D
A_UIP = 0x80
B_SET, B_PIE, B_AIE, B_UIE = 0x80, 0x40, 0x20, 0x10
B_BINARY, B_24_HOUR = 0x04, 0x02
C_IRQF, C_PF, C_AF, C_UF = 0x80, 0x40, 0x20, 0x10
D_VRT = 0x80
FIRMWARE_A, FIRMWARE_B = 0x26, B_24_HOUR          # 32.768 kHz, 1024 Hz; BCD, 24-hour
UIP_WINDOW_NS = (244 + 1984) * 1000
DONT_CARE = 0xC0
SECONDS_PER_DAY = 86400
_TIME_REGISTERS = (SECONDS, MINUTES, HOURS, DAY, MONTH, YEAR, CENTURY)


def days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date; months out of 1-12 and days
    past the month's end roll over."""
    year += (month - 1) // 12
    month = (month - 1) % 12 + 1
    shifted = year - (month <= 2)
    era, year_of_era = divmod(shifted, 400)
    day_of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146097 + day_of_era - 719468 + day - 1


def civil_from_days(days: int) -> tuple[int, int, int]:
    """(year, month, day) of a day count since 1970-01-01."""
    era, day_of_era = divmod(days + 719468, 146097)
    year_of_era = (day_of_era - day_of_era // 1460 + day_of_era // 36524
                   - day_of_era // 146096) // 365
    day_of_year = day_of_era - (365 * year_of_era + year_of_era // 4 - year_of_era // 100)
    shifted_month = (5 * day_of_year + 2) // 153
    day = day_of_year - (153 * shifted_month + 2) // 5 + 1
    month = shifted_month + (3 if shifted_month < 10 else -9)
    return era * 400 + year_of_era + (month <= 2), month, day


def _periodic_rate(rate_select: int) -> Rate | None:
    if rate_select == 0:
        return None
    return Rate(256 if rate_select == 1 else 128 if rate_select == 2 else 65536 >> rate_select)


class Mc146818Rtc(Device):
    registers = (Register(0, "INDEX", access=Access.WRITE), Register(1, "DATA"))

    def __init__(self, clock: VirtualClock, boot_time: int, irq: IrqLine | None = None,
                 name: str = "rtc", cmos: dict[int, int] | None = None) -> None:
        super().__init__(name)
        self.clock = clock
        self.boot_time = boot_time
        self.irq = irq
        self.index = 0
        self.ram = bytearray(128)
        for address, value in (cmos or {}).items():
            self.ram[address & 0x7F] = value & 0xFF
        self.ram[REG_A], self.ram[REG_B] = FIRMWARE_A, FIRMWARE_B
        self._offset = 0                 # seconds added by guest writes of the time
        self._frozen: int | None = None  # the time while SET is 1
        self._flags = 0                  # PF/AF/UF latched before _seen_tick
        self._seen_tick = 0
        self._uip_ticks = clock.ticks_for_ns(UIP_WINDOW_NS)
        self._caught_up = 0

    # --- time -------------------------------------------------------------------------------

    def seconds(self, tick: int) -> int:
        """UNIX seconds the clock shows at `tick`."""
        if self._frozen is not None:
            return self._frozen
        return self.boot_time + self._offset + tick // self.clock.ips

    def _set_seconds(self, value: int, tick: int) -> None:
        if self._frozen is not None:
            self._frozen = value
        else:
            self._offset = value - self.boot_time - tick // self.clock.ips

    def _encode(self, value: int) -> int:
        return value if self.ram[REG_B] & B_BINARY else (value // 10) << 4 | value % 10

    def _decode(self, value: int) -> int:
        return value if self.ram[REG_B] & B_BINARY else (value >> 4) * 10 + (value & 0xF)

    def _encode_hour(self, hour: int) -> int:
        if self.ram[REG_B] & B_24_HOUR:
            return self._encode(hour)
        return self._encode(hour % 12 or 12) | (0x80 if hour >= 12 else 0)

    def _decode_hour(self, value: int) -> int:
        if self.ram[REG_B] & B_24_HOUR:
            return self._decode(value)
        return self._decode(value & 0x7F) % 12 + (12 if value & 0x80 else 0)

    def fields(self, seconds: int) -> dict[int, int]:
        """The time registers' contents for a UNIX time, in the current presentation."""
        days, second_of_day = divmod(seconds, SECONDS_PER_DAY)
        hour, rest = divmod(second_of_day, 3600)
        year, month, day = civil_from_days(days)
        return {SECONDS: self._encode(rest % 60), MINUTES: self._encode(rest // 60),
                HOURS: self._encode_hour(hour), WEEKDAY: self._encode((days + 4) % 7 + 1),
                DAY: self._encode(day), MONTH: self._encode(month),
                YEAR: self._encode(year % 100), CENTURY: self._encode(year // 100)}

    def _write_time_field(self, register: int, value: int, tick: int) -> None:
        current = self.seconds(tick)
        days, second_of_day = divmod(current, SECONDS_PER_DAY)
        hour, rest = divmod(second_of_day, 3600)
        minute, second = divmod(rest, 60)
        year, month, day = civil_from_days(days)
        decoded = self._decode_hour(value) if register == HOURS else self._decode(value)
        if register == SECONDS:
            second = decoded
        elif register == MINUTES:
            minute = decoded
        elif register == HOURS:
            hour = decoded
        elif register == DAY:
            day = decoded
        elif register == MONTH:
            month = decoded
        elif register == YEAR:
            year = year // 100 * 100 + decoded
        else:
            year = decoded * 100 + year % 100
        new = days_from_civil(year, month, day) * SECONDS_PER_DAY + hour * 3600 + minute * 60
        self._set_seconds(new + second, tick)

    # --- interrupt flags --------------------------------------------------------------------

    def _flags_since_seen(self, tick: int) -> int:
        flags = 0
        seen, ips = self._seen_tick, self.clock.ips
        rate = _periodic_rate(self.ram[REG_A] & 0x0F)
        if rate is not None and self.clock.count(rate, tick) > self.clock.count(rate, seen):
            flags |= C_PF
        if self._frozen is None and tick // ips > seen // ips:
            flags |= C_UF
            alarm = self._next_alarm_second(seen // ips + 1)
            if alarm is not None and alarm <= tick // ips:
                flags |= C_AF
        return flags

    def flags(self, tick: int) -> int:
        """Register C as it would read at `tick` (without clearing it)."""
        flags = self._flags | self._flags_since_seen(tick)
        enabled = self.ram[REG_B] & (B_PIE | B_AIE | B_UIE)
        return flags | (C_IRQF if flags & enabled else 0)

    def _rebase_flags(self, tick: int) -> None:
        """Latch the flags so far before the rate, SET or the time changes."""
        self._flags |= self._flags_since_seen(tick)
        self._seen_tick = tick

    def _next_alarm_second(self, first: int) -> int | None:
        """The first run second >= `first` whose time matches the alarm bytes (0xC0-0xFF in
        an alarm byte matches anything), searched over one day: alarms repeat daily."""
        wanted = ((SECONDS, self.ram[SECONDS_ALARM]), (MINUTES, self.ram[MINUTES_ALARM]),
                  (HOURS, self.ram[HOURS_ALARM]))
        step_for = {SECONDS: 1, MINUTES: 60, HOURS: 3600}
        second, last = first, first + SECONDS_PER_DAY
        while second < last:
            shown = self.fields(self.seconds(second * self.clock.ips))
            for register, alarm in reversed(wanted):
                if alarm & DONT_CARE != DONT_CARE and shown[register] != alarm:
                    step = step_for[register]
                    wall = self.seconds(second * self.clock.ips)
                    second += step - wall % step if step > 1 else 1
                    break
            else:
                return second
        return None

    # --- the Timer contract (emu.hw.clock) ---------------------------------------------------

    def next_deadline(self) -> int | None:
        tick, ips = self._caught_up, self.clock.ips
        enabled = self.ram[REG_B]
        if not enabled & (B_PIE | B_AIE | B_UIE):
            return None                              # no flag can raise IRQ 8
        flags = self.flags(tick)
        if flags & C_IRQF:
            return None                              # IRQ 8 stays high until C is read
        deadlines = []
        rate = _periodic_rate(self.ram[REG_A] & 0x0F)
        if enabled & B_PIE and rate is not None:
            deadlines.append(self.clock.first_tick(rate, self.clock.count(rate, tick) + 1))
        if self._frozen is None and enabled & B_UIE:
            deadlines.append((tick // ips + 1) * ips)
        elif self._frozen is None and enabled & B_AIE:
            alarm = self._next_alarm_second(tick // ips + 1)
            if alarm is not None:
                deadlines.append(alarm * ips)
        return min(deadlines) if deadlines else None

    def advance(self, now: int) -> None:
        if now < self._caught_up:
            return
        self._caught_up = now
        if self.irq is not None:
            # Without an enable bit in register B no flag raises IRQ 8: skip the flags.
            enabled = self.ram[REG_B] & (B_PIE | B_AIE | B_UIE)
            self.irq.set(bool(enabled) and bool(self.flags(now) & C_IRQF))

    def _announce(self) -> None:
        deadline = self.next_deadline()
        if deadline is not None:
            self.clock.wake_at(deadline)

    # --- ports ------------------------------------------------------------------------------

    def read(self, offset: int, size: int) -> int:
        if offset != 1:
            return 0xFF
        now = self.clock.now()
        self.advance(now)
        return self._read_register(self.index, now)

    def write(self, offset: int, size: int, value: int) -> None:
        value &= 0xFF
        if offset == 0:
            self.index = value & 0x7F               # bit 7 (NMI disable) is not modelled
            return
        now = self.clock.now()
        self.advance(now)
        self._write_register(self.index, value, now)
        self.advance(now)
        self._announce()

    def _read_register(self, index: int, now: int) -> int:
        if index in _TIME_REGISTERS or index == WEEKDAY:
            return self.fields(self.seconds(now))[index]
        if index == REG_A:
            in_window = now % self.clock.ips >= self.clock.ips - self._uip_ticks
            uip = A_UIP if self._frozen is None and in_window else 0
            return self.ram[REG_A] | uip
        if index == REG_C:
            value = self.flags(now)
            self._flags, self._seen_tick = 0, now
            if self.irq is not None:
                self.irq.lower()
            self._announce()
            return value
        if index == REG_D:
            return D_VRT
        return self.ram[index]

    def _write_register(self, index: int, value: int, now: int) -> None:
        if index in _TIME_REGISTERS:
            self._rebase_flags(now)
            self._write_time_field(index, value, now)
        elif index == REG_A:
            self._rebase_flags(now)
            self.ram[REG_A] = value & 0x7F
        elif index == REG_B:
            self._write_b(value, now)
        elif index not in (WEEKDAY, REG_C, REG_D):
            self.ram[index] = value

    def _write_b(self, value: int, now: int) -> None:
        self._rebase_flags(now)
        if value & B_SET and self._frozen is None:
            self._frozen = self.seconds(now)
            value &= ~B_UIE                          # SET clears UIE (datasheet, register B)
        elif not value & B_SET and self._frozen is not None:
            frozen, self._frozen = self._frozen, None
            self._set_seconds(frozen, now)
        self.ram[REG_B] = value
