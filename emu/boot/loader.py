"""The Limine boot protocol loader: puts an ELF kernel into guest RAM the way Limine would.

Owns: parsing and validating the kernel ELF, loading it physically contiguous (sliding and
relocating PIE kernels), finding the kernel's requests and answering them, the boot page
tables, the GDT, the boot stack, and the memory map the kernel is told about.
Does not own: the CPU registers (the CPU layer sets CR0/CR3/CR4/EFER/GDTR/segments/RSP/RIP
from the returned BootInfo), RAM for the memory map (the caller backs it), or devices.

Protocol facts come from docs/LIMINE.md and the protocol text. What the base revision the
kernel gets changes here:
  0   no tag. HHDM and an identity map (from 0x1000) cover 0-4 GiB and every map entry;
      page 0 is never USABLE.
  1,2 no identity map; HHDM covers 0-4 GiB plus every entry except RESERVED/BAD_MEMORY;
      page 0 is never USABLE. (Markers are honoured for every revision: for 0 and 1 they
      are hints that a loader may honour; from 2 on they bind.)
  3   HHDM covers only USABLE, BOOTLOADER_RECLAIMABLE, EXECUTABLE_AND_MODULES, FRAMEBUFFER.
  4+  as 3 plus RESERVED_MAPPED, ACPI_RECLAIMABLE, ACPI_NVS (5 and 6 change nothing here).
The tag: a supported revision N gets 0 in word [2]; an unsupported one is left there and the
kernel boots with `max_base_revision`. A loader whose maximum is 3 or more always writes the
revision in effect into word [1].

Every response, string, array, the GDT, the page tables and the stack live in one carve of
BOOTLOADER_RECLAIMABLE memory; the kernel image, the kernel file copy and modules are
EXECUTABLE_AND_MODULES. All pointers handed to the kernel are HHDM virtual addresses.
"""
from __future__ import annotations

import hashlib
import io
import struct
from dataclasses import dataclass
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from emu.errors import ConfigError, LoaderError
from emu.hw.memmap import PAGE_SIZE, MemoryMap, MemoryType, Region
from emu.hw.memory import PhysicalMemory


def _default_version() -> str:
    try:
        from importlib.metadata import PackageNotFoundError, version
        try:
            return version("emu")
        except PackageNotFoundError:
            pass
    except ImportError:  # pragma: no cover - stdlib always has it on 3.10+
        pass
    return "0.1"


HHDM_OFFSET = 0xFFFF_8000_0000_0000
KERNEL_FLOOR = 0xFFFF_FFFF_8000_0000   # the protocol's lowest kernel virtual address
MIN_STACK = 64 * 1024
MAX_REQUESTS = 128
MAX_MEMMAP_ENTRIES = 1024
NEWEST_KNOWN_REVISION = 6
GDT_LIMIT = 0x37
FRAMEBUFFER_PREFERRED = 0xFD00_0000

_2M = 2 << 20
_1G = 1 << 30
_4G = 1 << 32
_ADDRESS_LIMIT = 1 << 64
_U64 = struct.Struct("<Q")


@dataclass(frozen=True, slots=True)
class BootConfig:
    cmdline: str = ""
    modules: tuple[tuple[Path, str], ...] = ()       # (file, its cmdline string)
    boot_time: int = 1_700_000_000                    # date at boot, UNIX seconds
    framebuffer: tuple[int, int] | None = (640, 480)  # width, height (32 bpp RGB); None: none
    stack_size: int = MIN_STACK
    bootloader_name: str = "emu"
    bootloader_version: str = _default_version()
    max_base_revision: int = 4                        # newest base revision we claim


@dataclass(frozen=True, slots=True)
class FramebufferInfo:
    address: int        # physical
    width: int
    height: int
    pitch: int
    bpp: int

    @property
    def size(self) -> int:
        return self.pitch * self.height


@dataclass(frozen=True, slots=True)
class BootInfo:
    entry: int
    stack_pointer: int
    cr3: int
    gdt_base: int                   # HHDM virtual address of the GDT
    gdt_limit: int
    memmap: MemoryMap               # the final map the kernel was told about
    kernel_physical_base: int
    kernel_virtual_base: int
    kernel_slide: int               # added to link addresses (non-zero only for a PIE)
    hhdm_offset: int
    base_revision: int              # revision in effect (0 if no tag)
    requests: tuple[str, ...]       # requests found and answered, in image order
    ignored_requests: tuple[str, ...]   # found but left untouched (unsupported/unknown)
    framebuffer: FramebufferInfo | None
    kernel_sha256: str
    executable_segments: tuple[tuple[int, int], ...]   # virtual [start, end) of PF_X segments


# --- Protocol constants -------------------------------------------------------------------

_COMMON = (0xC7B1DD30DF4C8B88, 0x0A82E883A194F07B)
_BASE_TAG = (0xF9562B2D5C95A6C8, 0x6A7B384944536BDC)
_START_MARKER = (0xF6B8F4B39DE7D1AE, 0xFAB91A6940FCB9CF, 0x785C6ED015D3E316, 0x181E920A7852B9D9)
_END_MARKER = (0xADC0E0531BB10D03, 0x9572709F31764C62)

# Requests we answer, by ID words 3 and 4.
_ANSWERED = {
    (0xF55038D8E2A1202F, 0x279426FCF5F59740): "bootloader_info",
    (0x4B161536E598651E, 0xB390AD4A2F1F303A): "executable_cmdline",
    (0x8C2F75D90BEF28A8, 0x7045A4688EAC00C3): "firmware_type",
    (0x224EF0460A8E8926, 0xE1CB0FC25F46EA3D): "stack_size",
    (0x48DCF1CB8AD2B852, 0x63984E959A98244B): "hhdm",
    (0x9D5827DCD881DD75, 0xA3148604F6FAB11B): "framebuffer",
    (0x95C1A0EDAB0944CB, 0xA4E5CB3842F7488A): "paging_mode",
    (0x95A67B819A1B857E, 0xA0B61B723B6A73E0): "mp",
    (0x67CF3D9D378A806F, 0xE304ACDFC50C3C62): "memmap",
    (0x13D86C035A1CD3E1, 0x2B0CAA89D8F3026A): "entry_point",
    (0xAD97E90E83F1ED67, 0x31EB5D1C5FF23B69): "executable_file",
    (0x3E7E279702BE32AF, 0xCA1C4F3BD1280CEE): "module",
    (0x502746E184C088AA, 0xFBC5EC83E6327893): "date_at_boot",
    (0x71BA76863CC55F63, 0xB2644A48C516A487): "executable_address",
}
# Known requests we leave unanswered (named only so reports read well).
_KNOWN_UNSUPPORTED = {
    (0xC5E77B6B397E7B43, 0x27637845ACCDCF3C): "rsdp",
    (0x9E9046F11E095391, 0xAA4A520FEFBDE5EE): "smbios",
    (0x5CEBA5163EAAF6D6, 0x0A6981610CF65FCC): "efi_system_table",
    (0x7DF62A431D6872D5, 0xA4FCDFB3E57306C8): "efi_memmap",
    (0xB40DDB48FB54BAC7, 0x545081493F81FFB7): "dtb",
    (0x6B50AD9BF36D13AD, 0xDC4C7E88FC759E17): "bootloader_performance",
    (0x8EBAABE51F490179, 0x2AA86A59FFB4AB0F): "x86_64_keep_iommu",
    (0x10F2EE1D87D195E4, 0xF747A2B78F6DDB31): "tsc_frequency",
    (0x3259399FE7C5F126, 0xE01C1C8C5DB9D1A9): "flanterm_fb_init_params",
    (0x65EA80255D5682C5, 0x9117240723F493EB): "entropy",
    (0x98E094FC7E76E979, 0xEE8D8775C54E1D1F): "tpm_event_log",
    (0x1369359F025525F9, 0x2FF2A56178391BB6): "riscv_bsp_hartid",
    (0x0785A0AEA5D0750F, 0x1C1936FEE0D6CF6E): "terminal",
}

# Page-table entry bits.
_P, _RW, _PWT, _PS = 1 << 0, 1 << 1, 1 << 3, 1 << 7
_PAT_4K, _PAT_LARGE = 1 << 7, 1 << 12
_NX = 1 << 63
_WC = "wc"      # framebuffer caching: PAT index 5 (PAT=1, PCD=0, PWT=1)

# ELF constants.
_PT_LOAD, _PT_DYNAMIC = 1, 2
_PF_X, _PF_W = 1, 2
_DT = {"NULL": 0, "RELA": 7, "RELASZ": 8, "RELAENT": 9, "SYMTAB": 6, "SYMENT": 11,
       "REL": 17, "RELSZ": 18, "RELENT": 19, "PLTREL": 20, "JMPREL": 23, "PLTRELSZ": 2,
       "RELR": 36, "RELRSZ": 35, "RELRENT": 37}
_R_NONE, _R_64, _R_GLOB_DAT, _R_JUMP_SLOT, _R_RELATIVE = 0, 1, 6, 7, 8
_SHN_UNDEF, _SHN_ABS = 0, 0xFFF1
_STB_WEAK = 2

# The GDT the protocol describes, accessed bits set so loading a selector writes nothing.
_GDT = (
    0x0000000000000000,   # null
    0x00009B000000FFFF,   # 0x08 16-bit code, base 0, limit 0xffff
    0x000093000000FFFF,   # 0x10 16-bit data
    0x00CF9B000000FFFF,   # 0x18 32-bit code, base 0, limit 4 GiB
    0x00CF93000000FFFF,   # 0x20 32-bit data
    0x00209B0000000000,   # 0x28 64-bit code
    0x0000930000000000,   # 0x30 64-bit data
)


def _page_down(value: int) -> int:
    return value & ~(PAGE_SIZE - 1)


def _page_up(value: int) -> int:
    return -(-value // PAGE_SIZE) * PAGE_SIZE


def _align_up(value: int, align: int) -> int:
    return -(-value // align) * align


# --- Entry point --------------------------------------------------------------------------

def boot(kernel: Path, memory: PhysicalMemory, memmap: MemoryMap,
         config: BootConfig) -> BootInfo:
    """Load `kernel` into `memory` and answer its Limine requests.

    `memory` must already back every region of `memmap`; the framebuffer, if any, gets
    new RAM through `memory.add`. Raises ConfigError for bad user input (missing files, bad
    config values) and LoaderError for a kernel that cannot boot. The files, the ELF and the
    request list are checked before guest RAM is written; a boot that fails later may leave
    guest RAM half written (the caller discards the machine).
    """
    kernel = Path(kernel)
    _check_config(config)
    data = _read_file(kernel, "kernel")
    modules = tuple((Path(path), cmdline, _read_file(Path(path), "module"))
                    for path, cmdline in config.modules)
    elf = _parse_elf(kernel, data)

    phys_base, memmap = _carve(memmap, elf.span, MemoryType.EXECUTABLE_AND_MODULES,
                               elf.align, "the kernel image")
    image = _build_image(kernel, data, elf)
    found = _find_requests(kernel, elf, image)
    _write_image(memory, phys_base, image, elf.span)
    revision = _effective_revision(found.requested_revision, config.max_base_revision)
    if revision < 3:
        memmap = _retype(memmap, 0, PAGE_SIZE, MemoryType.USABLE, MemoryType.RESERVED)

    session = _Session(kernel, memory, config, elf, phys_base, found, revision, data, modules)
    memmap = session.prepare(memmap)
    memmap = session.finish(memmap)

    if found.tag_offset is not None:
        tag = phys_base + found.tag_offset
        if found.requested_revision <= config.max_base_revision:
            memory.write_u64(tag + 16, 0)
        if config.max_base_revision >= 3:
            memory.write_u64(tag + 8, revision)

    return BootInfo(
        entry=session.entry,
        stack_pointer=session.stack_pointer,
        cr3=session.cr3,
        gdt_base=session.gdt_base,
        gdt_limit=GDT_LIMIT,
        memmap=memmap,
        kernel_physical_base=phys_base,
        kernel_virtual_base=elf.virt_base,
        kernel_slide=elf.slide,
        hhdm_offset=HHDM_OFFSET,
        base_revision=revision,
        requests=tuple(session.answered),
        ignored_requests=tuple(session.ignored),
        framebuffer=session.framebuffer,
        kernel_sha256=hashlib.sha256(data).hexdigest(),
        executable_segments=tuple((s.vaddr + elf.slide, s.vaddr + elf.slide + s.memsz)
                                  for s in elf.segments if s.flags & _PF_X),
    )


def _check_config(config: BootConfig) -> None:
    if not 0 <= config.max_base_revision <= NEWEST_KNOWN_REVISION:
        raise ConfigError(f"max_base_revision {config.max_base_revision} is not a Limine base "
                          f"revision emu knows; use 0..{NEWEST_KNOWN_REVISION}")
    if config.stack_size <= 0:
        raise ConfigError(f"stack_size {config.stack_size} must be positive")
    if config.framebuffer is not None:
        width, height = config.framebuffer
        if not (0 < width <= 16384 and 0 < height <= 16384):
            raise ConfigError(f"framebuffer {width}x{height} is not a sensible size; "
                              f"use e.g. 640x480 or none")
    for text, what in [(config.cmdline, "cmdline"), (config.bootloader_name, "bootloader_name"),
                       (config.bootloader_version, "bootloader_version")] + \
            [(cmdline, f"module {path} cmdline") for path, cmdline in config.modules]:
        if "\0" in text:
            raise ConfigError(f"{what} contains a NUL character; C strings cannot hold it")


def _read_file(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{what} file {path} not found; check the path "
                          f"(build the {what} first if it is generated)") from None
    except IsADirectoryError:
        raise ConfigError(f"{what} file {path} is a directory; give the file itself") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {what} file {path}: {exc.strerror}") from None


def _carve(memmap: MemoryMap, size: int, kind: MemoryType, align: int,
           what: str) -> tuple[int, MemoryMap]:
    try:
        return memmap.carve(max(size, 1), kind, align=align)
    except ValueError:
        raise LoaderError(f"no USABLE RAM left for {what} ({size:#x} bytes, {align:#x} "
                          f"aligned); give the machine more memory") from None


def _retype(memmap: MemoryMap, start: int, end: int, old: MemoryType,
            new: MemoryType) -> MemoryMap:
    """The map with the `old`-typed parts of [start, end) turned into `new`."""
    out: list[Region] = []
    for region in memmap.regions:
        if region.type != old or region.end <= start or region.base >= end:
            out.append(region)
            continue
        cut_lo, cut_hi = max(region.base, start), min(region.end, end)
        out.append(Region(region.base, cut_lo - region.base, old))
        out.append(Region(cut_lo, cut_hi - cut_lo, new))
        out.append(Region(cut_hi, region.end - cut_hi, old))
    return MemoryMap.of(r for r in out if r.length).merged()


# --- ELF ----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class _Segment:
    vaddr: int      # link-time virtual address
    memsz: int
    filesz: int
    offset: int
    flags: int


@dataclass(frozen=True, slots=True)
class _Elf:
    is_pie: bool
    entry: int                          # link-time
    segments: tuple[_Segment, ...]      # PT_LOAD, sorted by vaddr
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


def _parse_elf(path: Path, data: bytes) -> _Elf:
    if data[:4] != b"\x7fELF":
        raise LoaderError(f"{path} is not an ELF file; give the linked kernel (.elf), "
                          f"not a flat binary or an image")
    if data[4:5] != b"\x02":
        raise LoaderError(f"{path} is a 32-bit ELF; build the kernel for x86-64 "
                          f"(-target x86_64-freestanding-none)")
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
            reqs_section) -> _Elf:
    segments, dynamic_ph, align = [], None, PAGE_SIZE
    for ph in phdrs:
        if ph.p_type == "PT_DYNAMIC" or ph.p_type == _PT_DYNAMIC:
            dynamic_ph = ph
        if ph.p_type not in ("PT_LOAD", _PT_LOAD) or ph.p_memsz == 0:
            continue
        if ph.p_filesz > ph.p_memsz or ph.p_offset + ph.p_filesz > len(data):
            raise LoaderError(f"{path}: a PT_LOAD segment at {ph.p_vaddr:#x} has more file "
                              f"data than memory or runs past the end of the file; the file "
                              f"is truncated or corrupt, rebuild it")
        if ph.p_align > 1 and ph.p_align & (ph.p_align - 1) == 0:
            align = max(align, min(ph.p_align, _2M))
        segments.append(_Segment(ph.p_vaddr, ph.p_memsz, ph.p_filesz, ph.p_offset,
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
    link_end = _page_up(max(s.vaddr + s.memsz for s in segments))
    if is_pie:
        slide = 0 if link_base >= KERNEL_FLOOR else KERNEL_FLOOR - link_base
    else:
        slide = 0
        if link_base < KERNEL_FLOOR:
            raise LoaderError(f"{path} is linked at {segments[0].vaddr:#x}, below "
                              f"{KERNEL_FLOOR:#x}; Limine kernels live in the top 2 GiB: link "
                              f"at . = {KERNEL_FLOOR:#x} with -mcmodel=kernel, or build a PIE")
    if link_end + slide > _ADDRESS_LIMIT:
        raise LoaderError(f"{path}: the kernel image ends past the top of the address space; "
                          f"fix the link address")
    inside = [s for s in segments if s.vaddr <= entry < s.vaddr + s.memsz]
    if not inside:
        raise LoaderError(f"{path}: entry point {entry + slide:#x} is outside every PT_LOAD "
                          f"segment; check the entry symbol (zig cc overrides the linker "
                          f"script's ENTRY() with _start: pass -Wl,-e,<symbol>)")
    if not inside[0].flags & _PF_X:
        raise LoaderError(f"{path}: entry point {entry + slide:#x} is in a segment without "
                          f"PF_X; put the entry code in .text")
    dynamic = _dynamic_entries(path, data, dynamic_ph) if is_pie else ()
    return _Elf(is_pie, entry, tuple(segments), dynamic, reqs_section, align, link_base,
                link_end - link_base, slide)


def _dynamic_entries(path: Path, data: bytes, ph) -> tuple[tuple[int, int], ...]:
    if ph is None or ph.p_filesz == 0:
        return ()
    if ph.p_offset + ph.p_filesz > len(data):
        raise LoaderError(f"{path}: PT_DYNAMIC runs past the end of the file; rebuild it")
    out = []
    for tag, value in struct.iter_unpack("<qQ", data[ph.p_offset:ph.p_offset + ph.p_filesz
                                                    - ph.p_filesz % 16]):
        if tag == _DT["NULL"]:
            break
        out.append((tag, value))
    return tuple(out)


def _build_image(path: Path, data: bytes, elf: _Elf) -> bytearray:
    """The kernel image up to the end of its file data, relocated for its slide."""
    image = bytearray(elf.file_end)
    for seg in elf.segments:
        at = seg.vaddr - elf.link_base
        image[at:at + seg.filesz] = data[seg.offset:seg.offset + seg.filesz]
    if elf.is_pie:
        _Relocator(path, elf, image).apply()
    return image


def _write_image(memory: PhysicalMemory, base: int, image: bytearray, span: int) -> None:
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

    def __init__(self, path: Path, elf: _Elf, image: bytearray) -> None:
        self.path = path
        self.elf = elf
        self.image = image
        self.tags: dict[int, int] = {}
        for tag, value in elf.dynamic:
            self.tags.setdefault(tag, value)

    def apply(self) -> None:
        tags = self.tags
        if _DT["RELA"] in tags:
            self._table(tags[_DT["RELA"]], tags.get(_DT["RELASZ"], 0),
                        tags.get(_DT["RELAENT"], 24), explicit=True)
        if _DT["REL"] in tags:
            self._table(tags[_DT["REL"]], tags.get(_DT["RELSZ"], 0),
                        tags.get(_DT["RELENT"], 16), explicit=False)
        if _DT["JMPREL"] in tags:
            explicit = tags.get(_DT["PLTREL"], _DT["RELA"]) == _DT["RELA"]
            self._table(tags[_DT["JMPREL"]], tags.get(_DT["PLTRELSZ"], 0),
                        24 if explicit else 16, explicit=explicit)
        if _DT["RELR"] in tags:
            size = tags.get(_DT["RELRSZ"], 0)
            words = [self._read(tags[_DT["RELR"]] + i) for i in range(0, size - size % 8, 8)]
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
        if kind == _R_NONE:
            return
        if addend is None:      # REL: the addend is the word in place
            addend = _signed(self._read(offset))
        if kind == _R_RELATIVE:
            value = self.elf.slide + addend
        elif kind == _R_64:
            value = self._symbol(sym) + addend
        elif kind in (_R_GLOB_DAT, _R_JUMP_SLOT):
            value = self._symbol(sym)
        else:
            raise LoaderError(f"{self.path}: relocation type {kind} at {offset:#x} is not "
                              f"supported (only RELATIVE, 64, GLOB_DAT, JUMP_SLOT, RELR); "
                              f"link with -static-pie or avoid TLS/IFUNC in the kernel")
        self._write(offset, value % _ADDRESS_LIMIT)

    def _symbol(self, index: int) -> int:
        table = self.tags.get(_DT["SYMTAB"])
        if table is None:
            raise LoaderError(f"{self.path}: symbol relocation without DT_SYMTAB; the "
                              f"dynamic section is corrupt")
        entry = table + index * self.tags.get(_DT["SYMENT"], 24)
        info_word = self._read(entry)             # st_name, st_info, st_other, st_shndx
        bind, shndx = (info_word >> 36) & 0xF, (info_word >> 48) & 0xFFFF
        value = self._read(entry + 8)
        if shndx == _SHN_UNDEF:
            if bind == _STB_WEAK:
                return 0
            raise LoaderError(f"{self.path}: relocation against undefined symbol #{index}; "
                              f"a kernel must not need a dynamic linker")
        return value if shndx == _SHN_ABS else value + self.elf.slide

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
    return value - _ADDRESS_LIMIT if value >= 1 << 63 else value


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


# --- Requests -----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class _Request:
    offset: int         # in the image
    key: tuple[int, int]

    @property
    def name(self) -> str:
        if self.key in _ANSWERED:
            return _ANSWERED[self.key]
        if self.key in _KNOWN_UNSUPPORTED:
            return _KNOWN_UNSUPPORTED[self.key]
        return f"unknown:{self.key[0]:#018x}:{self.key[1]:#018x}"


@dataclass(frozen=True, slots=True)
class _Found:
    requests: tuple[_Request, ...]
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


def _find_requests(path: Path, elf: _Elf, image: bytearray) -> _Found:
    """Scan the image (from its base to the end of the last segment's file data) in 8-byte
    steps for the base revision tag and requests, honouring start/end markers."""
    last = elf.segments[-1]
    end = min(last.vaddr + last.filesz - elf.link_base, len(image))
    blob = bytes(image[:end])
    starts = _aligned_hits(blob, _START_MARKER, end)
    lo = starts[-1] + 32 if starts else 0
    ends = [at for at in _aligned_hits(blob, _END_MARKER, end) if at >= lo]
    hi = ends[0] if ends else end

    tag_offset, requested = None, 0
    for at in _aligned_hits(blob, _BASE_TAG, end):
        if lo <= at and at + 24 <= hi:
            tag_offset = at
            requested = _U64.unpack_from(blob, at + 16)[0]
            break

    if requested == 0 and elf.reqs_section is not None:
        offsets = _listed_requests(path, elf, image)
    else:
        offsets = [at for at in _aligned_hits(blob, _COMMON, end)
                   if lo <= at and at + 32 <= hi]
    requests: list[_Request] = []
    seen: dict[tuple[int, int], int] = {}
    for at in offsets:
        key = tuple(struct.unpack_from("<2Q", image, at + 16))
        if key in seen:
            name = _Request(at, key).name
            raise LoaderError(f"{path} has two {name} requests (at "
                              f"{elf.virt_base + seen[key]:#x} and {elf.virt_base + at:#x}); "
                              f"the protocol allows one of each, remove the duplicate")
        seen[key] = at
        requests.append(_Request(at, key))
    if len(requests) > MAX_REQUESTS:
        raise LoaderError(f"{path} has {len(requests)} Limine requests; the protocol allows "
                          f"at most {MAX_REQUESTS}")
    return _Found(tuple(requests), tag_offset, requested)


def _listed_requests(path: Path, elf: _Elf, image: bytearray) -> list[int]:
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
                struct.unpack_from("<2Q", image, target) != _COMMON:
            raise LoaderError(f"{path}: .limine_reqs points at {pointer:#x}, which is not a "
                              f"request; fix the section or drop it and use markers")
        offsets.append(target)
        at += 8
    return offsets


def _effective_revision(requested: int, maximum: int) -> int:
    return requested if requested <= maximum else maximum


# --- Guest data: responses, strings, arrays -----------------------------------------------

@dataclass(frozen=True, slots=True)
class _Ptr:
    """A pointer to a blob offset, resolved when the blob's address is known."""
    target: int


class _Blob:
    """Bytes laid out before their address is known; pointers are fixed up at link time."""

    def __init__(self) -> None:
        self.data = bytearray()
        self._pointers: list[int] = []

    def alloc(self, size: int, align: int = 8) -> int:
        offset = _align_up(len(self.data), align)
        self.data.extend(bytes(offset + size - len(self.data)))
        return offset

    def string(self, text: str) -> int:
        raw = text.encode() + b"\0"
        offset = self.alloc(len(raw), 1)
        self.data[offset:offset + len(raw)] = raw
        return offset

    def set(self, offset: int, value: int | _Ptr) -> None:
        if isinstance(value, _Ptr):
            self._pointers.append(offset)
            value = value.target
        _U64.pack_into(self.data, offset, value % _ADDRESS_LIMIT)

    def struct(self, *fields: int | _Ptr, size: int = 0, align: int = 8) -> int:
        offset = self.alloc(max(size, 8 * len(fields)), align)
        for index, value in enumerate(fields):
            self.set(offset + 8 * index, value)
        return offset

    def pointers(self, targets: list[int]) -> int:
        return self.struct(*[_Ptr(t) for t in targets], size=8 * max(len(targets), 1))

    def linked(self, base: int) -> bytes:
        out = bytearray(self.data)
        for offset in self._pointers:
            _U64.pack_into(out, offset, _U64.unpack_from(out, offset)[0] + base)
        return bytes(out)


# --- Page tables --------------------------------------------------------------------------

class _PageTables:
    """4-level page tables built in Python, placed in guest RAM later. Tables are numbered;
    table 0 is the PML4."""

    def __init__(self) -> None:
        self.tables: list[list[int]] = [[0] * 512]
        self.children: dict[tuple[int, int], int] = {}

    def map(self, virt: int, phys: int, size: int, flags: int, *, large: bool = True,
            caching: str = "") -> None:
        """Map [virt, virt+size) to phys with leaf `flags` (P added), using 1 GiB and 2 MiB
        pages where both sides are aligned and `large` allows, 4 KiB pages elsewhere."""
        end = virt + size
        while virt < end:
            for page, level in ((_1G, 1), (_2M, 2), (PAGE_SIZE, 3)):
                if page == PAGE_SIZE or (large and virt % page == 0 and phys % page == 0
                                         and end - virt >= page):
                    break
            table = self._table_for(virt, level)
            index = (virt >> (39 - 9 * level)) & 511
            if self.tables[table][index] or (table, index) in self.children:
                raise LoaderError(f"boot page tables: {virt:#x} mapped twice (internal error; "
                                  f"the memory map is too large for the HHDM?)")
            leaf = phys | flags | _P
            if level < 3:
                leaf |= _PS
            if caching == _WC:
                leaf |= _PWT | (_PAT_4K if level == 3 else _PAT_LARGE)
            self.tables[table][index] = leaf
            virt += page
            phys += page

    def _table_for(self, virt: int, level: int) -> int:
        table = 0
        for depth in range(level):
            index = (virt >> (39 - 9 * depth)) & 511
            if self.tables[table][index]:
                raise LoaderError(f"boot page tables: {virt:#x} lies under a large page "
                                  f"already mapped (internal error)")
            child = self.children.get((table, index))
            if child is None:
                child = len(self.tables)
                self.tables.append([0] * 512)
                self.children[(table, index)] = child
            table = child
        return table

    def serialize(self, base: int) -> bytes:
        out = bytearray()
        for number, entries in enumerate(self.tables):
            row = list(entries)
            for index in range(512):
                child = self.children.get((number, index))
                if child is not None:
                    row[index] = (base + child * PAGE_SIZE) | _P | _RW
            out += struct.pack("<512Q", *row)
        return bytes(out)


def _covered(kind: MemoryType, revision: int) -> bool:
    """Is a memory map entry of this type in the HHDM (beyond any unconditional 4 GiB)?"""
    if revision == 0:
        return True
    if revision <= 2:
        return kind not in (MemoryType.RESERVED, MemoryType.BAD_MEMORY)
    base = {MemoryType.USABLE, MemoryType.BOOTLOADER_RECLAIMABLE,
            MemoryType.EXECUTABLE_AND_MODULES, MemoryType.FRAMEBUFFER}
    if revision >= 4:
        base |= {MemoryType.RESERVED_MAPPED, MemoryType.ACPI_RECLAIMABLE,
                 MemoryType.ACPI_NVS}
    return kind in base


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[list[int]] = []
    for start, end in sorted(spans):
        if out and start <= out[-1][1]:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([start, end])
    return [(start, end) for start, end in out]


def _subtract(spans: list[tuple[int, int]], holes: list[tuple[int, int]]):
    out = []
    for start, end in spans:
        pieces = [(start, end)]
        for h_start, h_end in holes:
            pieces = [p for a, b in pieces
                      for p in ((a, min(b, h_start)), (max(a, h_end), b)) if p[0] < p[1]]
        out.extend(pieces)
    return out


def hhdm_spans(memmap: MemoryMap, revision: int) -> tuple[list[tuple[int, int]],
                                                          list[tuple[int, int]]]:
    """Physical page-aligned spans the HHDM covers for this revision: (ordinary, framebuffer).
    Framebuffer spans are kept apart because they are mapped write-combining."""
    ordinary = [(0, _4G)] if revision < 3 else []
    framebuffer = []
    for region in memmap.regions:
        if region.length and _covered(region.type, revision):
            span = (_page_down(region.base), _page_up(region.end))
            (framebuffer if region.type == MemoryType.FRAMEBUFFER else ordinary).append(span)
    framebuffer = _merge(framebuffer)
    return _subtract(_merge(ordinary), framebuffer), framebuffer


def _plan_page_tables(elf: _Elf, phys_base: int, memmap: MemoryMap,
                      revision: int) -> _PageTables:
    tables = _PageTables()
    ordinary, framebuffer = hhdm_spans(memmap, revision)
    data_flags = _RW | _NX
    for start, end in ordinary:
        tables.map(HHDM_OFFSET + start, start, end - start, data_flags)
    for start, end in framebuffer:
        tables.map(HHDM_OFFSET + start, start, end - start, data_flags, caching=_WC)
    if revision == 0:   # identity map from 0x1000: page 0 stays unmapped
        for start, end in _subtract(ordinary, [(0, PAGE_SIZE)]):
            tables.map(start, start, end - start, data_flags)
        for start, end in _subtract(framebuffer, [(0, PAGE_SIZE)]):
            tables.map(start, start, end - start, data_flags, caching=_WC)
    # Kernel: 4 KiB pages; a page shared by two segments gets the union of their rights.
    pages: dict[int, int] = {}
    for seg in elf.segments:
        first = _page_down(seg.vaddr - elf.link_base)
        last = _page_up(seg.vaddr + seg.memsz - elf.link_base)
        for offset in range(first, last, PAGE_SIZE):
            pages[offset] = pages.get(offset, 0) | seg.flags
    for offset in sorted(pages):
        rights = pages[offset]
        flags = (_RW if rights & _PF_W else 0) | (0 if rights & _PF_X else _NX)
        tables.map(elf.virt_base + offset, phys_base + offset, PAGE_SIZE, flags, large=False)
    return tables


# --- Answering requests -------------------------------------------------------------------

class _Session:
    """One boot: decides what each request needs (prepare), then lays out and writes the
    bootloader-reclaimable memory and the response pointers (finish)."""

    def __init__(self, path: Path, memory: PhysicalMemory, config: BootConfig, elf: _Elf,
                 phys_base: int, found: _Found, revision: int, data: bytes,
                 modules) -> None:
        self.path = path
        self.memory = memory
        self.config = config
        self.elf = elf
        self.phys_base = phys_base
        self.found = found
        self.revision = revision
        self.data = data
        self.modules = modules
        self.by_name = {r.name: r for r in found.requests}
        self.answered: list[str] = []
        self.ignored: list[str] = []
        self.entry = elf.entry + elf.slide
        self.stack_size = max(MIN_STACK, _page_up(config.stack_size))
        self.kernel_file: int | None = None         # physical address of the file copy
        self.module_files: list[int] = []
        self.framebuffer: FramebufferInfo | None = None
        self.stack_pointer = self.cr3 = self.gdt_base = 0

    # Reading request fields from the loaded image.
    def _field(self, request: _Request, offset: int) -> int:
        if request.offset + offset + 8 > self.elf.span:
            raise LoaderError(f"{self.path}: the {request.name} request at "
                              f"{self.elf.virt_base + request.offset:#x} runs past the end of "
                              f"the image; the kernel is corrupt")
        return self.memory.read_u64(self.phys_base + request.offset + offset)

    def prepare(self, memmap: MemoryMap) -> MemoryMap:
        """Validate requests and make the EXECUTABLE_AND_MODULES and FRAMEBUFFER parts of
        the map. Returns the map before the bootloader-reclaimable carve."""
        if "stack_size" in self.by_name:
            requested = self._field(self.by_name["stack_size"], 48)
            self.stack_size = max(self.stack_size, _page_up(requested))
        if "paging_mode" in self.by_name:
            request = self.by_name["paging_mode"]
            minimum = self._field(request, 64) if self._field(request, 32) >= 1 else 0
            if minimum > 0:
                raise LoaderError(f"{self.path} requires paging mode >= {minimum} (5-level); "
                                  f"emu provides 4-level paging only, set min_mode to 0")
        if "entry_point" in self.by_name:
            self.entry = self._entry_point(self.by_name["entry_point"])
        if "executable_file" in self.by_name:
            self.kernel_file, memmap = _carve(memmap, len(self.data),
                                              MemoryType.EXECUTABLE_AND_MODULES, PAGE_SIZE,
                                              f"a copy of {self.path.name}")
            self.memory.write(self.kernel_file, self.data)
        for path, _, content in self.modules:
            address, memmap = _carve(memmap, len(content), MemoryType.EXECUTABLE_AND_MODULES,
                                     PAGE_SIZE, f"module {path}")
            self.memory.write(address, content)
            self.module_files.append(address)
        if "framebuffer" in self.by_name and self.config.framebuffer is not None:
            memmap = self._make_framebuffer(memmap)
        return memmap

    def _entry_point(self, request: _Request) -> int:
        entry = self._field(request, 48)
        for seg in self.elf.segments:
            start = seg.vaddr + self.elf.slide
            if start <= entry < start + seg.memsz and seg.flags & _PF_X:
                return entry
        raise LoaderError(f"{self.path}: the entry point request asks for {entry:#x}, which "
                          f"is not in an executable segment of the kernel")

    def _make_framebuffer(self, memmap: MemoryMap) -> MemoryMap:
        width, height = self.config.framebuffer
        pitch = width * 4
        size = _page_up(pitch * height)
        base = _framebuffer_base(memmap, self.memory, size)
        self.memory.add(base, size)
        self.framebuffer = FramebufferInfo(base, width, height, pitch, 32)
        return MemoryMap.of(memmap.regions + (Region(base, size, MemoryType.FRAMEBUFFER),))

    def finish(self, memmap: MemoryMap) -> MemoryMap:
        """Carve the bootloader-reclaimable arena, write everything, return the final map."""
        tables = _plan_page_tables(self.elf, self.phys_base, memmap, self.revision)
        blob = _Blob()
        gdt = blob.alloc(8 * len(_GDT), 16)
        for index, descriptor in enumerate(_GDT):
            blob.set(gdt + 8 * index, descriptor)
        responses = self._responses(blob)
        # The carve below adds at most two entries (it splits one USABLE region).
        capacity = len(memmap.regions) + 2
        entries = blob.alloc(24 * capacity)
        entry_pointers = blob.alloc(8 * capacity)

        table_bytes = PAGE_SIZE * len(tables.tables)
        size = self.stack_size + table_bytes + _page_up(len(blob.data))
        arena, memmap = _carve(memmap, size, MemoryType.BOOTLOADER_RECLAIMABLE, PAGE_SIZE,
                               "boot data (page tables, stack, responses)")
        if len(memmap.regions) > MAX_MEMMAP_ENTRIES:
            raise ConfigError(f"the memory map has {len(memmap.regions)} entries; Limine "
                              f"allows at most {MAX_MEMMAP_ENTRIES}")
        stack_top = arena + self.stack_size
        tables_at = stack_top
        blob_at = tables_at + table_bytes

        for index, region in enumerate(memmap.regions):
            at = entries + 24 * index
            blob.set(at, region.base)
            blob.set(at + 8, region.length)
            blob.set(at + 16, int(region.type))
            blob.set(entry_pointers + 8 * index, _Ptr(at))
        if "memmap" in responses:
            response = responses["memmap"]
            blob.set(response + 8, len(memmap.regions))
            blob.set(response + 16, _Ptr(entry_pointers))

        self.memory.write(tables_at, tables.serialize(tables_at))
        self.memory.write(blob_at, blob.linked(HHDM_OFFSET + blob_at))
        self.memory.write_u64(stack_top - 8, 0)     # the return address of a call
        self.stack_pointer = HHDM_OFFSET + stack_top - 8
        self.cr3 = tables_at
        self.gdt_base = HHDM_OFFSET + blob_at + gdt

        for request in self.found.requests:
            if request.name in responses:
                self.memory.write_u64(self.phys_base + request.offset + 40,
                                      HHDM_OFFSET + blob_at + responses[request.name])
                self.answered.append(request.name)
            else:
                self.ignored.append(request.name)
        return memmap

    def _responses(self, blob: _Blob) -> dict[str, int]:
        """Build a response for every request we can answer; returns name -> blob offset.
        The memory map response gets its count and array pointer in finish()."""
        config, out = self.config, {}
        cmdline = blob.string(config.cmdline)
        names = self.by_name

        def hhdm(paddr: int) -> int:
            return HHDM_OFFSET + paddr

        if "bootloader_info" in names:
            out["bootloader_info"] = blob.struct(
                0, _Ptr(blob.string(config.bootloader_name)),
                _Ptr(blob.string(config.bootloader_version)))
        if "executable_cmdline" in names:
            out["executable_cmdline"] = blob.struct(0, _Ptr(cmdline))
        if "firmware_type" in names:
            out["firmware_type"] = blob.struct(0, 0)        # x86 BIOS
        if "stack_size" in names:
            out["stack_size"] = blob.struct(0)
        if "hhdm" in names:
            out["hhdm"] = blob.struct(0, HHDM_OFFSET)
        if "framebuffer" in names and self.framebuffer is not None:
            out["framebuffer"] = self._framebuffer_response(blob)
        if "paging_mode" in names:
            out["paging_mode"] = blob.struct(0, 0)          # 4-level
        if "mp" in names:   # one CPU, the BSP, LAPIC ID 0; x2APIC not enabled
            cpu = blob.struct(0, 0, 0, 0)   # processor_id/lapic_id, reserved, goto, extra
            out["mp"] = blob.struct(0, 0, 1, _Ptr(blob.pointers([cpu])))
        if "memmap" in names:
            out["memmap"] = blob.struct(0, 0, 0)
        if "entry_point" in names:
            out["entry_point"] = blob.struct(0)
        if "executable_file" in names:
            file = self._file(blob, hhdm(self.kernel_file), len(self.data), "/boot/kernel",
                              cmdline)
            out["executable_file"] = blob.struct(0, _Ptr(file))
        if "module" in names and self.modules:
            files = [self._file(blob, hhdm(address), len(content), f"/boot/{path.name}",
                                blob.string(string))
                     for address, (path, string, content) in zip(self.module_files,
                                                                 self.modules)]
            out["module"] = blob.struct(0, len(files), _Ptr(blob.pointers(files)))
        if "date_at_boot" in names:
            out["date_at_boot"] = blob.struct(0, config.boot_time)
        if "executable_address" in names:
            out["executable_address"] = blob.struct(0, self.phys_base, self.elf.virt_base)
        return out

    def _framebuffer_response(self, blob: _Blob) -> int:
        fb = self.framebuffer
        # bpp u16, memory_model 1 (RGB), red 8@16, green 8@8, blue 8@0.
        format_word = 32 | 1 << 16 | 8 << 24 | 16 << 32 | 8 << 40 | 8 << 48 | 8 << 56
        no_modes = blob.alloc(8)
        info = blob.struct(HHDM_OFFSET + fb.address, fb.width, fb.height, fb.pitch,
                           format_word, 0, 0, 0, 0, _Ptr(no_modes))
        return blob.struct(1, 1, _Ptr(blob.pointers([info])))

    @staticmethod
    def _file(blob: _Blob, address: int, size: int, path: str, string: int) -> int:
        """A 112-byte limine_file; media type generic, no partition or UUIDs."""
        return blob.struct(0, address, size, _Ptr(blob.string(path)), _Ptr(string),
                           size=112)


def _framebuffer_base(memmap: MemoryMap, memory: PhysicalMemory, size: int) -> int:
    """0xfd000000 if nothing is there, else the first 2 MiB-aligned gap above everything."""
    taken = [(r.base, r.end) for r in memmap.regions] + \
        [(base, base + length) for base, length in memory.ranges()]

    def free(base: int) -> bool:
        return all(end <= base or start >= base + size for start, end in taken)

    if free(FRAMEBUFFER_PREFERRED):
        return FRAMEBUFFER_PREFERRED
    base = _align_up(max(end for _, end in taken), _2M)
    while not free(base):
        base += _2M
    return base
