"""A rerun's inputs from outside the guest, fed from its trace instead of their sources.

Owns: the recorded inputs of a trace (read once, before the rerun starts: the serial
input's and stdin's events, whatever the comparison), and the two places they go in:
`ReplayLine`, the COM1 line whose bytes arrive at the recorded instruction, and
`ReplayHost`, the host streams of a replayed `emu exec` whose stdin reads return what the
recording's reads returned. The rerun emits its own SerialInput and HostInput events as
they are fed, and the comparer compares them like any other: a rerun that never looks at
the receiver where the recording did misses the recorded event and diverges there.
Does not own: comparing (divergence.py); the keys of `--keys`, which the configuration
holds (a rerun types them itself, KeyInput says so).
"""
from __future__ import annotations

from collections import deque
from pathlib import Path

from emu.errors import TraceError
from emu.monitor.trace import read_events_of

INPUT_TYPES = ("SerialInput", "HostInput")


def _data(record: dict) -> bytes:
    try:
        return bytes.fromhex(str(record.get("data", "")))
    except ValueError:
        raise TraceError(f"a {record.get('type')} event at instruction {record.get('icount')} "
                         "whose data is not hex: a corrupt trace") from None


class RecordedInputs:
    def __init__(self, trace: Path) -> None:
        records = read_events_of(trace, INPUT_TYPES)
        self.serial: deque[tuple[int, int, bytes]] = deque(
            (int(r.get("icount", 0)), int(r.get("port", 0)), _data(r))
            for r in records if r["type"] == "SerialInput")
        self.host: dict[int, deque[bytes]] = {}
        for record in records:
            if record["type"] == "HostInput":
                self.host.setdefault(int(record.get("stream", 0)), deque()).append(
                    _data(record))

    def wire(self, machine) -> None:
        """Put them in: COM1's line (if the recording received serial input) and the
        host streams."""
        if self.serial:
            machine.devices.com1.line = ReplayLine(self.serial, machine.devices.com1.port_base)
        machine.devices.hostio.host = ReplayHost(self.host)


class ReplayLine:
    """Bytes arrive when the guest looks at the receiver at the instruction where the
    recording's did."""

    def __init__(self, arrivals: deque[tuple[int, int, bytes]], port: int) -> None:
        self._arrivals = deque(a for a in arrivals if a[1] == port)

    def arrive(self, now: int) -> bytes:
        if self._arrivals and self._arrivals[0][0] == now:
            return self._arrivals.popleft()[2]
        return b""


class ReplayHost:
    """The HostStreams (emu/hw/devices/hostio.py) of a rerun: each read of a stream returns
    what the recording's read of it returned, in order; output is dropped (the recording's
    went to the user); the exit status is kept."""

    def __init__(self, reads: dict[int, deque[bytes]]) -> None:
        self._reads = reads
        self.wait_status: int | None = None

    def write(self, stream: int, data: bytes) -> int:
        return len(data)

    def read(self, stream: int, size: int) -> bytes:
        queue = self._reads.get(stream)
        return queue.popleft()[:size] if queue else b""

    def exit(self, wait_status: int) -> None:
        self.wait_status = wait_status
