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
  3   HHDM covers only USABLE, BOOTLOADER_RECLAIMABLE, EXECUTABLE_AND_MODULES, FRAMEBUFFER;
      the RSDP response holds a physical address (an HHDM one before 3).
  4+  as 3 plus RESERVED_MAPPED, ACPI_RECLAIMABLE, ACPI_NVS (5 and 6 change nothing here).
The tag: a supported revision N gets 0 in word [2]; an unsupported one is left there and the
kernel boots with `max_base_revision`. A loader whose maximum is 3 or more always writes the
revision in effect into word [1].

Every response, string, array, the GDT, the page tables and the stack live in one carve of
BOOTLOADER_RECLAIMABLE memory, above a RESERVED guard page (BootInfo.stack_guard); the kernel image, the kernel file copy and modules are
EXECUTABLE_AND_MODULES. All pointers handed to the kernel are HHDM virtual addresses.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from elftools.elf.constants import P_FLAGS

from emu.arch.paging import PageTableBuilder
from emu.boot.elf import KernelElf, build_image, page_up, parse_kernel, write_image
from emu.boot.limine import (GDT, GDT_LIMIT, HHDM_OFFSET, MAX_MEMMAP_ENTRIES, MIN_STACK, REQUEST_REVISION,
                             NEWEST_KNOWN_REVISION, REQUEST_FIELDS, REQUEST_RESPONSE)
from emu.boot.requests import FoundRequests, Request, effective_revision, find_requests
from emu.boot.responses import Blob, Ptr, align_up, build_responses
from emu.errors import ConfigError, LoaderError
from emu.inputs import read_input
from emu.hw.memmap import MemoryMap, MemoryType, Region
from emu.hw.memory import PhysicalMemory
from emu.x86 import LARGE_PAGE_SIZE, PAGE_SIZE, PTE_NO_EXECUTE, PTE_WRITABLE

if TYPE_CHECKING:
    from emu.hw.acpi import AcpiTables


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


FRAMEBUFFER_PREFERRED = 0xFD00_0000
_4G = 1 << 32


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
    # The platform's ACPI tables, built for a physical base: (base, rsdp revision) -> tables.
    # None: a machine without ACPI (the RSDP request stays unanswered).
    acpi: Callable[[int, int], AcpiTables] | None = None
    acpi_rsdp_revision: int = 2


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
    stack_guard: int                # physical page below the boot stack (RESERVED)
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
    acpi: "AcpiTables | None"        # where the ACPI tables went (None: no ACPI)
    executable_segments: tuple[tuple[int, int], ...]   # virtual [start, end) of PF_X segments


def _page_down(value: int) -> int:
    return value & ~(PAGE_SIZE - 1)


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
    ram = memmap.total(MemoryType.USABLE)          # nothing larger can be loaded
    data = read_input(kernel, "kernel", ram)
    modules = tuple((Path(path), cmdline, read_input(Path(path), "module", ram))
                    for path, cmdline in config.modules)
    elf = parse_kernel(kernel, data)

    phys_base, memmap = _carve(memmap, elf.span, MemoryType.EXECUTABLE_AND_MODULES,
                               elf.align, "the kernel image")
    image = build_image(kernel, data, elf)
    found = find_requests(kernel, elf, image)
    write_image(memory, phys_base, image, elf.span)
    revision = effective_revision(found.requested_revision, config.max_base_revision)
    if revision < 3:
        memmap = _retype(memmap, 0, PAGE_SIZE, MemoryType.USABLE, MemoryType.RESERVED)

    session = Session(kernel, memory, config, elf, phys_base, found, revision, data, modules)
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
        stack_guard=session.stack_guard,
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
        acpi=session.acpi,
        executable_segments=tuple((s.vaddr + elf.slide, s.vaddr + elf.slide + s.memsz)
                                  for s in elf.segments if s.flags & P_FLAGS.PF_X),
    )


def _check_config(config: BootConfig) -> None:
    if not 0 <= config.max_base_revision <= NEWEST_KNOWN_REVISION:
        raise ConfigError(f"max_base_revision {config.max_base_revision} is not a Limine base "
                          f"revision emu knows; use 0..{NEWEST_KNOWN_REVISION}")
    if config.acpi_rsdp_revision not in (0, 2):
        raise ConfigError(f"ACPI RSDP revision {config.acpi_rsdp_revision} does not exist; "
                          f"use 0 (ACPI 1.0, RSDT only) or 2 (ACPI 2.0+, with an XSDT)")
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


# --- Page tables --------------------------------------------------------------------------

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
            span = (_page_down(region.base), page_up(region.end))
            (framebuffer if region.type == MemoryType.FRAMEBUFFER else ordinary).append(span)
    framebuffer = _merge(framebuffer)
    return _subtract(_merge(ordinary), framebuffer), framebuffer


def _plan_page_tables(elf: KernelElf, phys_base: int, memmap: MemoryMap,
                      revision: int) -> PageTableBuilder:
    tables = PageTableBuilder(overlap=_tables_overlap)
    ordinary, framebuffer = hhdm_spans(memmap, revision)
    data_flags = PTE_WRITABLE | PTE_NO_EXECUTE
    for start, end in ordinary:
        tables.map(HHDM_OFFSET + start, start, end - start, data_flags)
    for start, end in framebuffer:
        tables.map(HHDM_OFFSET + start, start, end - start, data_flags, write_combining=True)
    if revision == 0:   # identity map from 0x1000: page 0 stays unmapped
        for start, end in _subtract(ordinary, [(0, PAGE_SIZE)]):
            tables.map(start, start, end - start, data_flags)
        for start, end in _subtract(framebuffer, [(0, PAGE_SIZE)]):
            tables.map(start, start, end - start, data_flags, write_combining=True)
    # Kernel: 4 KiB pages; a page shared by two segments gets the union of their rights.
    pages: dict[int, int] = {}
    for seg in elf.segments:
        first = _page_down(seg.vaddr - elf.link_base)
        last = page_up(seg.vaddr + seg.memsz - elf.link_base)
        for offset in range(first, last, PAGE_SIZE):
            pages[offset] = pages.get(offset, 0) | seg.flags
    for offset in sorted(pages):
        rights = pages[offset]
        flags = (PTE_WRITABLE if rights & P_FLAGS.PF_W else 0) | \
            (0 if rights & P_FLAGS.PF_X else PTE_NO_EXECUTE)
        tables.map(elf.virt_base + offset, phys_base + offset, PAGE_SIZE, flags, large=False)
    return tables


def _tables_overlap(problem: str) -> LoaderError:
    return LoaderError(f"boot page tables: {problem} (internal error; the memory map is too "
                       "large for the HHDM?)")


# --- Answering requests -------------------------------------------------------------------

class Session:
    """One boot: decides what each request needs (prepare), then lays out and writes the
    bootloader-reclaimable memory and the response pointers (finish)."""

    def __init__(self, path: Path, memory: PhysicalMemory, config: BootConfig, elf: KernelElf,
                 phys_base: int, found: FoundRequests, revision: int, data: bytes,
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
        self.stack_size = max(MIN_STACK, page_up(config.stack_size))
        self.kernel_file: int | None = None         # physical address of the file copy
        self.module_files: list[int] = []
        self.framebuffer: FramebufferInfo | None = None
        self.acpi: AcpiTables | None = None
        self.stack_pointer = self.cr3 = self.gdt_base = self.stack_guard = 0

    # Reading request fields from the loaded image.
    def _field(self, request: Request, offset: int) -> int:
        if request.offset + offset + 8 > self.elf.span:
            raise LoaderError(f"{self.path}: the {request.name} request at "
                              f"{self.elf.virt_base + request.offset:#x} runs past the end of "
                              f"the image; the kernel is corrupt")
        return self.memory.read_u64(self.phys_base + request.offset + offset)

    def prepare(self, memmap: MemoryMap) -> MemoryMap:
        """Validate requests and make the EXECUTABLE_AND_MODULES and FRAMEBUFFER parts of
        the map. Returns the map before the bootloader-reclaimable carve."""
        if "stack_size" in self.by_name:
            requested = self._field(self.by_name["stack_size"], REQUEST_FIELDS)
            self.stack_size = max(self.stack_size, page_up(requested))
        if "paging_mode" in self.by_name:
            request = self.by_name["paging_mode"]
            minimum = self._field(request, REQUEST_FIELDS + 16) \
                if self._field(request, REQUEST_REVISION) >= 1 else 0
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
        if self.config.acpi is not None:
            memmap = self._place_acpi(memmap)
        return memmap

    def _place_acpi(self, memmap: MemoryMap) -> MemoryMap:
        """The ACPI tables where firmware leaves them: in the map's first ACPI_RECLAIMABLE
        region below 4 GiB that holds them (the RSDT has 32-bit pointers), else in
        ACPI_RECLAIMABLE RAM carved below 4 GiB. Present whether or not the kernel asks."""
        build, revision = self.config.acpi, self.config.acpi_rsdp_revision
        size = len(build(0, revision).blob)     # the layout does not depend on the base
        for region in memmap.regions:
            base = align_up(region.base, PAGE_SIZE)
            if region.type == MemoryType.ACPI_RECLAIMABLE and base + size <= \
                    min(region.end, _4G):
                break
        else:
            try:
                base, memmap = memmap.carve(size, MemoryType.ACPI_RECLAIMABLE, PAGE_SIZE,
                                            highest=_4G)
            except ValueError:
                raise LoaderError(f"no USABLE RAM below 4 GiB for the ACPI tables "
                                  f"({size:#x} bytes); give the machine low memory or turn "
                                  f"the platform off (--no-platform)") from None
        self.acpi = build(base, revision)
        self.memory.write(base, self.acpi.blob)
        return memmap

    def _entry_point(self, request: Request) -> int:
        entry = self._field(request, REQUEST_FIELDS)
        for seg in self.elf.segments:
            start = seg.vaddr + self.elf.slide
            if start <= entry < start + seg.memsz and seg.flags & P_FLAGS.PF_X:
                return entry
        raise LoaderError(f"{self.path}: the entry point request asks for {entry:#x}, which "
                          f"is not in an executable segment of the kernel")

    def _make_framebuffer(self, memmap: MemoryMap) -> MemoryMap:
        width, height = self.config.framebuffer
        pitch = width * 4
        size = page_up(pitch * height)
        base = _framebuffer_base(memmap, self.memory, size)
        self.memory.add(base, size)
        self.framebuffer = FramebufferInfo(base, width, height, pitch, 32)
        return MemoryMap.of(memmap.regions + (Region(base, size, MemoryType.FRAMEBUFFER),))

    def finish(self, memmap: MemoryMap) -> MemoryMap:
        """Carve the bootloader-reclaimable arena, write everything, return the final map."""
        tables = _plan_page_tables(self.elf, self.phys_base, memmap, self.revision)
        blob = Blob()
        gdt = blob.alloc(8 * len(GDT), 16)
        for index, descriptor in enumerate(GDT):
            blob.set(gdt + 8 * index, descriptor)
        responses = build_responses(self, blob)
        # The carve below adds at most two entries (it splits one USABLE region), the
        # guard page one more.
        capacity = len(memmap.regions) + 3
        entries = blob.alloc(24 * capacity)
        entry_pointers = blob.alloc(8 * capacity)

        table_bytes = tables.size()
        size = PAGE_SIZE + self.stack_size + table_bytes + page_up(len(blob.data))
        guard, memmap = _carve(memmap, size, MemoryType.BOOTLOADER_RECLAIMABLE, PAGE_SIZE,
                               "boot data (page tables, stack, responses)")
        # The page below the stack is RESERVED: the machine leaves nothing behind it, so an
        # overflow stops there instead of running into what lies below (often the kernel).
        # The HHDM, planned from the map before this carve, still maps it.
        memmap = _retype(memmap, guard, guard + PAGE_SIZE, MemoryType.BOOTLOADER_RECLAIMABLE,
                         MemoryType.RESERVED)
        self.stack_guard = guard
        arena = guard + PAGE_SIZE
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
            blob.set(entry_pointers + 8 * index, Ptr(at))
        if "memmap" in responses:
            response = responses["memmap"]
            blob.set(response + 8, len(memmap.regions))
            blob.set(response + 16, Ptr(entry_pointers))

        self.memory.write(tables_at, tables.serialize(tables_at))
        self.memory.write(blob_at, blob.linked(HHDM_OFFSET + blob_at))
        self.memory.write_u64(stack_top - 8, 0)     # the return address of a call
        self.stack_pointer = HHDM_OFFSET + stack_top - 8
        self.cr3 = tables_at
        self.gdt_base = HHDM_OFFSET + blob_at + gdt

        for request in self.found.requests:
            if request.name in responses:
                self.memory.write_u64(self.phys_base + request.offset + REQUEST_RESPONSE,
                                      HHDM_OFFSET + blob_at + responses[request.name])
                self.answered.append(request.name)
            else:
                self.ignored.append(request.name)
        return memmap

def _framebuffer_base(memmap: MemoryMap, memory: PhysicalMemory, size: int) -> int:
    """0xfd000000 if nothing is there, else the first 2 MiB-aligned gap above everything."""
    taken = [(r.base, r.end) for r in memmap.regions] + \
        [(base, base + length) for base, length in memory.ranges()]

    def free(base: int) -> bool:
        return all(end <= base or start >= base + size for start, end in taken)

    if free(FRAMEBUFFER_PREFERRED):
        return FRAMEBUFFER_PREFERRED
    base = align_up(max(end for _, end in taken), LARGE_PAGE_SIZE)
    while not free(base):
        base += LARGE_PAGE_SIZE
    return base
