"""Finding Limine requests (emu/boot/requests.py) in synthetic images: the linear scan's
rules (a start marker forgets, the first end marker stops, one base revision tag), which a
loader that searched for markers separately would get wrong."""
from __future__ import annotations

import struct
from pathlib import Path
from types import SimpleNamespace

import pytest

from emu.boot.limine import BASE_REVISION_TAG, COMMON_ID, END_MARKER, START_MARKER
from emu.boot.requests import find_requests
from emu.errors import LoaderError

HHDM_KEY = (0x48DCF1CB8AD2B852, 0x63984E959A98244B)
MEMMAP_KEY = (0x67CF3D9D378A806F, 0xE304ACDFC50C3C62)
BASE = 0xFFFFFFFF80000000


def image(*items) -> tuple[SimpleNamespace, bytearray]:
    """An image of 8-byte words: ("req", key), ("tag", n), "start", "end", or a raw int."""
    words: list[int] = [0x90909090]
    for item in items:
        if item == "start":
            words += START_MARKER
        elif item == "end":
            words += END_MARKER
        elif isinstance(item, tuple) and item[0] == "tag":
            words += [*BASE_REVISION_TAG, item[1]]
        elif isinstance(item, tuple):
            words += [*COMMON_ID, *item[1], 0, 0]
        else:
            words.append(item)
    data = bytearray(struct.pack(f"<{len(words)}Q", *words))
    segment = SimpleNamespace(vaddr=BASE, filesz=len(data), memsz=len(data))
    elf = SimpleNamespace(segments=[segment], link_base=BASE, virt_base=BASE,
                          reqs_section=None)
    return elf, data


def found(*items):
    elf, data = image(*items)
    result = find_requests(Path("k.elf"), elf, data)
    return [r.name for r in result.requests], result.requested_revision


def test_start_marker_forgets_requests_and_tag_before_it():
    assert found(("req", HHDM_KEY), ("tag", 3), "start", ("req", MEMMAP_KEY), "end") == \
        (["memmap"], 0)


def test_end_marker_before_any_start_stops_the_scan():
    """Limine stops at the first end marker wherever it is."""
    assert found(("req", HHDM_KEY), "end", "start", ("req", MEMMAP_KEY), "end") == \
        (["hhdm"], 0)


def test_without_markers_every_request_counts():
    assert found(("tag", 2), ("req", HHDM_KEY), 7, ("req", MEMMAP_KEY)) == \
        (["hhdm", "memmap"], 2)


def test_two_base_revision_tags_are_fatal():
    with pytest.raises(LoaderError, match="two base revision tags"):
        found(("tag", 3), ("tag", 2), ("req", HHDM_KEY))


def test_a_tag_of_revision_0_may_be_followed_by_another():
    assert found(("tag", 0), ("tag", 3), ("req", HHDM_KEY)) == (["hhdm"], 3)


def test_unaligned_request_is_not_seen():
    elf, data = image(("req", HHDM_KEY))
    shifted = bytearray(4) + data
    elf.segments[0].filesz = len(shifted)
    assert find_requests(Path("k.elf"), elf, shifted).requests == ()


def test_request_in_bss_is_not_seen():
    elf, data = image(("req", MEMMAP_KEY), 0, ("req", HHDM_KEY))
    elf.segments[0].filesz = 8 * 8          # the hhdm request lies past the file data
    assert [r.name for r in find_requests(Path("k.elf"), elf, data).requests] == ["memmap"]
