"""The local APIC timer's counting on virtual time (Intel SDM vol. 3, 11.5.4 "APIC Timer"
and 11.5.4.1 "TSC-Deadline Mode"), apart from the registers that program it (lapic.py).

Owns: the divide configuration, initial and current count, one-shot and periodic expiry at
exact ticks, and the TSC-deadline arm/fire/disarm cycle.
Does not own: the LVT timer entry's vector and mask (the local APIC decides what an expiry
delivers, through `fire`), or the TSC itself (the clock: one TSC count per tick).

Counting: the timer's input clock (`rate`, by default the tick rate, i.e. the TSC's crystal)
is divided by 1, 2, ... 128; the division starts at the write of the initial count, so with
the default rate a count of N at divide D expires exactly N * D ticks after the write. The
current count reads N - floor(elapsed / D); periodic mode reloads N when it reaches 0.
Modelled as documented behaviour:
- Changing the divide value or the mode (one-shot <-> periodic) while counting continues from
  the current count under the new setting (the SDM leaves the moment of the change
  model-specific). A one-shot count that reached 0 stays stopped in either mode.
- Switching to or from TSC-deadline mode disarms the timer: the initial count and the
  IA32_TSC_DEADLINE value become 0 (SDM 11.5.4.1).
- LVT timer mode 11b (reserved) counts as one-shot.
"""
from __future__ import annotations

from typing import Callable

from emu.hw.clock import Rate, VirtualClock

MODE_ONE_SHOT, MODE_PERIODIC, MODE_TSC_DEADLINE = 0, 1, 2
# Divide configuration register bits 3, 1, 0 (SDM Figure 11-10) -> divisor.
_DIVISORS = {0b000: 2, 0b001: 4, 0b010: 8, 0b011: 16, 0b100: 32, 0b101: 64, 0b110: 128,
             0b111: 1}
DIVIDE_WRITABLE = 0b1011


def divisor_of(divide_config: int) -> int:
    """The division the divide configuration register selects."""
    return _DIVISORS[(divide_config >> 1 & 0b100) | (divide_config & 0b11)]


class ApicTimer:
    def __init__(self, clock: VirtualClock, fire: Callable[[], None],
                 rate: Rate | None = None) -> None:
        self.clock = clock
        self.fire = fire
        self.rate = rate if rate is not None else clock.rate
        self.reset()

    def reset(self) -> None:
        self.mode = MODE_ONE_SHOT
        self.divide_config = 0
        self.initial = 0
        self.deadline = 0            # IA32_TSC_DEADLINE; 0 is disarmed
        self._running = False
        self._load_tick = 0
        self._first = 0              # count of the period that started at _load_tick
        self._fired = 0              # expiries reported since _load_tick
        self._caught_up = 0

    @property
    def divisor(self) -> int:
        return divisor_of(self.divide_config)

    # --- counting ---------------------------------------------------------------------------

    def _elapsed(self, now: int) -> int:
        """Divided-clock edges since the load."""
        edges = self.clock.count(self.rate, now) - self.clock.count(self.rate, self._load_tick)
        return edges // self.divisor

    def _expiries(self, now: int) -> int:
        elapsed = self._elapsed(now)
        if elapsed < self._first:
            return 0
        if self.mode == MODE_PERIODIC:
            return 1 + (elapsed - self._first) // self.initial
        return 1

    def _expiry_tick(self, number: int) -> int:
        """The tick of the `number`-th expiry since the load (1-based)."""
        elapsed = self._first + (number - 1) * self.initial
        base = self.clock.count(self.rate, self._load_tick)
        return self.clock.first_tick(self.rate, base + elapsed * self.divisor)

    def current_count(self, now: int) -> int:
        self.advance(now)
        if not self._running:
            return 0
        elapsed = self._elapsed(now)
        if elapsed < self._first:
            return self._first - elapsed
        return self.initial - (elapsed - self._first) % self.initial

    def _restart(self, now: int, count: int) -> None:
        self._load_tick = now
        self._first = count
        self._fired = 0
        self._running = count > 0 and self.mode != MODE_TSC_DEADLINE

    # --- programming ------------------------------------------------------------------------

    def load(self, count: int, now: int) -> None:
        """A write of the initial count register: (re)start counting down from `count`;
        0 stops the timer. Ignored in TSC-deadline mode."""
        self.advance(now)
        if self.mode == MODE_TSC_DEADLINE:
            return
        self.initial = count & 0xFFFFFFFF
        self._restart(now, self.initial)
        self._announce()

    def set_divide(self, value: int, now: int) -> None:
        remaining = self.current_count(now)
        self.divide_config = value & DIVIDE_WRITABLE
        if self._running:
            self._restart(now, remaining)
            self._announce()

    def set_mode(self, mode: int, now: int) -> None:
        mode = MODE_ONE_SHOT if mode == 3 else mode
        if mode == self.mode:
            return
        remaining = self.current_count(now)
        was_deadline = self.mode == MODE_TSC_DEADLINE
        self.mode = mode
        if was_deadline or mode == MODE_TSC_DEADLINE:
            self.initial = self.deadline = 0
            self._running = False
        elif self._running:
            self._restart(now, remaining)
        self._announce()

    def write_deadline(self, value: int, now: int) -> None:
        """IA32_TSC_DEADLINE (MSR 0x6E0): arm at TSC `value`, 0 disarms; a deadline already
        passed fires at once. Writes outside TSC-deadline mode are ignored (SDM 11.5.4.1)."""
        self.advance(now)
        if self.mode != MODE_TSC_DEADLINE:
            return
        self.deadline = value & 0xFFFFFFFFFFFFFFFF
        self.advance(now)
        self._announce()

    def read_deadline(self) -> int:
        return self.deadline if self.mode == MODE_TSC_DEADLINE else 0

    # --- the Timer contract (emu.hw.clock) ---------------------------------------------------

    def next_deadline(self) -> int | None:
        if self.mode == MODE_TSC_DEADLINE:
            return self.deadline or None
        if not self._running:
            return None
        return self._expiry_tick(self._fired + 1)

    def advance(self, now: int) -> None:
        if now < self._caught_up:
            return
        self._caught_up = now
        if self.mode == MODE_TSC_DEADLINE:
            if self.deadline and now >= self.deadline:
                self.deadline = 0
                self.fire()
            return
        if not self._running:
            return
        expiries = self._expiries(now)
        if expiries > self._fired:
            self._fired = expiries
            if self.mode != MODE_PERIODIC:
                self._running = False
            self.fire()

    def _announce(self) -> None:
        deadline = self.next_deadline()
        if deadline is not None:
            self.clock.wake_at(deadline)
