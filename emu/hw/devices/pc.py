"""Device models for the PC the guest sees: a 16550 UART, QEMU's debug-exit port, the
checkpoint and marker ports, and the legacy ports a kernel pokes at boot.

Owns: device register behaviour, serial output and input.
Does not own: which ports or addresses they sit at (the machine, through bus.py) or
stopping the CPU (the `on_exit` callback the machine provides).
"""
from __future__ import annotations

import codecs
from collections import deque
from dataclasses import dataclass
from typing import Callable

from emu.hw.bus import Access, Bus, Device, IgnoredPorts, Register
from emu.events import Checkpoint, EventBus, Marker, SerialOutput

COM1 = 0x3f8
DEBUG_EXIT_PORT = 0xf4
CHECKPOINT_PORT = 0xf0
MARKER_PORT = 0xf1

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


class Uart16550(Device):
    """A 16550A UART as kernels use it for a console.

    Output is instant (LSR always says THR empty). Each line written (without its newline;
    carriage returns are dropped) is kept in `lines` (the last `keep_lines`) and emitted as
    SerialOutput; `on_text` receives every chunk as it comes, for live streaming. `partial`
    is the unfinished last line. `feed` queues guest input for RBR. Loopback (MCR bit 4)
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


def qemu_status(value: int) -> int:
    """The status QEMU's process exits with after a guest writes `value` to isa-debug-exit:
    (value << 1) | 1, so never 0 (a shell sees it modulo 256)."""
    return (value << 1) | 1


class DebugExit(Device):
    """QEMU's isa-debug-exit (iobase 0xf4, iosize 4): a write of v, of any size, calls
    `on_exit(v)`, which stops the machine with exit value v. Unlike QEMU, which exits with
    `qemu_status(v)`, this emulator reports v itself. Reads return 0."""
    registers = (Register(0, "EXIT", size=4, access=Access.WRITE),)
    port_count = 4

    def __init__(self, on_exit: Callable[[int], None], port: int = DEBUG_EXIT_PORT,
                 name: str = "debug-exit") -> None:
        super().__init__(name)
        self.on_exit = on_exit
        self.port = port
        self.value: int | None = None

    def read(self, offset: int, size: int) -> int:
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        self.value = value
        self.on_exit(value)


class CheckpointPort(Device):
    """The guest says "look now" (guest/checkpoint.h): a write of n, of any size, emits
    Checkpoint(n), on which the invariant checker checks and `emu pt --at-checkpoint` takes
    its picture. An emulator-only port (0xf0; on a PC, 0xf0 clears the x87 busy latch).
    Reads return 0."""
    registers = (Register(0, "CHECKPOINT", size=4, access=Access.WRITE),)
    port_count = 1

    def __init__(self, events: EventBus, port: int = CHECKPOINT_PORT,
                 name: str = "checkpoint") -> None:
        super().__init__(name)
        self.events = events
        self.port = port

    def read(self, offset: int, size: int) -> int:
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        if self.events.wants(Checkpoint):
            self.events.emit(Checkpoint(self.events.now(), value))


class MarkerPort(Device):
    """Brackets a measured region (guest/replay.c): a write of v, of any size, emits
    Marker(v) (1: start, 2: end) and is kept in `marks` as (icount, v). `clock` gives the
    exact instruction count at the `out` (the CPU's time stamp at RIP, which is exact in a
    port hook; the raw block counter already includes the rest of the block), so the
    instructions between two marks cost no per-instruction hook. An emulator-only port
    (0xf1; on a PC, 0xf1 resets the x87 coprocessor). Reads return 0."""
    registers = (Register(0, "MARK", size=4, access=Access.WRITE),)
    port_count = 1

    def __init__(self, events: EventBus, clock: Callable[[], int] | None = None,
                 port: int = MARKER_PORT, name: str = "marker") -> None:
        super().__init__(name)
        self.events = events
        self.clock = clock if clock is not None else events.now
        self.port = port
        self.marks: list[tuple[int, int]] = []

    def read(self, offset: int, size: int) -> int:
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        icount = self.clock()
        self.marks.append((icount, value))
        if self.events.wants(Marker):
            self.events.emit(Marker(icount, value))


# Ports a kernel pokes at boot that this machine does not model. They read 0, not the
# floating 0xff of a real bus: a PS/2 status of 0xff says "input buffer full" and a driver
# waiting for it to drain would spin forever.
PC_IGNORED_PORTS = (
    (0x20, 2, "PIC master"),
    (0x40, 4, "PIT"),
    (0x60, 1, "PS/2 data"),
    (0x64, 1, "PS/2 status"),
    (0x80, 1, "POST"),
    (0xa0, 2, "PIC slave"),
)


@dataclass(frozen=True, slots=True)
class PcDevices:
    com1: Uart16550
    debug_exit: DebugExit
    ignored: tuple[IgnoredPorts, ...]
    checkpoint: CheckpointPort
    marker: MarkerPort


def install_pc_devices(bus: Bus, uart_on_text: Callable[[str], None] | None = None, *,
                       on_exit: Callable[[int], None],
                       clock: Callable[[], int] | None = None) -> PcDevices:
    """Wire COM1, the debug-exit port, the checkpoint and marker ports and the ignored
    legacy ports onto `bus`. `clock` stamps markers with the exact instruction count (default: the
    event bus's clock)."""
    com1 = Uart16550(COM1, events=bus.events, on_text=uart_on_text)
    bus.add_ports(com1.port_base, 8, com1)
    debug_exit = DebugExit(on_exit)
    bus.add_ports(debug_exit.port, DebugExit.port_count, debug_exit)
    checkpoint = CheckpointPort(bus.events)
    bus.add_ports(checkpoint.port, CheckpointPort.port_count, checkpoint)
    marker = MarkerPort(bus.events, clock)
    bus.add_ports(marker.port, MarkerPort.port_count, marker)
    ignored = tuple(bus.ignore_ports(first, count, fill=0, name=name)
                    for first, count, name in PC_IGNORED_PORTS)
    return PcDevices(com1, debug_exit, ignored, checkpoint, marker)
