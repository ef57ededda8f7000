"""The 8254 PIT and port 0x61 through their ports, at exact ticks. Pulse times are computed
here from the PC's PIT crystal (105/88 MHz) independently of the device's own arithmetic."""
from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emu.hw.devices.pit import Pit8254, PortB
from hw_rig import LineProbe, ManualTime

IPS = 100_000_000
TICKS_PER_PULSE = Fraction(IPS * 88, 105_000_000)     # 83.8095... ticks


def pulse_tick(pulse: int) -> int:
    """The first tick at which `pulse` PIT clock pulses have happened."""
    exact = pulse * TICKS_PER_PULSE
    return int(exact) if exact.denominator == 1 else int(exact) + 1


def pulses_at(tick: int) -> int:
    return int(tick / TICKS_PER_PULSE)


def make() -> tuple[ManualTime, Pit8254, LineProbe]:
    time = ManualTime(IPS)
    probe = LineProbe("irq0")
    return time, Pit8254(time.clock, probe.line), probe


def program(pit: Pit8254, channel: int, mode: int, count: int, rw: int = 3,
            bcd: bool = False) -> None:
    pit.write(3, 1, channel << 6 | rw << 4 | mode << 1 | bcd)
    if rw in (1, 3):
        pit.write(channel, 1, count & 0xFF)
    if rw in (2, 3):
        pit.write(channel, 1, count >> 8)


def latched(pit: Pit8254, channel: int) -> int:
    pit.write(3, 1, channel << 6)                       # counter latch command
    return pit.read(channel, 1) | pit.read(channel, 1) << 8


def test_mode0_raises_irq0_n_plus_1_pulses_after_the_write():
    time, pit, probe = make()
    time.at(10_000)
    program(pit, 0, 0, 100)
    load = pulses_at(10_000) + 1
    expiry = pulse_tick(load + 100)
    assert pit.next_deadline() == expiry and time.wakes[-1] == expiry
    time.at(expiry - 1)
    pit.advance(time.tick)
    assert probe.edges == 0 and latched(pit, 0) == 1
    time.at(expiry)
    pit.advance(time.tick)
    assert probe.edges == 1
    assert latched(pit, 0) == 0 and pit.next_deadline() is None
    time.at(pulse_tick(load + 105))
    assert latched(pit, 0) == 0xFFFB                    # mode 0 keeps counting, wrapped


def test_mode0_count_is_the_written_value_until_the_load_pulse():
    time, pit, _ = make()
    time.at(pulse_tick(50))                             # exactly on pulse 50
    program(pit, 0, 0, 1000)
    assert latched(pit, 0) == 1000
    time.at(pulse_tick(51))                             # load pulse: no decrement
    assert latched(pit, 0) == 1000
    time.at(pulse_tick(52))
    assert latched(pit, 0) == 999


@pytest.mark.parametrize("count", [2, 3, 1000, 0])
def test_mode2_rate_generator_period(count):
    time, pit, probe = make()
    program(pit, 0, 2, count)
    period = count or 65536
    load = 1
    for k in range(1, 4):
        edge = pulse_tick(load + k * period)
        assert pit.next_deadline() == edge
        time.at(edge - 1)
        pit.advance(time.tick)
        assert probe.edges == k - 1
        assert not pit.out(0)                           # low for the last pulse of a period
        time.at(edge)
        pit.advance(time.tick)
        assert probe.edges == k and pit.out(0)
        assert latched(pit, 0) == count                 # reloaded


def test_mode3_square_wave_halves_for_odd_and_even_counts():
    for count, high in ((10, 5), (7, 4)):
        time, pit, probe = make()
        program(pit, 0, 3, count)
        load = 1
        outs = []
        values = []
        for pulse in range(load, load + 2 * count):
            time.at(max(time.tick, pulse_tick(pulse)))
            outs.append(pit.out(0))
            values.append(latched(pit, 0))
        assert outs[:count] == [True] * high + [False] * (count - high)
        assert outs[count:] == outs[:count]
        if count == 10:
            assert values[:count] == [10, 8, 6, 4, 2, 10, 8, 6, 4, 2]
        else:
            assert values[:count] == [6, 4, 2, 0, 6, 4, 2]
        pit.advance(time.tick)
        assert probe.edges == 1                         # one rising edge per period


def test_mode4_strobe_edge_comes_one_pulse_after_terminal_count():
    time, pit, probe = make()
    program(pit, 0, 4, 20)
    assert pit.next_deadline() == pulse_tick(1 + 21)
    time.at(pulse_tick(1 + 20))
    assert not pit.out(0)
    time.at(pulse_tick(1 + 21))
    assert pit.out(0)
    pit.advance(time.tick)
    assert probe.edges == 1 and pit.next_deadline() is None


def test_edges_coalesce_and_the_next_deadline_follows_now():
    time, pit, probe = make()
    program(pit, 0, 2, 100)
    time.at(pulse_tick(1 + 550))
    pit.advance(time.tick)
    assert probe.edges == 1                             # five periods, one latched request
    assert pit.next_deadline() == pulse_tick(1 + 600)


def test_mode2_new_count_waits_for_the_end_of_the_cycle():
    time, pit, probe = make()
    program(pit, 0, 2, 100)
    time.at(pulse_tick(1 + 30))
    pit.write(0, 1, 50)
    pit.write(0, 1, 0)
    assert latched(pit, 0) == 70
    pit.write(3, 1, 0xE2)                               # read-back status of counter 0
    assert pit.read(0, 1) & 0x40                        # NULL COUNT: not loaded yet
    assert pit.next_deadline() == pulse_tick(1 + 100)
    time.at(pulse_tick(1 + 100))
    pit.advance(time.tick)
    assert pit.next_deadline() == pulse_tick(1 + 150)
    assert latched(pit, 0) == 50


def test_access_modes_lsb_msb_and_both():
    time, pit, _ = make()
    program(pit, 0, 0, 0x34, rw=1)                      # LSB only
    time.at(pulse_tick(2))
    assert pit.read(0, 1) == 0x33
    program(pit, 0, 0, 0x1200, rw=2)                    # MSB only
    time.at(pulse_tick(3))
    assert pit.read(0, 1) == 0x12                       # 0x1200 loaded at pulse 3
    program(pit, 0, 0, 0xABCD, rw=3)
    time.at(pulse_tick(5))
    assert pit.read(0, 1) == 0xCC and pit.read(0, 1) == 0xAB


def test_latch_holds_the_value_until_both_bytes_are_read():
    time, pit, _ = make()
    program(pit, 0, 2, 1000)
    time.at(pulse_tick(11))
    pit.write(3, 1, 0x00)
    time.at(pulse_tick(500))
    pit.write(3, 1, 0x00)                               # second latch: ignored
    assert pit.read(0, 1) | pit.read(0, 1) << 8 == 990
    assert pit.read(0, 1) | pit.read(0, 1) << 8 == 1000 - 499


def test_read_back_status_then_count():
    time, pit, _ = make()
    pit.write(3, 1, 0x94)                               # counter 2, LSB, mode 2
    pit.write(3, 1, 0xE8)                               # read back the status of 2
    assert pit.read(2, 1) == 0x80 | 0x40 | 0x10 | 0x04  # OUT high, NULL COUNT
    pit.write(2, 1, 5)
    time.at(pulse_tick(3))
    pit.write(3, 1, 0xC8)
    assert pit.read(2, 1) == 0x80 | 0x10 | 0x04         # loaded at pulse 1
    assert pit.read(2, 1) == 3                          # two pulses counted
    pit.write(3, 1, 0xD8)                               # latch the count only
    time.at(pulse_tick(4))
    assert pit.read(2, 1) == 3                          # the latched value ...
    assert pit.read(2, 1) == 2                          # ... then the live count


def test_control_port_reads_ff():
    _, pit, _ = make()
    assert pit.read(3, 1) == 0xFF


def test_bcd_counting():
    time, pit, _ = make()
    program(pit, 0, 0, 0x1000, bcd=True)                # 1000 decimal
    time.at(pulse_tick(1 + 11))
    assert latched(pit, 0) == 0x0989
    program(pit, 0, 2, 0x0000, bcd=True)                # 10000 decimal
    start = pulses_at(time.tick) + 1
    time.at(pulse_tick(start + 1))
    assert latched(pit, 0) == 0x9999


def test_mode0_first_byte_stops_counting_and_lowers_out():
    time, pit, probe = make()
    program(pit, 0, 0, 10)
    time.at(pulse_tick(20))
    assert pit.out(0)
    pit.write(0, 1, 0x30)
    assert not pit.out(0) and pit.next_deadline() is None
    time.at(pulse_tick(40))
    pit.write(0, 1, 0x00)
    assert pit.next_deadline() == pulse_tick(41 + 0x30)


def test_port_b_gate_and_out2_in_a_calibration_loop():
    """As Linux's pit_calibrate_tsc: gate high, counter 2 mode 0, poll OUT2 on port 0x61."""
    time, pit, probe = make()
    port_b = PortB(pit)
    port_b.write(0, 1, 0x01)
    program(pit, 2, 0, 11932)                           # 10 ms
    assert port_b.read(0, 1) & 0x20 == 0
    expiry = pulse_tick(1 + 11932)
    time.at(expiry - 1)
    assert port_b.read(0, 1) & 0x21 == 0x01
    time.at(expiry)
    assert port_b.read(0, 1) & 0x21 == 0x21
    assert probe.edges == 0                             # counter 2 raises no interrupt


def test_port_b_refresh_bit_toggles_every_18_pulses():
    time, pit, _ = make()
    port_b = PortB(pit)
    bits = []
    for pulse in (0, 17, 18, 35, 36):
        time.at(pulse_tick(pulse))
        bits.append(port_b.read(0, 1) >> 4 & 1)
    assert bits == [0, 0, 1, 1, 0]
    port_b.write(0, 1, 0xFE)
    assert port_b.read(0, 1) & 0xCF == 0x0E             # bits 6-7 read 0


def test_gate_low_pauses_mode0_on_counter_2():
    time, pit, _ = make()
    port_b = PortB(pit)
    port_b.write(0, 1, 0x01)
    program(pit, 2, 0, 100)
    time.at(pulse_tick(1 + 40))
    port_b.write(0, 1, 0x00)
    time.at(pulse_tick(500))
    assert latched(pit, 2) == 60
    port_b.write(0, 1, 0x01)
    time.at(pulse_tick(500 + 59))
    assert not pit.out(2)
    time.at(pulse_tick(500 + 60))
    assert pit.out(2)


def test_mode1_one_shot_starts_on_the_gate_rising_edge():
    time, pit, _ = make()
    port_b = PortB(pit)
    program(pit, 2, 1, 30)
    assert pit.out(2)
    time.at(pulse_tick(100))
    port_b.write(0, 1, 0x01)                            # trigger
    time.at(pulse_tick(101))
    assert not pit.out(2) and latched(pit, 2) == 30
    time.at(pulse_tick(101 + 29))
    assert not pit.out(2)
    time.at(pulse_tick(101 + 30))
    assert pit.out(2)


def test_mode5_strobe_after_trigger_and_mode2_gate_reload():
    time, pit, _ = make()
    port_b = PortB(pit)
    program(pit, 2, 5, 8)
    port_b.write(0, 1, 0x01)
    time.at(pulse_tick(1 + 8))
    assert not pit.out(2)
    time.at(pulse_tick(1 + 9))
    assert pit.out(2)
    program(pit, 2, 2, 50)                              # gate is high: counts at once
    start = pulses_at(time.tick) + 1
    time.at(pulse_tick(start + 20))
    port_b.write(0, 1, 0x00)                            # gate low: stops, OUT high
    assert pit.out(2) and latched(pit, 2) == 30
    time.at(pulse_tick(start + 70))
    port_b.write(0, 1, 0x01)                            # rising gate reloads
    time.at(pulse_tick(start + 71))
    assert latched(pit, 2) == 50


@given(mode=st.sampled_from([0, 2, 3, 4]), count=st.integers(2, 0xFFFF),
       start=st.integers(0, 10**6), reads=st.lists(st.integers(0, 10**7), max_size=8),
       final=st.integers(0, 2 * 10**7))
def test_count_is_a_pure_function_of_the_tick(mode, count, start, reads, final):
    """Reading at intermediate ticks changes nothing: the value at the final tick is what a
    device read only then reports, and twice in a row at one tick gives the same answer."""
    results = []
    for read_ticks in (sorted(min(tick, final) for tick in reads), []):
        time, pit, _ = make()
        time.at(start)
        program(pit, 0, mode, count)
        for tick in read_ticks:
            time.at(start + min(tick, final))
            latched(pit, 0)
        time.at(start + final)
        results.append((latched(pit, 0), latched(pit, 0), pit.out(0)))
    assert results[0] == results[1]
    value, again, _ = results[0]
    assert value == again
    if mode == 2:
        counted = pulses_at(time.tick) - (pulses_at(start) + 1)
        if counted >= 0:
            assert value == count - counted % count
