"""The high precision event timer at 0xFED00000 (IA-PC HPET Specification 1.0a, section 2.3
"Register Descriptions"): a 64-bit main counter on virtual time and three comparators.

Owns: the capabilities and period, the general configuration (enable, legacy replacement
route), the interrupt status register, the main counter, and each comparator's configuration,
value and period: one-shot and periodic matches at exact ticks, edge and level interrupts,
32-bit mode, the IOAPIC route, and legacy replacement (timer 0 on IRQ0, timer 1 on IRQ8, the
PIT's and RTC's lines disconnected; spec 2.3.9.2.1 and Table 2-3).
Does not own: the IOAPIC or 8259 (lines come from `IrqLines`), the PIT and RTC themselves.

Facts chosen: period 69,841,279 fs (14.31818 MHz, what Intel ICH HPETs report), vendor 8086,
revision 1, 64-bit counter, legacy-replacement capable, three timers, all periodic-capable and
64-bit, each routable to IOAPIC pins 20-23 (Tn_INT_ROUTE_CAP 0x00F00000, pins no other device
of this machine uses). No FSB (MSI) delivery: Tn_FSB_INT_DEL_CAP is 0.
Modelled as documented behaviour, not refused:
- A comparator matches when the main counter reaches its value (the low 32 bits in 32-bit
  mode); a value already passed matches only after the counter wraps, as on hardware. A
  comparator written equal to the current count matches at once.
- Periodic mode: every comparator write sets the period; with Tn_VAL_SET_CNF it also sets the
  comparator, and the write clears Tn_VAL_SET_CNF (spec 2.3.9.2.2). A 64-bit write reaches
  the model as two 32-bit halves; the high half that follows a low half still counts as
  written with Tn_VAL_SET_CNF. Each match adds the
  period to the comparator; a period of 0 matches once per counter wrap.
- A route outside Tn_INT_ROUTE_CAP is ignored (the previous route stays). Writes to the main
  counter while it runs are accepted (the spec leaves them undefined).
- Edge-triggered timers leave their interrupt status bit 0 (the spec says to ignore it).
"""
from __future__ import annotations

from typing import Sequence

from emu.hw.bus import Access, Device, Register
from emu.hw.clock import Rate, VirtualClock
from emu.hw.irq import IrqLine, IrqLines

HPET_BASE = 0xFED00000
HPET_SIZE = 0x1000
HPET_PERIOD_FS = 69_841_279
HPET_VENDOR = 0x8086
HPET_TIMERS = 3
ROUTE_CAPABILITY = 0x00F0_0000          # IOAPIC pins 20-23

GCAP_ID, GEN_CONF, GINTR_STA, MAIN_COUNTER = 0x000, 0x010, 0x020, 0x0F0
TIMER_BASE, TIMER_STRIDE = 0x100, 0x20
T_CONFIG, T_COMPARATOR, T_FSB_ROUTE = 0x00, 0x08, 0x10
CONF_ENABLE, CONF_LEGACY = 1 << 0, 1 << 1
LEG_RT_CAP, COUNT_SIZE_CAP = 1 << 15, 1 << 13
TN_LEVEL, TN_INT_ENABLE, TN_PERIODIC = 1 << 1, 1 << 2, 1 << 3
TN_PERIODIC_CAP, TN_SIZE_CAP, TN_VAL_SET, TN_32BIT = 1 << 4, 1 << 5, 1 << 6, 1 << 8
TN_ROUTE_SHIFT, TN_ROUTE_MASK = 9, 0x1F << 9
_LOW_HALF, _HIGH_HALF = 0xFFFFFFFF, 0xFFFFFFFF << 32
_TN_WRITABLE = TN_LEVEL | TN_INT_ENABLE | TN_PERIODIC | TN_VAL_SET | TN_32BIT | TN_ROUTE_MASK
LEGACY_IRQS = (0, 8)                     # timer 0 -> IRQ0, timer 1 -> IRQ8 in legacy mode
_MASK64 = (1 << 64) - 1


def _timer_registers(index: int) -> tuple[Register, ...]:
    base = TIMER_BASE + TIMER_STRIDE * index
    return (Register(base + T_CONFIG, f"T{index}_CONFIG", size=8),
            Register(base + T_COMPARATOR, f"T{index}_COMPARATOR", size=8),
            Register(base + T_FSB_ROUTE, f"T{index}_FSB_ROUTE", size=8))


class HpetTimer:
    """One comparator. `last` is the main counter value up to which matches are done."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.config = 0
        self.comparator = _MASK64
        self.period = 0
        self.last = -1
        self.status = False              # level mode: interrupt active (GINTR_STA bit)
        self.line: IrqLine | None = None
        # Tn_VAL_SET_CNF was consumed by a write of the comparator's low half: the high half,
        # if it comes next, belongs to the same 64-bit write (see Hpet.write).
        self.value_set_high = False

    @property
    def width_mask(self) -> int:
        return 0xFFFFFFFF if self.config & TN_32BIT else _MASK64

    @property
    def route(self) -> int:
        return (self.config & TN_ROUTE_MASK) >> TN_ROUTE_SHIFT

    def config_register(self) -> int:
        return (ROUTE_CAPABILITY << 32 | self.config | TN_PERIODIC_CAP | TN_SIZE_CAP)

    def next_match(self) -> int:
        """The first main counter value above `last` that the comparator matches."""
        width = self.width_mask
        return self.last + ((self.comparator - self.last - 1) & width) + 1

    def write_comparator(self, value: int, written: int, counter_now: int) -> None:
        """`written` masks the bytes the access covered (a 32-bit half or all 64 bits)."""
        merged = ((self.comparator & ~written) | (value & written)) & self.width_mask
        periodic = bool(self.config & TN_PERIODIC)
        value_set = bool(self.config & TN_VAL_SET) or \
            (self.value_set_high and written == _HIGH_HALF)
        if not periodic or value_set:
            self.comparator = merged
        if periodic:
            self.period = ((self.period & ~written) | (value & written)) & self.width_mask
        self.value_set_high = bool(self.config & TN_VAL_SET) and written == _LOW_HALF
        self.config &= ~TN_VAL_SET
        self.last = counter_now - 1

    def match_through(self, counter_now: int) -> bool:
        """Do the matches up to `counter_now`; True if there was at least one."""
        if counter_now <= self.last:
            return False
        first = self.next_match()
        self.last = counter_now
        if first > counter_now:
            return False
        if self.config & TN_PERIODIC:
            matches = 1 + (counter_now - first) // self.period if self.period else 1
            self.comparator = (self.comparator + matches * self.period) & self.width_mask
        return True


class Hpet(Device):
    registers = (
        Register(GCAP_ID, "GCAP_ID", size=8, access=Access.READ),
        Register(GEN_CONF, "GEN_CONF", size=8), Register(GINTR_STA, "GINTR_STA", size=8),
        Register(MAIN_COUNTER, "MAIN_COUNTER", size=8),
        *(register for index in range(HPET_TIMERS) for register in _timer_registers(index)),
    )

    def __init__(self, clock: VirtualClock, lines: IrqLines,
                 legacy_displaced: Sequence[IrqLine] = (), name: str = "hpet",
                 period_fs: int = HPET_PERIOD_FS) -> None:
        super().__init__(name)
        self.clock = clock
        self.lines = lines
        self.legacy_displaced = tuple(legacy_displaced)
        self.period_fs = period_fs
        self.rate = Rate.from_period_fs(period_fs)
        self.config = 0
        self._counter_base = 0           # main counter value at _base_tick
        self._base_tick = 0
        self._caught_up = 0
        self.timers = tuple(HpetTimer(index) for index in range(HPET_TIMERS))
        self._line_cache: dict[tuple[str, int], IrqLine] = {}
        for timer in self.timers:
            timer.line = self._line_for(timer)

    # --- the main counter -------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        return bool(self.config & CONF_ENABLE)

    def counter_at(self, tick: int) -> int:
        if not self.enabled:
            return self._counter_base
        elapsed = self.clock.count(self.rate, tick) - self.clock.count(self.rate, self._base_tick)
        return self._counter_base + elapsed

    def _tick_of_counter(self, value: int) -> int:
        base = self.clock.count(self.rate, self._base_tick)
        return self.clock.first_tick(self.rate, base + value - self._counter_base)

    # --- interrupts -------------------------------------------------------------------------

    def _line_for(self, timer: HpetTimer) -> IrqLine:
        if self.config & CONF_LEGACY and timer.index < len(LEGACY_IRQS):
            key = ("isa", LEGACY_IRQS[timer.index])
        else:
            key = ("gsi", timer.route)
        if key not in self._line_cache:
            name = f"{self.name}-timer{timer.index}"
            make = self.lines.isa_line if key[0] == "isa" else self.lines.gsi_line
            self._line_cache[key] = make(key[1], name)
        return self._line_cache[key]

    def _rewire(self) -> None:
        """Routes or trigger modes changed: drop every old line, then drive the new ones."""
        for timer in self.timers:
            if timer.line is not None:
                timer.line.lower()
        for timer in self.timers:
            timer.line = self._line_for(timer)
        for timer in self.timers:
            self._drive_level(timer)
        for line in self.legacy_displaced:
            line.connected = not self.config & CONF_LEGACY

    def _drive_level(self, timer: HpetTimer) -> None:
        if timer.config & TN_LEVEL and timer.status and timer.config & TN_INT_ENABLE:
            timer.line.raise_()

    def _fire(self, timer: HpetTimer) -> None:
        if timer.config & TN_LEVEL:
            timer.status = True
            self._drive_level(timer)
        elif timer.config & TN_INT_ENABLE:
            timer.line.pulse()

    # --- the Timer contract (emu.hw.clock) ---------------------------------------------------

    def next_deadline(self) -> int | None:
        if not self.enabled:
            return None
        deadlines = [self._tick_of_counter(timer.next_match()) for timer in self.timers
                     if timer.config & TN_INT_ENABLE
                     and not (timer.config & TN_LEVEL and timer.status)]
        return min(deadlines) if deadlines else None

    def advance(self, now: int) -> None:
        if now < self._caught_up:
            return
        self._caught_up = now
        if not self.enabled:
            return                       # a halted counter matches nothing
        counter = self.counter_at(now)
        for timer in self.timers:
            if timer.match_through(counter):
                self._fire(timer)

    def _announce(self) -> None:
        deadline = self.next_deadline()
        if deadline is not None:
            self.clock.wake_at(deadline)

    # --- registers --------------------------------------------------------------------------

    def read(self, offset: int, size: int) -> int:
        for timer in self.timers:
            timer.value_set_high = False
        now = self.clock.now()
        self.advance(now)
        shift = 8 * (offset & 7)
        return (self._read_register(offset & ~7, now) >> shift) & ((1 << (8 * size)) - 1)

    def _read_register(self, register: int, now: int) -> int:
        if register == GCAP_ID:
            return (self.period_fs << 32 | HPET_VENDOR << 16 | LEG_RT_CAP | COUNT_SIZE_CAP
                    | (HPET_TIMERS - 1) << 8 | 0x01)
        if register == GEN_CONF:
            return self.config
        if register == GINTR_STA:
            return sum(timer.status << timer.index for timer in self.timers)
        if register == MAIN_COUNTER:
            return self.counter_at(now) & _MASK64
        timer, field = self._timer_at(register)
        if timer is None:
            return 0
        if field == T_CONFIG:
            return timer.config_register()
        return timer.comparator if field == T_COMPARATOR else 0

    def write(self, offset: int, size: int, value: int) -> None:
        now = self.clock.now()
        self.advance(now)
        # The bus hands a 64-bit write over as its two 32-bit halves, low first (emu/hw/bus.py,
        # exact=False): a high half right after the low half of the same comparator finishes
        # that write, so Tn_VAL_SET_CNF covers both halves as it covers one 64-bit write.
        for timer in self.timers:
            if offset != TIMER_BASE + TIMER_STRIDE * timer.index + T_COMPARATOR + 4:
                timer.value_set_high = False
        shift = 8 * (offset & 7)
        written = ((1 << (8 * size)) - 1) << shift
        self._write_register(offset & ~7, value << shift & written, written, now)
        self.advance(now)                # a match the write made due happens now
        self._announce()

    def _write_register(self, register: int, value: int, written: int, now: int) -> None:
        if register == GEN_CONF:
            self._write_config(self._merge(self.config, value, written) & 3, now)
        elif register == GINTR_STA:
            for timer in self.timers:           # write 1 to clear
                if value >> timer.index & 1 and timer.status:
                    timer.status = False
                    timer.line.lower()
        elif register == MAIN_COUNTER:
            self._counter_base = self._merge(self.counter_at(now), value, written)
            self._base_tick = now
            for timer in self.timers:
                timer.last = self._counter_base - 1
        else:
            timer, field = self._timer_at(register)
            if timer is None:
                return
            if field == T_CONFIG:
                self._write_timer_config(timer, self._merge(timer.config, value, written))
            elif field == T_COMPARATOR:
                timer.write_comparator(value, written, self.counter_at(now))

    @staticmethod
    def _merge(old: int, value: int, written: int) -> int:
        return (old & ~written) | value

    def _write_config(self, config: int, now: int) -> None:
        if (config ^ self.config) & CONF_ENABLE:
            self._counter_base = self.counter_at(now)
            self._base_tick = now
        self.config = config
        self._rewire()

    def _write_timer_config(self, timer: HpetTimer, config: int) -> None:
        route = (config & TN_ROUTE_MASK) >> TN_ROUTE_SHIFT
        if not ROUTE_CAPABILITY >> route & 1:
            config = (config & ~TN_ROUTE_MASK) | (timer.config & TN_ROUTE_MASK)
        timer.config = config & _TN_WRITABLE
        if timer.config & TN_32BIT:
            timer.comparator &= 0xFFFFFFFF
            timer.period &= 0xFFFFFFFF
        if not timer.config & TN_LEVEL:
            timer.status = False
        self._rewire()

    def _timer_at(self, register: int) -> tuple[HpetTimer | None, int]:
        index, field = divmod(register - TIMER_BASE, TIMER_STRIDE)
        if register < TIMER_BASE or index >= HPET_TIMERS:
            return None, 0
        return self.timers[index], field
