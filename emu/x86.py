"""x86-64 architecture facts: the one home of every number the SDM defines that the monitor
needs (MSRs, control-register and RFLAGS bits, page-table entry bits, #PF error-code bits,
exception vectors and their names, segment-descriptor bits, address-space shapes).

Owns: constants and tiny pure helpers about them (canonical addresses).
Does not own: anything that reads or changes state. Imports nothing from emu.

References: Intel SDM vol. 3 (2.5 control registers, 2.2.1 EFER, 3.4.5 segment descriptors,
4.5 4-level paging, 4.7 page-fault error code, 6.3 exception vectors, table 6-5 double
faults, 7.7 TSS); vol. 1 19.5 (I/O permission bitmap); vol. 2 SYSCALL.
"""
from __future__ import annotations

PAGE_SIZE = 0x1000
PAGE_SHIFT = 12
LARGE_PAGE_SIZE = 1 << 21          # 2 MiB
HUGE_PAGE_SIZE = 1 << 30           # 1 GiB
PAGE_SIZES = (PAGE_SIZE, LARGE_PAGE_SIZE, HUGE_PAGE_SIZE)

# ---- Model-specific registers ------------------------------------------------------------
MSR_APIC_BASE = 0x1B
MSR_PAT = 0x277
MSR_TSC_DEADLINE = 0x6E0
MSR_EFER = 0xC0000080
MSR_STAR = 0xC0000081
MSR_LSTAR = 0xC0000082
MSR_FMASK = 0xC0000084
MSR_FS_BASE = 0xC0000100
MSR_GS_BASE = 0xC0000101
MSR_KERNEL_GS_BASE = 0xC0000102
MSR_TSC_AUX = 0xC0000103

EFER_SCE = 1 << 0                  # SYSCALL/SYSRET enabled
EFER_LME = 1 << 8
EFER_LMA = 1 << 10
EFER_NXE = 1 << 11

# ---- Control registers -------------------------------------------------------------------
CR0_PE = 1 << 0
CR0_ET = 1 << 4
CR0_WP = 1 << 16
CR0_PG = 1 << 31
CR4_PAE = 1 << 5

# ---- RFLAGS --------------------------------------------------------------------------------
RFLAGS_CF = 1 << 0
RFLAGS_FIXED = 1 << 1              # always reads 1
RFLAGS_TF = 1 << 8
RFLAGS_IF = 1 << 9
RFLAGS_DF = 1 << 10
RFLAGS_IOPL_SHIFT = 12
RFLAGS_NT = 1 << 14
RFLAGS_RF = 1 << 16
RFLAGS_VM = 1 << 17
RFLAGS_ARITH = 0x8D5               # CF PF AF ZF SF OF

# ---- Page-table entries (4-level paging) --------------------------------------------------
PTE_PRESENT = 1 << 0
PTE_WRITABLE = 1 << 1
PTE_USER = 1 << 2
PTE_WRITE_THROUGH = 1 << 3
PTE_CACHE_DISABLE = 1 << 4
PTE_ACCESSED = 1 << 5
PTE_DIRTY = 1 << 6
PTE_HUGE = 1 << 7                  # PS in a PDPT or PD entry
PTE_PAT_4K = 1 << 7                # PAT in a PT entry (same bit as PS)
PTE_GLOBAL = 1 << 8
PTE_PAT_LARGE = 1 << 12            # PAT in a 2 MiB or 1 GiB leaf
PTE_NO_EXECUTE = 1 << 63

# Unicorn's CPU model has 40 physical address bits (QEMU's TCG default): entry bits 40-51
# are reserved, as on a CPU with MAXPHYADDR = 40.
PHYS_BITS = 40
PTE_ADDRESS_MASK = ((1 << PHYS_BITS) - 1) & ~(PAGE_SIZE - 1)
PTE_RESERVED_HIGH = ((1 << 52) - 1) & ~((1 << PHYS_BITS) - 1)
PHYSICAL_LIMIT = 1 << 52           # the architectural physical address width

PAGING_LEVELS = ("PML4", "PDPT", "PD", "PT")
LEVEL_SHIFTS = (39, 30, 21, 12)
ENTRIES_PER_TABLE = 512

# ---- #PF error code (SDM vol. 3, 4.7) ------------------------------------------------------
PF_PRESENT = 1 << 0
PF_WRITE = 1 << 1
PF_USER = 1 << 2
PF_RESERVED = 1 << 3
PF_FETCH = 1 << 4

# ---- Exceptions (SDM vol. 3, 6.3) -----------------------------------------------------------
DIVIDE_ERROR = 0
BREAKPOINT = 3
INVALID_OPCODE = 6
DOUBLE_FAULT = 8
INVALID_TSS = 10
SEGMENT_NOT_PRESENT = 11
STACK_FAULT = 12
GENERAL_PROTECTION = 13
PAGE_FAULT = 14

EXCEPTION_NAMES = {
    0: "#DE divide error", 1: "#DB debug", 2: "NMI", 3: "#BP breakpoint", 4: "#OF overflow",
    5: "#BR bound range", 6: "#UD invalid opcode", 7: "#NM device not available",
    8: "#DF double fault", 10: "#TS invalid TSS", 11: "#NP segment not present",
    12: "#SS stack fault", 13: "#GP general protection", 14: "#PF page fault",
    16: "#MF x87 error", 17: "#AC alignment check", 18: "#MC machine check",
    19: "#XM SIMD error", 20: "#VE virtualization", 21: "#CP control protection",
}
WITH_ERROR_CODE = frozenset({8, 10, 11, 12, 13, 14, 17, 21, 29, 30})
CONTRIBUTORY = frozenset({0, 10, 11, 12, 13})      # table 6-4 (double-fault classes)
IDT_VECTORS = 256

# An IDT error code names the gate: vector * 8 + 2 (IDT) + 1 (external event).
IDT_ERROR_IDT = 2
ERROR_EXTERNAL = 1

# ---- Gates and segment descriptors (SDM vol. 3, 3.4.5 and 6.14.1) ---------------------------
GATE_INTERRUPT = 0xE               # clears IF on entry
GATE_TRAP = 0xF
GATE_SIZE = 16
TSS_TYPES = (9, 11)                # 64-bit TSS, available or busy
SELECTOR_RPL = 3
SELECTOR_TI = 4                    # the LDT bit

# Descriptor high-dword flags as QEMU's segment cache keeps them (bits 8-23 of the high dword).
DESC_ACCESSED = 1 << 8
DESC_RW = 1 << 9                   # writable data / readable code
DESC_CONFORMING = 1 << 10
DESC_CODE = 1 << 11
DESC_S = 1 << 12                   # code or data (not system)
DESC_DPL_SHIFT = 13
DESC_P = 1 << 15
DESC_TYPE_SHIFT = 8
DESC_L = 1 << 21                   # 64-bit code
DESC_B = 1 << 22
DESC_G = 1 << 23

# TSS fields (SDM vol. 3, 7.7): RSPn at 4 + 8n, ISTn at 36 + 8(n-1), I/O map base at 0x66.
TSS_RSP0 = 4
TSS_IST1 = 36
TSS_IO_MAP_BASE = 0x66
TSS_MIN_LIMIT = 0x67

# ---- Instruction facts ------------------------------------------------------------------------
SYSCALL_LENGTH = 2                 # 0F 05
HLT = 0xF4
INT_N = 0xCD                       # `int n` is CD ib; int3/int1/into are one byte

# ---- Virtual addresses ------------------------------------------------------------------------
KERNEL_HALF = 0xFFFF_8000_0000_0000
MASK64 = (1 << 64) - 1


def canonical(vaddr: int) -> bool:
    """Is vaddr canonical for 48-bit virtual addresses (bits 63-47 all equal)?"""
    top = vaddr >> 47
    return top == 0 or top == (1 << 17) - 1


def sign_extend(vaddr: int) -> int:
    """The canonical form of a 48-bit virtual address."""
    vaddr &= (1 << 48) - 1
    return vaddr | (0xFFFF << 48) if vaddr >> 47 else vaddr


def exception_name(vector: int) -> str:
    return EXCEPTION_NAMES.get(vector, f"vector {vector:#x}")


def exception_short_name(vector: int) -> str:
    """`#PF`, `#GP`... or `vector 0x20` for interrupts."""
    return exception_name(vector).split(" ")[0] if vector in EXCEPTION_NAMES \
        else f"vector {vector:#x}"
