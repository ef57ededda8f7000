"""The Limine loader (emu/loader.py) and ELF symbols (emu/symbols.py), against real kernels.

Tiny kernels are built with `zig cc` from C written here (one source, variants selected by
-D flags), loaded into a fresh Unicorn's RAM, and checked by reading guest memory from
Python: the base revision tag, every response, the memory map, the page tables (walked in
Python), and PIE relocations. Two kernels are then run on Unicorn to prove the boot state
is real.
"""
from __future__ import annotations

import hashlib
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile
from unicorn import UC_ARCH_X86, UC_CTL_IO_WRITE, UC_CTL_TLB_FLUSH, UC_MODE_64, Uc
from unicorn.x86_const import (UC_X86_REG_CR0, UC_X86_REG_CR3, UC_X86_REG_CR4, UC_X86_REG_CS,
                               UC_X86_REG_DS, UC_X86_REG_ES, UC_X86_REG_FS, UC_X86_REG_GDTR,
                               UC_X86_REG_GS, UC_X86_REG_RFLAGS, UC_X86_REG_RIP,
                               UC_X86_REG_RSP, UC_X86_REG_SS)

from emu.errors import ConfigError, LoaderError
from emu.boot.elf import relr_offsets
from emu.boot.limine import HHDM_OFFSET
from emu.boot.loader import BootConfig, BootInfo, boot
from emu.hw.memmap import MemoryMap, MemoryType, Region
from emu.hw.memory import PhysicalMemory
from emu.monitor.symbols import Symbols

T = MemoryType
MiB = 1 << 20
GiB = 1 << 30
HIGH = 1 << 32      # regions above 4 GiB, to tell the base revisions apart

# A small machine: low RAM, the BIOS hole, 64 MiB, ACPI tables, and above 4 GiB one region
# of each type whose HHDM coverage differs between revisions.
REGIONS = (
    Region(0, 0x9F000, T.USABLE),
    Region(0xF0000, 0x10000, T.RESERVED),
    Region(0x100000, 63 * MiB, T.USABLE),
    Region(64 * MiB, 0x10000, T.ACPI_RECLAIMABLE),
    Region(HIGH, MiB, T.RESERVED),
    Region(HIGH + 2 * MiB, MiB, T.RESERVED_MAPPED),
    Region(HIGH + 4 * MiB, 2 * MiB, T.USABLE),
    Region(HIGH + 8 * MiB, MiB, T.BAD_MEMORY),
)

# --- Building kernels ---------------------------------------------------------------------

KERNEL_C = r"""
typedef unsigned long long u64;
#define COMMON 0xc7b1dd30df4c8b88ULL, 0x0a82e883a194f07bULL
#define REQ __attribute__((used, section(".limine_requests"), aligned(8))) volatile u64
#define OUTSIDE __attribute__((used, section(".data.outside"), aligned(8))) volatile u64
#define BEFORE __attribute__((used, section(".data.before"), aligned(8))) volatile u64
void alt_entry(void) { for (;;) __asm__ volatile("hlt"); }

/* Before the start marker: must be ignored when markers are present. */
BEFORE entry_req[7] = {COMMON, 0x13d86c035a1cd3e1ULL, 0x2b0caa89d8f3026aULL, 0, 0,
                       (u64)&alt_entry};

#ifdef MARKERS
__attribute__((used, section(".limine_requests_start"), aligned(8)))
volatile u64 start_marker[4] = {0xf6b8f4b39de7d1aeULL, 0xfab91a6940fcb9cfULL,
                                0x785c6ed015d3e316ULL, 0x181e920a7852b9d9ULL};
__attribute__((used, section(".limine_requests_end"), aligned(8)))
volatile u64 end_marker[2] = {0xadc0e0531bb10d03ULL, 0x9572709f31764c62ULL};
#endif
#ifdef BASE_REV
REQ base_revision[3] = {0xf9562b2d5c95a6c8ULL, 0x6a7b384944536bdcULL, BASE_REV};
#endif
REQ bootloader_info_req[6] = {COMMON, 0xf55038d8e2a1202fULL, 0x279426fcf5f59740ULL, 0, 0};
REQ cmdline_req[6] = {COMMON, 0x4b161536e598651eULL, 0xb390ad4a2f1f303aULL, 0, 0};
REQ firmware_req[6] = {COMMON, 0x8c2f75d90bef28a8ULL, 0x7045a4688eac00c3ULL, 0, 0};
REQ stack_req[7] = {COMMON, 0x224ef0460a8e8926ULL, 0xe1cb0fc25f46ea3dULL, 0, 0, 0x20000};
REQ hhdm_req[6] = {COMMON, 0x48dcf1cb8ad2b852ULL, 0x63984e959a98244bULL, 0, 0};
#ifdef DUPLICATE
REQ hhdm_again[6] = {COMMON, 0x48dcf1cb8ad2b852ULL, 0x63984e959a98244bULL, 0, 0};
#endif
REQ framebuffer_req[6] = {COMMON, 0x9d5827dcd881dd75ULL, 0xa3148604f6fab11bULL, 0, 0};
REQ paging_req[9] = {COMMON, 0x95c1a0edab0944cbULL, 0xa4e5cb3842f7488aULL, 1, 0, 0, 0, 0};
REQ mp_req[7] = {COMMON, 0x95a67b819a1b857eULL, 0xa0b61b723b6a73e0ULL, 0, 0, 0};
REQ memmap_req[6] = {COMMON, 0x67cf3d9d378a806fULL, 0xe304acdfc50c3c62ULL, 0, 0};
REQ file_req[6] = {COMMON, 0xad97e90e83f1ed67ULL, 0x31eb5d1c5ff23b69ULL, 0, 0};
REQ module_req[8] = {COMMON, 0x3e7e279702be32afULL, 0xca1c4f3bd1280ceeULL, 1, 0, 0, 0};
REQ address_req[6] = {COMMON, 0x71ba76863cc55f63ULL, 0xb2644a48c516a487ULL, 0, 0};
REQ rsdp_req[6] = {COMMON, 0xc5e77b6b397e7b43ULL, 0x27637845accdcf3cULL, 0, 0};
REQ unknown_req[6] = {COMMON, 0x1122334455667788ULL, 0x99aabbccddeeff00ULL, 0, 0};
/* Past the end marker: must be ignored when markers are present. */
OUTSIDE date_req[6] = {COMMON, 0x502746e184c088aaULL, 0xfbc5ec83e6327893ULL, 0, 0};
#ifdef LIMINE_REQS
/* Base revision 0's deprecated explicit list: only these two count. */
__attribute__((used, section(".limine_reqs"), aligned(8)))
volatile u64 *const request_list[] = {hhdm_req, memmap_req, 0};
#endif

const volatile u64 rodata_word = 0x0123456789abcdefULL;
volatile u64 data_word = 0x1111;
u64 words_seen;
u64 zeroed[8192];       /* 64 KiB of .bss the loader must zero */
u64 checksum;

void _start(void) {
    u64 *hhdm = (u64 *)hhdm_req[5];
    u64 *memmap = (u64 *)memmap_req[5];
    u64 sum = 0;
    if (hhdm && memmap) {
        u64 count = memmap[1];
        u64 **entries = (u64 **)memmap[2];
        sum = hhdm[1];
        for (u64 i = 0; i < count; i++) {
            sum = sum * 31 + entries[i][0] + entries[i][1] * 7 + entries[i][2];
            if (entries[i] != entries[0] + 3 * i)
                sum ^= 1;       /* the entries must be one contiguous array */
        }
    }
    for (u64 i = 0; i < 8192; i++)
        if (zeroed[i])
            sum ^= 2;
    checksum = sum;
    words_seen = rodata_word + data_word;   /* keeps both from the linker's GC */
    for (;;)
        __asm__ volatile("hlt");
}
"""

KERNEL_LD = """
ENTRY(_start)
PHDRS { text PT_LOAD FLAGS(5); rodata PT_LOAD FLAGS(4); data PT_LOAD FLAGS(6); }
SECTIONS {
    . = BASE;
    .text : { *(.text .text.*) } :text
    . = ALIGN(4096);
    .rodata : { *(.rodata .rodata.*) } :rodata
    . = ALIGN(4096);
    .data : {
        KEEP(*(.data.before)) KEEP(*(.limine_requests_start)) KEEP(*(.limine_requests))
        KEEP(*(.limine_requests_end)) KEEP(*(.data.outside)) *(.data .data.*)
    } :data
    .limine_reqs : { KEEP(*(.limine_reqs)) } :data
    .bss : { *(.bss .bss.*) *(COMMON) } :data
    /DISCARD/ : { *(.comment) *(.note .note.*) *(.eh_frame*) }
}
"""

PIE_C = r"""
typedef unsigned long long u64;
#define COMMON 0xc7b1dd30df4c8b88ULL, 0x0a82e883a194f07bULL
#define REQ __attribute__((used, section(".limine_requests"), aligned(8))) volatile u64
REQ base_revision[3] = {0xf9562b2d5c95a6c8ULL, 0x6a7b384944536bdcULL, 3};
REQ hhdm_req[6] = {COMMON, 0x48dcf1cb8ad2b852ULL, 0x63984e959a98244bULL, 0, 0};
REQ address_req[6] = {COMMON, 0x71ba76863cc55f63ULL, 0xb2644a48c516a487ULL, 0, 0};

u64 result;
u64 shared_value = 42;
__attribute__((noinline)) u64 func(void) { return 7; }
static u64 table[4] = {1, 2, 3, 4};
u64 *table_ptrs[2] = {&table[0], &table[3]};        /* R_X86_64_RELATIVE */
u64 (*func_ptr)(void) = func;                       /* R_X86_64_64 + symbol */
u64 *shared_ptr = &shared_value;                    /* R_X86_64_64 + symbol */
__attribute__((noinline)) u64 read_shared(void) { return shared_value; }  /* GLOB_DAT */

void _start(void) {
    u64 *hhdm = (u64 *)hhdm_req[5];
    /* read_shared() through the PLT: R_X86_64_JUMP_SLOT */
    result = hhdm ? hhdm[1] + *table_ptrs[1] + func_ptr() + func() + *shared_ptr
                    + read_shared() : 1;
    for (;;)
        __asm__ volatile("hlt");
}
"""
PIE_RESULT = HHDM_OFFSET + 4 + 7 + 7 + 42 + 42

PIE_LD = """
ENTRY(_start)
PHDRS { text PT_LOAD FLAGS(5); rodata PT_LOAD FLAGS(4); data PT_LOAD FLAGS(6);
        dynamic PT_DYNAMIC FLAGS(6); }
SECTIONS {
    . = 0;
    .text : { *(.text .text.*) *(.plt .plt.*) } :text
    . = ALIGN(4096);
    .rodata : { *(.rodata .rodata.*) } :rodata
    .dynsym : { *(.dynsym) } :rodata
    .dynstr : { *(.dynstr) } :rodata
    .hash : { *(.hash) } :rodata
    .gnu.hash : { *(.gnu.hash) } :rodata
    .rela.dyn : { *(.rela.dyn .rela.*) } :rodata
    . = ALIGN(4096);
    .data : { KEEP(*(.limine_requests)) *(.data .data.*) *(.got .got.*) } :data
    .dynamic : { *(.dynamic) } :data :dynamic
    .bss : { *(.bss .bss.*) *(COMMON) } :data
    /DISCARD/ : { *(.comment) *(.note .note.*) *(.eh_frame*) *(.interp) }
}
"""

# 129 distinct (unknown) requests: one more than the protocol allows.
MANY_C = "typedef unsigned long long u64;\n" + "".join(
    f"__attribute__((used, section(\".limine_requests\"), aligned(8))) volatile u64 r{i}[6] = "
    f"{{0xc7b1dd30df4c8b88ULL, 0x0a82e883a194f07bULL, {0xABC00000 + i:#x}ULL, 0xdefULL, 0, 0}};\n"
    for i in range(129)) + 'void _start(void) { for (;;) __asm__ volatile("hlt"); }\n'

COMMON_FLAGS = ["-ffreestanding", "-nostdlib", "-mno-red-zone", "-O2", "-g",
                "-fno-asynchronous-unwind-tables", "-fno-unwind-tables"]
KERNEL_FLAGS = ["-target", "x86_64-freestanding-none", "-static", "-mcmodel=kernel",
                "-fno-pic"]
# zig only links dynamic objects for an OS target; nothing from Linux is used.
PIE_FLAGS = ["-target", "x86_64-linux-none", "-fPIC", "-shared"]

VARIANTS = {
    "rev0": ["-DMARKERS"],
    "rev1": ["-DMARKERS", "-DBASE_REV=1"],
    "rev2": ["-DMARKERS", "-DBASE_REV=2"],
    "rev3": ["-DMARKERS", "-DBASE_REV=3"],
    "rev4": ["-DMARKERS", "-DBASE_REV=4"],
    "rev99": ["-DMARKERS", "-DBASE_REV=99"],
    "nomarkers": ["-DBASE_REV=3"],
    "duplicate": ["-DMARKERS", "-DBASE_REV=3", "-DDUPLICATE"],
    "reqs_section": ["-DLIMINE_REQS"],
}


def _zig(args: list[str], cwd: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "ziglang", "cc", *args], cwd=cwd,
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise AssertionError(f"zig cc {' '.join(args)} failed:\n{result.stderr}")


@pytest.fixture(scope="session")
def kernels(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("kernels")
    (root / "kernel.c").write_text(KERNEL_C)
    (root / "kernel.ld").write_text(KERNEL_LD.replace("BASE", "0xffffffff80000000"))
    (root / "low.ld").write_text(KERNEL_LD.replace("BASE", "0x200000"))
    (root / "pie.c").write_text(PIE_C)
    (root / "pie.ld").write_text(PIE_LD)
    out = {}
    for name, defines in VARIANTS.items():
        out[name] = root / f"{name}.elf"
        _zig([*KERNEL_FLAGS, *COMMON_FLAGS, *defines, "-Wl,-T,kernel.ld", "kernel.c",
              "-o", out[name].name], root)
    out["low"] = root / "low.elf"
    _zig(["-target", "x86_64-freestanding-none", "-static", "-fno-pic", *COMMON_FLAGS,
          "-DMARKERS", "-Wl,-T,low.ld", "kernel.c", "-o", "low.elf"], root)
    (root / "many.c").write_text(MANY_C)
    out["many"] = root / "many.elf"
    _zig([*KERNEL_FLAGS, *COMMON_FLAGS, "-Wl,-T,kernel.ld", "many.c", "-o", "many.elf"], root)
    out["pie"] = root / "pie.elf"
    _zig([*PIE_FLAGS, *COMMON_FLAGS, "-Wl,-T,pie.ld", "pie.c", "-o", "pie.elf"], root)
    return out


# --- Guest helpers ------------------------------------------------------------------------

def machine(regions=REGIONS, junk: bool = False) -> tuple[Uc, PhysicalMemory, MemoryMap]:
    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    memory = PhysicalMemory(uc)
    memmap = MemoryMap.of(regions)
    for base, length in memmap.backed_ranges():
        memory.add(base, length)
    if junk:    # where the kernel and boot data land, so "zeroed" means the loader did it
        memory.write(0x100000, b"\xAA" * (4 * MiB))
    return uc, memory, memmap


def load(kernel: Path, config: BootConfig = BootConfig(), regions=REGIONS, junk=False):
    uc, memory, memmap = machine(regions, junk)
    return uc, memory, boot(kernel, memory, memmap, config)


def walk(memory: PhysicalMemory, cr3: int, virt: int):
    """(physical, writable, executable) for a virtual address, or None if not mapped."""
    table, writable, executable = cr3 & ~0xFFF, True, True
    for level, shift in enumerate((39, 30, 21, 12)):
        entry = memory.read_u64(table + 8 * ((virt >> shift) & 511))
        if not entry & 1:
            return None
        writable &= bool(entry & 2)
        executable &= not entry >> 63
        frame = entry & 0x000F_FFFF_FFFF_F000
        if level == 3 or (level in (1, 2) and entry & 0x80):
            size = 1 << shift
            base = frame & ~(size - 1) if level < 3 else frame
            return base + (virt & (size - 1)), writable, executable
        table = frame
    raise AssertionError("unreachable")


def read_virt(memory: PhysicalMemory, info: BootInfo, virt: int, size: int = 8) -> bytes:
    out = b""
    while len(out) < size:
        mapping = walk(memory, info.cr3, virt + len(out))
        assert mapping is not None, f"{virt + len(out):#x} is not mapped"
        page_left = 0x1000 - ((virt + len(out)) & 0xFFF)
        chunk = min(page_left, size - len(out))
        out += memory.read(mapping[0], chunk)
    return out


def u64(memory, info, virt: int) -> int:
    return struct.unpack("<Q", read_virt(memory, info, virt))[0]


def c_string(memory, info, virt: int) -> str:
    out = bytearray()
    while True:
        byte = read_virt(memory, info, virt + len(out), 1)
        if byte == b"\0":
            return out.decode()
        out += byte


def symbol(kernel: Path, name: str, slide: int = 0) -> int:
    address = Symbols.from_elf(kernel, slide).address_of(name)
    if address is None:     # data objects are not in Symbols: read the ELF directly
        with kernel.open("rb") as stream:
            sym = ELFFile(stream).get_section_by_name(".symtab").get_symbol_by_name(name)
            address = sym[0]["st_value"] + slide
    return address


def response(memory, info, kernel: Path, request: str, slide: int = 0) -> int:
    return u64(memory, info, symbol(kernel, request, slide) + 40)


def run(uc: Uc, info: BootInfo, count: int = 200_000) -> int:
    """Enter the kernel with the register state the protocol promises; returns RIP at hlt."""
    uc.reg_write(UC_X86_REG_CR4, 0x20)
    uc.msr_write(0xC0000080, 0xD00)             # EFER: LME | LMA | NXE
    uc.reg_write(UC_X86_REG_CR3, info.cr3)
    uc.reg_write(UC_X86_REG_CR0, 0x80010011)
    uc.reg_write(UC_X86_REG_GDTR, (0, info.gdt_base, info.gdt_limit, 0))
    uc.reg_write(UC_X86_REG_CS, 0x28)
    for register in (UC_X86_REG_DS, UC_X86_REG_ES, UC_X86_REG_SS, UC_X86_REG_FS,
                     UC_X86_REG_GS):
        uc.reg_write(register, 0x30)
    uc.reg_write(UC_X86_REG_RSP, info.stack_pointer)
    uc.reg_write(UC_X86_REG_RFLAGS, 2)
    uc.ctl(UC_CTL_TLB_FLUSH, UC_CTL_IO_WRITE)
    uc.emu_start(info.entry, 0, count=count)
    return uc.reg_read(UC_X86_REG_RIP)


# --- Base revision tag and delimiters -----------------------------------------------------

@pytest.mark.parametrize("variant, requested, in_effect", [
    ("rev1", 1, 1), ("rev2", 2, 2), ("rev3", 3, 3), ("rev4", 4, 4), ("rev99", 99, 4)])
def test_base_revision_tag(kernels, variant, requested, in_effect):
    _, memory, info = load(kernels[variant])
    tag = symbol(kernels[variant], "base_revision")
    words = struct.unpack("<3Q", read_virt(memory, info, tag, 24))
    assert words[0] == 0xF9562B2D5C95A6C8
    assert words[1] == in_effect                     # a revision-4 loader always says which
    assert words[2] == (0 if requested <= 4 else requested)   # unsupported: left alone
    assert info.base_revision == in_effect


def test_no_tag_is_revision_0(kernels):
    _, _, info = load(kernels["rev0"])
    assert info.base_revision == 0


def test_older_loader_leaves_word_1_alone(kernels):
    """A loader whose newest revision is 2 cannot honour 3: both words stay as built."""
    _, memory, info = load(kernels["rev3"], BootConfig(max_base_revision=2))
    tag = symbol(kernels["rev3"], "base_revision")
    assert struct.unpack("<3Q", read_virt(memory, info, tag, 24))[1:] == \
        (0x6A7B384944536BDC, 3)
    assert info.base_revision == 2
    assert walk(memory, info.cr3, HHDM_OFFSET + 0xF0000) is not None   # revision-2 HHDM


def test_markers_exclude_outside_requests(kernels):
    kernel = kernels["rev3"]
    _, memory, info = load(kernel)
    assert response(memory, info, kernel, "date_req") == 0
    assert response(memory, info, kernel, "entry_req") == 0
    assert "date_at_boot" not in info.requests + info.ignored_requests
    assert "entry_point" not in info.requests + info.ignored_requests
    assert info.requests == ("bootloader_info", "executable_cmdline", "firmware_type",
                             "stack_size", "hhdm", "framebuffer", "paging_mode", "mp",
                             "memmap", "executable_file", "executable_address")
    assert info.ignored_requests == (
        "module", "rsdp", "unknown:0x1122334455667788:0x99aabbccddeeff00")
    assert response(memory, info, kernel, "rsdp_req") == 0
    assert response(memory, info, kernel, "unknown_req") == 0


def test_without_markers_every_request_counts(kernels):
    kernel = kernels["nomarkers"]
    _, memory, info = load(kernel, BootConfig(boot_time=1_234_567_890))
    date = response(memory, info, kernel, "date_req")
    assert "date_at_boot" in info.requests and "entry_point" in info.requests
    assert response(memory, info, kernel, "entry_req") != 0
    assert info.entry == symbol(kernel, "alt_entry") != symbol(kernel, "_start")
    assert struct.unpack("<Qq", read_virt(memory, info, date, 16)) == (0, 1_234_567_890)


def test_limine_reqs_section_lists_the_requests(kernels):
    kernel = kernels["reqs_section"]
    _, memory, info = load(kernel)
    assert info.base_revision == 0
    assert info.requests == ("hhdm", "memmap") and info.ignored_requests == ()
    assert response(memory, info, kernel, "bootloader_info_req") == 0
    assert response(memory, info, kernel, "hhdm_req") != 0


def test_duplicate_request_is_fatal(kernels):
    with pytest.raises(LoaderError, match="two hhdm requests"):
        load(kernels["duplicate"])


def test_too_many_requests(kernels):
    with pytest.raises(LoaderError, match="129 Limine requests; the protocol allows at most 128"):
        load(kernels["many"])


# --- Responses ----------------------------------------------------------------------------

def test_responses(kernels, tmp_path):
    kernel = kernels["rev3"]
    first, second = tmp_path / "initrd.bin", tmp_path / "font.psf"
    first.write_bytes(bytes(range(256)) * 40 + b"tail")
    second.write_bytes(b"\x01")
    config = BootConfig(cmdline="console=serial quiet", modules=((first, "init args"),
                                                                 (second, "")),
                        bootloader_name="emu-test", bootloader_version="9.9")
    _, memory, info = load(kernel, config)

    def resp(name: str) -> int:
        address = response(memory, info, kernel, name)
        assert address >= HHDM_OFFSET, f"{name}: response must be an HHDM address"
        assert info.memmap.type_at(address - HHDM_OFFSET) == T.BOOTLOADER_RECLAIMABLE
        return address

    info_resp = resp("bootloader_info_req")
    assert c_string(memory, info, u64(memory, info, info_resp + 8)) == "emu-test"
    assert c_string(memory, info, u64(memory, info, info_resp + 16)) == "9.9"
    cmdline = u64(memory, info, resp("cmdline_req") + 8)
    assert c_string(memory, info, cmdline) == "console=serial quiet"
    assert u64(memory, info, resp("firmware_req") + 8) == 0
    assert u64(memory, info, resp("hhdm_req") + 8) == HHDM_OFFSET
    assert u64(memory, info, resp("paging_req") + 8) == 0
    address = resp("address_req")
    assert u64(memory, info, address + 8) == info.kernel_physical_base
    assert u64(memory, info, address + 16) == info.kernel_virtual_base == 0xFFFFFFFF80000000

    mp = resp("mp_req")
    assert u64(memory, info, mp + 16) == 1
    cpu = u64(memory, info, u64(memory, info, mp + 24))
    assert read_virt(memory, info, cpu, 32) == bytes(32)

    # Executable file: the kernel's bytes, shared cmdline string.
    file = u64(memory, info, resp("file_req") + 8)
    size = u64(memory, info, file + 16)
    assert size == kernel.stat().st_size
    assert read_virt(memory, info, u64(memory, info, file + 8), size) == kernel.read_bytes()
    assert c_string(memory, info, u64(memory, info, file + 24)) == "/boot/kernel"
    assert u64(memory, info, file + 32) == cmdline

    # Modules: 4 KiB aligned, byte-equal, in EXECUTABLE_AND_MODULES memory.
    module_resp = resp("module_req")
    assert u64(memory, info, module_resp + 8) == 2
    array = u64(memory, info, module_resp + 16)
    for index, (path, string) in enumerate(config.modules):
        entry = u64(memory, info, array + 8 * index)
        where = u64(memory, info, entry + 8)
        assert where % 0x1000 == 0
        assert info.memmap.type_at(where - HHDM_OFFSET) == T.EXECUTABLE_AND_MODULES
        assert u64(memory, info, entry + 16) == path.stat().st_size
        assert read_virt(memory, info, where, path.stat().st_size) == path.read_bytes()
        assert c_string(memory, info, u64(memory, info, entry + 24)) == f"/boot/{path.name}"
        assert c_string(memory, info, u64(memory, info, entry + 32)) == string
    assert "module" in info.requests


def test_framebuffer(kernels):
    kernel = kernels["rev4"]
    _, memory, info = load(kernel, BootConfig(framebuffer=(800, 600)))
    fb = info.framebuffer
    assert (fb.address, fb.width, fb.height, fb.pitch, fb.bpp) == \
        (0xFD000000, 800, 600, 3200, 32)
    assert info.memmap.type_at(fb.address) == T.FRAMEBUFFER
    assert memory.is_ram(fb.address, fb.size)
    resp = response(memory, info, kernel, "framebuffer_req")
    assert u64(memory, info, resp) == 1 and u64(memory, info, resp + 8) == 1
    record = read_virt(memory, info, u64(memory, info, u64(memory, info, resp + 16)), 80)
    address, width, height, pitch, bpp, model, *masks = struct.unpack_from("<4QHB6B", record)
    assert (address, width, height, pitch, bpp, model) == \
        (HHDM_OFFSET + 0xFD000000, 800, 600, 3200, 32, 1)
    assert masks == [8, 16, 8, 8, 8, 0]
    assert struct.unpack_from("<3Q", record, 48) == (0, 0, 0)   # no EDID, no modes
    # The kernel can draw through the HHDM.
    assert walk(memory, info.cr3, HHDM_OFFSET + 0xFD000000 + 3200 * 599)[1] is True

    _, _, without = load(kernel, BootConfig(framebuffer=None))
    assert without.framebuffer is None and "framebuffer" in without.ignored_requests
    assert T.FRAMEBUFFER not in without.memmap.totals()


def test_memory_map_response(kernels):
    kernel = kernels["rev3"]
    _, memory, info = load(kernel)
    resp = response(memory, info, kernel, "memmap_req")
    count, array = u64(memory, info, resp + 8), u64(memory, info, resp + 16)
    assert count == len(info.memmap.regions)
    pointers = struct.unpack(f"<{count}Q", read_virt(memory, info, array, 8 * count))
    assert pointers == tuple(pointers[0] + 24 * i for i in range(count))   # one array
    entries = [struct.unpack("<3Q", read_virt(memory, info, p, 24)) for p in pointers]
    assert entries == [(r.base, r.length, int(r.type)) for r in info.memmap.regions]
    assert [e[0] for e in entries] == sorted(e[0] for e in entries)
    for left, right in zip(info.memmap.regions, info.memmap.regions[1:]):
        assert left.end <= right.base
        assert not (left.type == right.type and left.end == right.base), "not merged"
    types = {MemoryType(e[2]) for e in entries}
    assert {T.BOOTLOADER_RECLAIMABLE, T.EXECUTABLE_AND_MODULES, T.FRAMEBUFFER} <= types
    assert info.memmap.type_at(info.kernel_physical_base) == T.EXECUTABLE_AND_MODULES
    assert info.memmap.type_at(info.cr3) == T.BOOTLOADER_RECLAIMABLE
    assert info.memmap.type_at(info.stack_pointer - HHDM_OFFSET) == T.BOOTLOADER_RECLAIMABLE
    assert info.memmap.type_at(info.gdt_base - HHDM_OFFSET) == T.BOOTLOADER_RECLAIMABLE
    for region in info.memmap.regions:
        if region.type in (T.USABLE, T.BOOTLOADER_RECLAIMABLE):
            assert region.base % 0x1000 == 0 and region.length % 0x1000 == 0
    assert info.memmap.type_at(0) == T.USABLE       # revision 3 may hand out page 0


def test_page_0_is_not_usable_before_revision_3(kernels):
    for variant in ("rev0", "rev2"):
        _, _, info = load(kernels[variant])
        assert info.memmap.type_at(0) == T.RESERVED
        assert info.memmap.type_at(0x1000) == T.USABLE


def test_stack_gdt_and_entry(kernels):
    kernel = kernels["rev3"]
    _, memory, info = load(kernel, BootConfig(stack_size=4096), junk=True)
    assert info.stack_pointer % 16 == 8
    assert u64(memory, info, info.stack_pointer) == 0
    stack_top = info.stack_pointer + 8 - HHDM_OFFSET
    region = next(r for r in info.memmap.regions if r.base <= stack_top - 1 < r.end)
    assert region.type == T.BOOTLOADER_RECLAIMABLE and stack_top - region.base >= 0x20000
    gdt = struct.unpack("<7Q", read_virt(memory, info, info.gdt_base, 56))
    assert info.gdt_limit == 0x37
    assert gdt[5] & ~(1 << 40) == 0x00209A0000000000        # 64-bit code
    assert gdt[6] & ~(1 << 40) == 0x0000920000000000        # 64-bit data
    assert gdt[0] == 0 and (gdt[1] >> 40) & 0xFF in (0x9A, 0x9B)
    assert info.entry == symbol(kernel, "_start")
    assert info.kernel_sha256 == hashlib.sha256(kernel.read_bytes()).hexdigest()
    assert info.kernel_slide == 0
    text = [s for s in info.executable_segments if s[0] <= info.entry < s[1]]
    assert text and len(info.executable_segments) == 1


def test_bss_zeroed_and_image_loaded(kernels):
    kernel = kernels["rev3"]
    _, memory, info = load(kernel, junk=True)
    zeroed = symbol(kernel, "zeroed")
    assert read_virt(memory, info, zeroed, 8192 * 8) == bytes(8192 * 8)
    assert u64(memory, info, symbol(kernel, "rodata_word")) == 0x0123456789ABCDEF
    assert u64(memory, info, symbol(kernel, "data_word")) == 0x1111


# --- Page tables --------------------------------------------------------------------------

def hhdm(paddr: int) -> int:
    return HHDM_OFFSET + paddr


@pytest.mark.parametrize("variant, expect", [
    #            identity, low RESERVED, hole<4G, ACPI, RES>4G, RES_MAPPED>4G, BAD>4G
    ("rev0", (True, True, True, True, True, True, True)),
    ("rev1", (False, True, True, True, False, True, False)),
    ("rev2", (False, True, True, True, False, True, False)),
    ("rev3", (False, False, False, False, False, False, False)),
    ("rev4", (False, False, False, True, False, True, False)),
])
def test_hhdm_coverage_by_revision(kernels, variant, expect):
    _, memory, info = load(kernels[variant])
    cr3 = info.cr3
    got = (
        walk(memory, cr3, 0x200000) is not None,
        walk(memory, cr3, hhdm(0xF0000)) is not None,
        walk(memory, cr3, hhdm(0x8000_0000)) is not None,
        walk(memory, cr3, hhdm(64 * MiB)) is not None,
        walk(memory, cr3, hhdm(HIGH)) is not None,
        walk(memory, cr3, hhdm(HIGH + 2 * MiB)) is not None,
        walk(memory, cr3, hhdm(HIGH + 8 * MiB)) is not None,
    )
    assert got == expect
    # Always: usable RAM, above 4 GiB too, writable and not executable; page 0 of the
    # identity map never.
    for paddr in (0x1000, 0x100000, 63 * MiB, HIGH + 4 * MiB, HIGH + 6 * MiB - 8):
        assert walk(memory, cr3, hhdm(paddr)) == (paddr, True, False)
    assert walk(memory, cr3, hhdm(HIGH + 6 * MiB)) is None
    assert walk(memory, cr3, 0) is None
    if variant == "rev0":
        assert walk(memory, cr3, 0x1000) == (0x1000, True, False)


def test_hhdm_uses_large_pages(kernels):
    _, memory, info = load(kernels["rev2"])
    pml4 = memory.read_u64(info.cr3 + 8 * 256) & 0x000F_FFFF_FFFF_F000
    first_gib = memory.read_u64(pml4)                   # PDPT entry for 0-1 GiB
    assert first_gib & 0x80, "0-4 GiB should be 1 GiB pages"


def test_kernel_segment_permissions(kernels):
    kernel = kernels["rev3"]
    _, memory, info = load(kernel)
    text = walk(memory, info.cr3, symbol(kernel, "_start"))
    rodata = walk(memory, info.cr3, symbol(kernel, "rodata_word"))
    data = walk(memory, info.cr3, symbol(kernel, "data_word"))
    bss = walk(memory, info.cr3, symbol(kernel, "zeroed") + 8 * 8191)
    assert text[1:] == (False, True)
    assert rodata[1:] == (False, False)
    assert data[1:] == (True, False) and bss[1:] == (True, False)
    # Physically contiguous with the virtual layout kept.
    for name, mapping in (("_start", text), ("rodata_word", rodata), ("data_word", data)):
        assert mapping[0] - info.kernel_physical_base == \
            symbol(kernel, name) - info.kernel_virtual_base


# --- PIE ----------------------------------------------------------------------------------

def test_pie_is_slid_and_relocated(kernels):
    kernel = kernels["pie"]
    with kernel.open("rb") as stream:
        elf = ELFFile(stream)
        kinds = {r["r_info_type"] for s in elf.iter_sections() if s.name.startswith(".rela")
                 for r in s.iter_relocations()}
    assert {1, 6, 7, 8} <= kinds, "the test kernel should need all four relocation types"
    uc, memory, info = load(kernel)
    slide = info.kernel_slide
    assert slide == info.kernel_virtual_base == 0xFFFFFFFF80000000   # linked at 0
    pointers = symbol(kernel, "table_ptrs", slide)
    shared = symbol(kernel, "shared_value", slide)
    assert u64(memory, info, symbol(kernel, "shared_ptr", slide)) == shared
    assert u64(memory, info, symbol(kernel, "func_ptr", slide)) == symbol(kernel, "func", slide)
    assert u64(memory, info, pointers + 8) - u64(memory, info, pointers) == 24
    assert u64(memory, info, pointers) >= slide
    assert info.entry == symbol(kernel, "_start", slide)
    rip = run(uc, info)
    assert u64(memory, info, symbol(kernel, "result", slide)) == PIE_RESULT
    assert Symbols.from_elf(kernel, slide).lookup(rip).startswith("_start+")


def test_relr_decoding():
    bitmap = 1 | 1 << 1 | 1 << 3            # words 0 and 2 after the last address
    words = [0x1000, bitmap, 1 | 1 << 63]   # then word 62 of the next 63-word block
    assert relr_offsets(words) == [0x1000, 0x1008, 0x1018, 0x1008 + 63 * 8 + 62 * 8]


def handmade_relr_pie(path: Path) -> None:
    """A minimal ET_DYN linked at 0 with one RWX segment, relocated only through DT_RELR."""
    image = bytearray(0x2000)
    struct.pack_into("<16sHHIQQQIHHHHHH", image, 0, b"\x7fELF\x02\x01\x01" + bytes(9),
                     3, 62, 1, 0x100, 64, 0, 0, 64, 56, 2, 64, 0, 0)
    struct.pack_into("<IIQQQQQQ", image, 64, 1, 7, 0, 0, 0, 0x2000, 0x2000, 0x1000)
    struct.pack_into("<IIQQQQQQ", image, 120, 2, 6, 0x1000, 0x1000, 0x1000, 0x40, 0x40, 8)
    image[0x100] = 0xF4                                               # hlt
    struct.pack_into("<8Q", image, 0x1000, 36, 0x1100, 35, 16, 37, 8, 0, 0)
    struct.pack_into("<2Q", image, 0x1100, 0x1200, 1 | 1 << 2)       # 0x1200, 0x1210
    struct.pack_into("<3Q", image, 0x1200, 0x1234, 0x5555, 0x40)
    path.write_bytes(bytes(image))


def test_relr_relocations_applied(tmp_path):
    kernel = tmp_path / "relr.elf"
    handmade_relr_pie(kernel)
    uc, memory, info = load(kernel)
    slide = info.kernel_slide
    assert struct.unpack("<3Q", read_virt(memory, info, slide + 0x1200, 24)) == \
        (slide + 0x1234, 0x5555, slide + 0x40)
    assert run(uc, info, count=10) == slide + 0x101      # hlt executed from the RWX page


# --- Errors -------------------------------------------------------------------------------

def test_not_an_elf(tmp_path):
    kernel = tmp_path / "kernel.bin"
    kernel.write_bytes(b"\xEB\xFE" + bytes(100))
    with pytest.raises(LoaderError, match="not an ELF"):
        load(kernel)


def test_missing_files(kernels, tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load(tmp_path / "nope.elf")
    with pytest.raises(ConfigError, match="missing.bin"):
        load(kernels["rev3"], BootConfig(modules=((tmp_path / "missing.bin", ""),)))


def test_low_non_pie_kernel_is_rejected(kernels):
    with pytest.raises(LoaderError, match="below 0xffffffff80000000"):
        load(kernels["low"])


def test_entry_outside_segments(kernels, tmp_path):
    data = bytearray(kernels["rev3"].read_bytes())
    struct.pack_into("<Q", data, 24, 0xFFFFFFFF90000000)     # e_entry
    kernel = tmp_path / "bad-entry.elf"
    kernel.write_bytes(bytes(data))
    with pytest.raises(LoaderError, match="outside every PT_LOAD"):
        load(kernel)


def test_five_level_paging_required_is_refused(kernels, tmp_path):
    data = bytearray(kernels["rev3"].read_bytes())
    at = data.find(struct.pack("<2Q", 0x95C1A0EDAB0944CB, 0xA4E5CB3842F7488A)) - 16
    struct.pack_into("<Q", data, at + 64, 1)                 # min_mode = 5-level
    kernel = tmp_path / "la57.elf"
    kernel.write_bytes(bytes(data))
    with pytest.raises(LoaderError, match="5-level"):
        load(kernel)


def test_not_enough_memory(kernels):
    tiny = (Region(0, 0x9F000, T.USABLE), Region(0x100000, 0x10000, T.USABLE))
    with pytest.raises(LoaderError, match="more memory"):
        load(kernels["rev3"], regions=tiny)


# --- Running the kernel -------------------------------------------------------------------

def expected_checksum(info: BootInfo) -> int:
    total = HHDM_OFFSET
    for region in info.memmap.regions:
        total = (total * 31 + region.base + region.length * 7 + int(region.type)) % (1 << 64)
    return total


@pytest.mark.parametrize("variant", ["rev0", "rev3"])
def test_kernel_runs_on_unicorn(kernels, variant):
    kernel = kernels[variant]
    uc, memory, info = load(kernel, junk=True)
    rip = run(uc, info)
    symbols = Symbols.from_elf(kernel)
    assert symbols.lookup(rip).startswith("_start+")
    checksum = u64(memory, info, symbol(kernel, "checksum"))
    assert checksum == expected_checksum(info) != 0


# --- Symbols ------------------------------------------------------------------------------

def test_symbols(kernels):
    kernel = kernels["rev3"]
    symbols = Symbols.from_elf(kernel)
    start = symbols.address_of("_start")
    assert start is not None and symbols.size_of("_start") > 0x10
    assert symbols.lookup(start) == "_start+0x0"
    assert symbols.lookup(start + 0x12) == "_start+0x12"
    assert not symbols.lookup(start + symbols.size_of("_start")).startswith("_start+")
    assert symbols.lookup(0x1234) == "0x1234"
    assert symbols.address_of("zeroed") is None          # data is not a function
    assert symbols.address_of("no_such_function") is None
    line = symbols.line_of(start + 4)
    assert line is not None and line.startswith("kernel.c:")
    assert symbols.line_of(0x1234) is None
    slid = Symbols.from_elf(kernel, slide=0x1000)
    assert slid.address_of("_start") == start + 0x1000
    assert slid.lookup(start + 0x1000 + 3) == "_start+0x3"
    assert slid.line_of(start + 0x1000 + 4) == line


# --- ACPI and the RSDP request ----------------------------------------------------------

def pc_acpi(base: int, revision: int):
    from emu.hw.acpi import AcpiMachine, build_tables
    return build_tables(AcpiMachine(), base, revision)


@pytest.mark.parametrize("variant, physical", [("rev2", False), ("rev3", True),
                                               ("rev4", True)])
def test_rsdp_response_points_at_valid_tables(kernels, variant, physical):
    """The RSDP request is answered, with a physical address from base revision 3 on, an
    HHDM one before; the tables are checksummed and in ACPI_RECLAIMABLE RAM below 4 GiB."""
    kernel = kernels[variant]
    _, memory, info = load(kernel, BootConfig(acpi=pc_acpi))
    assert "rsdp" in info.requests
    answer = response(memory, info, kernel, "rsdp_req")
    address = u64(memory, info, answer + 8)
    rsdp = info.acpi.rsdp_address
    assert address == (rsdp if physical else HHDM_OFFSET + rsdp)
    raw = memory.read(rsdp, 36)
    assert raw[:8] == b"RSD PTR " and sum(raw[:20]) % 256 == 0 and sum(raw) % 256 == 0
    xsdt = struct.unpack_from("<Q", raw, 24)[0]
    assert memory.read(xsdt, 4) == b"XSDT"
    region = next(r for r in info.memmap.regions if r.base <= rsdp < r.end)
    assert region.type == T.ACPI_RECLAIMABLE and region.end <= 1 << 32
    assert info.acpi.base + len(info.acpi.blob) <= region.end


def test_acpi_1_0_has_no_xsdt(kernels):
    kernel = kernels["rev2"]
    _, memory, info = load(kernel, BootConfig(acpi=pc_acpi, acpi_rsdp_revision=0))
    raw = memory.read(info.acpi.rsdp_address, 20)
    assert raw[15] == 0 and sum(raw) % 256 == 0 and "XSDT" not in info.acpi.addresses
    rsdt = struct.unpack_from("<I", raw, 16)[0]
    assert memory.read(rsdt, 4) == b"RSDT"


def test_without_acpi_the_rsdp_request_is_ignored(kernels):
    _, memory, info = load(kernels["rev2"])
    assert "rsdp" in info.ignored_requests and info.acpi is None
    assert response(memory, info, kernels["rev2"], "rsdp_req") == 0
    assert not any(r.type == T.ACPI_RECLAIMABLE and r.base != 64 * MiB
                   for r in info.memmap.regions)


def test_acpi_needs_ram_below_4_gib(kernels):
    regions = (Region(0, 0x9F000, T.RESERVED), Region(HIGH, 64 * MiB, T.USABLE))
    with pytest.raises(LoaderError, match="below 4 GiB for the ACPI tables"):
        load(kernels["rev2"], BootConfig(acpi=pc_acpi), regions=regions)


def test_bad_rsdp_revision_is_a_config_error(kernels):
    with pytest.raises(ConfigError, match="use 0 .* or 2"):
        load(kernels["rev2"], BootConfig(acpi=pc_acpi, acpi_rsdp_revision=1))


def test_acpi_tables_go_in_the_maps_acpi_region_or_a_carve(kernels):
    _, _, info = load(kernels["rev2"], BootConfig(acpi=pc_acpi))
    assert info.acpi.base == 64 * MiB                     # REGIONS' ACPI_RECLAIMABLE
    plain = (Region(0, 0x9F000, T.USABLE), Region(0x100000, 63 * MiB, T.USABLE))
    _, _, info = load(kernels["rev2"], BootConfig(acpi=pc_acpi), regions=plain)
    carved = [r for r in info.memmap.regions if r.type == T.ACPI_RECLAIMABLE]
    assert len(carved) == 1 and carved[0].base == info.acpi.base
    assert carved[0].length == -(-len(info.acpi.blob) // 4096) * 4096
