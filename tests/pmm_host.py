"""The guest's physical memory manager on the host: guest/mm/pmm.c and both backends compiled
unchanged into a shared library with tests/host/pmm_host.c, loaded with ctypes.

    with PmmHost(regions, kind="buddy") as pmm:
        pa = pmm.alloc()
        pmm.free(pa)
        pmm.free(pa)                 # raises GuestPanic("pmm_free: double free of 0x...")

The shim answers the kernel's boot_memmap()/boot_hhdm() with the regions given and an HHDM
whose offset is the address of a host buffer as large as the map (plus a guard zone), so
physical address pa is buffer[pa] (`read`/`write`). A guest panic() longjmps back to the
shim's guarded entry and becomes a GuestPanic here.

Every PmmHost loads its own copy of the library (dlopen of a fresh file, dlclose on
close()), so each starts from the PMM's pristine static state: pmm_init may be called once
per copy, as in the kernel. The build is cached in emu's build cache (host/) by a hash of the sources
and flags; by default it is the MM_DEBUG=1 build, which poisons every freed frame.
"""
from __future__ import annotations

import _ctypes
import ctypes
import hashlib
import mmap
import os
import shutil
import struct
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from emu.build import cache
from emu.build.zig import zig_cc, zig_version

ROOT = Path(__file__).resolve().parent.parent
GUEST = ROOT / "guest"
SHIM = Path(__file__).resolve().parent / "host" / "pmm_host.c"
GUEST_SOURCES = ("mm/pmm.c", "mm/pmm_bitmap.c", "mm/pmm_buddy.c")

PAGE = 4096
POISON = 0xDEADBEEFDEADBEEF
DESCRIPTOR = struct.Struct("<IIIIQQQQQQQQQQ")       # guest/mm/pmm.h, 96 bytes
DESCRIPTOR_FIELDS = ("magic", "version", "kind", "max_order", "map", "map_bytes", "links",
                     "base_pfn", "frames", "total_frames", "free_frames", "hhdm_offset",
                     "meta_base", "meta_frames")
DESCRIPTOR_MAGIC = 0x444D4D50
KINDS = {"bitmap": 1, "buddy": 2}
MAX_ORDER = 10                                        # PMM_BUDDY_MAX_ORDER
GUARD_BYTES = 1 << 20                                 # host memory above the map, see PmmHost

# Limine memory map types
USABLE, RESERVED, ACPI_RECLAIMABLE, ACPI_NVS, BAD_MEMORY = 0, 1, 2, 3, 4
BOOTLOADER_RECLAIMABLE, EXECUTABLE_AND_MODULES, FRAMEBUFFER = 5, 6, 7

# tests/host/pmm_host.c: enum pmm_host_op
(OP_INIT, OP_ALLOC, OP_FREE, OP_ALLOC_CONTIG, OP_FREE_CONTIG, OP_RECLAIM, OP_FREE_COUNT,
 OP_USED_COUNT, OP_TOTAL_COUNT, OP_METADATA_FRAMES, OP_RECLAIMED_FRAMES) = range(1, 12)

_CFLAGS = ("-std=gnu17", "-nostdinc", "-fPIC", "-O2", "-g", "-Wall", "-Wextra", "-Werror",
           "-fno-strict-aliasing", "-fno-stack-protector", "-fno-sanitize=all")


class GuestPanic(Exception):
    """The guest code called panic(); the message is what it would have printed."""


@dataclass(frozen=True, slots=True)
class Region:
    base: int
    length: int
    type: int


class _Entry(ctypes.Structure):
    _fields_ = [("base", ctypes.c_uint64), ("length", ctypes.c_uint64),
                ("type", ctypes.c_uint64)]


class _FrameRange(ctypes.Structure):
    _fields_ = [("start", ctypes.c_uint64), ("end", ctypes.c_uint64)]


def library_path(defines: Mapping[str, str] = MappingProxyType({"MM_DEBUG": "1"}),
                 source_dir: Path = GUEST) -> Path:
    """Build (once per input, into emu's build cache) and return the host library: the
    PMM sources of `source_dir` (a copy of guest/ with a planted bug, say) with `defines`
    as -D flags."""
    guest_sources = [source_dir / name for name in GUEST_SOURCES]
    sources = [*guest_sources, SHIM]
    flags = [*_CFLAGS, *(f"-D{k}={v}" for k, v in sorted(defines.items()))]
    h = hashlib.sha256()
    for item in (zig_version(), sys.platform, *flags):
        h.update(item.encode() + b"\0")
    for path in [*guest_sources, *sorted(source_dir.rglob("*.h"))]:
        h.update(path.relative_to(source_dir).as_posix().encode() + b"\0" + path.read_bytes())
    h.update(SHIM.name.encode() + b"\0" + SHIM.read_bytes())
    directory = cache.cache_root() / "host"
    target = directory / f"pmm-host-{h.hexdigest()[:16]}.so"
    if cache.is_fresh(target):
        return target
    built = cache.temporary(directory, ".so")
    try:
        zig_cc(["-shared", *flags, f"-I{source_dir}", "-o", str(built), *map(str, sources)],
               cache_dir=directory / "zig", what="the host PMM")
        cache.publish(built, target)
    finally:
        built.unlink(missing_ok=True)
    return target


class PmmHost:
    """One pristine PMM over `regions` (Region or (base, length, type) tuples), initialised
    with backend `kind` unless init=False; `library` defaults to library_path() (the
    MM_DEBUG build of guest/). `memmap=None` or `hhdm=False` leaves the
    corresponding loader request unanswered (pmm_init must panic)."""

    def __init__(self, regions, kind: str = "bitmap", *, init: bool = True,
                 library: Path | None = None, memmap: bool = True, hhdm: bool = True) -> None:
        self.regions = [Region(*r) if not isinstance(r, Region) else r for r in regions]
        self.kind = kind
        top = max((r.base + r.length for r in self.regions), default=PAGE)
        self.memory_bytes = (top + PAGE - 1) // PAGE * PAGE
        # Lazily zeroed host pages, with a guard zone above the map so that a wild write
        # just past the end (a broken PMM poisoning frames it does not own) lands in memory
        # a test can inspect instead of crashing the test process.
        self._buffer = mmap.mmap(-1, self.memory_bytes + GUARD_BYTES)
        self._anchor = ctypes.c_char.from_buffer(self._buffer)
        self.hhdm_offset = ctypes.addressof(self._anchor)
        self._tmp = tempfile.TemporaryDirectory(prefix="pmm-host-")
        copy = Path(self._tmp.name) / "pmm-host.so"
        shutil.copyfile(library or library_path(), copy)       # a new file: a new static state
        self._lib = ctypes.CDLL(str(copy), mode=os.RTLD_LOCAL)
        self._lib.pmm_host_call.argtypes = [ctypes.c_int, ctypes.c_uint64, ctypes.c_uint64,
                                            ctypes.POINTER(ctypes.c_uint64)]
        self._lib.pmm_host_call.restype = ctypes.c_int
        self._lib.pmm_host_panic_message.restype = ctypes.c_char_p
        self._lib.pmm_host_setup.argtypes = [ctypes.c_void_p, ctypes.c_uint64,
                                             ctypes.c_uint64, ctypes.c_int]
        self._lib.pmm_host_setup.restype = ctypes.c_int
        self._descriptor = (ctypes.c_char * DESCRIPTOR.size).in_dll(self._lib, "pmm_descriptor")
        self._result = ctypes.c_uint64()
        self._keep = None
        table = (_Entry * len(self.regions))(*((r.base, r.length, r.type)
                                               for r in self.regions))
        if self._lib.pmm_host_setup(table if memmap else None, len(self.regions),
                                    self.hhdm_offset, int(hhdm)) != 0:
            raise ValueError(f"{len(self.regions)} memory map entries: too many for the shim")
        if init:
            self.init()

    # ---- lifetime ------------------------------------------------------------------------

    def close(self) -> None:
        if self._lib is None:
            return
        handle, self._lib, self._descriptor = self._lib._handle, None, None
        _ctypes.dlclose(handle)
        self._tmp.cleanup()
        del self._anchor
        self._buffer.close()

    def __enter__(self) -> PmmHost:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- the API of guest/mm/pmm.h -------------------------------------------------------

    def _call(self, op: int, a: int = 0, b: int = 0) -> int:
        if self._lib.pmm_host_call(op, a, b, ctypes.byref(self._result)) != 0:
            raise GuestPanic(self._lib.pmm_host_panic_message().decode(errors="replace"))
        return self._result.value

    def init(self) -> None:
        self._call(OP_INIT, KINDS[self.kind])

    def alloc(self) -> int:
        return self._call(OP_ALLOC)

    def free(self, pa: int) -> None:
        self._call(OP_FREE, pa)

    def alloc_contiguous(self, frames: int, align_frames: int) -> int:
        return self._call(OP_ALLOC_CONTIG, frames, align_frames)

    def free_contiguous(self, pa: int, frames: int) -> None:
        self._call(OP_FREE_CONTIG, pa, frames)

    def reclaim_bootloader(self, keep: list[tuple[int, int]]) -> int:
        ranges = (_FrameRange * max(1, len(keep)))(*keep)
        return self._call(OP_RECLAIM, ctypes.addressof(ranges), len(keep))

    def free_count(self) -> int:
        return self._call(OP_FREE_COUNT)

    def used_count(self) -> int:
        return self._call(OP_USED_COUNT)

    def total_count(self) -> int:
        return self._call(OP_TOTAL_COUNT)

    def metadata_frames(self) -> int:
        return self._call(OP_METADATA_FRAMES)

    def reclaimed_frames(self) -> int:
        return self._call(OP_RECLAIMED_FRAMES)

    # ---- what an outside checker sees ----------------------------------------------------

    def descriptor(self) -> dict[str, int]:
        return dict(zip(DESCRIPTOR_FIELDS, DESCRIPTOR.unpack(bytes(self._descriptor))))

    def read(self, pa: int, size: int) -> bytes:
        """`size` bytes of (fake) physical memory at pa; the guard zone above the map
        (GUARD_BYTES) is readable too."""
        if pa < 0 or pa + size > self.memory_bytes + GUARD_BYTES:
            raise ValueError(f"physical 0x{pa:x}+{size} is outside the test memory")
        return self._buffer[pa:pa + size]

    def write(self, pa: int, data: bytes) -> None:
        if pa < 0 or pa + len(data) > self.memory_bytes:
            raise ValueError(f"physical 0x{pa:x}+{len(data)} is outside the test memory")
        self._buffer[pa:pa + len(data)] = data
