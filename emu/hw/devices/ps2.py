"""The 8042 PS/2 controller (data port 0x60, status/command port 0x64) and the keyboard on its
first port, following the IBM PC AT Technical Reference ("Keyboard Controller" and "Keyboard"
chapters) as PC chipsets still implement them.

Owns: the status register, the controller's RAM and configuration byte, controller commands
(0x20-0x3F/0x60-0x7F RAM read/write, 0xA7/0xA8/0xA9 second port, 0xAA self-test, 0xAB port
test, 0xAD/0xAE first port, 0xC0 input port, 0xD0/0xD1 output port, 0xD2/0xD3 output buffer
writes, 0xD4 second-port write, 0xF0-0xFF reset-line pulses), the keyboard's commands (0xFF
reset, 0xFE resend, 0xF6/0xF5/0xF4 defaults and scanning, 0xF3 typematic, 0xF2 identify, 0xF0
scan code set, 0xEE echo, 0xED LEDs), set 2 -> set 1 translation, typed text as make and break
codes of the active set, and IRQ 1 / IRQ 12 while a byte for that port waits in the output
buffer and the configuration byte enables it.
Does not own: the scan code tables (scancodes.py), what a reset does (`on_reset`), where the
IRQs go (emu.hw.irq).

Modelled as documented behaviour, not refused:
- Commands and bytes take no time: the input buffer is never full (status bit 1 reads 0) and
  an answer is in the output buffer at once.
- No device on the second (mouse) port: its test passes (0x00, the lines are fine), 0xD4 data
  is dropped unanswered; 0xD3 (loopback) still works, as drivers probe with it.
- Scan code set 3 is not modelled: selecting it is answered 0xFE (resend) and the set stays.
- Typed text waits while the first port is disabled (0xAD, configuration bit 4) or the
  keyboard is not scanning (0xF5), and comes out once both allow it: keys are pressed, not lost.
- Given `irq1_reaches_cpu` (the platform's routing: is IRQ 1 unmasked at the 8259 or the
  IOAPIC?), typed text also waits until the guest waits for input: `start_typing()` (the
  platform calls it when the CPU idles with `keyboard_irq_on()`), or a read of the status
  register that finds the output buffer empty while `keyboard_irq_on()` (an interrupt-driven
  driver about to wait; the key comes after that read), or POLLS_BEFORE_TYPING such reads in
  a row with no other access to the controller between (a polling driver spinning on
  "output buffer full"; init sequences read the status once per command). Each line
  (after Enter) waits so again: a person reads the output before typing the next command.
- Configuration byte at hand-over: 0x45 (IRQ 1 on, system flag, translation on), as a PC BIOS
  leaves it. The input port reads 0x80 (keyboard not inhibited); the output port starts 0x03
  (reset line high, A20 on) and a write with bit 0 clear resets the machine.
"""
from __future__ import annotations

from collections import deque
from typing import Callable

from emu.hw.bus import Access, Device, Register
from emu.hw.devices.reset import ResetReason
from emu.hw.devices.scancodes import SHIFT, Key, Translator, keystrokes, scancode_bytes
from emu.hw.irq import IrqLine

DATA_PORT, STATUS_PORT = 0x60, 0x64
KEYBOARD_IRQ, MOUSE_IRQ = 1, 12
FIRMWARE_CONFIG = 0x45
POLLS_BEFORE_TYPING = 100
ST_OUTPUT_FULL, ST_SYSTEM, ST_COMMAND, ST_NOT_INHIBITED, ST_AUX = 0x01, 0x04, 0x08, 0x10, 0x20
CFG_IRQ1, CFG_IRQ12, CFG_SYSTEM = 0x01, 0x02, 0x04
CFG_PORT1_OFF, CFG_PORT2_OFF, CFG_TRANSLATE = 0x10, 0x20, 0x40
ACK, RESEND, SELF_TEST_PASSED, ECHO = 0xFA, 0xFE, 0xAA, 0xEE
CONTROLLER_OK, PORT_OK = 0x55, 0x00
_CONTROLLER, _KEYBOARD, _AUX = 0, 1, 2
LINE_END = None                  # in the keyboard's queue after each Enter


class Ps2Keyboard:
    """The keyboard: its command answers and its key presses, as bytes of its scan code set
    (translation happens in the controller)."""

    def __init__(self) -> None:
        self.answers: deque[int] = deque()
        # (key, make) still to send; LINE_END after each Enter
        self.keys: deque[tuple[Key, bool] | None] = deque()
        self.line_ended = False          # LINE_END was reached: the controller decides
        self.last_sent = 0
        self.reset()

    def reset(self) -> None:
        self.scancode_set = 2
        self.scanning = True
        self.leds = 0
        self.typematic = 0x2B
        self._argument_for: int | None = None           # a command waiting for its data byte

    def command(self, byte: int) -> None:
        if self._argument_for is not None:
            self._argument(self._argument_for, byte)
            return
        if byte == 0xFF:
            self.answers.clear()
            self.reset()
            self.answers.extend((ACK, SELF_TEST_PASSED))
        elif byte == 0xFE:
            self.answers.append(self.last_sent)
        elif byte == 0xEE:
            self.answers.append(ECHO)
        elif byte == 0xF2:
            self.answers.extend((ACK, 0xAB, 0x83))
        elif byte in (0xF0, 0xF3, 0xED):
            self._argument_for = byte
            self.answers.append(ACK)
        elif byte in (0xF4, 0xF5, 0xF6):
            if byte != 0xF4:
                self.scancode_set, self.typematic, self.leds = 2, 0x2B, 0
            self.scanning = byte != 0xF5
            self.answers.append(ACK)
        elif 0xF7 <= byte <= 0xFD:                      # set 3 key types: accepted, no effect
            self.answers.append(ACK)
        else:
            self.answers.append(RESEND)

    def _argument(self, command: int, byte: int) -> None:
        self._argument_for = None
        if command == 0xF0 and byte == 0:
            self.answers.extend((ACK, self.scancode_set))
        elif command == 0xF0 and byte in (1, 2):
            self.scancode_set = byte
            self.answers.append(ACK)
        elif command == 0xF0:
            self.answers.append(RESEND)                  # set 3 is not modelled
        else:
            if command == 0xED:
                self.leds = byte & 7
            else:
                self.typematic = byte & 0x7F
            self.answers.append(ACK)

    def next_byte(self, may_send_keys: bool) -> int | None:
        """The next byte the keyboard sends: answers first, then key codes if allowed."""
        if not self.answers and may_send_keys and self.scanning and self.keys:
            press = self.keys.popleft()
            if press is LINE_END:
                self.line_ended = True
                return None
            key, make = press
            self.answers.extend(scancode_bytes(key, make, self.scancode_set))
        if not self.answers:
            return None
        self.last_sent = self.answers.popleft()
        return self.last_sent

    def type_text(self, text: str) -> int:
        """Queue the key presses that type `text`; returns the characters skipped (no key)."""
        skipped = 0
        for char in text:
            stroke = keystrokes(char)
            if stroke is None:
                skipped += 1
                continue
            key, shifted = stroke
            presses = [(SHIFT, True)] if shifted else []
            presses += [(key, True), (key, False)]
            presses += [(SHIFT, False)] if shifted else []
            self.keys.extend(presses)
            if char == "\n":
                self.keys.append(LINE_END)
        return skipped


class I8042:
    """The controller. `data` and `command` are the Device views the bus puts at ports 0x60
    and 0x64 (they are not adjacent: port 0x61 is system control port B)."""

    def __init__(self, on_reset: Callable[[ResetReason], None],
                 irq1: IrqLine | None = None, irq12: IrqLine | None = None,
                 irq1_reaches_cpu: Callable[[], bool] | None = None) -> None:
        self.on_reset = on_reset
        self.irq1_reaches_cpu = irq1_reaches_cpu
        self.typing_waits = irq1_reaches_cpu is not None
        self._empty_polls = 0
        self.irq1, self.irq12 = irq1, irq12
        self.keyboard = Ps2Keyboard()
        self.ram = bytearray(32)
        self.ram[0] = FIRMWARE_CONFIG
        self.output: deque[tuple[int, int]] = deque()   # (byte, source port)
        self.output_port = 0x03
        self.last_was_command = False
        self._last_read = 0
        self._awaiting: int | None = None                # a command waiting for its data byte
        self._translator = Translator()
        self.data = Ps2DataPort(self)
        self.command = Ps2CommandPort(self)

    @property
    def config(self) -> int:
        return self.ram[0]

    def start_typing(self) -> None:
        """The guest waits for input: typed text may come out from now on."""
        if self.typing_waits:
            self.typing_waits = False
            self._refresh()

    def keyboard_irq_on(self) -> bool:
        """A byte from the keyboard would interrupt the CPU (see `irq1_reaches_cpu`)."""
        return bool(self.config & CFG_IRQ1) and self.irq1_reaches_cpu is not None \
            and self.irq1_reaches_cpu()

    def status(self) -> int:
        head = self.output[0][1] if self.output else None
        value = (ST_NOT_INHIBITED | (ST_OUTPUT_FULL if self.output else 0)
                 | (ST_AUX if head == _AUX else 0) | (self.config & CFG_SYSTEM)
                 | (ST_COMMAND if self.last_was_command else 0))
        if self.typing_waits and not self.output:
            self._empty_polls += 1
            if self._empty_polls >= POLLS_BEFORE_TYPING or self.keyboard_irq_on():
                self.start_typing()
        return value

    # --- the output buffer and the IRQ lines -------------------------------------------------

    def read_data(self) -> int:
        self._empty_polls = 0
        if self.output:
            self._last_read = self.output.popleft()[0]
            self._set_lines(False, False)               # the buffer empties: IRQs drop
            self._refresh()
        return self._last_read                          # an empty buffer repeats the last byte

    def _refresh(self) -> None:
        """Move the keyboard's next byte into an empty output buffer; drive IRQ 1/12."""
        while not self.output:
            byte = self.keyboard.next_byte(not self.config & CFG_PORT1_OFF
                                           and not self.typing_waits)
            if byte is None:
                if not self.keyboard.line_ended:
                    break
                self.keyboard.line_ended = False
                if self.irq1_reaches_cpu is not None:    # the next line waits for the
                    self.typing_waits = True             # guest to wait again
                continue
            if self.config & CFG_TRANSLATE:
                byte = self._translator.translate(byte)
            if byte is not None:
                self.output.append((byte, _KEYBOARD))
        head = self.output[0][1] if self.output else None
        self._set_lines(head == _KEYBOARD and bool(self.config & CFG_IRQ1),
                        head == _AUX and bool(self.config & CFG_IRQ12))

    def _set_lines(self, irq1: bool, irq12: bool) -> None:
        if self.irq1 is not None:
            self.irq1.set(irq1)
        if self.irq12 is not None:
            self.irq12.set(irq12)

    def _answer(self, byte: int, source: int = _CONTROLLER) -> None:
        self.output.append((byte & 0xFF, source))
        self._refresh()

    def type_text(self, text: str) -> int:
        """Queue text as key presses of the keyboard; returns characters with no key."""
        skipped = self.keyboard.type_text(text)
        self._refresh()
        return skipped

    # --- writes -----------------------------------------------------------------------------

    def write_data(self, byte: int) -> None:
        self._empty_polls = 0
        self.last_was_command = False
        awaiting, self._awaiting = self._awaiting, None
        if awaiting is None:
            self.keyboard.command(byte)
        elif 0x60 <= awaiting <= 0x7F:
            self.ram[awaiting - 0x60] = byte
        elif awaiting == 0xD1:
            self._write_output_port(byte)
        elif awaiting == 0xD2:
            self.output.append((byte, _KEYBOARD))
        elif awaiting == 0xD3:
            self.output.append((byte, _AUX))
        # 0xD4: no device on the second port takes the byte.
        self._refresh()

    def write_command(self, byte: int) -> None:
        self._empty_polls = 0
        self.last_was_command = True
        self._awaiting = None
        if 0x20 <= byte <= 0x3F:
            self._answer(self.ram[byte - 0x20])
        elif 0x60 <= byte <= 0x7F or byte in (0xD1, 0xD2, 0xD3, 0xD4):
            self._awaiting = byte
        elif byte in (0xA7, 0xA8, 0xAD, 0xAE):
            bit = CFG_PORT2_OFF if byte in (0xA7, 0xA8) else CFG_PORT1_OFF
            self.ram[0] = self.config | bit if byte in (0xA7, 0xAD) else self.config & ~bit
            self._refresh()
        elif byte in (0xA9, 0xAB):
            self._answer(PORT_OK)
        elif byte == 0xAA:
            self.ram[0] |= CFG_SYSTEM
            self._answer(CONTROLLER_OK)
        elif byte == 0xC0:
            self._answer(0x80)
        elif byte == 0xD0:
            self._answer(self.output_port)
        elif byte >= 0xF0 and not byte & 1:             # pulse output line 0: reset
            self.on_reset(ResetReason.KEYBOARD_CONTROLLER)

    def _write_output_port(self, value: int) -> None:
        self.output_port = value
        if not value & 1:                               # the reset line is active low
            self.on_reset(ResetReason.KEYBOARD_CONTROLLER)


class Ps2DataPort(Device):
    """Port 0x60: the output buffer (read), data for the keyboard or a command (write)."""
    registers = (Register(0, "DATA"),)

    def __init__(self, controller: I8042, name: str = "ps2-data") -> None:
        super().__init__(name)
        self.controller = controller

    def read(self, offset: int, size: int) -> int:
        return self.controller.read_data()

    def write(self, offset: int, size: int, value: int) -> None:
        self.controller.write_data(value & 0xFF)


class Ps2CommandPort(Device):
    """Port 0x64: the status register (read), controller commands (write)."""
    registers = (Register(0, "STATUS", access=Access.READ),
                 Register(0, "COMMAND", access=Access.WRITE))

    def __init__(self, controller: I8042, name: str = "ps2-command") -> None:
        super().__init__(name)
        self.controller = controller

    def read(self, offset: int, size: int) -> int:
        return self.controller.status()

    def write(self, offset: int, size: int, value: int) -> None:
        self.controller.write_command(value & 0xFF)
