"""The GDB remote serial protocol's framing over a TCP connection.

Owns: `$payload#checksum` packets with `+`/`-` acknowledgements, the `}` escape of binary
data, and noticing a Ctrl-C (a bare 0x03 byte) while the target runs.
Does not own: what packets mean (stub.py).
"""
from __future__ import annotations

import select
import socket

INTERRUPT = 0x03
ESCAPE = 0x7D
MAX_PACKET = 1 << 16


class Disconnected(Exception):
    """The debugger went away (connection closed or reset)."""


def checksum(data: bytes) -> int:
    return sum(data) & 0xFF


def unescape(data: bytes) -> bytes:
    out = bytearray()
    escaped = False
    for byte in data:
        if escaped:
            out.append(byte ^ 0x20)
            escaped = False
        elif byte == ESCAPE:
            escaped = True
        else:
            out.append(byte)
    return bytes(out)


class Connection:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buffer = bytearray()

    def _fill(self) -> None:
        try:
            data = self.sock.recv(4096)
        except OSError:
            data = b""
        if not data:
            raise Disconnected()
        self._buffer += data

    def receive(self) -> bytes | None:
        """The next packet's payload, acknowledged; None for a Ctrl-C."""
        while True:
            while self._buffer and self._buffer[0] in b"+-":
                del self._buffer[0]
            if self._buffer and self._buffer[0] == INTERRUPT:
                del self._buffer[0]
                return None
            start = self._buffer.find(b"$")
            end = self._buffer.find(b"#", start + 1) if start >= 0 else -1
            if start >= 0 and end >= 0 and len(self._buffer) >= end + 3:
                payload = bytes(self._buffer[start + 1:end])
                sent = self._buffer[end + 1:end + 3]
                del self._buffer[:end + 3]
                if int(sent, 16) != checksum(payload):
                    self.sock.sendall(b"-")
                    continue
                self.sock.sendall(b"+")
                return payload
            if len(self._buffer) > MAX_PACKET:
                raise Disconnected()
            self._fill()

    def send(self, payload: str | bytes) -> None:
        data = payload.encode() if isinstance(payload, str) else payload
        escaped = bytearray()
        for byte in data:
            if byte in b"$#}*":
                escaped += bytes((ESCAPE, byte ^ 0x20))
            else:
                escaped.append(byte)
        try:
            self.sock.sendall(b"$" + bytes(escaped) + b"#%02x" % checksum(bytes(escaped)))
        except OSError:
            raise Disconnected() from None

    def interrupted(self) -> bool:
        """True if the debugger sent Ctrl-C (read without waiting; other bytes are kept)."""
        readable, _, _ = select.select([self.sock], [], [], 0)
        if readable:
            self._fill()
        if INTERRUPT in self._buffer:
            self._buffer.remove(INTERRUPT)
            return True
        return False
