"""The 8042 controller and the keyboard through ports 0x60/0x64: controller commands,
keyboard commands, translation, typed text and IRQ 1."""
from __future__ import annotations

import string

from hypothesis import given
from hypothesis import strategies as st

from emu.hw.devices import ps2 as K
from emu.hw.devices.ps2 import I8042
from emu.hw.devices.reset import ResetReason
from emu.hw.devices.scancodes import TRANSLATION
from hw_rig import LineProbe


class Rig:
    def __init__(self) -> None:
        self.resets: list[ResetReason] = []
        self.irq1, self.irq12 = LineProbe("irq1"), LineProbe("irq12")
        self.kbc = I8042(self.resets.append, self.irq1.line, self.irq12.line)

    def status(self) -> int:
        return self.kbc.command.read(0, 1)

    def command(self, byte: int) -> None:
        self.kbc.command.write(0, 1, byte)

    def send(self, byte: int) -> None:
        self.kbc.data.write(0, 1, byte)

    def drain(self) -> list[int]:
        out = []
        while self.status() & K.ST_OUTPUT_FULL:
            out.append(self.kbc.data.read(0, 1))
        return out

    def set_config(self, value: int) -> None:
        self.command(0x60)
        self.send(value)


def test_status_at_hand_over_and_the_command_flag():
    rig = Rig()
    assert rig.status() == K.ST_NOT_INHIBITED | K.ST_SYSTEM
    rig.command(0x20)
    assert rig.status() == K.ST_NOT_INHIBITED | K.ST_SYSTEM | K.ST_COMMAND | K.ST_OUTPUT_FULL
    assert rig.drain() == [0x45]
    rig.send(0xEE)
    assert not rig.status() & K.ST_COMMAND


def test_self_test_and_port_tests():
    rig = Rig()
    rig.command(0xAA)
    assert rig.drain() == [0x55]
    rig.command(0xAB)
    rig.command(0xA9)
    assert rig.drain() == [0x00, 0x00]


def test_configuration_byte_and_controller_ram():
    rig = Rig()
    rig.set_config(0x07)
    rig.command(0x20)
    assert rig.drain() == [0x07]
    rig.command(0x65)
    rig.send(0x5A)
    rig.command(0x25)
    assert rig.drain() == [0x5A]


def test_port_enable_and_disable_commands():
    rig = Rig()
    rig.command(0xAD)
    rig.command(0xA7)
    rig.command(0x20)
    assert rig.drain() == [0x45 | K.CFG_PORT1_OFF | K.CFG_PORT2_OFF]
    rig.command(0xAE)
    rig.command(0xA8)
    rig.command(0x20)
    assert rig.drain() == [0x45]


def test_reset_through_the_controller():
    rig = Rig()
    rig.command(0xFF)                                     # pulses no line
    assert rig.resets == []
    rig.command(0xFE)
    assert rig.resets == [ResetReason.KEYBOARD_CONTROLLER]
    rig.command(0xD0)
    assert rig.drain() == [0x03]
    rig.command(0xD1)
    rig.send(0x03)                                        # reset line stays high
    rig.command(0xD1)
    rig.send(0x02)
    assert rig.resets == [ResetReason.KEYBOARD_CONTROLLER] * 2


def test_keyboard_reset_identify_and_echo():
    rig = Rig()
    rig.send(0xFF)
    assert rig.drain() == [0xFA, 0xAA]
    rig.send(0xF2)
    assert rig.drain() == [0xFA, 0xAB, 0x41]              # 0x83 translated
    rig.set_config(0x05)                                  # translation off
    rig.send(0xF2)
    rig.send(0xEE)
    assert rig.drain() == [0xFA, 0xAB, 0x83, 0xEE]
    rig.send(0xFE)                                        # resend the last byte
    assert rig.drain() == [0xEE]
    rig.send(0x01)                                        # no such command
    assert rig.drain() == [0xFE]


def test_scan_code_set_get_and_set():
    rig = Rig()
    rig.send(0xF0)
    rig.send(0x00)
    assert rig.drain() == [0xFA, 0xFA, 0x41]              # set 2, translated
    rig.send(0xF0)
    rig.send(0x01)
    rig.send(0xF0)
    rig.send(0x00)
    assert rig.drain() == [0xFA, 0xFA, 0xFA, 0xFA, 0x43]  # set 1, translated
    rig.send(0xF0)
    rig.send(0x03)
    assert rig.drain() == [0xFA, 0xFE]                    # set 3 is not modelled
    assert rig.kbc.keyboard.scancode_set == 1


def test_leds_and_typematic_take_a_data_byte():
    rig = Rig()
    rig.send(0xED)
    rig.send(0x07)
    rig.send(0xF3)
    rig.send(0x20)
    assert rig.drain() == [0xFA] * 4
    assert rig.kbc.keyboard.leds == 7 and rig.kbc.keyboard.typematic == 0x20


def test_typed_text_arrives_translated_with_one_irq1_edge_per_byte():
    rig = Rig()
    assert rig.kbc.type_text("aB\n") == 0
    assert rig.irq1.level
    expected = [0x1E, 0x9E, 0x2A, 0x30, 0xB0, 0xAA, 0x1C, 0x9C]
    assert rig.drain() == expected
    assert rig.irq1.edges == len(expected) and not rig.irq1.level


def test_typed_text_in_set_2_and_set_1_without_translation():
    rig = Rig()
    rig.set_config(0x05)
    rig.kbc.type_text("aB\n")
    assert rig.drain() == [0x1C, 0xF0, 0x1C, 0x12, 0x32, 0xF0, 0x32, 0xF0, 0x12,
                           0x5A, 0xF0, 0x5A]
    rig.send(0xF0)
    rig.send(0x01)
    rig.drain()
    rig.kbc.type_text("z")
    assert rig.drain() == [0x2C, 0xAC]


def test_characters_without_a_key_are_skipped():
    rig = Rig()
    assert rig.kbc.type_text("é1") == 1
    assert rig.drain() == [0x02, 0x82]


def test_keys_wait_while_the_port_is_disabled_or_scanning_is_off():
    rig = Rig()
    rig.command(0xAD)
    rig.kbc.type_text("q")
    assert rig.drain() == []
    rig.command(0xAE)
    assert rig.drain() == [0x10, 0x90]
    rig.send(0xF5)
    assert rig.drain() == [0xFA]
    rig.kbc.type_text("w")
    assert rig.drain() == []
    rig.send(0xF4)
    assert rig.drain() == [0xFA, 0x11, 0x91]


def test_with_typing_waits_a_status_poll_loop_starts_the_typing():
    """Init sequences read the status once per command; a loop that spins on it with the
    output buffer empty waits for a key. Any other access starts the count again."""
    rig = Rig()
    rig.kbc = I8042(rig.resets.append, rig.irq1.line, irq1_reaches_cpu=lambda: False)
    rig.kbc.type_text("a")
    for _ in range(K.POLLS_BEFORE_TYPING - 1):
        assert not rig.status() & K.ST_OUTPUT_FULL
    rig.command(0xAE)                                     # not a poll: the count restarts
    for _ in range(K.POLLS_BEFORE_TYPING - 1):
        assert not rig.status() & K.ST_OUTPUT_FULL
    assert rig.irq1.edges == 0
    assert not rig.status() & K.ST_OUTPUT_FULL            # the last poll found it empty...
    assert rig.irq1.edges == 1                            # ...and the key came after it
    assert rig.drain() == [0x1E, 0x9E]


def test_with_typing_waits_one_status_read_with_irq1_reaching_the_cpu_starts_it():
    """An interrupt-driven driver reads the status (to flush a stale byte) and then waits
    for IRQ 1: the key comes after that read, so the flush does not eat it."""
    reaches = [False]
    rig = Rig()
    rig.kbc = I8042(rig.resets.append, rig.irq1.line, irq1_reaches_cpu=lambda: reaches[0])
    rig.kbc.type_text("a")
    assert not rig.status() & K.ST_OUTPUT_FULL and rig.irq1.edges == 0
    reaches[0] = True
    rig.set_config(0x44)                                  # the 8042's own IRQ 1 bit off
    assert not rig.status() & K.ST_OUTPUT_FULL and rig.irq1.edges == 0
    rig.set_config(0x45)
    assert not rig.status() & K.ST_OUTPUT_FULL and rig.irq1.edges == 1
    assert rig.drain() == [0x1E, 0x9E]


def test_with_typing_waits_answers_still_come_and_start_typing_releases_keys():
    rig = Rig()
    rig.kbc = I8042(rig.resets.append, rig.irq1.line, irq1_reaches_cpu=lambda: False)
    rig.kbc.type_text("a")
    rig.send(0xEE)                                        # echo: answered at once
    assert rig.drain() == [0xEE]
    rig.kbc.start_typing()
    assert rig.drain() == [0x1E, 0x9E]


def test_with_typing_waits_each_line_waits_for_the_guest_again():
    """After Enter a person reads the output before typing on; keys typed at once were
    read by TacOS while its shell ran the previous command, and lost."""
    rig = Rig()
    rig.kbc = I8042(rig.resets.append, rig.irq1.line, irq1_reaches_cpu=lambda: False)
    rig.kbc.type_text("a\nb")
    rig.kbc.start_typing()
    assert rig.drain() == [0x1E, 0x9E, 0x1C, 0x9C]
    assert rig.drain() == [] and rig.kbc.typing_waits
    rig.kbc.start_typing()
    assert rig.drain() == [0x30, 0xB0]


def test_irq1_follows_the_configuration_byte():
    rig = Rig()
    rig.set_config(0x44)                                  # IRQ 1 off: polling only
    rig.kbc.type_text("x")
    assert rig.irq1.edges == 0 and rig.status() & K.ST_OUTPUT_FULL
    rig.set_config(0x45)
    assert rig.irq1.edges == 1


def test_loopback_bytes_for_each_port():
    rig = Rig()
    rig.set_config(0x47)
    rig.command(0xD3)
    rig.send(0x5A)
    assert rig.status() & K.ST_AUX and rig.irq12.level
    assert rig.drain() == [0x5A]
    rig.command(0xD2)
    rig.send(0x99)
    assert rig.irq1.level and rig.drain() == [0x99]
    rig.command(0xD4)
    rig.send(0xFF)                                        # no mouse answers
    assert rig.drain() == []


def test_empty_output_buffer_repeats_the_last_byte():
    rig = Rig()
    rig.command(0xAA)
    assert rig.kbc.data.read(0, 1) == 0x55
    assert rig.kbc.data.read(0, 1) == 0x55


def test_translation_table_against_the_ibm_table():
    known = {0x01: 0x43, 0x03: 0x3F, 0x04: 0x3D, 0x05: 0x3B, 0x06: 0x3C, 0x07: 0x58,
             0x09: 0x44, 0x0A: 0x42, 0x0B: 0x40, 0x0C: 0x3E, 0x0D: 0x0F, 0x0E: 0x29,
             0x11: 0x38, 0x12: 0x2A, 0x14: 0x1D, 0x15: 0x10, 0x16: 0x02, 0x1C: 0x1E,
             0x29: 0x39, 0x5A: 0x1C, 0x66: 0x0E, 0x76: 0x01, 0x78: 0x57, 0x83: 0x41}
    assert {code: TRANSLATION[code] for code in known} == known


@given(st.text(alphabet=string.printable, max_size=20))
def test_set2_through_translation_equals_set1(text):
    translated, raw_set1 = Rig(), Rig()
    raw_set1.set_config(0x05)
    raw_set1.send(0xF0)
    raw_set1.send(0x01)
    raw_set1.drain()
    translated.kbc.type_text(text)
    raw_set1.kbc.type_text(text)
    assert translated.drain() == raw_set1.drain()
