"""Virtual time: the one clock every platform device reads, and the contract between timer
devices and the run loop.

Owns: what a tick is, the ticks-per-second rate, exact conversions between ticks, nanoseconds
and device clock counts, skipping halted time, and the `Timer` contract below.
Does not own: counting instructions (the CPU layer supplies the counter), stopping the CPU at
a tick (the run loop), or what any device does when its time comes (the devices).

A tick is one retired instruction, plus every instruction the CPU did not run because it was
halted (`skip_to`). `VirtualClock.now()` is therefore monotonic and a pure function of the
run: the same kernel and configuration give the same tick for every event.

Rate. `DEFAULT_IPS` = 100,000,000 ticks per virtual second: a 100 MHz CPU retiring one
instruction per cycle. Chosen because (1) the emulator runs roughly 50-900 M instructions per
host second, so virtual time runs at about host speed and a 1 kHz kernel tick costs one stop
every 100,000 instructions instead of every few hundred; (2) every platform clock is slower
than it (PIT 1.19 MHz, ACPI PM timer 3.58 MHz, HPET 14.32 MHz), so no device counter ever
advances by more than one per instruction, as on real hardware; (3) it is a round number of
nanoseconds (10 ns per tick). The TSC counts ticks, so the TSC frequency is `ips` too
(CPUID.15H: crystal `ips` Hz, ratio 1/1), and the local APIC timer's input clock defaults to
it as well.

Exact arithmetic. A device clock of `Rate(numerator, denominator)` hertz has counted
    count(t) = floor(t * numerator / (denominator * ips))
edges at tick t, and its k-th edge comes at the first tick with count(t) >= k:
    first_tick(k) = ceil(k * denominator * ips / numerator).
Both are integer expressions, so a counter's value at tick t is a pure function of t with no
drift however long the run; rates such as the PIT's 105/88 MHz are exact fractions.

The Timer contract (devices that raise interrupts on their own: PIT, HPET, LAPIC timer, RTC,
ACPI PM timer):
- `next_deadline() -> int | None`: the earliest tick, later than the last tick the device
  has caught up to, at which it will raise or change an interrupt line if the guest writes
  nothing meanwhile; None if it never will. A query: no side effects.
- `advance(now)`: catch up to tick `now`: raise every interrupt that came due at a tick
  <= now. A call with a tick earlier than a previous one changes nothing. An edge that came
  due several times since the last call is raised once: nothing could acknowledge it in
  between, so an edge-triggered input would have latched it once on hardware too.
- Every register access catches the device up to `clock.now()` first, so a run loop that
  stops late only delays an interrupt; counters and status bits are never wrong.
- When a register write, an acknowledge or an EOI arms a new deadline, the device calls
  `clock.wake_at(tick)`; a run loop that set `clock.on_wake` can then stop earlier than it
  planned. It may also simply ask `next_deadline()` again after every stop.
The run loop's side: stop when `now() == next_deadline()` (that many instructions retired),
call `advance(now)`, then ask `InterruptRouting.pending()` before the next instruction. A
deadline at or before `now()` (the loop ran on without catching the device up) means: call
`advance(now)` at once. A halted CPU calls `skip_to(next_deadline())` and then does the same.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Protocol

from emu.errors import ConfigError

DEFAULT_IPS = 100_000_000
NS_PER_SECOND = 1_000_000_000
FS_PER_SECOND = 10**15


@dataclass(frozen=True, slots=True)
class Rate:
    """A frequency, as an exact fraction of hertz: numerator / denominator."""
    numerator: int
    denominator: int = 1

    def __post_init__(self) -> None:
        if self.numerator <= 0 or self.denominator <= 0:
            raise ConfigError(f"a clock rate must be positive, not "
                              f"{self.numerator}/{self.denominator} Hz")

    @classmethod
    def from_period_fs(cls, femtoseconds: int) -> "Rate":
        """The rate of a clock whose period is given in femtoseconds (the HPET's unit)."""
        return cls(FS_PER_SECOND, femtoseconds)

    @property
    def hertz(self) -> float:
        """For messages only; arithmetic uses the exact fraction."""
        return self.numerator / self.denominator


# The PC's crystals all derive from the NTSC colour burst, 315/88 MHz (3.579545... MHz).
ACPI_PM_RATE = Rate(315_000_000, 88)        # ACPI 6.x 4.8.3.3: 3.579545 MHz
PIT_RATE = Rate(105_000_000, 88)            # 8254 input on a PC: 14.31818 MHz / 12
RTC_CRYSTAL_HZ = 32_768                      # MC146818 time base, divider DV = 010


class VirtualClock:
    """Ticks since the machine started: `instructions()` (the CPU's retired-instruction
    counter) plus the instructions skipped while halted."""

    def __init__(self, instructions: Callable[[], int], ips: int = DEFAULT_IPS) -> None:
        if ips <= 0:
            raise ConfigError(f"ticks per second must be positive, not {ips}")
        self._instructions = instructions
        self._skipped = 0
        self.ips = ips
        self.on_wake: Callable[[int], None] | None = None

    def now(self) -> int:
        return self._instructions() + self._skipped

    def tsc(self) -> int:
        """The time-stamp counter the guest reads: one count per tick."""
        return self.now()

    def skip_to(self, tick: int) -> None:
        """Jump forward to `tick` without running instructions (a halted CPU waiting for
        its next interrupt). A tick not in the future changes nothing."""
        now = self.now()
        if tick > now:
            self._skipped += tick - now

    @property
    def skipped(self) -> int:
        return self._skipped

    def wake_at(self, tick: int) -> None:
        """A device armed a deadline at `tick`; tell the run loop, if it listens."""
        if self.on_wake is not None:
            self.on_wake(tick)

    # --- conversions: exact, integer only ---------------------------------------------------

    def count(self, rate: Rate, tick: int) -> int:
        """Edges a clock of `rate` has made from tick 0 up to and including `tick`."""
        return tick * rate.numerator // (rate.denominator * self.ips)

    def first_tick(self, rate: Rate, count: int) -> int:
        """The first tick at which a clock of `rate` has made `count` edges."""
        if count <= 0:
            return 0
        return -(-count * rate.denominator * self.ips // rate.numerator)

    def to_ns(self, tick: int) -> int:
        """Whole nanoseconds elapsed at `tick`."""
        return tick * NS_PER_SECOND // self.ips

    def ticks_for_ns(self, nanoseconds: int) -> int:
        """The first tick at which `nanoseconds` have elapsed."""
        return -(-nanoseconds * self.ips // NS_PER_SECOND)

    @property
    def rate(self) -> Rate:
        """The tick rate itself, for devices clocked by it (TSC, local APIC timer)."""
        return Rate(self.ips)


class Timer(Protocol):
    """A device that raises interrupts on its own as virtual time passes (see above)."""

    def next_deadline(self) -> int | None: ...

    def advance(self, now: int) -> None: ...


class Timers:
    """The machine's timer devices as one: the earliest deadline, and catching all up."""

    def __init__(self, timers: Iterable[Timer] = ()) -> None:
        self._timers: list[Timer] = list(timers)

    def add(self, timer: Timer) -> None:
        self._timers.append(timer)

    def next_deadline(self) -> int | None:
        deadlines = [tick for tick in (timer.next_deadline() for timer in self._timers)
                     if tick is not None]
        return min(deadlines) if deadlines else None

    def advance(self, now: int) -> None:
        for timer in self._timers:
            timer.advance(now)
