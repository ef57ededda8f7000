"""The physical memory map: Limine memory types, regions, and the map the machine boots with.

Owns: the types and pure operations on maps (totals, carving boot allocations), and where
maps come from: sizes typed by the user, the presets, TOML map files, and the rules a map
must follow before a kernel boots on it (`validate`).
Does not own: host memory (memory.py).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Callable, Iterable

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from emu.errors import ConfigError
from emu.inputs import display, read_input
from emu.x86 import PAGE_SIZE, PHYSICAL_LIMIT


class MemoryType(IntEnum):
    USABLE = 0
    RESERVED = 1
    ACPI_RECLAIMABLE = 2
    ACPI_NVS = 3
    BAD_MEMORY = 4
    BOOTLOADER_RECLAIMABLE = 5
    EXECUTABLE_AND_MODULES = 6
    FRAMEBUFFER = 7
    RESERVED_MAPPED = 8


@dataclass(frozen=True, slots=True)
class Region:
    base: int
    length: int
    type: MemoryType

    @property
    def end(self) -> int:
        return self.base + self.length

    def __str__(self) -> str:
        return f"[{self.base:#014x}-{self.end - 1:#014x}] {self.type.name}"


@dataclass(frozen=True, slots=True)
class MemoryMap:
    """Regions sorted by base. Build through `MemoryMap.of` to get the sorting."""
    regions: tuple[Region, ...]

    @classmethod
    def of(cls, regions) -> "MemoryMap":
        return cls(tuple(sorted(regions, key=lambda r: (r.base, r.length))))

    def total(self, kind: MemoryType) -> int:
        return sum(r.length for r in self.regions if r.type == kind)

    def totals(self) -> dict[MemoryType, int]:
        return {kind: self.total(kind) for kind in MemoryType if self.total(kind)}

    def type_at(self, paddr: int) -> MemoryType | None:
        for region in self.regions:
            if region.base <= paddr < region.end:
                return region.type
        return None

    def carve(self, size: int, kind: MemoryType, align: int = PAGE_SIZE,
              lowest: int = 0x100000, highest: int | None = None) -> tuple[int, "MemoryMap"]:
        """Take `size` bytes (rounded up to pages) from the lowest USABLE region that fits at
        or above `lowest` (and below `highest`), retype them to `kind`.
        Returns (physical base, new map). Raises ValueError when nothing fits."""
        size = -(-size // PAGE_SIZE) * PAGE_SIZE
        for index, region in enumerate(self.regions):
            if region.type != MemoryType.USABLE:
                continue
            start = max(region.base, lowest)
            start = -(-start // align) * align
            limit = region.end if highest is None else min(region.end, highest)
            if start + size > limit:
                continue
            pieces = [Region(region.base, start - region.base, MemoryType.USABLE),
                      Region(start, size, kind),
                      Region(start + size, region.end - start - size, MemoryType.USABLE)]
            rest = self.regions[:index] + tuple(p for p in pieces if p.length) \
                + self.regions[index + 1:]
            return start, MemoryMap.of(rest).merged()
        raise ValueError(f"no USABLE memory left for {size:#x} bytes of {kind.name}")

    def merged(self) -> "MemoryMap":
        """Adjacent regions of the same type joined into one."""
        out: list[Region] = []
        for region in self.regions:
            if out and out[-1].type == region.type and out[-1].end == region.base:
                out[-1] = Region(out[-1].base, out[-1].length + region.length, region.type)
            else:
                out.append(region)
        return MemoryMap(tuple(out))

    def backed_ranges(self, exclude: Iterable[tuple[int, int]] = ()) -> list[tuple[int, int]]:
        """Page-aligned (base, length) ranges that need RAM behind them: every region,
        merged where they touch or overlap, less the `exclude` (base, length) windows
        where devices answer instead."""
        spans: list[list[int]] = []
        for region in self.regions:
            start = region.base & ~(PAGE_SIZE - 1)
            end = -(-region.end // PAGE_SIZE) * PAGE_SIZE
            if spans and start <= spans[-1][1]:
                spans[-1][1] = max(spans[-1][1], end)
            else:
                spans.append([start, end])
        for hole_base, hole_length in exclude:
            hole_end = hole_base + hole_length
            spans = [piece for start, end in spans
                     for piece in ([start, min(end, hole_base)], [max(start, hole_end), end])
                     if piece[0] < piece[1]]
        return [(start, end - start) for start, end in spans]


# --- Sizes typed by the user -------------------------------------------------------------

KIB, MIB, GIB, TIB = 1 << 10, 1 << 20, 1 << 30, 1 << 40
MAX_RAM = TIB
MAX_ENTRIES = 1024              # the Limine protocol's limit
MAX_MAP_FILE_BYTES = 1 << 20    # 1024 entries of a few lines each fit many times over
LOADER_ENTRY_MARGIN = 16        # entries the loader may add by carving its own allocations

_UNITS = {"": 1, "k": KIB, "m": MIB, "g": GIB, "t": TIB}
_NUMBER = re.compile(r"0x(?P<hex>[0-9a-f]+)|(?P<num>\d+(?:\.\d+)?)\s*(?P<unit>[kmgt]?)(?:i?b)?",
                     re.IGNORECASE)
_SIZE_FORMS = "a byte count (4096, 0x1000) or a number with K, M, G or T (640K, 16M, 1.5G, 64GiB)"


def _quantity(text: str) -> int:
    """Bytes named by `text` in any accepted form (zero allowed). Units are binary."""
    match = _NUMBER.fullmatch(text.strip())
    if match is None:
        raise ConfigError(f"bad size {text!r}: expected {_SIZE_FORMS}")
    if match["hex"] is not None:
        return int(match["hex"], 16)
    whole, _, fraction = match["num"].partition(".")
    scale = _UNITS[match["unit"].lower()]
    numerator = int(whole + fraction) * scale
    denominator = 10 ** len(fraction)
    if numerator % denominator:
        raise ConfigError(f"bad size {text!r}: not a whole number of bytes")
    return numerator // denominator


def parse_size(text: str) -> int:
    """Bytes in a size typed by the user: "4096", "0x1000", "640K", "16M", "16MiB", "1.5G",
    "64GiB" (K, M, G, T are powers of 1024; "B", "iB" and case are optional).
    Raises ConfigError for other forms, for zero or negative sizes and above 1 TiB."""
    if text.strip().startswith("-"):
        raise ConfigError(f"bad size {text!r}: sizes cannot be negative")
    value = _quantity(text)
    if value == 0:
        raise ConfigError(f"bad size {text!r}: a size must be more than zero")
    if value > MAX_RAM:
        raise ConfigError(f"bad size {text!r}: above 1 TiB, the most this emulator supports")
    return value


def parse_memory_size(text: str) -> int:
    """`parse_size` for --memory: also a whole number of 4 KiB pages."""
    value = parse_size(text)
    if value % PAGE_SIZE:
        rounded = format_size(-(-value // PAGE_SIZE) * PAGE_SIZE)
        raise ConfigError(f"bad --memory {text!r}: RAM comes in whole 4 KiB pages "
                          f"(try {rounded})")
    return value


def format_size(size: int) -> str:
    """Human form for messages: "16 MiB", "1.5 GiB", "300 bytes"; never a rounded figure
    that looks exact ("1.0 TiB" for a little more than 1 TiB)."""
    for unit, name in ((TIB, "TiB"), (GIB, "GiB"), (MIB, "MiB"), (KIB, "KiB")):
        if size < unit:
            continue
        if size % unit == 0:
            return f"{size // unit} {name}"
        text = f"{size / unit:.1f}"
        if not text.endswith(".0"):
            return f"{text} {name}"
    return f"{size} bytes"


# --- Presets -----------------------------------------------------------------------------

def _below_1m(ebda: int) -> list[Region]:
    """Conventional memory up to the EBDA, and the BIOS ROM. USABLE is rounded down to a
    page as Limine does with the firmware's map; 0xa0000-0xeffff (VGA window, option ROMs)
    has no RAM and is left out."""
    return [Region(0, ebda & ~(PAGE_SIZE - 1), MemoryType.USABLE),
            Region(ebda, 0xa0000 - ebda, MemoryType.RESERVED),
            Region(0xf0000, 0x10000, MemoryType.RESERVED)]


_PCI_HOLE = 3 * GIB
_ABOVE_4G = 4 * GIB
_PC_HOLE_DEVICES = (Region(0xfec00000, 4 * KIB, MemoryType.RESERVED),     # IOAPIC
                    Region(0xfee00000, 4 * KIB, MemoryType.RESERVED),     # LAPIC
                    Region(0xffe00000, 2 * MIB, MemoryType.RESERVED))     # firmware flash


def _pc(memory: int) -> list[Region]:
    """A PC: low RAM up to the 3 GiB PCI hole with the ACPI tables at its top, the rest of
    the RAM remapped above 4 GiB."""
    low_top = min(memory, _PCI_HOLE)
    nvs = low_top - 64 * KIB
    tables = nvs - 128 * KIB
    regions = _below_1m(ebda=0x9fc00)
    regions += [Region(MIB, tables - MIB, MemoryType.USABLE),
                Region(tables, 128 * KIB, MemoryType.ACPI_RECLAIMABLE),
                Region(nvs, 64 * KIB, MemoryType.ACPI_NVS)]
    regions += _PC_HOLE_DEVICES
    if memory > _PCI_HOLE:
        regions.append(Region(_ABOVE_4G, memory - _PCI_HOLE, MemoryType.USABLE))
    return regions


def _tiny(memory: int) -> list[Region]:
    return _below_1m(ebda=0x9f000) + [Region(MIB, memory - MIB, MemoryType.USABLE)]


# The fragmented map walks these tables with different strides so that neighbouring islands
# and holes differ; no random generator, so the map is the same on every host and version.
_ISLAND_PAGES = (1, 3, 16, 5, 64, 2, 256, 9, 128, 1, 512, 33, 768, 4)    # 4 KiB to 3 MiB
_HOLE_PAGES = (1, 4, 2, 16, 1, 64, 8)
_HOLE_TYPES = (MemoryType.RESERVED, MemoryType.ACPI_RECLAIMABLE, None,  # None: nothing there
               MemoryType.ACPI_NVS, MemoryType.BAD_MEMORY)
_PATTERN_ISLANDS = 48       # islands taken from the tables
_TAIL_ISLANDS = 8           # the rest of the RAM, in equal parts, so big maps stay short
_KERNEL_ISLAND = 3          # index of the 2 MiB-aligned 4 MiB island a kernel can load into


def _fragmented(memory: int) -> list[Region]:
    """USABLE islands between holes of every kind; total USABLE is exactly `memory`."""
    regions = _below_1m(ebda=0x9f000)
    left = memory - regions[0].length
    cursor = MIB
    index = 0
    while left > 0:
        hole = _HOLE_PAGES[index * 3 % len(_HOLE_PAGES)] * PAGE_SIZE
        if index == _KERNEL_ISLAND:
            island = 4 * MIB
            hole = _align_up(cursor + hole, 2 * MIB) - cursor
        elif index < _PATTERN_ISLANDS:
            island = _ISLAND_PAGES[index * 5 % len(_ISLAND_PAGES)] * PAGE_SIZE
        else:
            parts = _PATTERN_ISLANDS + _TAIL_ISLANDS - index
            island = _align_up(-(-left // parts), PAGE_SIZE)
        kind = _HOLE_TYPES[index % len(_HOLE_TYPES)]
        if kind is not None:
            regions.append(Region(cursor, hole, kind))
        cursor += hole
        island = min(island, left)
        regions.append(Region(cursor, island, MemoryType.USABLE))
        cursor += island
        left -= island
        index += 1
    return regions


def _align_up(value: int, align: int) -> int:
    return -(-value // align) * align


@dataclass(frozen=True, slots=True)
class _Preset:
    build: Callable[[int], list[Region]]
    default: int
    minimum: int


_PRESETS = {
    "pc": _Preset(_pc, default=256 * MIB, minimum=16 * MIB),
    "tiny": _Preset(_tiny, default=16 * MIB, minimum=2 * MIB),
    "fragmented": _Preset(_fragmented, default=128 * MIB, minimum=8 * MIB),
}
PRESET_NAMES = tuple(_PRESETS)


def preset(name: str, memory: int | None = None) -> MemoryMap:
    """The named preset map for `memory` bytes of RAM (the preset's default when None):
    pc (256 MiB), tiny (16 MiB), fragmented (128 MiB). Raises ConfigError for an unknown
    name or a RAM size the preset cannot lay out."""
    chosen = _PRESETS.get(name.lower())
    if chosen is None:
        raise ConfigError(f"unknown memory map preset {name!r}: "
                          f"use one of {', '.join(PRESET_NAMES)}")
    if memory is None:
        memory = chosen.default
    if memory % PAGE_SIZE:
        raise ConfigError(f"RAM size {memory:#x} is not a whole number of 4 KiB pages")
    if memory < chosen.minimum:
        raise ConfigError(f"the {name} memory map needs at least {format_size(chosen.minimum)} "
                          f"of RAM, not {format_size(memory)}; raise --memory")
    if memory > MAX_RAM:
        raise ConfigError(f"{format_size(memory)} of RAM is more than the 1 TiB supported")
    return MemoryMap.of(chosen.build(memory))


# --- Map files ---------------------------------------------------------------------------

_FILE_TYPES = {
    "usable": MemoryType.USABLE,
    "reserved": MemoryType.RESERVED,
    "acpi_reclaimable": MemoryType.ACPI_RECLAIMABLE,
    "acpi_nvs": MemoryType.ACPI_NVS,
    "bad_memory": MemoryType.BAD_MEMORY,
}
_FILE_KEYS = ("base", "length", "type")


def load_memmap_file(path: str | Path) -> MemoryMap:
    """Read a memory map from a TOML file. The format:

        # A memory map: one [[region]] table per entry, in any order.
        # base and length are integers or strings: "0x100000", "4096", "640K", "16M", "1.5G"
        # (K, M, G, T are powers of 1024).
        [[region]]
        base = 0
        length = "636K"
        type = "usable"

        [[region]]
        base = "0x100000"
        length = "15M"
        type = "usable"

        [[region]]
        base = "0xf0000"
        length = "64K"
        type = "reserved"

    `type` is one of usable, reserved, acpi_reclaimable, acpi_nvs, bad_memory (any case,
    "-" for "_" allowed). Entries the loader creates itself (bootloader_reclaimable,
    executable_and_modules, framebuffer) cannot be given. Nothing else may appear in the
    file. The rules a map must follow are checked by `validate`, not here.
    Raises ConfigError naming the file, the entry (`[[region]] #3`, counted from 1) and the key.
    """
    path = Path(path)
    data = read_input(path, "memory map file", MAX_MAP_FILE_BYTES,
                      hint="give the path of an existing .toml file or a preset name "
                           f"({', '.join(PRESET_NAMES)})")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{display(path)}: not valid TOML: the file is not UTF-8 text") \
            from None
    shown = display(path)
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{shown}: not valid TOML: {exc}") from None

    for key in document:
        if key != "region":
            raise ConfigError(f"{shown}: unknown top-level key {key!r} "
                              f"(a memory map file holds only [[region]] tables)")
    entries = document.get("region", [])
    if not isinstance(entries, list):
        raise ConfigError(f"{shown}: write each entry as [[region]] (an array of tables), "
                          f"not [region]")
    if not entries:
        raise ConfigError(f"{shown}: no [[region]] entries")
    return MemoryMap.of(_file_region(entry, f"{shown}: [[region]] #{number}")
                        for number, entry in enumerate(entries, 1))


def _file_region(entry: object, where: str) -> Region:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: an entry is a table with base, length and type "
                          f"([[region]] then key = value lines), not {entry!r}")
    for key in entry:
        if key not in _FILE_KEYS:
            raise ConfigError(f"{where}: unknown key {key!r} (expected base, length, type)")
    for key in _FILE_KEYS:
        if key not in entry:
            raise ConfigError(f"{where}: missing key {key!r}")
    return Region(_file_number(entry["base"], where, "base"),
                  _file_number(entry["length"], where, "length"),
                  _file_type(entry["type"], where))


def _file_number(value: object, where: str, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ConfigError(f"{where}: {key} must be an integer or a string such as "
                          f"\"0x100000\" or \"16M\", not {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ConfigError(f"{where}: {key} {value} is negative")
        return value
    try:
        return _quantity(value)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {key}: {exc}") from None


def _file_type(value: object, where: str) -> MemoryType:
    name = value.strip().lower().replace("-", "_") if isinstance(value, str) else None
    if name not in _FILE_TYPES:
        raise ConfigError(f"{where}: type: unknown memory type {value!r} "
                          f"(expected usable, reserved, acpi_reclaimable, acpi_nvs or bad_memory)")
    return _FILE_TYPES[name]


def resolve_memmap(spec: str | None, memory: int | None) -> MemoryMap:
    """The map named on the command line: a preset name (default "pc") sized by `memory`, or
    the path of a .toml file (which lists the RAM itself, so `memory` must be None).
    The map is checked with `validate` before it is returned."""
    spec = spec or "pc"
    if spec.lower() in _PRESETS:
        memmap = preset(spec, memory)
        validate(memmap)
        return memmap
    path = Path(spec)
    if spec.endswith(".toml") or path.exists() or len(path.parts) > 1:
        if memory is not None:
            raise ConfigError(f"{display(spec)}: --memory does not apply to a memory map file; "
                              f"the file's usable regions are the RAM")
        memmap = load_memmap_file(path)
        try:
            validate(memmap)
        except ConfigError as exc:
            raise ConfigError(f"{display(spec)}: {exc}") from None
        return memmap
    raise ConfigError(f"unknown memory map {display(spec)!r}: use a preset "
                      f"({', '.join(PRESET_NAMES)}) or the path of a .toml file")


# --- Rules -------------------------------------------------------------------------------

# Types no other entry may overlap and that must be whole pages (Limine's guarantee).
_EXCLUSIVE = (MemoryType.USABLE, MemoryType.BOOTLOADER_RECLAIMABLE)
# What counts as RAM for the size limit: USABLE before the loader, these three after it.
_RAM_TYPES = (MemoryType.USABLE, MemoryType.BOOTLOADER_RECLAIMABLE,
              MemoryType.EXECUTABLE_AND_MODULES)


def validate(memmap: MemoryMap, needed: int = 0, spec: str | None = None) -> None:
    """Check the rules a map must follow to boot a kernel that needs `needed` bytes (kernel
    and modules) of USABLE memory above 1 MiB. Raises ConfigError naming the first entry and
    rule broken; returns None when the map is fine. `spec` is the map's name on the command
    line (a preset or a file): it decides how a map too small can grow."""
    regions = memmap.regions
    limit = MAX_ENTRIES - LOADER_ENTRY_MARGIN
    if len(regions) > limit:
        raise ConfigError(f"memory map has {len(regions)} entries; at most {limit} are allowed "
                          f"({MAX_ENTRIES} minus {LOADER_ENTRY_MARGIN} kept for the loader)")
    for number, region in enumerate(regions, 1):
        _check_entry(number, region)
    _check_overlaps(regions)

    usable = memmap.total(MemoryType.USABLE)
    if usable == 0:
        raise ConfigError("memory map has no USABLE memory")
    ram = sum(memmap.total(kind) for kind in _RAM_TYPES)
    if ram > MAX_RAM:
        raise ConfigError(f"memory map has {format_size(ram)} of RAM; "
                          f"at most {format_size(MAX_RAM)} is supported")
    high = sum(max(0, r.end - max(r.base, MIB)) for r in regions if r.type == MemoryType.USABLE)
    if high < needed:
        raise ConfigError(f"RAM too small: the kernel and modules need {format_size(needed)} of "
                          f"USABLE memory above 1 MiB but the map has {format_size(high)}; "
                          + _how_to_grow(spec, needed))


def _how_to_grow(spec: str | None, needed: int) -> str:
    if spec is not None and spec.lower() not in _PRESETS:
        return f"add USABLE regions above 1 MiB to {display(spec)}"
    suggest = format_size(_align_up(needed + 16 * MIB, 16 * MIB))
    return f"give more with --memory (e.g. --memory {suggest.replace(' ', '')})"


def _check_entry(number: int, region: Region) -> None:
    if region.length <= 0:
        raise ConfigError(f"memory map entry #{number} at {region.base:#x} ({region.type.name}): "
                          f"zero length")
    where = f"memory map entry #{number} {region}"
    if region.base < 0:
        raise ConfigError(f"{where}: negative base")
    if region.end > PHYSICAL_LIMIT:
        raise ConfigError(f"{where}: ends at {region.end:#x}, beyond the 52-bit physical "
                          f"address space ({PHYSICAL_LIMIT:#x})")
    if region.type in _EXCLUSIVE and (region.base | region.length) % PAGE_SIZE:
        raise ConfigError(f"{where}: {region.type.name} entries must start and end on 4 KiB "
                          f"boundaries (base {region.base:#x}, length {region.length:#x})")


def _check_overlaps(regions: tuple[Region, ...]) -> None:
    """Regions are sorted by base, so an earlier one overlaps region i exactly when it ends
    after i's base: tracking the furthest end, overall and among exclusive types, suffices."""
    furthest: tuple[int, Region] | None = None
    furthest_exclusive: tuple[int, Region] | None = None
    for number, region in enumerate(regions, 1):
        exclusive = region.type in _EXCLUSIVE
        against = furthest if exclusive else furthest_exclusive
        if against is not None and against[1].end > region.base:
            other_number, other = against
            kind = region.type if exclusive else other.type
            raise ConfigError(f"memory map entry #{number} {region} overlaps entry "
                              f"#{other_number} {other}: {kind.name} memory must not overlap "
                              f"any other entry")
        if furthest is None or region.end > furthest[1].end:
            furthest = (number, region)
        if exclusive and (furthest_exclusive is None or region.end > furthest_exclusive[1].end):
            furthest_exclusive = (number, region)
