"""Emulator-only ports through which the guest talks to the monitor: "look now"
(checkpoints, guest/test/checkpoint.h) and "a measured region starts/ends" (markers,
guest/test/replay.c). On a PC nothing useful answers at 0xf0/0xf1 (x87 latches), so a kernel
that uses them still runs on hardware.

Owns: turning writes into Checkpoint and Marker events (markers stamped with the exact
instruction count).
Does not own: what observers do with them.
"""
from __future__ import annotations

from typing import Callable

from emu.events import Checkpoint, EventBus, Marker
from emu.hw.bus import Access, Device, Register

CHECKPOINT_PORT = 0xf0
MARKER_PORT = 0xf1


MAX_PASSED = 256        # a guest that writes ever new numbers cannot grow the set forever


class CheckpointPort(Device):
    """The guest says "look now" (guest/test/checkpoint.h): a write of n, of any size, emits
    Checkpoint(n), on which the invariant checker checks and `emu pt --at-checkpoint` takes
    its picture. An emulator-only port (0xf0; on a PC, 0xf0 clears the x87 busy latch).
    Reads return 0. `passed` keeps the numbers written so far (the first MAX_PASSED
    distinct ones): an injector attached to a machine restored after checkpoint n knows
    that n is behind it."""
    registers = (Register(0, "CHECKPOINT", size=4, access=Access.WRITE),)
    port_count = 1

    def __init__(self, events: EventBus, port: int = CHECKPOINT_PORT,
                 name: str = "checkpoint") -> None:
        super().__init__(name)
        self.events = events
        self.port = port
        self.passed: set[int] = set()

    def read(self, offset: int, size: int) -> int:
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        if len(self.passed) < MAX_PASSED:
            self.passed.add(value)
        if self.events.wants(Checkpoint):
            self.events.emit(Checkpoint(self.events.now(), value))


class MarkerPort(Device):
    """Brackets a measured region (guest/test/replay.c): a write of v, of any size, emits
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
