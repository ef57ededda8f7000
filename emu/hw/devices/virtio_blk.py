"""A virtio block device (OASIS virtio v1.2, section 5.2 "Block Device") with one request
queue, on virtual time: requests complete a configurable number of ticks after the notify.

Owns: the feature bits and configuration space below, serving requests (read, write, flush,
get-id; any other type answers UNSUPP), their completion time, BlockRequest events, and
what an injected fault does to a request (`fail_sectors`: IOERR on those sectors; the
`fault_hooks` asked about every read and write: `MediaFault` below).
Does not own: the transport (virtio_mmio.py), the rings (virtqueue.py), the bytes
(emu/hw/disk.py), deciding which request fails (emu/inject/disk.py).

Requests (5.2.6): a 16-byte header {type u32, reserved u32, sector u64} the device reads,
the data, and a status byte the device writes last. The device assumes no framing (1.x
drivers may split or merge these parts across descriptors at will): the device-readable
bytes are the header followed by the data of a write; the device-writable bytes are the data
of a read followed by the status byte. A read or write whose data is not a whole number of
sectors or that runs past the capacity completes with IOERR; a request without a status
byte or a full header is a protocol breach (the transport's failure state).

Timing (the Timer contract of emu/hw/clock.py): a notify at tick t takes every chain then
available; they complete together at t + latency, in ring order, followed by one used-buffer
interrupt. Latency 0 completes them at the first `advance` after the notify (the CPU's next
stop, at the end of the translated block: see virtio_mmio.py on why not inside the access).
The device reads descriptors and data at completion, as a DMA engine would: a driver that
changes a buffer before its completion sees the changed bytes go to disk.

Injected faults (`MediaFault`): "ioerr" completes the request with IOERR and moves no data;
"torn" lets only the first `amount` sectors of a write reach the disk and still answers OK
(the BlockRequest event shows what the driver asked to write, so the swap checker knows
what the slot should hold); "delay" completes the request `amount` ticks after the others
of its notify, with an interrupt of its own (virtio allows used buffers in any order).

Features offered: VERSION_1, SEG_MAX (queue size - 2), BLK_SIZE (512), FLUSH.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Callable, Iterable

from emu.errors import DeviceFault
from emu.events import BlockRequest, EventBus
from emu.hw.clock import VirtualClock
from emu.hw.devices.virtio_mmio import F_VERSION_1, VirtioMmio
from emu.hw.devices.virtqueue import Chain, SplitQueue, gather, scatter
from emu.hw.disk import SECTOR, DiskImage

DEVICE_ID_BLOCK = 2
QUEUE_SIZE = 256
F_SEG_MAX, F_BLK_SIZE, F_FLUSH = 1 << 2, 1 << 6, 1 << 9
FEATURES = F_VERSION_1 | F_SEG_MAX | F_BLK_SIZE | F_FLUSH
T_IN, T_OUT, T_FLUSH, T_GET_ID = 0, 1, 4, 8
S_OK, S_IOERR, S_UNSUPP = 0, 1, 2
ID_BYTES = 20
DEVICE_ID_STRING = b"emu-virtio-blk"
HEADER = struct.Struct("<IIQ")
_KINDS = {T_IN: "in", T_OUT: "out", T_FLUSH: "flush", T_GET_ID: "get-id"}
_STATUS = {S_OK: "ok", S_IOERR: "ioerr", S_UNSUPP: "unsupp"}
# Configuration space (5.2.4): capacity u64 @0, size_max u32 @8, seg_max u32 @12,
# geometry {u16, u8, u8} @16, blk_size u32 @20; the rest reads 0.
CONFIG = struct.Struct("<QIIHBBI")


@dataclass(frozen=True, slots=True)
class MediaFault:
    """What an injector does to one request (the module docstring)."""
    kind: str           # "ioerr", "torn" or "delay"
    amount: int = 0     # torn: sectors that land; delay: extra ticks


# (kind "in" or "out", first sector, bytes) -> a fault for this request, or None
FaultHook = Callable[[str, int, int], "MediaFault | None"]


def _slice(segments: Iterable[tuple[int, int]], start: int, length: int):
    """The (address, length) pieces of bytes [start, start+length) of `segments`."""
    out = []
    for address, size in segments:
        if length <= 0:
            break
        if start >= size:
            start -= size
            continue
        take = min(size - start, length)
        out.append((address + start, take))
        length -= take
        start = 0
    return tuple(out)


class VirtioBlk:
    """The block device behind a virtio transport: a `VirtioBackend` and a `Timer`."""
    device_id = DEVICE_ID_BLOCK
    features = FEATURES
    queue_sizes = (QUEUE_SIZE,)

    def __init__(self, disk: DiskImage, clock: VirtualClock, events: EventBus,
                 latency: int = 0, name: str = "virtio-blk") -> None:
        if latency < 0:
            raise ValueError("a completion latency cannot be negative")
        self.disk = disk
        self.clock = clock
        self.events = events
        self.latency = latency
        self.name = name
        self.transport: VirtioMmio | None = None
        self.fail_sectors: set[int] = set()    # injected media errors: IOERR on these
        self.fault_hooks: list[FaultHook] = []  # injectors, asked about each read and write
        self.requests: dict[str, int] = {}      # completed requests by kind
        self._due: list[tuple[int, SplitQueue, int]] = []   # (tick, queue, avail idx)
        self._late: list[tuple[int, SplitQueue, Chain]] = []  # delayed: (tick, queue, chain)
        self._config = CONFIG.pack(disk.size // SECTOR, 0, QUEUE_SIZE - 2, 0, 0, 0, SECTOR)

    # --- VirtioBackend ------------------------------------------------------------------

    def attach(self, transport: VirtioMmio) -> None:
        self.transport = transport

    def config_read(self, offset: int, size: int) -> int:
        chunk = self._config[offset:offset + size]
        return int.from_bytes(chunk.ljust(size, b"\0"), "little")

    def reset(self) -> None:
        self._due.clear()
        self._late.clear()

    def notify(self, queue: SplitQueue) -> None:
        try:
            upto = queue.avail_idx()
            queue.pending(upto)
        except DeviceFault as fault:
            self._fail(fault)
            return
        due = self.clock.now() + self.latency
        self._due.append((due, queue, upto))
        self.clock.wake_at(due)

    # --- Timer --------------------------------------------------------------------------

    def next_deadline(self) -> int | None:
        return min((due for due, _, _ in self._due + self._late), default=None)

    def advance(self, now: int) -> None:
        while self._due and self._due[0][0] <= now:
            _, queue, upto = self._due.pop(0)
            self._complete(queue, upto)
        while self._late and min(due for due, _, _ in self._late) <= now:
            late = min(self._late, key=lambda item: item[0])
            self._late.remove(late)
            self._complete_late(late[1], late[2])

    # --- requests -----------------------------------------------------------------------

    def _fail(self, fault: DeviceFault) -> None:
        self._due.clear()
        self._late.clear()
        assert self.transport is not None
        self.transport.fail(fault)

    def _complete(self, queue: SplitQueue, upto: int) -> None:
        transport = self.transport
        assert transport is not None
        if not transport.live:
            return
        served = 0
        try:
            while queue.last_avail != upto:
                chain = queue.pop()
                fault = self._fault_of(chain)
                if fault is not None and fault.kind == "delay":
                    due = self.clock.now() + fault.amount
                    self._late.append((due, queue, chain))
                    self.clock.wake_at(due)
                    continue
                queue.push_used(chain.head, self._serve(chain, fault))
                served += 1
        except DeviceFault as fault:
            self._fail(fault)
            return
        if served:
            transport.used_buffers(queue)

    def _complete_late(self, queue: SplitQueue, chain: Chain) -> None:
        """A delayed request's turn: served now, with an interrupt of its own."""
        transport = self.transport
        assert transport is not None
        if not transport.live:
            return
        try:
            queue.push_used(chain.head, self._serve(chain, None))
        except DeviceFault as fault:
            self._fail(fault)
            return
        transport.used_buffers(queue)

    def _header(self, chain: Chain) -> tuple[int, int, int]:
        """(type, sector, data bytes) of a request; DeviceFault if it cannot be one."""
        memory = self.transport.memory                     # type: ignore[union-attr]
        if chain.readable_bytes < HEADER.size:
            raise DeviceFault(f"request at head {chain.head}: {chain.readable_bytes} "
                              f"device-readable bytes, less than its 16-byte header")
        if chain.writable_bytes < 1:
            raise DeviceFault(f"request at head {chain.head}: no device-writable byte for "
                              "its status")
        kind, _, sector = HEADER.unpack(gather(memory, chain.readable, 0, HEADER.size))
        length = chain.writable_bytes - 1 if kind == T_IN else \
            chain.readable_bytes - HEADER.size if kind == T_OUT else 0
        return kind, sector, length

    def _fault_of(self, chain: Chain) -> MediaFault | None:
        """The first fault an injector wants for this read or write; every hook is asked,
        so each counts every request."""
        if not self.fault_hooks:
            return None
        kind, sector, length = self._header(chain)
        if kind not in (T_IN, T_OUT):
            return None
        faults = [hook(_KINDS[kind], sector, length) for hook in self.fault_hooks]
        return next((fault for fault in faults if fault is not None), None)

    def _serve(self, chain: Chain, fault: MediaFault | None) -> int:
        """Do one request (under `fault`, if any); the bytes written into its
        device-writable buffers."""
        memory = self.transport.memory                     # type: ignore[union-attr]
        kind, sector, length = self._header(chain)
        status_at = chain.writable_bytes - 1
        if kind == T_IN:
            segments = _slice(chain.writable, 0, status_at)
            status = S_IOERR if fault is not None and fault.kind == "ioerr" else \
                self._read(memory, chain, sector, status_at)
            written = status_at + 1
        elif kind == T_OUT:
            segments = _slice(chain.readable, HEADER.size, length)
            status = S_IOERR if fault is not None and fault.kind == "ioerr" else \
                self._write(memory, chain, sector, length,
                            fault.amount * SECTOR if fault is not None and fault.kind == "torn"
                            else length)
            written = 1
        else:
            segments = ()
            status, written = self._other(memory, chain, kind, status_at)
        scatter(memory, chain.writable, status_at, bytes([status]))
        self._record(kind, sector, sum(n for _, n in segments), status, segments)
        return written

    def _in_range(self, sector: int, length: int) -> bool:
        if length % SECTOR or sector * SECTOR + length > self.disk.size:
            return False
        return not any(s in self.fail_sectors for s in range(sector, sector + length // SECTOR))

    def _read(self, memory, chain: Chain, sector: int, length: int) -> int:
        if not self._in_range(sector, length):
            return S_IOERR
        scatter(memory, chain.writable, 0, self.disk.read(sector * SECTOR, length))
        return S_OK

    def _write(self, memory, chain: Chain, sector: int, length: int, lands: int) -> int:
        """Write `length` bytes at `sector`, of which only the first `lands` reach the disk
        (a torn write)."""
        if not self._in_range(sector, length):
            return S_IOERR
        lands = min(lands, length)
        if lands:
            self.disk.write(sector * SECTOR, gather(memory, chain.readable, HEADER.size, lands))
        return S_OK

    def _other(self, memory, chain: Chain, kind: int, room: int) -> tuple[int, int]:
        if kind == T_FLUSH:
            self.disk.flush()
            return S_OK, 1
        if kind == T_GET_ID:
            ident = DEVICE_ID_STRING.ljust(ID_BYTES, b"\0")[:min(room, ID_BYTES)]
            scatter(memory, chain.writable, 0, ident)
            return S_OK, len(ident) + 1
        return S_UNSUPP, 1

    def _record(self, kind: int, sector: int, length: int, status: int, segments) -> None:
        name = _KINDS.get(kind, f"unsupported type {kind}")
        self.requests[name] = self.requests.get(name, 0) + 1
        if self.events.wants(BlockRequest):
            self.events.emit(BlockRequest(self.events.now(), self.name, name, sector, length,
                                          _STATUS[status], segments))
