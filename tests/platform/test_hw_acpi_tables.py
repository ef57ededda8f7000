"""The ACPI tables, parsed back with the test-side reader (acpi_reader.py): signatures,
lengths, checksums, root pointers, the MADT, the HPET table and the FADT's pointers."""
from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from acpi_reader import Memory, fadt_dsdt, gas, madt_entries, sleep_type, walk
from emu.errors import ConfigError
from emu.hw.acpi import AcpiMachine, InterruptOverride, build_tables

BASE = 0x0FFD_0000


def parsed(revision: int = 2, base: int = BASE, machine: AcpiMachine | None = None):
    tables = build_tables(machine or AcpiMachine(), base, revision)
    return tables, walk(Memory(tables.base, tables.blob), tables.rsdp_address)


def test_rsdp_revision_2_points_at_both_roots_with_the_same_tables():
    tables, acpi = parsed()
    assert tables.rsdp_address == BASE and acpi.rsdp_revision == 2
    assert acpi.xsdt is not None
    assert sorted(acpi.xsdt) == sorted(acpi.rsdt)
    assert set(acpi.tables) == {"FACP", "APIC", "HPET", "DSDT", "FACS"}
    assert {acpi.tables[name].address for name in ("FACP", "APIC", "HPET")} == set(acpi.rsdt)


def test_rsdp_revision_0_has_an_rsdt_only():
    tables, acpi = parsed(revision=0)
    assert acpi.rsdp_revision == 0 and acpi.xsdt is None
    assert set(acpi.tables) == {"FACP", "APIC", "HPET", "DSDT", "FACS"}
    assert tables.blob[:8] == b"RSD PTR "


def test_table_revisions_and_lengths():
    _, acpi = parsed()
    facp = acpi.tables["FACP"]
    assert (facp.revision, len(facp.data)) == (6, 276)
    assert facp.data[131] == 0                           # FADT minor version: 6.0
    assert acpi.tables["APIC"].revision == 4 and acpi.tables["HPET"].revision == 1
    assert len(acpi.tables["HPET"].data) == 56
    assert acpi.tables["DSDT"].revision == 2
    assert acpi.tables["FACS"].data[32] == 2


def test_fadt_pointers_and_fixed_hardware():
    _, acpi = parsed()
    fadt, dsdt, facs = acpi.tables["FACP"], acpi.tables["DSDT"], acpi.tables["FACS"]
    assert fadt.field("I", 40) == fadt.field("Q", 140) == dsdt.address == fadt_dsdt(fadt)
    assert fadt.field("I", 36) == facs.address and fadt.field("Q", 132) == 0
    assert fadt.field("H", 46) == 9                      # SCI_INT
    assert fadt.field("I", 48) == 0                      # SMI_CMD: always ACPI mode
    pm1a_evt, pm1a_cnt, pm_tmr = fadt.field("I", 56), fadt.field("I", 64), fadt.field("I", 76)
    assert (pm1a_evt, pm1a_cnt, pm_tmr) == (0x600, 0x604, 0x608)
    assert fadt.field("I", 60) == fadt.field("I", 68) == fadt.field("I", 80) == 0
    assert (fadt.data[88], fadt.data[89], fadt.data[91]) == (4, 2, 4)
    assert fadt.data[108] == 0x32                        # CENTURY
    flags = fadt.field("I", 112)
    assert flags & (1 << 8) and flags & (1 << 10)        # TMR_VAL_EXT, RESET_REG_SUP
    assert not flags & (1 << 4) and not flags & (1 << 20)   # fixed power button, not reduced
    assert fadt.field("H", 109) & 0b11 == 0b11           # legacy devices, 8042
    assert gas(fadt, 116) == (1, 8, 0, 1, 0xCF9) and fadt.data[128] == 0x06
    assert gas(fadt, 148)[0::4] == (1, 0x600)            # X_PM1a_EVT_BLK
    assert gas(fadt, 172)[0::4] == (1, 0x604)            # X_PM1a_CNT_BLK
    assert gas(fadt, 208) == (1, 32, 0, 3, 0x608)        # X_PM_TMR_BLK
    assert gas(fadt, 160) == gas(fadt, 220) == (0, 0, 0, 0, 0)


def test_dsdt_names_the_s5_sleep_type():
    _, acpi = parsed()
    assert sleep_type(acpi.tables["DSDT"]) == 0
    assert sleep_type(acpi.tables["DSDT"], b"_S0_") == 0
    _, other = parsed(machine=AcpiMachine(s5_sleep_type=7))
    assert sleep_type(other.tables["DSDT"]) == 7


def test_madt_entries():
    _, acpi = parsed()
    madt = acpi.tables["APIC"]
    assert madt.field("I", 36) == 0xFEE00000 and madt.field("I", 40) & 1
    entries = madt_entries(madt)
    assert [kind for kind, _ in entries] == [0, 1, 2, 2, 4]
    uid, apic_id, flags = struct.unpack("<BBI", entries[0][1])
    assert (uid, apic_id, flags) == (0, 0, 1)
    ioapic_id, _, address, gsi_base = struct.unpack("<BBII", entries[1][1])
    assert (ioapic_id, address, gsi_base) == (1, 0xFEC00000, 0)
    overrides = [struct.unpack("<BBIH", body) for kind, body in entries if kind == 2]
    assert overrides == [(0, 0, 2, 0x0000), (0, 9, 9, 0x000D)]
    assert struct.unpack("<BHB", entries[4][1]) == (0xFF, 0x0005, 1)


def test_hpet_table():
    _, acpi = parsed()
    hpet = acpi.tables["HPET"]
    assert hpet.field("I", 36) == 0x8086A201
    assert gas(hpet, 40)[0::4] == (0, 0xFED00000)
    assert hpet.data[52] == 0 and hpet.field("H", 53) == 0x80


def test_a_different_machine_changes_the_tables():
    machine = AcpiMachine(ioapic_id=2, lapic_id=5, hpet_address=0xFED01000,
                          overrides=(InterruptOverride(0, 2),))
    _, acpi = parsed(machine=machine)
    entries = madt_entries(acpi.tables["APIC"])
    assert [kind for kind, _ in entries] == [0, 1, 2, 4]
    assert entries[0][1][1] == 5 and entries[1][1][0] == 2
    assert gas(acpi.tables["HPET"], 40)[4] == 0xFED01000


def test_bad_layouts_are_refused():
    with pytest.raises(ConfigError):
        build_tables(AcpiMachine(), BASE + 8)
    with pytest.raises(ConfigError):
        build_tables(AcpiMachine(), (1 << 32) - 0x100)
    with pytest.raises(ConfigError):
        build_tables(AcpiMachine(), BASE, revision=1)


@given(st.integers(0, ((1 << 32) - 0x1000) // 16).map(lambda n: n * 16), st.sampled_from([0, 2]))
def test_any_aligned_base_below_4g_parses(base, revision):
    tables, acpi = parsed(revision, base)
    assert tables.base + len(tables.blob) <= 1 << 32
    assert min(tables.addresses.values()) == base == tables.rsdp_address
    assert acpi.tables["FACS"].address % 64 == 0
