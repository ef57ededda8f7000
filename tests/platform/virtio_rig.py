"""A virtio-blk device on its MMIO transport over a small RAM and a temporary disk, and a
driver written here register by register (virtio v1.2, 4.2.3 and 2.7), for the conformance
tests. Nothing of the guest kernel is used: the rings are laid out by hand."""
from __future__ import annotations

import struct

from unicorn import UC_ARCH_X86, UC_MODE_64, Uc

from emu.events import BlockRequest, DeviceError, EventBus, Observer
from emu.hw.devices import virtio_mmio as M
from emu.hw.devices.virtio_blk import HEADER, VirtioBlk
from emu.hw.devices.virtio_mmio import VirtioMmio
from emu.hw.devices.virtqueue import DESC_F_NEXT, DESC_F_WRITE
from emu.hw.disk import DiskImage
from emu.hw.memory import PhysicalMemory
from hw_rig import LineProbe, ManualTime

RAM = 1 << 20
DESC, AVAIL, USED = 0x10000, 0x11000, 0x12000      # a queue of up to 256 entries
BUFFERS = 0x20000                                    # request headers, data, status bytes
QSIZE = 16


class Recorder(Observer):
    def __init__(self) -> None:
        self.requests: list[BlockRequest] = []
        self.errors: list[DeviceError] = []

    def on_block_request(self, event: BlockRequest) -> None:
        self.requests.append(event)

    def on_device_error(self, event: DeviceError) -> None:
        self.errors.append(event)


class Rig:
    """The device, its clock, its line, and what it reported."""

    def __init__(self, latency: int = 0, disk_bytes: int = 1 << 20) -> None:
        self.uc = Uc(UC_ARCH_X86, UC_MODE_64)
        self.memory = PhysicalMemory(self.uc)
        self.memory.add(0, RAM)
        self.time = ManualTime()
        self.seen = Recorder()
        self.events = EventBus([self.seen], clock=lambda: self.time.tick)
        self.disk = DiskImage.temporary(disk_bytes)
        self.blk = VirtioBlk(self.disk, self.time.clock, self.events, latency)
        self.probe = LineProbe("virtio")
        self.dev = VirtioMmio("virtio-blk", self.blk, self.memory, self.probe.line, self.events,
                              self.time.clock)
        self.next_desc = 0
        self.avail_idx = 0
        self.next_buffer = BUFFERS

    # --- registers ----------------------------------------------------------------------

    def r(self, offset: int, size: int = 4) -> int:
        value = self.dev.read(offset, size)
        self.catch_up()
        return value

    def w(self, offset: int, value: int, size: int = 4) -> None:
        self.dev.write(offset, size, value)
        self.catch_up()

    def catch_up(self) -> None:
        """What the run loop does after an access: catch the timers up to now."""
        self.blk.advance(self.time.tick)
        self.dev.advance(self.time.tick)

    def negotiate(self, features: int = M.F_VERSION_1) -> int:
        """Reset, ACKNOWLEDGE, DRIVER, features, FEATURES_OK: the status read back."""
        self.w(M.STATUS, 0)
        self.w(M.STATUS, M.ACKNOWLEDGE)
        self.w(M.STATUS, M.ACKNOWLEDGE | M.DRIVER)
        for word in (0, 1):
            self.w(M.DRIVER_FEATURES_SEL, word)
            self.w(M.DRIVER_FEATURES, (features >> (32 * word)) & 0xFFFFFFFF)
        self.w(M.STATUS, M.ACKNOWLEDGE | M.DRIVER | M.FEATURES_OK)
        return self.r(M.STATUS)

    def setup_queue(self, size: int = QSIZE, desc: int = DESC, avail: int = AVAIL,
                    used: int = USED) -> None:
        self.w(M.QUEUE_SEL, 0)
        self.w(M.QUEUE_NUM, size)
        for low, address in ((M.QUEUE_DESC_LOW, desc), (M.QUEUE_DRIVER_LOW, avail),
                             (M.QUEUE_DEVICE_LOW, used)):
            self.w(low, address & 0xFFFFFFFF)
            self.w(low + 4, address >> 32)
        self.w(M.QUEUE_READY, 1)

    def start(self, size: int = QSIZE) -> "Rig":
        assert self.negotiate() & M.FEATURES_OK
        self.setup_queue(size)
        self.w(M.STATUS, self.r(M.STATUS) | M.DRIVER_OK)
        return self

    # --- rings --------------------------------------------------------------------------

    def buffer(self, data: bytes | int) -> int:
        """A buffer in RAM holding `data` (or that many zero bytes); its address."""
        data = bytes(data) if isinstance(data, int) else data
        address = self.next_buffer
        self.memory.write(address, data)
        self.next_buffer += (len(data) + 15) & ~15 or 16
        return address

    def chain(self, *parts: tuple[int, int, bool], table: int = DESC) -> int:
        """Descriptors for (address, length, device-writable) parts, linked; the head."""
        head = self.next_desc
        for n, (address, length, writable) in enumerate(parts):
            index = self.next_desc
            last = n == len(parts) - 1
            flags = (0 if last else DESC_F_NEXT) | (DESC_F_WRITE if writable else 0)
            self.memory.write(table + 16 * index, struct.pack("<QIHH", address, length, flags,
                                                              0 if last else index + 1))
            self.next_desc += 1
        return head

    def offer(self, head: int, notify: bool = True) -> None:
        slot = self.avail_idx % QSIZE
        self.memory.write(AVAIL + 4 + 2 * slot, struct.pack("<H", head))
        self.avail_idx = (self.avail_idx + 1) & 0xFFFF
        self.memory.write(AVAIL + 2, struct.pack("<H", self.avail_idx))
        if notify:
            self.w(M.QUEUE_NOTIFY, 0)

    def request(self, kind: int, sector: int, data: bytes | int = b"",
                notify: bool = True) -> tuple[int, int, int]:
        """A request in three descriptors (header, data, status); (head, data, status)
        addresses. `data`: bytes to write, or the length of a read."""
        header = self.buffer(HEADER.pack(kind, 0, sector))
        writable = isinstance(data, int)
        payload = self.buffer(data)
        length = data if writable else len(data)
        status = self.buffer(b"\xEE")
        parts = [(header, HEADER.size, False)]
        if length:
            parts.append((payload, length, writable))
        parts.append((status, 1, True))
        head = self.chain(*parts)
        self.offer(head, notify)
        return head, payload, status

    def used(self) -> tuple[int, list[tuple[int, int]]]:
        """(used idx, [(id, len)] of the entries so far)."""
        idx = struct.unpack("<H", self.memory.read(USED + 2, 2))[0]
        entries = [struct.unpack("<II", self.memory.read(USED + 4 + 8 * i, 8))
                   for i in range(min(idx, QSIZE))]
        return idx, entries

    def status_byte(self, address: int) -> int:
        return self.memory.read(address, 1)[0]
