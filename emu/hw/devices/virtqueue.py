"""The split virtqueue of virtio 1.x (OASIS virtio v1.2, section 2.7 "Split Virtqueues"),
from the device's side, independent of the transport that configures it.

Owns: one queue's configuration (size, the three areas' guest-physical addresses, ready),
validating the areas and every descriptor against guest RAM, walking descriptor chains,
gathering what the driver wrote and scattering what the device returns, and the used ring.
Does not own: what requests mean (the device: virtio_blk.py), when the queue is notified or
how an interrupt is raised (the transport: virtio_mmio.py).

Layout in guest memory (little-endian), for a queue of `size` entries (a power of 2):
  descriptor table  16-byte aligned, size * 16 bytes: addr u64, len u32, flags u16, next u16
  available ring    2-byte aligned, 6 + 2 * size bytes: flags u16, idx u16, ring[size] u16,
                    used_event u16
  used ring         4-byte aligned, 6 + 8 * size bytes: flags u16, idx u16,
                    ring[size] {id u32, len u32}, avail_event u16
Descriptor flags: NEXT 1 (the chain goes on at `next`), WRITE 2 (device-writable),
INDIRECT 4 (a table of descriptors: not offered, so a breach of the protocol here).

Everything the driver hands over is checked before it is used; a breach raises DeviceFault
(emu/errors.py), which the transport turns into the device's failure status:
- an area or a descriptor's buffer that is not wholly guest RAM, or that wraps;
- a misaligned area, a queue size that is not a power of 2 or above the maximum;
- a descriptor index outside the table, a chain longer than the table (a loop), INDIRECT,
  a device-readable descriptor after a device-writable one (2.7.4.2);
- an available index that ran ahead of the device by more than the queue size.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from emu.errors import DeviceFault, UnbackedAccess
from emu.hw.memory import PhysicalMemory

DESC_F_NEXT, DESC_F_WRITE, DESC_F_INDIRECT = 1, 2, 4
AVAIL_F_NO_INTERRUPT = 1
DESCRIPTOR = struct.Struct("<QIHH")
_U16 = struct.Struct("<H")
_USED_ELEM = struct.Struct("<II")
_RING_HEADER = 4                         # flags u16, idx u16
_ALIGN = {"descriptor table": 16, "available ring": 2, "used ring": 4}


@dataclass(frozen=True, slots=True)
class Chain:
    """One request: the head's index, and the buffers in chain order, device-readable ones
    first, as (guest-physical address, length)."""
    head: int
    readable: tuple[tuple[int, int], ...]
    writable: tuple[tuple[int, int], ...]

    @property
    def readable_bytes(self) -> int:
        return sum(length for _, length in self.readable)

    @property
    def writable_bytes(self) -> int:
        return sum(length for _, length in self.writable)


def gather(memory: PhysicalMemory, segments, start: int, length: int) -> bytes:
    """`length` bytes from offset `start` of the concatenated `segments`."""
    out = bytearray()
    for address, size in segments:
        if start >= size:
            start -= size
            continue
        take = min(size - start, length - len(out))
        out += memory.read(address + start, take)
        start = 0
        if len(out) == length:
            break
    return bytes(out)


def scatter(memory: PhysicalMemory, segments, start: int, data: bytes) -> None:
    """Write `data` at offset `start` of the concatenated `segments`."""
    done = 0
    for address, size in segments:
        if start >= size:
            start -= size
            continue
        take = min(size - start, len(data) - done)
        memory.write(address + start, data[done:done + take])
        done += take
        start = 0
        if done == len(data):
            break


class SplitQueue:
    """One split virtqueue as its device sees it. The transport sets `size`, the three
    addresses and `ready`; the device pops chains and pushes used entries."""

    def __init__(self, memory: PhysicalMemory, index: int, max_size: int) -> None:
        if max_size <= 0 or max_size & (max_size - 1) or max_size > 32768:
            raise ValueError(f"queue size {max_size} is not a power of 2 up to 32768")
        self.memory = memory
        self.index = index
        self.max_size = max_size
        self.reset()

    def reset(self) -> None:
        self.size = self.max_size
        self.desc = self.driver = self.device = 0
        self.ready = False
        self.last_avail = 0              # the next available-ring entry the device takes
        self.used_idx = 0

    # --- configuration ------------------------------------------------------------------

    def areas(self) -> tuple[tuple[str, int, int], ...]:
        size = self.size
        return (("descriptor table", self.desc, DESCRIPTOR.size * size),
                ("available ring", self.driver, _RING_HEADER + 2 * size + 2),
                ("used ring", self.device, _RING_HEADER + _USED_ELEM.size * size + 2))

    def validate(self) -> None:
        """DeviceFault unless the queue can be used as configured (when the driver sets it
        ready)."""
        if self.size <= 0 or self.size & (self.size - 1) or self.size > self.max_size:
            raise DeviceFault(f"queue {self.index}: size {self.size} is not a power of 2 "
                              f"up to {self.max_size}")
        for name, address, length in self.areas():
            if address % _ALIGN[name]:
                raise DeviceFault(f"queue {self.index}: {name} at {address:#x} is not "
                                  f"{_ALIGN[name]}-byte aligned")
            self._check_ram(address, length, f"queue {self.index}: {name}")

    def _check_ram(self, address: int, length: int, what: str) -> None:
        if address + length > 1 << 64 or not self.memory.is_ram(address, max(length, 1)):
            raise DeviceFault(f"{what} at {address:#x} (+{length:#x}) is not in guest RAM")

    # --- the available ring -------------------------------------------------------------

    def _u16(self, address: int) -> int:
        try:
            return _U16.unpack(self.memory.read(address, 2))[0]
        except UnbackedAccess:
            raise DeviceFault(f"queue {self.index}: ring at {address:#x} is not in guest "
                              "RAM") from None

    def avail_idx(self) -> int:
        return self._u16(self.driver + 2)

    def pending(self, upto: int | None = None) -> int:
        """Chains the driver made available and the device has not taken (up to the
        available index `upto`, default the current one)."""
        idx = self.avail_idx() if upto is None else upto
        count = (idx - self.last_avail) & 0xFFFF
        if count > self.size:
            raise DeviceFault(f"queue {self.index}: available index {idx} is {count} "
                              f"entries ahead of the device's {self.last_avail}, more than "
                              f"the queue's {self.size}")
        return count

    def interrupt_suppressed(self) -> bool:
        """The driver set VIRTQ_AVAIL_F_NO_INTERRUPT (2.7.7)."""
        return bool(self._u16(self.driver) & AVAIL_F_NO_INTERRUPT)

    def pop(self) -> Chain:
        """The next available chain (the caller checked `pending()`), validated."""
        slot = self.last_avail % self.size
        head = self._u16(self.driver + _RING_HEADER + 2 * slot)
        self.last_avail = (self.last_avail + 1) & 0xFFFF
        return self.walk(head)

    def walk(self, head: int) -> Chain:
        readable: list[tuple[int, int]] = []
        writable: list[tuple[int, int]] = []
        index = head
        for _ in range(self.size):
            if index >= self.size:
                raise DeviceFault(f"queue {self.index}: descriptor index {index} in the chain "
                                  f"of head {head} is outside the table of {self.size}")
            raw = self.memory.read(self.desc + DESCRIPTOR.size * index, DESCRIPTOR.size)
            address, length, flags, following = DESCRIPTOR.unpack(raw)
            where = f"queue {self.index}: descriptor {index} (chain of head {head})"
            if flags & DESC_F_INDIRECT:
                raise DeviceFault(f"{where} is INDIRECT, a feature the device does not offer")
            if length:
                self._check_ram(address, length, f"{where}: its buffer")
            if flags & DESC_F_WRITE:
                writable.append((address, length))
            elif writable:
                raise DeviceFault(f"{where} is device-readable after a device-writable one")
            else:
                readable.append((address, length))
            if not flags & DESC_F_NEXT:
                return Chain(head, tuple(readable), tuple(writable))
            index = following
        raise DeviceFault(f"queue {self.index}: the chain of head {head} is longer than the "
                          f"table of {self.size} descriptors (a loop)")

    # --- the used ring ------------------------------------------------------------------

    def push_used(self, head: int, written: int) -> None:
        """Return chain `head` to the driver with `written` bytes written into it."""
        slot = self.used_idx % self.size
        try:
            self.memory.write(self.device + _RING_HEADER + _USED_ELEM.size * slot,
                              _USED_ELEM.pack(head, written))
            self.used_idx = (self.used_idx + 1) & 0xFFFF
            self.memory.write(self.device + 2, _U16.pack(self.used_idx))
        except UnbackedAccess:
            raise DeviceFault(f"queue {self.index}: used ring at {self.device:#x} is not in "
                              "guest RAM") from None
