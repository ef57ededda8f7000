"""Memory map sizes, presets, files and rules."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emu.errors import ConfigError
from emu.hw.memmap import (GIB, KIB, MIB, PAGE_SIZE, PRESET_NAMES, TIB, MemoryMap, MemoryType,
                        Region, format_size, load_memmap_file, parse_memory_size, parse_size,
                        preset, resolve_memmap, validate)

U = MemoryType.USABLE
R = MemoryType.RESERVED


def usable_islands(memmap: MemoryMap) -> list[Region]:
    return [region for region in memmap.regions if region.type == U]


# --- Sizes -------------------------------------------------------------------------------

@pytest.mark.parametrize("text, size", [
    ("64G", 64 * GIB), ("64GiB", 64 * GIB), ("512M", 512 * MIB), ("16MiB", 16 * MIB),
    ("4096", 4096), ("0x1000", 4096), ("0X1000", 4096), ("1.5G", 3 * GIB // 2),
    ("640K", 640 * KIB), ("16mb", 16 * MIB), (" 2 M ", 2 * MIB), ("4096B", 4096), ("1T", TIB),
])
def test_parse_size(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text, message", [
    ("", r"bad size '': expected a byte count \(4096, 0x1000\) or a number with K, M, G or T"),
    ("lots", r"bad size 'lots': expected"),
    ("12Q", r"bad size '12Q': expected"),
    ("0x10M", r"bad size '0x10M': expected"),
    ("1.5", r"bad size '1.5': not a whole number of bytes"),
    ("0.1K", r"bad size '0.1K': not a whole number of bytes"),
    ("0", r"bad size '0': a size must be more than zero"),
    ("-16M", r"bad size '-16M': sizes cannot be negative"),
    ("2T", r"bad size '2T': above 1 TiB"),
])
def test_parse_size_rejects(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_size(text)


def test_parse_memory_size_wants_whole_pages():
    assert parse_memory_size("16M") == 16 * MIB
    with pytest.raises(ConfigError, match=r"bad --memory '5000': RAM comes in whole 4 KiB "
                                          r"pages \(try 8 KiB\)"):
        parse_memory_size("5000")


def test_format_size():
    assert [format_size(n) for n in (300, 4 * KIB, 16 * MIB, 3 * GIB // 2, TIB)] == \
        ["300 bytes", "4 KiB", "16 MiB", "1.5 GiB", "1 TiB"]


# --- Presets -----------------------------------------------------------------------------

@pytest.mark.parametrize("name", PRESET_NAMES)
def test_presets_validate_at_default_size(name):
    validate(preset(name))
    assert preset(name) == preset(name, None)


@pytest.mark.parametrize("memory", ["16M", "256M", "3G", "4G", "5G", "64G", "1T"])
def test_pc_preset_sizes(memory):
    size = parse_size(memory)
    memmap = preset("pc", size)
    validate(memmap)
    low_top = min(size, 3 * GIB)
    assert Region(low_top - 64 * KIB, 64 * KIB, MemoryType.ACPI_NVS) in memmap.regions
    assert Region(low_top - 192 * KIB, 128 * KIB, MemoryType.ACPI_RECLAIMABLE) in memmap.regions
    high = [r for r in memmap.regions if r.base >= 4 * GIB]
    assert high == ([Region(4 * GIB, size - 3 * GIB, U)] if size > 3 * GIB else [])


def test_pc_preset_layout():
    memmap = preset("pc")
    assert memmap.regions[:3] == (Region(0, 0x9f000, U), Region(0x9fc00, 0x400, R),
                                  Region(0xf0000, 0x10000, R))
    assert all(memmap.type_at(a) is None for a in (0xa0000, 0xb8000, 0xeffff))
    in_hole = [r for r in memmap.regions if 3 * GIB <= r.base < 4 * GIB]
    assert in_hole == [Region(0xfec00000, 4 * KIB, R), Region(0xfee00000, 4 * KIB, R),
                       Region(0xffe00000, 2 * MIB, R)]
    assert memmap.type_at(0xc0000000) is None


def test_tiny_preset_exact():
    memmap = preset("tiny")
    assert memmap.regions == (Region(0, 0x9f000, U), Region(0x9f000, 0x1000, R),
                              Region(0xf0000, 0x10000, R), Region(MIB, 15 * MIB, U))
    assert memmap.totals() == {U: 0x9f000 + 15 * MIB, R: 0x11000}
    assert preset("tiny", 32 * MIB).total(U) == 0x9f000 + 31 * MIB


@pytest.mark.parametrize("memory", [8 * MIB, 16 * MIB, 128 * MIB, 1 * GIB, 64 * GIB, TIB])
def test_fragmented_preset(memory):
    memmap = preset("fragmented", memory)
    validate(memmap)
    islands = usable_islands(memmap)
    assert memmap.total(U) == memory
    assert any(r.base % (2 * MIB) == 0 and r.length == 4 * MIB for r in islands)
    assert preset("fragmented", memory) == memmap        # deterministic


def test_fragmented_preset_default_is_fragmented():
    memmap = preset("fragmented")
    islands = usable_islands(memmap)
    assert len(islands) >= 30
    sizes = {r.length for r in islands}
    assert min(sizes) == PAGE_SIZE and len(sizes) >= 10
    assert {r.type for r in memmap.regions} == {U, R, MemoryType.ACPI_RECLAIMABLE,
                                                MemoryType.ACPI_NVS, MemoryType.BAD_MEMORY}
    gaps = [a for a, b in zip(memmap.regions, memmap.regions[1:]) if a.end < b.base]
    assert len(gaps) >= 5


@pytest.mark.parametrize("name, memory, message", [
    ("pc", 8 * MIB, r"the pc memory map needs at least 16 MiB of RAM, not 8 MiB"),
    ("tiny", MIB, r"needs at least 2 MiB"),
    ("pc", 2 * TIB, r"2 TiB of RAM is more than the 1 TiB supported"),
    ("pc", 16 * MIB + 100, r"not a whole number of 4 KiB pages"),
    ("huge", None, r"unknown memory map preset 'huge': use one of pc, tiny, fragmented"),
])
def test_preset_rejects(name, memory, message):
    with pytest.raises(ConfigError, match=message):
        preset(name, memory)


# --- Files -------------------------------------------------------------------------------

GOOD_MAP = """
# A small machine.
[[region]]
base = 0
length = "636K"
type = "usable"

[[region]]
base = "0xf0000"
length = "64K"
type = "Reserved"

[[region]]
base = "1M"
length = 0xf00000
type = "usable"

[[region]]
base = "0x1000000"
length = "64K"
type = "acpi-nvs"
"""


def write_map(tmp_path, text: str, name: str = "map.toml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def region_toml(base: str, length: str, kind: str) -> str:
    return f'[[region]]\nbase = "{base}"\nlength = "{length}"\ntype = "{kind}"\n'


def test_toml_map_loads(tmp_path):
    path = write_map(tmp_path, GOOD_MAP)
    memmap = load_memmap_file(path)
    assert memmap.regions == (Region(0, 636 * KIB, U), Region(0xf0000, 64 * KIB, R),
                              Region(MIB, 15 * MIB, U),
                              Region(16 * MIB, 64 * KIB, MemoryType.ACPI_NVS))
    assert resolve_memmap(str(path), None) == memmap


def test_resolve_memmap_presets():
    assert resolve_memmap(None, None) == preset("pc")
    assert resolve_memmap("TINY", 32 * MIB) == preset("tiny", 32 * MIB)
    with pytest.raises(ConfigError, match=r"unknown memory map 'big': use a preset \(pc, "
                                          r"tiny, fragmented\) or the path of a .toml file"):
        resolve_memmap("big", None)


def test_resolve_memmap_file_with_memory(tmp_path):
    path = write_map(tmp_path, GOOD_MAP)
    with pytest.raises(ConfigError, match="--memory does not apply to a memory map file"):
        resolve_memmap(str(path), 64 * MIB)


# Each broken map breaks one rule and gets that rule's message.
BROKEN_MAPS = {
    "zero_length": (
        region_toml("0x100000", "0", "usable") + region_toml("0x200000", "1M", "usable"),
        r"entry #1 at 0x100000 \(USABLE\): zero length"),
    "overflow": (
        region_toml("0x100000", "1M", "usable") + region_toml("0xfffffffff0000", "1M", "reserved"),
        r"entry #2 \[0xfffffffff0000-0x100000000effff\] RESERVED: ends at 0x100000000f0000, "
        r"beyond the 52-bit physical address space"),
    "unaligned_base": (
        region_toml("0x100800", "1M", "usable"),
        r"entry #1 \[0x000000100800-0x0000002007ff\] USABLE: USABLE entries must start and end "
        r"on 4 KiB boundaries \(base 0x100800, length 0x100000\)"),
    "unaligned_length": (
        region_toml("0x100000", "1000K", "usable") + region_toml("0", "0x9fc00", "usable"),
        r"entry #1 \[0x000000000000-0x00000009fbff\] USABLE: USABLE entries must start and end "
        r"on 4 KiB boundaries"),
    "overlap": (
        region_toml("0x100000", "2M", "usable") + region_toml("0x200000", "4K", "acpi_nvs"),
        r"entry #2 \[0x000000200000-0x000000200fff\] ACPI_NVS overlaps entry #1 "
        r"\[0x000000100000-0x0000002fffff\] USABLE: USABLE memory must not overlap any other"),
    "overlap_usable": (
        region_toml("0x100000", "2M", "usable") + region_toml("0x200000", "2M", "usable"),
        r"entry #2 .* USABLE overlaps entry #1 .* USABLE: USABLE memory must not overlap"),
    "no_usable": (
        region_toml("0xf0000", "64K", "reserved") + region_toml("1M", "1M", "bad_memory"),
        r"memory map has no USABLE memory"),
    "too_much_ram": (
        region_toml("1M", "1T", "usable") + region_toml("0x20000000000", "1M", "usable"),
        r"memory map has 1048577 MiB of RAM; at most 1 TiB is supported"),
    "too_many_entries": (
        "".join(region_toml(f"{i * 0x2000:#x}", "4K", "usable") for i in range(1009)),
        r"memory map has 1009 entries; at most 1008 are allowed \(1024 minus 16 kept for the "
        r"loader\)"),
}


@pytest.mark.parametrize("case", sorted(BROKEN_MAPS))
def test_broken_map_gives_its_own_error(tmp_path, case):
    text, message = BROKEN_MAPS[case]
    path = write_map(tmp_path, text)
    with pytest.raises(ConfigError, match=message) as caught:
        resolve_memmap(str(path), None)
    assert str(caught.value).startswith(f"{path}: ")
    assert "\n" not in str(caught.value)


def test_ram_too_small_for_kernel():
    memmap = preset("tiny")
    validate(memmap, needed=15 * MIB)
    with pytest.raises(ConfigError, match=r"RAM too small: the kernel and modules need 20 MiB "
                                          r"of USABLE memory above 1 MiB but the map has 15 MiB;"
                                          r" give more with --memory \(e.g. --memory 48MiB\)"):
        validate(memmap, needed=20 * MIB)


@pytest.mark.parametrize("text, message", [
    (region_toml("0", "1M", "usable").replace('type = "usable"', 'type = "usable"\nsize = 3'),
     r"map.toml: \[\[region\]\] #1: unknown key 'size' \(expected base, length, type\)"),
    (region_toml("0", "1M", "usable") + region_toml("1M", "1M", "ram"),
     r"map.toml: \[\[region\]\] #2: type: unknown memory type 'ram' \(expected usable, "
     r"reserved, acpi_reclaimable, acpi_nvs or bad_memory\)"),
    (region_toml("0", "1M", "framebuffer"), r"#1: type: unknown memory type 'framebuffer'"),
    ('[[region]]\nbase = 0\ntype = "usable"\n', r"#1: missing key 'length'"),
    ('[[region]]\nbase = -4096\nlength = 4096\ntype = "usable"\n', r"#1: base -4096 is negative"),
    ('[[region]]\nbase = 1.5\nlength = 4096\ntype = "usable"\n',
     r"#1: base must be an integer or a string such as \"0x100000\" or \"16M\", not 1.5"),
    ('[[region]]\nbase = "zero"\nlength = 4096\ntype = "usable"\n',
     r"#1: base: bad size 'zero': expected"),
    ('[region]\nbase = 0\nlength = 4096\ntype = "usable"\n',
     r"map.toml: write each entry as \[\[region\]\] \(an array of tables\), not \[region\]"),
    ('memory = "16M"\n', r"map.toml: unknown top-level key 'memory'"),
    ("# nothing\n", r"map.toml: no \[\[region\]\] entries"),
    ('[[region]]\nbase = 0\nlength = 4096\ntype = "usable\n',
     r"map.toml: not valid TOML: .*\(at line 4, column \d+\)"),
])
def test_bad_map_files(tmp_path, text, message):
    path = write_map(tmp_path, text)
    with pytest.raises(ConfigError, match=message):
        load_memmap_file(path)


def test_missing_map_file(tmp_path):
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=r"memory map file .*nope.toml not found; give the "
                                          r"path of an existing .toml file or a preset name "
                                          r"\(pc, tiny, fragmented\)"):
        resolve_memmap(str(path), None)


def test_map_file_not_utf8(tmp_path):
    path = tmp_path / "map.toml"
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_memmap_file(path)


# --- carve, for any valid map ------------------------------------------------------------

OTHER_TYPES = [t for t in MemoryType if t not in (U, MemoryType.BOOTLOADER_RECLAIMABLE)]


@st.composite
def valid_maps(draw) -> MemoryMap:
    """Page-aligned USABLE/BOOTLOADER_RECLAIMABLE islands that overlap nothing, and other
    types of any byte length, some overlapping each other, with gaps in between."""
    regions = []
    cursor = draw(st.integers(0, 512)) * PAGE_SIZE
    for _ in range(draw(st.integers(1, 24))):
        cursor += draw(st.integers(0, 8)) * PAGE_SIZE
        pages = draw(st.integers(1, 1024))
        kind = draw(st.sampled_from([U, U, U, MemoryType.BOOTLOADER_RECLAIMABLE] + OTHER_TYPES))
        if kind in OTHER_TYPES:
            length = pages * PAGE_SIZE - draw(st.integers(0, PAGE_SIZE - 1))
            regions.append(Region(cursor, length, kind))
            if draw(st.booleans()):
                inner = draw(st.sampled_from(OTHER_TYPES))
                regions.append(Region(cursor + draw(st.integers(0, length - 1)),
                                      draw(st.integers(1, 3 * PAGE_SIZE)), inner))
                pages += 3
        else:
            regions.append(Region(cursor, pages * PAGE_SIZE, kind))
        cursor += pages * PAGE_SIZE
    regions.append(Region(cursor + PAGE_SIZE, PAGE_SIZE, U))   # at least one USABLE page
    return MemoryMap.of(regions)


def fits(memmap: MemoryMap, size: int, align: int, lowest: int, highest: int | None) -> bool:
    for region in usable_islands(memmap):
        start = -(-max(region.base, lowest) // align) * align
        limit = region.end if highest is None else min(region.end, highest)
        if start + size <= limit:
            return True
    return False


@settings(deadline=None, max_examples=300)
@given(memmap=valid_maps(),
       size=st.integers(1, 3 * MIB),
       kind=st.sampled_from([t for t in MemoryType if t != U]),
       align=st.sampled_from([PAGE_SIZE, 0x2000, 0x10000, 2 * MIB]),
       lowest=st.sampled_from([0, 0x5000, MIB]),
       highest=st.sampled_from([None, 2 * MIB, 8 * MIB]))
def test_carve_keeps_totals_and_rules(memmap, size, kind, align, lowest, highest):
    validate(memmap)
    rounded = -(-size // PAGE_SIZE) * PAGE_SIZE
    try:
        base, carved = memmap.carve(size, kind, align=align, lowest=lowest, highest=highest)
    except ValueError:
        assert not fits(memmap, rounded, align, lowest, highest)
        return
    assert base % align == 0 and base >= lowest
    assert highest is None or base + rounded <= highest
    assert carved.type_at(base) == kind and carved.type_at(base + rounded - 1) == kind
    for t in MemoryType:
        change = {U: -rounded, kind: rounded}.get(t, 0)
        assert carved.total(t) == memmap.total(t) + change
    assert list(carved.regions) == sorted(carved.regions, key=lambda r: (r.base, r.length))
    # USABLE/BOOTLOADER_RECLAIMABLE aligned and overlapping nothing; the extra page keeps the
    # "no USABLE memory" rule quiet when the carve took the last of it.
    far = carved.regions[-1].end + GIB
    validate(MemoryMap.of(carved.regions + (Region(far, PAGE_SIZE, U),)))
