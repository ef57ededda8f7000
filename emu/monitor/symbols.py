"""The kernel's ELF symbols: the one symbol service of the monitor.

Owns: turning guest code addresses into `name+0x12` and `file.c:123` (backtraces, crash
reports), function names into addresses (hooks on function entries), data objects into
(address, size) (descriptors the checkers read: `pmm_descriptor`, `heap_descriptor`,
`replay_result`) and, through the CPU's reader, their bytes (`read_object`), and the
kernel's slide (a PIE kernel is loaded away from its link address; every address this
service returns or takes is a run-time address).
Does not own: translating guest addresses (the CPU) or unwinding stacks (the crash
reporter does that).

Construction reads only the symbol table; the DWARF line table is parsed on the first
`line_of` call and cached, so loading symbols for a big kernel stays cheap.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass
from pathlib import Path

from elftools.common.exceptions import DWARFError, ELFError
from elftools.elf.constants import SH_FLAGS
from elftools.elf.elffile import ELFFile

from emu.errors import ConfigError, GuestMemoryError, LoaderError

CLONE_SUFFIXES = ("isra", "part", "constprop", "cold", "llvm")
_BIND_RANK = {"STB_GLOBAL": 0, "STB_WEAK": 1, "STB_LOCAL": 2}


@dataclass(frozen=True, slots=True)
class Symbol:
    name: str
    address: int    # link-time address (without slide)
    size: int       # 0 for assembly labels: they extend to the next symbol


class Symbols:
    """Function symbols of one ELF, sorted by address, optionally slid (PIE kernels)."""

    def __init__(self, symbols: list[Symbol], code: list[tuple[int, int]],
                 slide: int = 0, path: Path | None = None,
                 objects: dict[str, Symbol] | None = None) -> None:
        self.slide = slide
        self._objects = dict(objects or {})
        self._path = path
        self._code = sorted(code)                  # executable sections [start, end)
        self._by_address = _one_per_address(symbols)
        self._starts = [s.address for s in self._by_address]
        self._by_name: dict[str, Symbol] = {}
        for symbol in symbols:      # symbols arrive best-first: keep the first of a name
            self._by_name.setdefault(symbol.name, symbol)
        self._lines: tuple[list[int], list[tuple[int, int, str, int]]] | None = None

    @classmethod
    def from_elf(cls, path: Path, slide: int = 0) -> "Symbols":
        """Read STT_FUNC symbols, and STT_NOTYPE ones that lie in executable sections, from
        .symtab (or .dynsym if stripped). Raises ConfigError if the file is missing,
        LoaderError if it is not an ELF."""
        path = Path(path)
        try:
            with path.open("rb") as stream:
                elf = ELFFile(stream)
                code = [(s["sh_addr"], s["sh_addr"] + s["sh_size"]) for s in elf.iter_sections()
                        if s["sh_flags"] & SH_FLAGS.SHF_EXECINSTR and s["sh_size"]]
                table = elf.get_section_by_name(".symtab") or elf.get_section_by_name(".dynsym")
                raw = list(table.iter_symbols()) if table is not None else []
                symbols = [_symbol(entry, code) for entry in raw]
                objects = _objects(raw)
        except FileNotFoundError:
            raise ConfigError(f"symbol file {path} not found; check the kernel path") from None
        except (ELFError, ValueError) as exc:
            raise LoaderError(f"{path} is not a readable ELF ({exc}); cannot load symbols")\
                from None
        ranked = sorted((s for s in symbols if s is not None), key=lambda pair: pair[1])
        return cls([symbol for symbol, _ in ranked], code, slide, path, objects)

    def __len__(self) -> int:
        return len(self._by_address)

    def lookup(self, address: int) -> str:
        """`name+0x12` for a code address, or `0x...` if no function covers it."""
        symbol = self.symbol_at(address)
        if symbol is None:
            return f"{address:#x}"
        return f"{symbol.name}+{address - self.slide - symbol.address:#x}"

    def symbol_at(self, address: int) -> Symbol | None:
        link = address - self.slide
        index = bisect.bisect_right(self._starts, link) - 1
        if index < 0:
            return None
        symbol = self._by_address[index]
        if symbol.size:
            return symbol if link < symbol.address + symbol.size else None
        # A label: up to the next symbol, and never beyond its section.
        end = self._starts[index + 1] if index + 1 < len(self._starts) else 1 << 64
        for start, section_end in self._code:
            if start <= symbol.address < section_end:
                end = min(end, section_end)
                break
        return symbol if link < end else None

    def address_of(self, name: str) -> int | None:
        symbol = self._by_name.get(name)
        return None if symbol is None else symbol.address + self.slide

    def clones_of(self, name: str) -> list[str]:
        """Compiler clones of function `name` (`name.isra.0`, `name.part.1`,
        `name.constprop.0`, `name.cold`): code that runs for some of its calls."""
        prefix = name + "."
        return sorted(other for other in self._by_name if other.startswith(prefix) and
                      other[len(prefix):].split(".")[0] in CLONE_SUFFIXES)

    def size_of(self, name: str) -> int | None:
        symbol = self._by_name.get(name)
        return None if symbol is None else symbol.size

    def data(self, name: str) -> tuple[int, int] | None:
        """(run-time address, size) of a data object (STT_OBJECT), or None."""
        symbol = self._objects.get(name)
        return None if symbol is None else (symbol.address + self.slide, symbol.size)

    def line_of(self, address: int) -> str | None:
        """`file.c:123` from the DWARF line table, or None without line info."""
        if self._lines is None:
            self._lines = self._load_lines()
        starts, rows = self._lines
        link = address - self.slide
        index = bisect.bisect_right(starts, link) - 1
        if index < 0:
            return None
        start, end, file, line = rows[index]
        return f"{file}:{line}" if start <= link < end else None

    def _load_lines(self) -> tuple[list[int], list[tuple[int, int, str, int]]]:
        if self._path is None:
            return [], []
        rows: list[tuple[int, int, str, int]] = []
        try:
            with self._path.open("rb") as stream:
                elf = ELFFile(stream)
                if not elf.has_dwarf_info():
                    return [], []
                dwarf = elf.get_dwarf_info()
                for unit in dwarf.iter_CUs():
                    program = dwarf.line_program_for_CU(unit)
                    if program is not None:
                        rows.extend(_line_rows(program))
        except (OSError, ELFError, DWARFError, ValueError, KeyError, IndexError):
            return [], []       # line info is a comfort: a broken table means no lines
        rows.sort()
        return [row[0] for row in rows], rows


def _symbol(entry, code: list[tuple[int, int]]) -> tuple[Symbol, tuple] | None:
    """A Symbol and its rank (lower is better) for a symbol table entry, or None."""
    kind = entry["st_info"]["type"]
    name = entry.name
    address = entry["st_value"]
    if not name or name.startswith(".L") or entry["st_shndx"] == "SHN_UNDEF":
        return None
    if kind == "STT_FUNC":
        rank = 0
    elif kind == "STT_NOTYPE" and any(start <= address < end for start, end in code):
        rank = 1
    else:
        return None
    bind = _BIND_RANK.get(entry["st_info"]["bind"], 3)
    return Symbol(name, address, entry["st_size"]), (rank, bind, name)


def _objects(entries) -> dict[str, Symbol]:
    """Defined data objects by name (the first of a name wins)."""
    out: dict[str, Symbol] = {}
    for entry in entries:
        if entry["st_info"]["type"] == "STT_OBJECT" and entry.name and \
                entry["st_shndx"] != "SHN_UNDEF":
            out.setdefault(entry.name, Symbol(entry.name, entry["st_value"], entry["st_size"]))
    return out


def _one_per_address(symbols: list[Symbol]) -> list[Symbol]:
    """Sorted by address; where several share an address, the first (best ranked) wins."""
    chosen: dict[int, Symbol] = {}
    for symbol in symbols:
        chosen.setdefault(symbol.address, symbol)
    return [chosen[address] for address in sorted(chosen)]


def _line_rows(program) -> list[tuple[int, int, str, int]]:
    header = program.header
    files = header["file_entry"]
    base = 0 if header["version"] >= 5 else 1
    rows, previous = [], None
    for entry in program.get_entries():
        state = entry.state
        if state is None:
            continue
        if previous is not None and state.address > previous.address:
            index = previous.file - base
            name = files[index].name if 0 <= index < len(files) else b"?"
            rows.append((previous.address, state.address,
                         name.decode(errors="replace") if isinstance(name, bytes) else name,
                         previous.line))
        previous = None if state.end_sequence else state
    return rows


def read_object(machine, name: str, size: int) -> bytes | None:
    """The first `size` bytes of the kernel's data object `name` (a descriptor the monitor
    reads) through the machine's current address space; None when the kernel has no such
    object or its page is not mapped (an unreadable descriptor is the same as none)."""
    where = machine.symbols.data(name)
    if where is None:
        return None
    try:
        return machine.cpu.read_virtual(where[0], size)
    except GuestMemoryError:
        return None
