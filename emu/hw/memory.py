"""Guest physical RAM: host buffers mapped into Unicorn, readable from Python without a call.

Owns: the host memory behind RAM ranges, and fast physical reads and writes for the monitor.
Does not own: what the ranges mean (memmap.py) or MMIO (bus.py).

Each range is an anonymous private mmap with MAP_NORESERVE: pages the guest never touches
cost no host memory, so a 64 GiB map boots on a small machine.
"""
from __future__ import annotations

import bisect
import mmap
import struct
import sys

from unicorn import UC_PROT_ALL

from emu.errors import ConfigError, UnbackedAccess

_U64 = struct.Struct("<Q")
# Not exported by every Python's mmap module; the Linux value is stable ABI.
_MAP_NORESERVE = getattr(mmap, "MAP_NORESERVE", 0x4000 if sys.platform.startswith("linux") else 0)


class PhysicalMemory:
    def __init__(self, uc) -> None:
        self.uc = uc
        self._bases: list[int] = []
        self._ranges: list[tuple[int, int, mmap.mmap, memoryview]] = []

    def add(self, base: int, length: int) -> None:
        """Back [base, base+length) with RAM. Page aligned; must not overlap existing RAM."""
        flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | _MAP_NORESERVE
        try:
            buffer = mmap.mmap(-1, length, flags=flags)
        except OSError as exc:
            raise ConfigError(f"cannot reserve {length:#x} bytes of host memory for guest RAM "
                              f"at {base:#x}: {exc.strerror}; use a smaller --memory") from exc
        view = memoryview(buffer)
        address = _buffer_address(buffer)
        self.uc.mem_map_ptr(base, length, UC_PROT_ALL, address)
        index = bisect.bisect(self._bases, base)
        self._bases.insert(index, base)
        self._ranges.insert(index, (base, length, buffer, view))

    def punch(self, paddr: int, length: int) -> None:
        """Take whole pages [paddr, paddr+length) of one RAM range away: accesses there
        reach whatever the bus puts there (a guard page: nothing)."""
        index = bisect.bisect(self._bases, paddr) - 1
        base, size, buffer, view = self._ranges[max(index, 0)]
        offset = paddr - base
        if index < 0 or offset + length > size:
            raise ValueError(f"{paddr:#x}+{length:#x} is not inside one RAM range")
        self.uc.mem_unmap(paddr, length)
        pieces = [(base, offset, buffer, view[:offset]),
                  (paddr + length, size - offset - length, buffer, view[offset + length:])]
        pieces = [piece for piece in pieces if piece[1]]
        self._ranges[index:index + 1] = pieces
        self._bases[index:index + 1] = [piece[0] for piece in pieces]

    def ranges(self) -> list[tuple[int, int]]:
        return [(base, length) for base, length, _, _ in self._ranges]

    def locate(self, paddr: int, size: int = 1) -> tuple[memoryview, int]:
        """(view, offset) such that view[offset:offset+size] is the RAM at paddr."""
        index = bisect.bisect(self._bases, paddr) - 1
        if index >= 0:
            base, length, _, view = self._ranges[index]
            offset = paddr - base
            if offset + size <= length:
                return view, offset
        raise UnbackedAccess(paddr, size)

    def is_ram(self, paddr: int, size: int = 1) -> bool:
        try:
            self.locate(paddr, size)
            return True
        except UnbackedAccess:
            return False

    def read(self, paddr: int, size: int) -> bytes:
        view, offset = self.locate(paddr, size)
        return bytes(view[offset:offset + size])

    def write(self, paddr: int, data: bytes) -> None:
        view, offset = self.locate(paddr, len(data))
        view[offset:offset + len(data)] = data

    def read_u64(self, paddr: int) -> int:
        view, offset = self.locate(paddr, 8)
        return _U64.unpack_from(view, offset)[0]

    def write_u64(self, paddr: int, value: int) -> None:
        view, offset = self.locate(paddr, 8)
        _U64.pack_into(view, offset, value)

    def resident_bytes(self) -> int:
        """Host memory actually touched (for the 'untouched RAM costs nothing' promise)."""
        buffers = {id(buffer): buffer for _, _, buffer, _ in self._ranges}   # punch shares
        return sum(_resident(buffer, len(buffer)) for buffer in buffers.values())


def _buffer_address(buffer: mmap.mmap) -> int:
    import ctypes
    return ctypes.addressof(ctypes.c_char.from_buffer(buffer))


def _resident(buffer: mmap.mmap, length: int) -> int:
    """Bytes of the mapping that are resident (mincore), or the length if unknown."""
    import ctypes
    import ctypes.util
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    except OSError:
        return length
    pages = -(-length // mmap.PAGESIZE)
    vec = (ctypes.c_ubyte * pages)()
    address = _buffer_address(buffer)
    if libc.mincore(ctypes.c_void_p(address), ctypes.c_size_t(length), vec) != 0:
        return length
    return sum(1 for byte in vec if byte & 1) * mmap.PAGESIZE
