"""The 8254 programmable interval timer (ports 0x40-0x43) and system control port B (0x61),
on virtual time. Follows the Intel 82C54 datasheet (order number 231244): "Control Word
Format", "Read Operations" (counter latch and read-back commands), "Mode Definitions".

Owns: the three counters' programming (mode, access mode, BCD), their count and OUT as exact
functions of the PIT clock (1.193182 MHz, `PIT_RATE`), gate handling, NULL COUNT, the latches,
IRQ0 from counter 0's OUT rising edges, and port 0x61's timer-2 gate (bit 0), speaker enable
(bit 1), refresh toggle (bit 4) and OUT2 (bit 5), which calibration loops poll.
Does not own: where IRQ0 goes (emu.hw.irq) or the speaker's sound.

Counting, per the datasheet: a count written at tick t is loaded into the counting element on
the next PIT clock pulse after t (that pulse does not decrement), then every pulse decrements
while GATE allows. So in mode 0 a count of N raises OUT N + 1 pulses after the write.
All six modes are modelled: 0 (interrupt on terminal count), 1 (hardware one-shot, started by
a gate rising edge), 2 (rate generator), 3 (square wave), 4 (software strobe), 5 (hardware
strobe). Counter 0's and 1's gates are tied high (counter 1, the DRAM refresh timer, drives
nothing); counter 2's gate is port 0x61 bit 0.
Modelled as documented behaviour:
- Count 0 means 65536 (10000 in BCD). A count of 1 in modes 2 and 3 is illegal: the counter
  then holds its value with OUT high and makes no edges.
- BCD counts: a nibble above 9 is taken at face value (0x0F counts as 15).
- OUT changes caused by writing a control word or a count raise no interrupt; only the
  counting does (edges at terminal count, each period, each strobe).
- Reading the count before the first pulse after a write returns the written count.
"""
from __future__ import annotations

from emu.hw.bus import Access, Device, Register
from emu.hw.clock import PIT_RATE, VirtualClock
from emu.hw.irq import IrqLine

PIT_PORT = 0x40
PORT_B = 0x61
PIT_IRQ = 0

RW_LATCH, RW_LSB, RW_MSB, RW_BOTH = 0, 1, 2, 3
_BINARY_MODULUS, _BCD_MODULUS = 0x10000, 10000
REFRESH_PULSES = 18            # port B bit 4 toggles every 18 PIT clocks (15.08 us), as the
                               # refresh request of counter 1 programmed by a PC BIOS does


def _from_bcd(value: int) -> int:
    return sum(((value >> (4 * digit)) & 0xF) * 10**digit for digit in range(4))


def _to_bcd(value: int) -> int:
    return sum((value // 10**digit % 10) << (4 * digit) for digit in range(4))


class PitCounter:
    """One counter. State is kept as a counting segment: the pulse at which the count
    register (CR) was loaded into the counting element (CE), the pulses counted while the gate
    allowed, and the OUT edges of earlier segments. `pulse` arguments are PIT clock pulse
    numbers (pulses since tick 0); callers `sync` to the current pulse before anything else."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.gate = True
        self.mode, self.rw, self.bcd = 0, RW_BOTH, False
        self.written = 0                 # CR, raw 16 bits
        self.armed = False               # CR written since the last control word
        self._low_byte: int | None = None  # first byte of a two-byte write
        self._read_msb = False
        self._latched: list[int] = []    # latched count bytes still to read
        self._status: int | None = None
        self._edges_before = 0
        self._clear_segment()

    def _clear_segment(self) -> None:
        self.loaded = False              # CE holds (or at load_pulse will hold) a count
        self.load_pulse = 0
        self.frozen = 0                  # pulses counted before the last pause
        self.running_from: int | None = None   # counting pulses are those after this one
        self.count = 0                   # N of this segment (65536 for a raw 0)
        self.pending: int | None = None  # modes 2/3: N to load when the cycle ends ...
        self.pending_at = 0              # ... at this many counted pulses

    # --- the count as a function of pulses --------------------------------------------------

    @property
    def modulus(self) -> int:
        return _BCD_MODULUS if self.bcd else _BINARY_MODULUS

    def _full_count(self, raw: int) -> int:
        value = _from_bcd(raw) if self.bcd else raw
        return value or self.modulus

    def counted(self, pulse: int) -> int | None:
        """Pulses counted in this segment at `pulse`, or None before CE is loaded."""
        if not self.loaded or pulse < self.load_pulse:
            return None
        if self.running_from is None:
            return self.frozen
        return self.frozen + max(0, pulse - self.running_from)

    def _edges(self, counted: int | None) -> int:
        """OUT rising edges this segment has made after `counted` pulses."""
        target = self._next_edge_count(None)
        if counted is None or target is None:
            return 0
        if self.mode in (2, 3):
            return counted // self.count
        return 1 if counted >= target else 0

    def _next_edge_count(self, counted: int | None) -> int | None:
        """Counted pulses at the next OUT rising edge: terminal count in modes 0 and 1, one
        pulse after it in 4 and 5 (the strobe), each period's end in 2 and 3."""
        n, done = self.count, -1 if counted is None else counted
        if self.mode in (2, 3):
            return (max(done, 0) // n + 1) * n if n > 1 else None
        threshold = n + 1 if self.mode in (4, 5) else n
        return threshold if done < threshold else None

    def value(self, pulse: int) -> int:
        """CE as the guest reads it (BCD encoded in BCD mode)."""
        counted, n = self.counted(pulse), self.count
        if counted is None:
            return self.written
        if self.mode == 3 and n > 1:
            value = self._square_wave_value(counted)
        elif self.mode in (2, 3):
            value = n - counted % n if n > 1 else n
        else:
            value = n - counted
        value %= self.modulus
        return _to_bcd(value) if self.bcd else value

    def _square_wave_value(self, counted: int) -> int:
        """Mode 3 counts down by two in each half; an odd N loads N - 1, and its high half
        is one pulse longer (datasheet, mode 3)."""
        n = self.count
        high_half = (n + 1) // 2
        start = n if n % 2 == 0 else n - 1
        phase = counted % n
        return start - 2 * (phase if phase < high_half else phase - high_half)

    def out(self, pulse: int) -> bool:
        counted, n = self.counted(pulse), self.count
        if counted is None:
            return self.mode != 0           # mode 0: low from the control word until TC
        if self.mode in (2, 3) and (not self.gate or n <= 1):
            return True
        if self.mode == 2:
            return counted % n != n - 1
        if self.mode == 3:
            return counted % n < (n + 1) // 2
        if self.mode in (4, 5):
            return counted != n
        return counted >= n

    def edges_total(self, pulse: int) -> int:
        return self._edges_before + self._edges(self.counted(pulse))

    def next_edge_pulse(self, pulse: int) -> int | None:
        """The pulse number of the next OUT rising edge after `pulse`, if counting."""
        target = self._next_edge_count(self.counted(pulse))
        if target is None or not self.loaded or self.running_from is None:
            return None
        return self.running_from + target - self.frozen

    def sync(self, pulse: int) -> None:
        """Modes 2 and 3 load a count written mid-cycle when that cycle ends."""
        counted = self.counted(pulse)
        if (self.pending is None or counted is None or self.running_from is None
                or counted < self.pending_at):
            return
        start = self.running_from + self.pending_at - self.frozen
        self._edges_before += self._edges(self.pending_at)
        self.count, self.pending = self.pending, None
        self.load_pulse, self.frozen, self.running_from = start, 0, start

    # --- programming ------------------------------------------------------------------------

    def control(self, mode: int, rw: int, bcd: bool, pulse: int) -> None:
        """A control word for this counter (RW != 0): all control logic resets."""
        self._edges_before = self.edges_total(pulse)
        self.mode = mode if mode < 6 else mode - 4      # x10 -> 2, x11 -> 3
        self.rw, self.bcd, self.armed = rw, bcd, False
        self._low_byte, self._read_msb = None, False
        self._latched, self._status = [], None
        self._clear_segment()

    def write_byte(self, byte: int, pulse: int) -> None:
        if self.rw == RW_BOTH and self._low_byte is None:
            self._low_byte = byte
            if self.mode == 0:                         # the first byte stops counting
                self._edges_before = self.edges_total(pulse)
                self.loaded = False
            return
        if self.rw == RW_BOTH:
            raw = self._low_byte | byte << 8
            self._low_byte = None
        else:
            raw = byte if self.rw == RW_LSB else byte << 8
        self.written, self.armed = raw, True
        self._new_count(self._full_count(raw), pulse)

    def _new_count(self, count: int, pulse: int) -> None:
        counted = self.counted(pulse)
        if self.mode in (2, 3) and counted is not None and self.running_from is not None:
            self.pending = count                       # loaded when this cycle ends
            self.pending_at = (counted // self.count + 1) * self.count
            return
        if self.mode in (1, 5):
            return                                     # CR waits for a gate trigger
        self._start_segment(count, pulse, running=self.gate)

    def _start_segment(self, count: int, pulse: int, running: bool) -> None:
        """CE loads `count` on the next pulse and counts from the one after."""
        self._edges_before = self.edges_total(pulse)
        self._clear_segment()
        self.count, self.loaded = count, True
        self.load_pulse = pulse + 1
        self.running_from = self.load_pulse if running else None

    def set_gate(self, level: bool, pulse: int) -> None:
        if level == self.gate:
            return
        self.gate = level
        counted = self.counted(pulse)
        if self.mode in (1, 2, 3, 5):
            if level and self.armed:                   # rising edge: reload CR next pulse
                self._start_segment(self._full_count(self.written), pulse, running=True)
            elif not level and self.mode in (2, 3) and counted is not None:
                self.frozen, self.running_from = counted, None   # stop; OUT high
            return
        if not self.loaded:                            # modes 0 and 4: pause and resume
            return
        if level:
            self.running_from = max(pulse, self.load_pulse)
        else:
            self.frozen, self.running_from = counted or 0, None

    # --- reading ----------------------------------------------------------------------------

    def latch_count(self, pulse: int) -> None:
        if self._latched:
            return                                     # a second latch before reading: no-op
        value = self.value(pulse)
        low, high = value & 0xFF, value >> 8
        self._latched = {RW_LSB: [low], RW_MSB: [high]}.get(self.rw, [low, high])

    def latch_status(self, pulse: int) -> None:
        if self._status is not None:
            return
        null_count = self.counted(pulse) is None or self.pending is not None
        self._status = (self.out(pulse) << 7 | null_count << 6 | self.rw << 4
                        | self.mode << 1 | self.bcd)

    def read_byte(self, pulse: int) -> int:
        if self._status is not None:
            status, self._status = self._status, None
            return status
        if self._latched:
            return self._latched.pop(0)
        value = self.value(pulse)
        if self.rw == RW_LSB:
            return value & 0xFF
        if self.rw == RW_MSB:
            return value >> 8
        self._read_msb = not self._read_msb
        return value & 0xFF if self._read_msb else value >> 8


class Pit8254(Device):
    """Ports 0x40-0x42: counters 0-2; port 0x43: the control word register (write only).
    Counter 0's OUT rising edges pulse `irq0` (ISA IRQ 0)."""
    registers = (
        Register(0, "COUNTER0"), Register(1, "COUNTER1"), Register(2, "COUNTER2"),
        Register(3, "CONTROL", access=Access.WRITE),
    )

    def __init__(self, clock: VirtualClock, irq0: IrqLine | None = None,
                 name: str = "pit") -> None:
        super().__init__(name)
        self.clock = clock
        self.irq0 = irq0
        self.counters = tuple(PitCounter(index) for index in range(3))
        self._edges_reported = 0
        self._caught_up = 0

    def pulse_at(self, tick: int) -> int:
        return self.clock.count(PIT_RATE, tick)

    def _now_pulse(self) -> int:
        now = self.clock.now()
        self.advance(now)
        pulse = self.pulse_at(now)
        for counter in self.counters:
            counter.sync(pulse)
        return pulse

    def read(self, offset: int, size: int) -> int:
        pulse = self._now_pulse()
        value = 0
        for index in range(size):
            port = offset + index
            byte = self.counters[port].read_byte(pulse) if port < 3 else 0xFF
            value |= byte << (8 * index)
        return value

    def write(self, offset: int, size: int, value: int) -> None:
        pulse = self._now_pulse()
        for index in range(size):
            port, byte = offset + index, (value >> (8 * index)) & 0xFF
            if port < 3:
                self.counters[port].write_byte(byte, pulse)
            elif port == 3:
                self._control_word(byte, pulse)
        self._announce()

    def _control_word(self, byte: int, pulse: int) -> None:
        select, rw = byte >> 6, (byte >> 4) & 3
        if select == 3:                                # read-back command
            for index in range(3):
                if byte >> (index + 1) & 1:
                    if not byte & 0x20:
                        self.counters[index].latch_count(pulse)
                    if not byte & 0x10:
                        self.counters[index].latch_status(pulse)
        elif rw == RW_LATCH:                           # counter latch command
            self.counters[select].latch_count(pulse)
        else:
            self.counters[select].control((byte >> 1) & 7, rw, bool(byte & 1), pulse)

    def set_gate(self, index: int, level: bool) -> None:
        """The gate input of counter `index` (port 0x61 bit 0 drives counter 2's)."""
        pulse = self._now_pulse()
        self.counters[index].set_gate(bool(level), pulse)
        self._announce()

    def out(self, index: int) -> bool:
        return self.counters[index].out(self._now_pulse())

    # --- the Timer contract (emu.hw.clock) ---------------------------------------------------

    def next_deadline(self) -> int | None:
        if self.irq0 is None:
            return None
        counter = self.counters[0]
        pulse = counter.next_edge_pulse(self.pulse_at(self._caught_up))
        return None if pulse is None else self.clock.first_tick(PIT_RATE, pulse)

    def advance(self, now: int) -> None:
        if now < self._caught_up:
            return
        self._caught_up = now
        counter = self.counters[0]
        pulse = self.pulse_at(now)
        counter.sync(pulse)
        edges = counter.edges_total(pulse)
        if edges > self._edges_reported:
            self._edges_reported = edges
            if self.irq0 is not None:
                self.irq0.pulse()

    def _announce(self) -> None:
        deadline = self.next_deadline()
        if deadline is not None:
            self.clock.wake_at(deadline)


class PortB(Device):
    """System control port B (0x61): bit 0 timer 2 gate, bit 1 speaker data enable, bits 2-3
    parity/channel check enables (stored), bit 4 refresh toggle, bit 5 OUT2 (read only);
    bits 6-7 (NMI sources) read 0. Writes change bits 0-3 only."""
    registers = (Register(0, "PORT_B"),)

    def __init__(self, pit: Pit8254, name: str = "port-b") -> None:
        super().__init__(name)
        self.pit = pit
        self.control = 0
        pit.set_gate(2, False)           # counter 2's gate follows bit 0 from power-up

    def read(self, offset: int, size: int) -> int:
        pulse = self.pit.pulse_at(self.pit.clock.now())
        refresh = (pulse // REFRESH_PULSES) & 1
        out2 = self.pit.out(2)
        return self.control | refresh << 4 | out2 << 5

    def write(self, offset: int, size: int, value: int) -> None:
        self.control = value & 0x0F
        self.pit.set_gate(2, bool(value & 1))
