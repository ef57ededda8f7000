"""Kernel ELF files as a Limine loader reads them: validation, layout and relocation.

Owns: parsing and validating a kernel ELF (x86-64, ET_EXEC or a PIE ET_DYN, PT_LOAD
segments that fit the file and do not overlap, an entry point in an executable segment, a
link address in the top 2 GiB or a PIE that can be slid there), the image as loaded (file
data placed, .bss zero), and applying a PIE's dynamic relocations (RELATIVE, 64, GLOB_DAT,
JUMP_SLOT, RELR). ELF constants come from pyelftools.
Does not own: where the image goes in RAM or what its requests get (loader.py).
"""
from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.constants import P_FLAGS
from elftools.elf.elffile import ELFFile
from elftools.elf.enums import (ENUM_D_TAG, ENUM_P_TYPE_BASE, ENUM_RELOC_TYPE_x64,
                                ENUM_ST_INFO_BIND, ENUM_ST_SHNDX)

from emu.boot.limine import KERNEL_FLOOR
from emu.errors import LoaderError
from emu.hw.memory import PhysicalMemory
from emu.x86 import LARGE_PAGE_SIZE, PAGE_SIZE

DT = ENUM_D_TAG
R = ENUM_RELOC_TYPE_x64
PT = ENUM_P_TYPE_BASE
SHN = ENUM_ST_SHNDX
STB_WEAK = ENUM_ST_INFO_BIND["STB_WEAK"]
ADDRESS_LIMIT = 1 << 64
_U64 = struct.Struct("<Q")


def page_up(value: int) -> int:
    return -(-value // PAGE_SIZE) * PAGE_SIZE


@dataclass(frozen=True, slots=True)
class Segment:
    vaddr: int      # link-time virtual address
    memsz: int
    filesz: int
    offset: int
    flags: int


@dataclass(frozen=True, slots=True)
class KernelElf:
    is_pie: bool
    entry: int                          # link-time
    segments: tuple[Segment, ...]      # PT_LOAD, sorted by vaddr
    dynamic: tuple[tuple[int, int], ...]  # (tag, value) from PT_DYNAMIC
    reqs_section: tuple[int, int] | None  # .limine_reqs (link address, size)
    align: int                          # physical alignment of the image
    link_base: int                      # link address of the image's first byte
    span: int                           # image size, page multiple
    slide: int

    @property
    def virt_base(self) -> int:
        return self.link_base + self.slide

    @property
    def file_end(self) -> int:
        """Image offset just past the last byte of file data of any segment."""
        return max(s.vaddr + s.filesz for s in self.segments) - self.link_base


def parse_kernel(path: Path, data: bytes) -> KernelElf:
    if data[:4] != b"\x7fELF":
        raise LoaderError(f"{path} is not an ELF file; give the linked kernel (.elf), "
                          f"not a flat binary or an image")
    if data[4:5] == b"\x01":
        raise LoaderError(f"{path} is a 32-bit ELF; build the kernel for x86-64 "
                          f"(-target x86_64-freestanding-none)")
    if data[4:5] != b"\x02":
        raise LoaderError(f"{path} has an invalid ELF class ({data[4] if len(data) > 4 else 'none'}"
                          f"; 2 is 64-bit): the file is corrupt, rebuild it")
    if data[5:6] != b"\x01":
        raise LoaderError(f"{path} is not a little-endian ELF (EI_DATA "
                          f"{data[5] if len(data) > 5 else 'missing'}); x86-64 kernels are "
                          "little-endian: the file is corrupt, rebuild it")
    try:
        elf = ELFFile(io.BytesIO(data))
        header = elf.header
        machine, kind, entry = header.e_machine, header.e_type, header.e_entry
        phdrs = [seg.header for seg in elf.iter_segments()]
        reqs = elf.get_section_by_name(".limine_reqs")
        reqs_section = (reqs["sh_addr"], reqs["sh_size"]) if reqs is not None else None
    except (ELFError, struct.error, ValueError, KeyError) as exc:
        raise LoaderError(f"{path} is a malformed ELF ({exc}); rebuild it") from None
    if machine != "EM_X86_64":
        raise LoaderError(f"{path} is an ELF for {machine}, not x86-64; build it with "
                          f"-target x86_64-freestanding-none")
    if kind not in ("ET_EXEC", "ET_DYN"):
        raise LoaderError(f"{path} is an ELF of type {kind}; link it into an executable "
                          f"(ET_EXEC) or a PIE (ET_DYN), not an object file")
    return _layout(path, kind == "ET_DYN", entry, phdrs, data, reqs_section)


def _layout(path: Path, is_pie: bool, entry: int, phdrs, data: bytes,
            reqs_section) -> KernelElf:
    segments, dynamic_ph, align = [], None, PAGE_SIZE
    for ph in phdrs:
        if ph.p_type in ("PT_DYNAMIC", PT["PT_DYNAMIC"]):
            dynamic_ph = ph
        if ph.p_type not in ("PT_LOAD", PT["PT_LOAD"]) or ph.p_memsz == 0:
            continue
        _check_segment(path, ph, len(data))
        if ph.p_align > 1:
            align = max(align, min(ph.p_align, LARGE_PAGE_SIZE))
        segments.append(Segment(ph.p_vaddr, ph.p_memsz, ph.p_filesz, ph.p_offset,
                                 ph.p_flags))
    if not segments:
        raise LoaderError(f"{path} has no PT_LOAD segment; link it with a linker script "
                          f"that places .text/.data in loadable segments")
    segments.sort(key=lambda s: s.vaddr)
    for low, high in zip(segments, segments[1:]):
        if low.vaddr + low.memsz > high.vaddr:
            raise LoaderError(f"{path}: PT_LOAD segments at {low.vaddr:#x} and "
                              f"{high.vaddr:#x} overlap; fix the linker script")
    link_base = segments[0].vaddr & ~(align - 1)
    link_end = page_up(max(s.vaddr + s.memsz for s in segments))
    if is_pie:
        slide = 0 if link_base >= KERNEL_FLOOR else KERNEL_FLOOR - link_base
    else:
        slide = 0
        if link_base < KERNEL_FLOOR:
            raise LoaderError(f"{path} is linked at {segments[0].vaddr:#x}, below "
                              f"{KERNEL_FLOOR:#x}; Limine kernels live in the top 2 GiB: link "
                              f"at . = {KERNEL_FLOOR:#x} with -mcmodel=kernel, or build a PIE")
    if link_end + slide > ADDRESS_LIMIT:
        raise LoaderError(f"{path}: the kernel image ends past the top of the address space; "
                          f"fix the link address")
    inside = [s for s in segments if s.vaddr <= entry < s.vaddr + s.memsz]
    if not inside:
        raise LoaderError(f"{path}: entry point {entry + slide:#x} is outside every PT_LOAD "
                          f"segment; check the entry symbol (zig cc overrides the linker "
                          f"script's ENTRY() with _start: pass -Wl,-e,<symbol>)")
    if not inside[0].flags & P_FLAGS.PF_X:
        raise LoaderError(f"{path}: entry point {entry + slide:#x} is in a segment without "
                          f"PF_X; put the entry code in .text")
    dynamic = _dynamic_entries(path, data, dynamic_ph) if is_pie else ()
    return KernelElf(is_pie, entry, tuple(segments), dynamic, reqs_section, align, link_base,
                link_end - link_base, slide)


def _check_segment(path: Path, ph, file_size: int) -> None:
    """What a loader refuses in one PT_LOAD header (ELF gABI, program header): file data
    beyond the file or the memory size, an address range that wraps past 2^64, an alignment
    that is not a power of two, and a virtual address whose page offset is not the file
    offset's (the segment could not be mapped page by page)."""
    where = f"{path}: the PT_LOAD segment at {ph.p_vaddr:#x}"
    if ph.p_filesz > ph.p_memsz or ph.p_offset + ph.p_filesz > file_size:
        raise LoaderError(f"{where} has more file data than memory or runs past the end of "
                          f"the file; the file is truncated or corrupt, rebuild it")
    if ph.p_vaddr + ph.p_memsz > ADDRESS_LIMIT:
        raise LoaderError(f"{where} ({ph.p_memsz:#x} bytes) wraps past the top of the address "
                          "space; the file is corrupt, rebuild it")
    if ph.p_align > 1 and ph.p_align & (ph.p_align - 1):
        raise LoaderError(f"{where} has p_align {ph.p_align:#x}, not a power of two; the file "
                          "is corrupt, rebuild it")
    modulus = max(ph.p_align, PAGE_SIZE)
    if (ph.p_vaddr - ph.p_offset) % modulus:
        raise LoaderError(f"{where} is not aligned like its file offset {ph.p_offset:#x} "
                          f"(they must agree modulo {modulus:#x}); fix the linker script")


def _dynamic_entries(path: Path, data: bytes, ph) -> tuple[tuple[int, int], ...]:
    if ph is None or ph.p_filesz == 0:
        return ()
    if ph.p_offset + ph.p_filesz > len(data):
        raise LoaderError(f"{path}: PT_DYNAMIC runs past the end of the file; rebuild it")
    out = []
    for tag, value in struct.iter_unpack("<qQ", data[ph.p_offset:ph.p_offset + ph.p_filesz
                                                    - ph.p_filesz % 16]):
        if tag == DT["DT_NULL"]:
            break
        out.append((tag, value))
    return tuple(out)


def build_image(path: Path, data: bytes, elf: KernelElf) -> bytearray:
    """The kernel image up to the end of its file data, relocated for its slide."""
    image = bytearray(elf.file_end)
    for seg in elf.segments:
        at = seg.vaddr - elf.link_base
        image[at:at + seg.filesz] = data[seg.offset:seg.offset + seg.filesz]
    if elf.is_pie:
        _Relocator(path, elf, image).apply()
    return image


def write_image(memory: PhysicalMemory, base: int, image: bytearray, span: int) -> None:
    """Copy the image to guest RAM and zero the rest of the span (.bss), touching only pages
    that are not already zero."""
    memory.write(base, bytes(image))
    chunk = 1 << 20
    zeros = bytes(chunk)
    offset = len(image)
    while offset < span:
        size = min(chunk, span - offset)
        view, at = memory.locate(base + offset, size)
        if view[at:at + size].tobytes() != zeros[:size]:
            view[at:at + size] = zeros[:size]
        offset += size


class _Relocator:
    """Applies a PIE kernel's dynamic relocations to its image (link address + slide)."""

    def __init__(self, path: Path, elf: KernelElf, image: bytearray) -> None:
        self.path = path
        self.elf = elf
        self.image = image
        self.tags: dict[int, int] = {}
        for tag, value in elf.dynamic:
            self.tags.setdefault(tag, value)

    def apply(self) -> None:
        tags = self.tags
        if DT["DT_RELA"] in tags:
            self._table(tags[DT["DT_RELA"]], tags.get(DT["DT_RELASZ"], 0),
                        tags.get(DT["DT_RELAENT"], 24), explicit=True)
        if DT["DT_REL"] in tags:
            self._table(tags[DT["DT_REL"]], tags.get(DT["DT_RELSZ"], 0),
                        tags.get(DT["DT_RELENT"], 16), explicit=False)
        if DT["DT_JMPREL"] in tags:
            explicit = tags.get(DT["DT_PLTREL"], DT["DT_RELA"]) == DT["DT_RELA"]
            self._table(tags[DT["DT_JMPREL"]], tags.get(DT["DT_PLTRELSZ"], 0),
                        24 if explicit else 16, explicit=explicit)
        if DT["DT_RELR"] in tags:
            size = tags.get(DT["DT_RELRSZ"], 0)
            words = [self._read(tags[DT["DT_RELR"]] + i) for i in range(0, size - size % 8, 8)]
            for where in relr_offsets(words):
                self._write(where, self._read(where) + self.elf.slide)

    def _table(self, address: int, size: int, entsize: int, explicit: bool) -> None:
        if entsize not in (16, 24):
            raise LoaderError(f"{self.path}: relocation entries of {entsize} bytes are not "
                              f"ELF64 Rel/Rela; the file is corrupt")
        for at in range(address, address + size - size % entsize, entsize):
            offset, info = self._read(at), self._read(at + 8)
            kind, sym = info & 0xFFFFFFFF, info >> 32
            addend = _signed(self._read(at + 16)) if explicit else None
            self._relocate(offset, kind, sym, addend)

    def _relocate(self, offset: int, kind: int, sym: int, addend: int | None) -> None:
        if kind == R["R_X86_64_NONE"]:
            return
        if addend is None:      # REL: the addend is the word in place
            addend = _signed(self._read(offset))
        if kind == R["R_X86_64_RELATIVE"]:
            value = self.elf.slide + addend
        elif kind == R["R_X86_64_64"]:
            value = self._symbol(sym) + addend
        elif kind in (R["R_X86_64_GLOB_DAT"], R["R_X86_64_JUMP_SLOT"]):
            value = self._symbol(sym)
        else:
            raise LoaderError(f"{self.path}: relocation type {kind} at {offset:#x} is not "
                              f"supported (only RELATIVE, 64, GLOB_DAT, JUMP_SLOT, RELR); "
                              f"link with -static-pie or avoid TLS/IFUNC in the kernel")
        self._write(offset, value % ADDRESS_LIMIT)

    def _symbol(self, index: int) -> int:
        table = self.tags.get(DT["DT_SYMTAB"])
        if table is None:
            raise LoaderError(f"{self.path}: symbol relocation without DT_SYMTAB; the "
                              f"dynamic section is corrupt")
        entry = table + index * self.tags.get(DT["DT_SYMENT"], 24)
        info_word = self._read(entry)             # st_name, st_info, st_other, st_shndx
        bind, shndx = (info_word >> 36) & 0xF, (info_word >> 48) & 0xFFFF
        value = self._read(entry + 8)
        if shndx == SHN["SHN_UNDEF"]:
            if bind == STB_WEAK:
                return 0
            raise LoaderError(f"{self.path}: relocation against undefined symbol #{index}; "
                              f"a kernel must not need a dynamic linker")
        return value if shndx == SHN["SHN_ABS"] else value + self.elf.slide

    def _locate(self, link_address: int, need: int) -> int:
        offset = link_address - self.elf.link_base
        if not 0 <= offset <= self.elf.span - need:
            raise LoaderError(f"{self.path}: relocation data at {link_address:#x} is outside "
                              f"the loaded image; the dynamic section is corrupt")
        if offset + need > len(self.image):   # inside .bss: grow the image to cover it
            self.image.extend(bytes(offset + need - len(self.image)))
        return offset

    def _read(self, link_address: int) -> int:
        return _U64.unpack_from(self.image, self._locate(link_address, 8))[0]

    def _write(self, link_address: int, value: int) -> None:
        _U64.pack_into(self.image, self._locate(link_address, 8), value)


def _signed(value: int) -> int:
    return value - ADDRESS_LIMIT if value >= 1 << 63 else value


def relr_offsets(words: list[int]) -> list[int]:
    """The addresses a DT_RELR table relocates: an even word is an address (and the next
    one follows it); an odd word is a bitmap of the 63 words after the current position."""
    out: list[int] = []
    where = 0
    for word in words:
        if word & 1 == 0:
            out.append(word)
            where = word + 8
            continue
        bits = word >> 1
        for bit in range(63):
            if bits >> bit & 1:
                out.append(where + bit * 8)
        where += 63 * 8
    return out
