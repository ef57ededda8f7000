"""Finding a kernel's Limine requests in its loaded image.

Owns: scanning the image (from its base to the end of the last segment's file data) in
8-byte steps for the base revision tag and the requests exactly as Limine does (a start
marker resets what was found, the first end marker stops the scan), base revision 0's
deprecated `.limine_reqs` array, and refusing what Limine refuses (duplicate requests, two
base revision tags, more than MAX_REQUESTS).
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
        if at % 8 == 0:
            hits.append(at)
        at = blob.find(needle, at + 1, end)
    return hits


def _scan(blob: bytes, end: int) -> list[tuple[int, str]]:
    """What Limine's 8-byte scan meets, in image order, up to the first end marker:
    ("start", offset), ("tag", offset) and ("request", offset). Searching for each pattern
    with bytes.find and merging the hits gives the same sequence as stepping through the
    image, at C speed."""
    kinds = [("start", START_MARKER), ("end", END_MARKER), ("tag", BASE_REVISION_TAG),
             ("request", COMMON_ID)]
    # A pattern is tested at offsets below `end` (Limine reads past it; we need the words).
    hits = sorted((at, kind) for kind, pattern in kinds
                  for at in _aligned_hits(blob, pattern, len(blob)) if at < end)
    out = []
    for at, kind in hits:
        if kind == "end":
            break
        out.append((at, kind))
    return out


def find_requests(path: Path, elf: KernelElf, image: bytearray) -> FoundRequests:
    """Scan the image as Limine does: from its base to the end of the last segment's file
    data, in 8-byte steps. A start marker forgets what came before it (requests and the
    base revision tag), the first end marker stops the scan."""
    last = elf.segments[-1]
    end = min(last.vaddr + last.filesz - elf.link_base, len(image)) & ~7
    blob = bytes(image)
    events = _scan(blob, end)

    tag_offset, requested = None, 0
    for at, kind in events:
        if kind == "start":
            tag_offset, requested = None, 0
        elif kind == "tag" and at + 24 <= len(blob):
            if requested != 0:
                raise LoaderError(f"{path} has two base revision tags (at "
                                  f"{elf.virt_base + tag_offset:#x} and "
                                  f"{elf.virt_base + at:#x}); keep one")
            tag_offset, requested = at, _U64.unpack_from(blob, at + 16)[0]

    if requested == 0 and elf.reqs_section is not None:
        offsets = _listed_requests(path, elf, image)
    else:
        offsets = []
        for at, kind in events:
            if kind == "start":
                offsets = []
            elif kind == "request" and at + 32 <= len(blob):
                offsets.append(at)
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
