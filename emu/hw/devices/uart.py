"""A 16550A UART, as kernels use it for a console (COM1 at 0x3f8 on a PC).

Owns: the UART's registers (National Semiconductor PC16550D datasheet: RBR/THR, IER, IIR/FCR,
LCR with the divisor-latch bank, MCR with loopback, LSR, MSR, SCR), serial output as lines
and a live stream, and queued input.
Does not own: where it sits (emu/hw/devices/pc.py) or interrupts (not raised yet).
"""
from __future__ import annotations

import codecs
from collections import deque
from typing import Callable, Protocol

from emu.events import EventBus, SerialInput, SerialOutput
from emu.hw.bus import Access, Device, Register

COM1 = 0x3f8

_DLAB = "DLAB"
_LCR_DLAB = 0x80
_IER_RX = 0x01
_IER_THRE = 0x02
_FCR_ENABLE = 0x01
_FCR_CLEAR_RX = 0x02
_MCR_LOOP = 0x10
_LSR_DATA_READY = 0x01
_LSR_IDLE = 0x60            # THR empty and transmitter empty: output is instant here
_MSR_CONNECTED = 0xb0       # CTS, DSR, DCD: a terminal is attached


class SerialLine(Protocol):
    """What is wired to a UART's receive side from outside the guest."""

    def arrive(self, now: int) -> bytes:
        """The bytes that arrive now (the guest looks at an empty receiver at instruction
        `now`); b"" for none."""


class FileLine:
    """A file on the line (`emu run --serial-input`): all of it arrives the first time the
    guest looks at the receiver outside loopback, after the driver has set the UART up."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def arrive(self, now: int) -> bytes:
        data, self._data = self._data, b""
        return data


class Uart16550(Device):
    """A 16550A UART as kernels use it for a console.

    Output is instant (LSR always says THR empty). Each line written (without its newline;
    carriage returns are dropped) is kept in `lines` (the last `keep_lines`) and emitted as
    SerialOutput; `on_text` receives every chunk as it comes, for live streaming. `partial`
    is the unfinished last line. `feed` queues guest input for RBR; `line` (a SerialLine)
    is asked for input whenever the guest reads LSR or RBR of an empty receiver outside
    loopback, and what arrives is a SerialInput event. Loopback (MCR bit 4)
    sends THR to RBR instead of the output, as drivers check at start-up. No interrupts are
    raised; IIR still reports what would be pending."""
    registers = (
        Register(0, "RBR", access=Access.READ),
        Register(0, "THR", access=Access.WRITE),
        Register(0, "DLL", bank=_DLAB),
        Register(1, "IER"),
        Register(1, "DLM", bank=_DLAB),
        Register(2, "IIR", access=Access.READ),
        Register(2, "FCR", access=Access.WRITE),
        Register(3, "LCR"),
        Register(4, "MCR"),
        Register(5, "LSR", access=Access.READ),
        Register(6, "MSR", access=Access.READ),
        Register(7, "SCR"),
    )

    def __init__(self, port_base: int = COM1, *, events: EventBus | None = None,
                 on_text: Callable[[str], None] | None = None, name: str = "COM1",
                 keep_lines: int = 1000) -> None:
        super().__init__(name)
        self.port_base = port_base
        self.events = events
        self.on_text = on_text
        self.lines: deque[str] = deque(maxlen=keep_lines)
        self._partial: list[str] = []
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._utf8_pending = False     # the decoder holds part of a multi-byte character
        self._rx: deque[int] = deque()
        self.line: SerialLine | None = None
        self.divisor = 1
        self.ier = self.fcr = self.lcr = self.mcr = self.scr = 0
        self._thre_pending = False

    @property
    def partial(self) -> str:
        return "".join(self._partial)

    def tail(self, count: int) -> list[str]:
        """The last `count` lines, the unfinished one included, for crash reports."""
        lines = list(self.lines)
        if self._partial:
            lines.append(self.partial)
        return lines[-count:] if count > 0 else []

    def feed(self, data: bytes) -> None:
        """Queue bytes for the guest to read from RBR."""
        self._rx.extend(data)

    def active_banks(self) -> frozenset[str]:
        return frozenset((_DLAB,)) if self.lcr & _LCR_DLAB else frozenset()

    # A wide access to an 8-bit device reaches consecutive registers, one byte each.
    def read(self, offset: int, size: int) -> int:
        if size == 1:                # the usual case, on every character a kernel prints
            return self._read_byte(offset)
        value = 0
        for index in range(size):
            value |= self._read_byte(offset + index) << (8 * index)
        return value

    def write(self, offset: int, size: int, value: int) -> None:
        if size == 1:
            return self._write_byte(offset, value & 0xff)
        for index in range(size):
            self._write_byte(offset + index, (value >> (8 * index)) & 0xff)

    def _read_byte(self, offset: int) -> int:
        if self.line is not None and not self._rx and not self.mcr & _MCR_LOOP and \
                (offset == 5 or offset == 0 and not self.lcr & _LCR_DLAB):
            self._receive_from_line()
        if offset == 5:              # LSR, polled before every character sent
            return _LSR_IDLE | (_LSR_DATA_READY if self._rx else 0)
        dlab = self.lcr & _LCR_DLAB
        if offset == 0:
            return self.divisor & 0xff if dlab else self._receive()
        if offset == 1:
            return self.divisor >> 8 if dlab else self.ier
        if offset == 2:
            return self._iir()
        if offset == 6:
            return self._msr()
        return {3: self.lcr, 4: self.mcr, 7: self.scr}.get(offset, 0xff)

    def _write_byte(self, offset: int, value: int) -> None:
        dlab = self.lcr & _LCR_DLAB
        if offset == 0 and dlab:
            self.divisor = (self.divisor & 0xff00) | value
        elif offset == 0:
            self._transmit(value)
        elif offset == 1 and dlab:
            self.divisor = (self.divisor & 0xff) | value << 8
        elif offset == 1:
            self.ier = value & 0x0f
            self._thre_pending = bool(self.ier & _IER_THRE)
        elif offset == 2:
            self.fcr = value & _FCR_ENABLE
            if value & _FCR_CLEAR_RX:
                self._rx.clear()
        elif offset == 3:
            self.lcr = value
        elif offset == 4:
            self.mcr = value & 0x1f
        elif offset == 7:
            self.scr = value
        # LSR and MSR are read-only; writes to them change nothing.

    def _receive_from_line(self) -> None:
        events = self.events
        now = events.now() if events is not None else 0
        data = self.line.arrive(now)
        if data:
            self._rx.extend(data)
            if events is not None and events.wants(SerialInput):
                events.emit(SerialInput(now, self.port_base, data.hex()))

    def _receive(self) -> int:
        return self._rx.popleft() if self._rx else 0

    def _iir(self) -> int:
        fifo = 0xc0 if self.fcr & _FCR_ENABLE else 0
        if self.ier & _IER_RX and self._rx:
            return fifo | 0x04
        if self.ier & _IER_THRE and self._thre_pending:
            self._thre_pending = False      # reading IIR acknowledges THR empty
            return fifo | 0x02
        return fifo | 0x01

    def _msr(self) -> int:
        if not self.mcr & _MCR_LOOP:
            return _MSR_CONNECTED
        mcr = self.mcr   # loopback wires RTS->CTS, DTR->DSR, OUT1->RI, OUT2->DCD
        return (mcr & 0x02) << 3 | (mcr & 0x01) << 5 | (mcr & 0x0c) << 4

    def _transmit(self, byte: int) -> None:
        self._thre_pending = bool(self.ier & _IER_THRE)
        if self.mcr & _MCR_LOOP:
            self._rx.append(byte)
            return
        if byte < 0x80 and not self._utf8_pending:     # ASCII: no decoder call
            if byte == 0x0d:
                return
            text = chr(byte)
        else:
            text = self._decoder.decode(bytes((byte,))).replace("\r", "")
            self._utf8_pending = bool(self._decoder.getstate()[0])
            if not text:
                return
        if self.on_text is not None:
            self.on_text(text)
        for char in text:
            if char == "\n":
                self._end_line()
            else:
                self._partial.append(char)

    def _end_line(self) -> None:
        line = self.partial
        self._partial.clear()
        self.lines.append(line)
        events = self.events
        if events is not None and events.wants(SerialOutput):
            events.emit(SerialOutput(events.now(), self.port_base, line))
