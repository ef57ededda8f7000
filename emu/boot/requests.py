"""Finding a kernel's Limine requests in its loaded image.

Owns: scanning the image (from its base to the end of the last segment's file data) in
8-byte steps for the base revision tag and the requests, honouring the start and end
markers, base revision 0's deprecated `.limine_reqs` array, and refusing what the protocol
forbids (duplicate requests, more than MAX_REQUESTS).
Does not own: answering them (responses.py, loader.py).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from emu.boot.elf import KernelElf
from emu.boot.limine import (BASE_REVISION_TAG, COMMON_ID, END_MARKER, MAX_REQUESTS,
                             START_MARKER, request_name)
from emu.errors import LoaderError

_U64 = struct.Struct("<Q")


@dataclass(frozen=True, slots=True)
class Request:
    offset: int         # in the image
    key: tuple[int, int]

    @property
    def name(self) -> str:
        return request_name(self.key)


@dataclass(frozen=True, slots=True)
class FoundRequests:
    requests: tuple[Request, ...]
    tag_offset: int | None
    requested_revision: int     # 0 without a tag


def _aligned_hits(blob: bytes, pattern: tuple[int, ...], end: int) -> list[int]:
    needle = struct.pack(f"<{len(pattern)}Q", *pattern)
    hits, at = [], blob.find(needle, 0, end)
    while at >= 0:
        if at % 8 == 0 and at + len(needle) <= end:
            hits.append(at)
        at = blob.find(needle, at + 1, end)
    return hits


def find_requests(path: Path, elf: KernelElf, image: bytearray) -> FoundRequests:
    """Scan the image (from its base to the end of the last segment's file data) in 8-byte
    steps for the base revision tag and requests, honouring start/end markers."""
    last = elf.segments[-1]
    end = min(last.vaddr + last.filesz - elf.link_base, len(image))
    blob = bytes(image[:end])
    starts = _aligned_hits(blob, START_MARKER, end)
    lo = starts[-1] + 32 if starts else 0
    ends = [at for at in _aligned_hits(blob, END_MARKER, end) if at >= lo]
    hi = ends[0] if ends else end

    tag_offset, requested = None, 0
    for at in _aligned_hits(blob, BASE_REVISION_TAG, end):
        if lo <= at and at + 24 <= hi:
            tag_offset = at
            requested = _U64.unpack_from(blob, at + 16)[0]
            break

    if requested == 0 and elf.reqs_section is not None:
        offsets = _listed_requests(path, elf, image)
    else:
        offsets = [at for at in _aligned_hits(blob, COMMON_ID, end)
                   if lo <= at and at + 32 <= hi]
    requests: list[Request] = []
    seen: dict[tuple[int, int], int] = {}
    for at in offsets:
        key = tuple(struct.unpack_from("<2Q", image, at + 16))
        if key in seen:
            name = Request(at, key).name
            raise LoaderError(f"{path} has two {name} requests (at "
                              f"{elf.virt_base + seen[key]:#x} and {elf.virt_base + at:#x}); "
                              f"the protocol allows one of each, remove the duplicate")
        seen[key] = at
        requests.append(Request(at, key))
    if len(requests) > MAX_REQUESTS:
        raise LoaderError(f"{path} has {len(requests)} Limine requests; the protocol allows "
                          f"at most {MAX_REQUESTS}")
    return FoundRequests(tuple(requests), tag_offset, requested)


def _listed_requests(path: Path, elf: KernelElf, image: bytearray) -> list[int]:
    """Base revision 0's deprecated .limine_reqs: a NULL-terminated array of pointers."""
    address, size = elf.reqs_section
    offsets, at = [], address - elf.link_base
    for _ in range(size // 8):
        if at + 8 > len(image):
            break
        pointer = _U64.unpack_from(image, at)[0]
        if pointer == 0:
            break
        target = pointer - elf.virt_base
        if not (0 <= target and target + 32 <= len(image) and target % 8 == 0) or \
                struct.unpack_from("<2Q", image, target) != COMMON_ID:
            raise LoaderError(f"{path}: .limine_reqs points at {pointer:#x}, which is not a "
                              f"request; fix the section or drop it and use markers")
        offsets.append(target)
        at += 8
    return offsets


def effective_revision(requested: int, maximum: int) -> int:
    return requested if requested <= maximum else maximum
