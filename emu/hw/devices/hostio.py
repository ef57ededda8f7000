"""The host I/O channel: an emulator-only device through which the guest kernel hands the
program it runs its standard streams and reports the program's exit status
(guest/dev/hostio.h is the other side).

Owns: the ports (0xf8-0xff), the request block's layout and checks, and calling the host
side (`HostStreams`) for each request.
Does not own: what the host does with the bytes (emu/workloads/process.py writes them to
the real stdout and stderr) or what the status means (the exec command).

Protocol: the guest fills a 32-byte request in RAM (op u32, stream u32, buffer u64
(physical), length u64, result i64) and writes its physical address to port 0xf8 (low 32
bits) and 0xfc (high 32 bits); the write of the high half performs the request, so when
that OUT retires the result is in guest memory. A 32-bit read of 0xf8 returns the
signature "HOST" (0x54534f48). On a PC nothing answers at 0xf8-0xff (the x87 ports), so a
kernel that probes first runs on hardware too.
"""
from __future__ import annotations

import struct
from typing import Protocol

from emu.errors import UnbackedAccess
from emu.events import EventBus, HostInput
from emu.hw.bus import Access, Device, Register
from emu.hw.memory import PhysicalMemory

HOSTIO_PORT = 0xf8
SIGNATURE = 0x54534F48             # "HOST"
REQUEST = struct.Struct("<IIQQq")  # op, stream, buffer, length, result
RESULT_OFFSET = 24
CHUNK = 4096                       # bytes per request at most
OP_WRITE, OP_READ, OP_EXIT = 1, 2, 3
STDIN, STDOUT, STDERR = 0, 1, 2
EINVAL = 22


class HostStreams(Protocol):
    """The host side: what the program's streams and status become."""

    def write(self, stream: int, data: bytes) -> int:
        """Write to stdout (1) or stderr (2); bytes taken, or a negative errno (-EPIPE)."""

    def read(self, stream: int, size: int) -> bytes:
        """At most `size` bytes of stdin (0); b"" at its end."""

    def exit(self, wait_status: int) -> None:
        """The program ended with this Linux wait status."""


class NoHost:
    """The host when nobody attached one: output is dropped, input is empty."""
    wait_status: int | None = None

    def write(self, stream: int, data: bytes) -> int:
        return len(data)

    def read(self, stream: int, size: int) -> bytes:
        return b""

    def exit(self, wait_status: int) -> None:
        self.wait_status = wait_status


class HostIo(Device):
    """The channel's ports (see the module docstring); `host` may be replaced before the run."""
    registers = (Register(0, "ADDRESS_LOW", size=4, access=Access.WRITE),
                 Register(0, "SIGNATURE", size=4, access=Access.READ),
                 Register(4, "ADDRESS_HIGH_GO", size=4, access=Access.WRITE))
    port_count = 8

    def __init__(self, memory: PhysicalMemory, events: EventBus, port: int = HOSTIO_PORT,
                 name: str = "hostio") -> None:
        super().__init__(name)
        self.memory = memory
        self.events = events
        self.port = port
        self.host: HostStreams = NoHost()
        self.requests = 0
        self._low = 0

    def read(self, offset: int, size: int) -> int:
        return SIGNATURE & ((1 << (8 * size)) - 1) if offset == 0 else 0

    def write(self, offset: int, size: int, value: int) -> None:
        if offset == 0:
            self._low = value & 0xFFFFFFFF
        elif offset == 4:
            self._request(self._low | (value & 0xFFFFFFFF) << 32)

    def _request(self, paddr: int) -> None:
        self.requests += 1
        try:
            op, stream, buffer, length, _ = REQUEST.unpack(self.memory.read(paddr, REQUEST.size))
        except UnbackedAccess:
            return                          # no RAM there: nothing to answer into
        result = self._perform(op, stream, buffer, length)
        self.memory.write(paddr + RESULT_OFFSET, struct.pack("<q", result))

    def _perform(self, op: int, stream: int, buffer: int, length: int) -> int:
        if op == OP_EXIT:
            self.host.exit(length & 0xFFFF)
            return 0
        if length > CHUNK or not self.memory.is_ram(buffer, max(length, 1)):
            return -EINVAL
        if op == OP_WRITE and stream in (STDOUT, STDERR):
            return self.host.write(stream, self.memory.read(buffer, length))
        if op == OP_READ and stream == STDIN:
            data = self.host.read(stream, length)[:length]
            self.memory.write(buffer, data)
            if self.events.wants(HostInput):
                self.events.emit(HostInput(self.events.now(), stream, data.hex()))
            return len(data)
        return -EINVAL
