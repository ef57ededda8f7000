"""A small ACPI table reader for the tests, written from the ACPI 6.0 specification and not
from emu.hw.acpi: it walks the tables as a kernel would, from the RSDP, and fails loudly on
anything malformed (bad signature, length or checksum, a pointer outside the tables)."""
from __future__ import annotations

import struct
from dataclasses import dataclass, field


class AcpiError(AssertionError):
    """The tables are malformed."""


class Memory:
    """Physical memory holding `blob` at `base` and nothing else."""

    def __init__(self, base: int, blob: bytes) -> None:
        self.base, self.blob = base, blob

    def read(self, address: int, size: int) -> bytes:
        start = address - self.base
        if start < 0 or start + size > len(self.blob):
            raise AcpiError(f"{size} bytes at {address:#x} are outside the tables")
        return self.blob[start:start + size]


@dataclass
class Table:
    signature: str
    address: int
    revision: int
    data: bytes                      # the whole table, header included

    def field(self, fmt: str, offset: int):
        return struct.unpack_from("<" + fmt, self.data, offset)[0]


@dataclass
class Acpi:
    rsdp_revision: int
    rsdt: list[int]
    xsdt: list[int] | None
    tables: dict[str, Table] = field(default_factory=dict)


def _sums_to_zero(data: bytes) -> bool:
    return sum(data) % 256 == 0


def read_table(memory: Memory, address: int, signature: str | None = None) -> Table:
    header = memory.read(address, 36)
    found = header[:4].decode("ascii", "replace")
    (length,) = struct.unpack_from("<I", header, 4)
    if signature is not None and found != signature:
        raise AcpiError(f"expected {signature} at {address:#x}, found {found!r}")
    if length < 36:
        raise AcpiError(f"{found} length {length} is shorter than its header")
    data = memory.read(address, length)
    if found != "FACS" and not _sums_to_zero(data):
        raise AcpiError(f"{found} at {address:#x}: bad checksum")
    return Table(found, address, header[8], data)


def read_facs(memory: Memory, address: int) -> Table:
    """The FACS has no standard header: signature, length, then its own fields."""
    data = memory.read(address, 64)
    if data[:4] != b"FACS" or struct.unpack_from("<I", data, 4)[0] < 64:
        raise AcpiError(f"no FACS at {address:#x}")
    if address % 64:
        raise AcpiError(f"FACS at {address:#x} is not 64-byte aligned")
    return Table("FACS", address, data[32], data)


def read_rsdp(memory: Memory, address: int) -> tuple[int, int, int | None]:
    """(revision, RSDT address, XSDT address or None)."""
    first = memory.read(address, 20)
    if first[:8] != b"RSD PTR ":
        raise AcpiError("no RSDP signature")
    if not _sums_to_zero(first):
        raise AcpiError("RSDP checksum (first 20 bytes) is wrong")
    revision, rsdt = first[15], struct.unpack_from("<I", first, 16)[0]
    if revision < 2:
        return revision, rsdt, None
    whole = memory.read(address, 36)
    length, xsdt = struct.unpack_from("<IQ", whole, 20)
    if length != 36 or not _sums_to_zero(whole):
        raise AcpiError("RSDP extended length or checksum is wrong")
    return revision, rsdt, xsdt


def walk(memory: Memory, rsdp_address: int) -> Acpi:
    """Every table reachable from the RSDP, by signature; the FADT's DSDT and FACS too."""
    revision, rsdt_address, xsdt_address = read_rsdp(memory, rsdp_address)
    rsdt = read_table(memory, rsdt_address, "RSDT")
    rsdt_entries = list(struct.unpack_from(f"<{(len(rsdt.data) - 36) // 4}I", rsdt.data, 36))
    xsdt_entries = None
    if xsdt_address is not None:
        xsdt = read_table(memory, xsdt_address, "XSDT")
        xsdt_entries = list(struct.unpack_from(f"<{(len(xsdt.data) - 36) // 8}Q",
                                               xsdt.data, 36))
    acpi = Acpi(revision, rsdt_entries, xsdt_entries)
    for address in xsdt_entries if xsdt_entries is not None else rsdt_entries:
        table = read_table(memory, address)
        if table.signature in acpi.tables:
            raise AcpiError(f"two {table.signature} tables")
        acpi.tables[table.signature] = table
    fadt = acpi.tables["FACP"]
    acpi.tables["DSDT"] = read_table(memory, fadt_dsdt(fadt), "DSDT")
    acpi.tables["FACS"] = read_facs(memory, fadt.field("I", 36) or fadt.field("Q", 132))
    return acpi


def fadt_dsdt(fadt: Table) -> int:
    x_dsdt = fadt.field("Q", 140) if len(fadt.data) >= 148 else 0
    return x_dsdt or fadt.field("I", 40)


def gas(table: Table, offset: int) -> tuple[int, int, int, int, int]:
    """(address space, bit width, bit offset, access size, address) at `offset`."""
    return struct.unpack_from("<BBBBQ", table.data, offset)


def madt_entries(madt: Table) -> list[tuple[int, bytes]]:
    """(type, entry bytes after type and length), in order."""
    entries, offset = [], 44
    while offset < len(madt.data):
        kind, length = madt.data[offset], madt.data[offset + 1]
        if length < 2 or offset + length > len(madt.data):
            raise AcpiError(f"MADT entry at {offset} has a bad length {length}")
        entries.append((kind, madt.data[offset + 2:offset + length]))
        offset += length
    return entries


def sleep_type(dsdt: Table, name: bytes = b"_S5_") -> int:
    """SLP_TYPa of `Name(_Sx_, Package(){...})` in the AML, as the usual scan finds it."""
    aml = dsdt.data[36:]
    at = aml.find(name)
    if at < 1 or aml[at - 1] != 0x08 or aml[at + 4] != 0x12:
        raise AcpiError(f"no Name({name.decode()}, Package) in the DSDT")
    element = at + 4 + 3                     # PackageOp, PkgLength, NumElements
    if aml[element] == 0x0A:                 # BytePrefix
        return aml[element + 1]
    if aml[element] in (0x00, 0x01):         # ZeroOp, OneOp
        return aml[element]
    raise AcpiError(f"unexpected AML opcode {aml[element]:#x} for SLP_TYPa")
