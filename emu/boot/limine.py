"""Facts of the Limine boot protocol (x86-64) and the machine state it promises at entry.

Owns: request identifiers and names, the markers and the base-revision tag, the GDT and the
register state at the kernel's entry (docs/LIMINE.md, "Machine state at entry"), and
`enter_kernel`, which puts a CPU in that state.
Does not own: finding or answering requests (requests.py, responses.py, loader.py).

Protocol text: limine-bootloader/limine `PROTOCOL.md`; the facts used are collected in
docs/LIMINE.md with their source.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from unicorn import x86_const as X

from emu.x86 import (CR0_ET, CR0_PE, CR0_PG, CR0_WP, CR4_PAE, EFER_LMA, EFER_LME, EFER_NXE,
                     MSR_EFER, MSR_PAT, RFLAGS_FIXED)

if TYPE_CHECKING:
    from emu.boot.loader import BootInfo

HHDM_OFFSET = 0xFFFF_8000_0000_0000
KERNEL_FLOOR = 0xFFFF_FFFF_8000_0000   # the protocol's lowest kernel virtual address
MIN_STACK = 64 * 1024
MAX_REQUESTS = 128
MAX_MEMMAP_ENTRIES = 1024
NEWEST_KNOWN_REVISION = 6

COMMON_ID = (0xC7B1DD30DF4C8B88, 0x0A82E883A194F07B)
BASE_REVISION_TAG = (0xF9562B2D5C95A6C8, 0x6A7B384944536BDC)
START_MARKER = (0xF6B8F4B39DE7D1AE, 0xFAB91A6940FCB9CF, 0x785C6ED015D3E316, 0x181E920A7852B9D9)
END_MARKER = (0xADC0E0531BB10D03, 0x9572709F31764C62)

# Request field offsets: id[4] @0, revision @32, response pointer @40, fields from @48.
REQUEST_ID_SIZE = 32
REQUEST_REVISION = 32
REQUEST_RESPONSE = 40
REQUEST_FIELDS = 48

# Requests we answer, by ID words 3 and 4.
ANSWERED = {
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
    (0xC5E77B6B397E7B43, 0x27637845ACCDCF3C): "rsdp",           # when the platform is on
}
# Known requests we leave unanswered (named only so reports read well).
KNOWN_UNSUPPORTED = {
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


# Why a request emu knows went unanswered (the default: emu does not provide it).
_WHY_UNANSWERED = {
    "module": "no --module given", "framebuffer": "no framebuffer configured",
    "rsdp": "no ACPI: --no-platform", "terminal": "deprecated; emu has no terminal",
}


def unanswered(name: str) -> str:
    """`name (why)` for the summary and crash reports."""
    if name.startswith("unknown:"):
        return f"{name} (not a request emu knows)"
    return f"{name} ({_WHY_UNANSWERED.get(name, 'not provided by emu')})"


def request_name(key: tuple[int, int]) -> str:
    """The protocol's name of a request by ID words 3 and 4."""
    if key in ANSWERED:
        return ANSWERED[key]
    if key in KNOWN_UNSUPPORTED:
        return KNOWN_UNSUPPORTED[key]
    return f"unknown:{key[0]:#018x}:{key[1]:#018x}"


# The GDT the protocol describes, accessed bits set so loading a selector writes nothing.
GDT = (
    0x0000000000000000,   # null
    0x00009B000000FFFF,   # 0x08 16-bit code, base 0, limit 0xffff
    0x000093000000FFFF,   # 0x10 16-bit data
    0x00CF9B000000FFFF,   # 0x18 32-bit code, base 0, limit 4 GiB
    0x00CF93000000FFFF,   # 0x20 32-bit data
    0x00209B0000000000,   # 0x28 64-bit code
    0x0000930000000000,   # 0x30 64-bit data
)
GDT_LIMIT = 8 * len(GDT) - 1
CODE_SELECTOR, DATA_SELECTOR = 0x28, 0x30

# Machine state at entry.
ENTRY_CR0 = CR0_PE | CR0_ET | CR0_WP | CR0_PG          # 0x80010011
ENTRY_CR4 = CR4_PAE
ENTRY_EFER = EFER_LME | EFER_LMA | EFER_NXE            # 0xD00
ENTRY_PAT = 0x0000010500070406
ENTRY_RFLAGS = RFLAGS_FIXED                            # IF and DF clear


def enter_kernel(uc, boot: "BootInfo") -> None:
    """Put the CPU in the state the protocol promises at the kernel's entry: long mode with
    the boot page tables, the protocol's GDT and selectors, RSP on the boot stack, RIP at
    the entry point. The order matters to Unicorn: CR4.PAE, then CR3, then CR0.PG."""
    uc.reg_write(X.UC_X86_REG_CR4, ENTRY_CR4)
    uc.reg_write(X.UC_X86_REG_CR3, boot.cr3)
    uc.reg_write(X.UC_X86_REG_CR0, ENTRY_CR0)
    uc.reg_write(X.UC_X86_REG_MSR, (MSR_EFER, ENTRY_EFER))
    uc.reg_write(X.UC_X86_REG_MSR, (MSR_PAT, ENTRY_PAT))
    uc.reg_write(X.UC_X86_REG_GDTR, (0, boot.gdt_base, boot.gdt_limit, 0))
    uc.reg_write(X.UC_X86_REG_CS, CODE_SELECTOR)
    for register in (X.UC_X86_REG_DS, X.UC_X86_REG_ES, X.UC_X86_REG_SS, X.UC_X86_REG_FS,
                     X.UC_X86_REG_GS):
        uc.reg_write(register, DATA_SELECTOR)
    uc.reg_write(X.UC_X86_REG_RFLAGS, ENTRY_RFLAGS)
    uc.reg_write(X.UC_X86_REG_RSP, boot.stack_pointer)
    uc.reg_write(X.UC_X86_REG_RIP, boot.entry)
