"""Guest RAM at a snapshot: held by a forked copy of the host process, copied back on restore.

Owns: the host runs of guest RAM (host address, length), which pages are resident
(mincore), the holder process (a fork that only waits: the host kernel keeps its pages as
they were when it forked, copying on write in the live process), copying pages back from
it (process_vm_readv) and dropping the pages touched since (madvise MADV_DONTNEED: they read
as zero again, as they did then), and reading or writing resident pages for snapshot files.
Does not own: what the RAM means, or the CPU and device state (snapshot.py).

Unicorn 2.1.4 has no dirty log and a write hook would cost a Python call per store, so the
page set copied back is the set resident at the snapshot: untouched RAM costs nothing,
whatever the machine's size.
"""
from __future__ import annotations

import ctypes
import mmap
import os
import signal
from typing import Iterable, Iterator

from emu.errors import EngineError
from emu.hw.memory import PhysicalMemory

PAGE = mmap.PAGESIZE
MADV_DONTNEED = 4
PR_SET_PDEATHSIG = 1
IOV_MAX = 1024
_BIT0 = bytes(value & 1 for value in range(256))     # mincore: bit 0 says resident


class _IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("length", ctypes.c_size_t)]


def _libc() -> ctypes.CDLL:
    # The C library this process already links, by its symbols: ctypes.util.find_library
    # runs ldconfig in a subprocess, which would slow every `emu` start.
    return ctypes.CDLL(None, use_errno=True)


_LIBC = _libc()
_LIBC.process_vm_readv.restype = ctypes.c_ssize_t
_LIBC.process_vm_readv.argtypes = [ctypes.c_int, ctypes.POINTER(_IoVec), ctypes.c_ulong,
                                   ctypes.POINTER(_IoVec), ctypes.c_ulong, ctypes.c_ulong]


def host_runs(memory: PhysicalMemory) -> list[tuple[int, int, int]]:
    """(guest physical base, host address, length) of every RAM range."""
    runs = []
    for base, length in memory.ranges():
        view, offset = memory.locate(base, length)
        address = ctypes.addressof(ctypes.c_char.from_buffer(view, offset))
        runs.append((base, address, length))
    return runs


def resident(runs: Iterable[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """The resident parts of `runs`, as (guest base, host address, length) runs of pages."""
    found = []
    for base, address, length in runs:
        pages = -(-length // PAGE)
        vector = bytearray(pages)
        if _LIBC.mincore(ctypes.c_void_p(address), ctypes.c_size_t(length),
                         (ctypes.c_ubyte * pages).from_buffer(vector)) != 0:
            raise EngineError(f"mincore failed on guest RAM: {os.strerror(ctypes.get_errno())}")
        flags = vector.translate(_BIT0)
        start = flags.find(1)
        while start >= 0:               # memchr from run to run: 64 GiB scans in ms
            end = flags.find(0, start)
            end = pages if end < 0 else end
            first, last = start * PAGE, min(end * PAGE, length)
            found.append((base + first, address + first, last - first))
            start = flags.find(1, end)
    return found


def _subtract(runs: list[tuple[int, int, int]],
              keep: list[tuple[int, int, int]]) -> Iterator[tuple[int, int]]:
    """(host address, length) of the parts of `runs` outside `keep` (both sorted)."""
    kept = sorted((address, address + length) for _, address, length in keep)
    for _, address, length in runs:
        start, end = address, address + length
        for low, high in kept:
            if high <= start or low >= end:
                continue
            if low > start:
                yield start, low - start
            start = max(start, high)
        if start < end:
            yield start, end - start


class RamHolder:
    """A forked copy of this process that keeps guest RAM as it was, until `close()`."""

    def __init__(self, memory: PhysicalMemory) -> None:
        self.runs = host_runs(memory)
        self.resident = resident(self.runs)
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:                              # the holder: wait, touch nothing
            _hold(read_end)
        os.close(read_end)
        self.pid = pid
        self._release = write_end

    def resident_bytes(self) -> int:
        return sum(length for _, _, length in self.resident)

    def copy_back(self) -> None:
        """Make the live RAM what it was at the snapshot."""
        if self.pid is None:
            raise EngineError("this snapshot was closed; it cannot be restored")
        now = resident(self.runs)
        for address, length in _subtract(now, self.resident):
            if _LIBC.madvise(ctypes.c_void_p(address), ctypes.c_size_t(length),
                             MADV_DONTNEED) != 0:
                raise EngineError(f"madvise failed: {os.strerror(ctypes.get_errno())}")
        self._read_from_holder([(address, length) for _, address, length in self.resident])

    def _read_from_holder(self, pieces: list[tuple[int, int]]) -> None:
        for first in range(0, len(pieces), IOV_MAX):
            chunk = pieces[first:first + IOV_MAX]
            vectors = (_IoVec * len(chunk))(*[_IoVec(a, n) for a, n in chunk])
            wanted = sum(n for _, n in chunk)
            done = _LIBC.process_vm_readv(self.pid, vectors, len(chunk), vectors, len(chunk), 0)
            if done != wanted:
                raise EngineError("cannot copy guest RAM back from the snapshot's holder "
                                  f"process: {os.strerror(ctypes.get_errno())}")

    def close(self) -> None:
        if self.pid is None:
            return
        os.close(self._release)
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass
        self.pid = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - a finalizer must not raise
            pass


def _hold(read_end: int) -> None:
    """The holder's whole life: ignore the terminal's Ctrl-C (the live process handles it),
    die with the parent, keep no other file open, wait for the release."""
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        for name in os.listdir("/proc/self/fd"):
            fd = int(name)
            if fd > 2 and fd != read_end:
                try:
                    os.close(fd)
                except OSError:
                    pass
        os.read(read_end, 1)
    finally:
        os._exit(0)


def read_pages(memory: PhysicalMemory) -> Iterator[tuple[int, bytes]]:
    """(guest physical base, bytes) of every resident run, for a snapshot file."""
    for base, _, length in resident(host_runs(memory)):
        yield base, memory.read(base, length)


def clear(memory: PhysicalMemory) -> None:
    """Drop every resident page: RAM reads as zero, as before the machine ran."""
    for _, address, length in resident(host_runs(memory)):
        _LIBC.madvise(ctypes.c_void_p(address), ctypes.c_size_t(length), MADV_DONTNEED)
