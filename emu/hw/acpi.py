"""ACPI tables that describe this platform to the kernel (ACPI 6.0, chapter 5 "ACPI Software
Programming Model"): RSDP, RSDT and XSDT, FADT with FACS and a minimal DSDT, MADT and the
HPET table, laid out at a physical base with valid checksums.

Owns: the table formats and their contents, derived from an `AcpiMachine` description (which
the platform fills from its devices), and the layout: `build_tables(machine, base)` returns
the bytes to copy to physical `base` and the RSDP's address (for the Limine RSDP response).
Does not own: where the bytes go in memory (the loader puts them in ACPI_RECLAIMABLE RAM) or
the devices themselves.

Choices:
- FADT revision 6.0 (276 bytes, with the 64-bit X_ fields): the layout current kernels
  expect; older readers use only its first 116 bytes (the ACPI 1.0 fields), which it keeps.
  No SMI_CMD (always in ACPI mode), fixed power button, no sleep button, 32-bit PM timer
  (TMR_VAL_EXT), reset register supported, 8042 and legacy devices present, no MSI.
- DSDT: only `Name(_S0_, Package(4){...})` and `Name(_S5_, Package(4){...})`, so kernels that
  scan the AML for `_S5_` find the S5 sleep type; no device objects (no `\\_SB.PCI0`, no `_PRT`:
  a kernel must fall back to the MADT and legacy PCI probing).
- MADT: one processor local APIC, one IOAPIC, the interrupt source overrides of a PC (IRQ0 on
  GSI 2; IRQ9, the SCI, level-triggered active high), LINT1 as NMI for all processors.
- RSDP revision 2 with an XSDT by default; revision 0 gives an ACPI 1.0 RSDP and RSDT only.
  RSDT and every 32-bit pointer require the tables below 4 GiB.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

from emu.errors import ConfigError
from emu.hw.devices.acpi_pm import (PM1_CNT, PM1_CNT_LENGTH, PM1_EVT_LENGTH, PM_BASE,
                                    PM_TMR, PM_TMR_LENGTH, SCI_IRQ, SLP_TYP_S5)
from emu.hw.devices.hpet import COUNT_SIZE_CAP, HPET_BASE, HPET_TIMERS, HPET_VENDOR, LEG_RT_CAP
from emu.hw.devices.ioapic import IOAPIC_BASE
from emu.hw.devices.lapic import LAPIC_BASE
from emu.hw.devices.reset import FADT_RESET_VALUE, RESET_CONTROL_PORT
from emu.hw.devices.rtc import CENTURY

OEM_ID = b"EMU   "
OEM_TABLE_ID = b"EMU-PC  "
CREATOR_ID = b"EMU "
HEADER_SIZE = 36
FADT_SIZE = 276
FACS_SIZE = 64
TABLE_ALIGN, FACS_ALIGN = 16, 64
LIMIT_32 = 1 << 32

# MPS INTI flags (ACPI 5.2.12.5): polarity bits 1:0, trigger mode bits 3:2
ACTIVE_HIGH, ACTIVE_LOW, EDGE, LEVEL = 0b01, 0b11, 0b01 << 2, 0b11 << 2
# FADT flags (ACPI 5.2.9, Table 5-35)
WBINVD, PROC_C1, SLP_BUTTON, FIX_RTC, TMR_VAL_EXT, RESET_REG_SUP = (
    1 << 0, 1 << 2, 1 << 5, 1 << 6, 1 << 8, 1 << 10)
# IA-PC boot architecture flags (Table 5-36)
LEGACY_DEVICES, HAS_8042, MSI_NOT_SUPPORTED = 1 << 0, 1 << 1, 1 << 3
SYSTEM_MEMORY, SYSTEM_IO = 0, 1
ACCESS_BYTE, ACCESS_WORD, ACCESS_DWORD = 1, 2, 3


@dataclass(frozen=True, slots=True)
class InterruptOverride:
    """An ISA IRQ that does not arrive on the IOAPIC pin of its number, or not as ISA
    (edge, active high) interrupts do."""
    irq: int
    gsi: int
    flags: int = 0                    # 0: conforms to the bus (ISA: edge, active high)


PC_OVERRIDES = (InterruptOverride(0, 2), InterruptOverride(SCI_IRQ, SCI_IRQ, LEVEL | ACTIVE_HIGH))


@dataclass(frozen=True, slots=True)
class AcpiMachine:
    """What the tables say about the machine."""
    lapic_address: int = LAPIC_BASE
    processor_uid: int = 0
    lapic_id: int = 0
    ioapic_id: int = 1
    ioapic_address: int = IOAPIC_BASE
    gsi_base: int = 0
    overrides: tuple[InterruptOverride, ...] = PC_OVERRIDES
    nmi_lint: int = 1
    hpet_address: int = HPET_BASE
    hpet_block_id: int = (HPET_VENDOR << 16 | LEG_RT_CAP | COUNT_SIZE_CAP
                          | (HPET_TIMERS - 1) << 8 | 0x01)
    hpet_min_tick: int = 0x80
    pm_base: int = PM_BASE
    sci_irq: int = SCI_IRQ
    reset_port: int = RESET_CONTROL_PORT
    reset_value: int = FADT_RESET_VALUE
    century_register: int = CENTURY
    s5_sleep_type: int = SLP_TYP_S5


@dataclass(frozen=True, slots=True)
class AcpiTables:
    base: int
    blob: bytes
    rsdp_address: int
    addresses: dict[str, int] = field(default_factory=dict)   # signature -> address


def _checksum(data: bytes) -> int:
    return -sum(data) & 0xFF


def _table(signature: bytes, revision: int, body: bytes) -> bytes:
    """A system description table: the 36-byte header (ACPI 5.2.6) and `body`, checksummed."""
    header = struct.pack("<4sIBB6s8sI4sI", signature, HEADER_SIZE + len(body), revision, 0,
                         OEM_ID, OEM_TABLE_ID, 1, CREATOR_ID, 1)
    table = bytearray(header + body)
    table[9] = _checksum(bytes(table))
    return bytes(table)


def _gas(space: int, bit_width: int, access: int, address: int) -> bytes:
    """A generic address structure (ACPI 5.2.3.2)."""
    return struct.pack("<BBBBQ", space, bit_width, 0, access, address)


# --- AML (ACPI chapter 20) for the DSDT ------------------------------------------------------

def _aml_integer(value: int) -> bytes:
    if value in (0, 1):
        return bytes([value])                                      # ZeroOp, OneOp
    for prefix, size in ((0x0A, 1), (0x0B, 2), (0x0C, 4), (0x0E, 8)):
        if value < 1 << (8 * size):
            return bytes([prefix]) + value.to_bytes(size, "little")
    raise ConfigError(f"AML integer {value:#x} does not fit 64 bits")


def _aml_package(values: tuple[int, ...]) -> bytes:
    """PackageOp PkgLength NumElements elements (a one-byte PkgLength: under 64 bytes)."""
    body = bytes([len(values)]) + b"".join(_aml_integer(value) for value in values)
    return bytes([0x12, len(body) + 1]) + body


def _aml_name(name: bytes, data: bytes) -> bytes:
    return b"\x08" + name + data                                   # NameOp NameSeg DataObject


def dsdt(machine: AcpiMachine) -> bytes:
    """_S0_ and _S5_: {SLP_TYPa, SLP_TYPb, reserved, reserved} for PM1a/PM1b_CNT."""
    s5 = machine.s5_sleep_type
    body = _aml_name(b"_S0_", _aml_package((0, 0, 0, 0)))
    body += _aml_name(b"_S5_", _aml_package((s5, s5, 0, 0)))
    return _table(b"DSDT", 2, body)


def facs() -> bytes:
    """The firmware ACPI control structure (ACPI 5.2.10): no waking vector, no global lock
    owner; it has no checksum."""
    return struct.pack("<4sIIIIIQBB3sI24s", b"FACS", FACS_SIZE, 0, 0, 0, 0, 0, 2, 0,
                       bytes(3), 0, bytes(24))


def fadt(machine: AcpiMachine, dsdt_address: int, facs_address: int) -> bytes:
    """The fixed ACPI description table, revision 6.0 layout (ACPI 5.2.9, Table 5-34)."""
    pm1a_evt, pm1a_cnt = machine.pm_base, machine.pm_base + PM1_CNT
    pm_tmr = machine.pm_base + PM_TMR
    flags = WBINVD | PROC_C1 | SLP_BUTTON | FIX_RTC | TMR_VAL_EXT | RESET_REG_SUP
    body = struct.pack(
        "<IIBBHIBBBBIIIIIIIIBBBBBBBBHHHHBBBBBHBI",
        facs_address, dsdt_address, 0, 1, machine.sci_irq, 0, 0, 0, 0, 0,
        pm1a_evt, 0, pm1a_cnt, 0, 0, pm_tmr, 0, 0,
        PM1_EVT_LENGTH, PM1_CNT_LENGTH, 0, PM_TMR_LENGTH, 0, 0, 0, 0,
        101, 1001, 0, 0, 0, 0, 0, 0, machine.century_register,
        LEGACY_DEVICES | HAS_8042 | MSI_NOT_SUPPORTED, 0, flags)
    body += _gas(SYSTEM_IO, 8, ACCESS_BYTE, machine.reset_port)
    # X_FIRMWARE_CTRL stays 0: FIRMWARE_CTRL holds the FACS (a nonzero FIRMWARE_CTRL
    # requires it, Table 5-34). X_DSDT repeats DSDT.
    body += struct.pack("<BHBQQ", machine.reset_value, 0, 0, 0, dsdt_address)
    absent = bytes(12)
    body += _gas(SYSTEM_IO, 8 * PM1_EVT_LENGTH, ACCESS_WORD, pm1a_evt)
    body += absent                                                 # X_PM1b_EVT_BLK
    body += _gas(SYSTEM_IO, 8 * PM1_CNT_LENGTH, ACCESS_WORD, pm1a_cnt)
    body += absent * 2                                             # X_PM1b_CNT, X_PM2_CNT
    body += _gas(SYSTEM_IO, 8 * PM_TMR_LENGTH, ACCESS_DWORD, pm_tmr)
    body += absent * 4                                             # GPE0/1, sleep regs
    body += bytes(8)                                               # hypervisor vendor
    return _table(b"FACP", 6, body)


def madt(machine: AcpiMachine) -> bytes:
    """The multiple APIC description table (ACPI 5.2.12)."""
    body = struct.pack("<II", machine.lapic_address, 1)            # PCAT_COMPAT: 8259s too
    body += struct.pack("<BBBBI", 0, 8, machine.processor_uid, machine.lapic_id, 1)
    body += struct.pack("<BBBBII", 1, 12, machine.ioapic_id, 0, machine.ioapic_address,
                        machine.gsi_base)
    for override in machine.overrides:
        body += struct.pack("<BBBBIH", 2, 10, 0, override.irq, override.gsi, override.flags)
    body += struct.pack("<BBBHB", 4, 6, 0xFF, EDGE | ACTIVE_HIGH, machine.nmi_lint)
    return _table(b"APIC", 4, body)


def hpet_table(machine: AcpiMachine) -> bytes:
    """The IA-PC HPET description table (HPET spec 1.0a, 3.2.4)."""
    body = struct.pack("<I", machine.hpet_block_id)
    body += _gas(SYSTEM_MEMORY, 64, 0, machine.hpet_address)
    body += struct.pack("<BHB", 0, machine.hpet_min_tick, 0)
    return _table(b"HPET", 1, body)


def _align(value: int, alignment: int) -> int:
    return -(-value // alignment) * alignment


def _rsdp(revision: int, rsdt_address: int, xsdt_address: int) -> bytes:
    """The root system description pointer (ACPI 5.2.5.3): 20 bytes for revision 0, 36
    with the XSDT and the extended checksum for revision 2."""
    first = bytearray(struct.pack("<8sB6sBI", b"RSD PTR ", 0, OEM_ID, revision, rsdt_address))
    first[8] = _checksum(bytes(first))
    if revision < 2:
        return bytes(first)
    whole = bytearray(bytes(first) + struct.pack("<IQB3s", 36, xsdt_address, 0, bytes(3)))
    whole[32] = _checksum(bytes(whole))
    return bytes(whole)


def build_tables(machine: AcpiMachine, base: int, revision: int = 2) -> AcpiTables:
    """Every table, laid out from physical `base` (16-byte aligned): RSDP, XSDT (revision 2),
    RSDT, FADT, FACS (64-byte aligned), DSDT, MADT, HPET."""
    if revision not in (0, 2):
        raise ConfigError(f"ACPI RSDP revision must be 0 or 2, not {revision}")
    if base % TABLE_ALIGN:
        raise ConfigError(f"ACPI tables need a 16-byte aligned base, not {base:#x}")
    described = {"FACP": None, "APIC": madt(machine), "HPET": hpet_table(machine)}
    order = ["RSDP"] + (["XSDT"] if revision else []) + ["RSDT", "FACP", "FACS", "DSDT",
                                                         "APIC", "HPET"]
    sizes = {"RSDP": 36 if revision else 20, "XSDT": HEADER_SIZE + 8 * len(described),
             "RSDT": HEADER_SIZE + 4 * len(described), "FACP": FADT_SIZE, "FACS": FACS_SIZE,
             "DSDT": len(dsdt(machine)), "APIC": len(described["APIC"]),
             "HPET": len(described["HPET"])}
    addresses, cursor = {}, base
    for name in order:
        cursor = _align(cursor, FACS_ALIGN if name == "FACS" else TABLE_ALIGN)
        addresses[name] = cursor
        cursor += sizes[name]
    if cursor > LIMIT_32:
        raise ConfigError(f"ACPI tables at {base:#x} would end above 4 GiB ({cursor:#x})")
    described["FACP"] = fadt(machine, addresses["DSDT"], addresses["FACS"])
    pointers = [addresses[name] for name in described]
    contents = {"RSDP": _rsdp(revision, addresses["RSDT"], addresses.get("XSDT", 0)),
                "XSDT": _table(b"XSDT", 1, struct.pack(f"<{len(pointers)}Q", *pointers)),
                "RSDT": _table(b"RSDT", 1, struct.pack(f"<{len(pointers)}I", *pointers)),
                "FACS": facs(), "DSDT": dsdt(machine), **described}
    blob = bytearray(cursor - base)
    for name in order:
        start = addresses[name] - base
        blob[start:start + sizes[name]] = contents[name]
    return AcpiTables(base, bytes(blob), addresses["RSDP"], addresses)
