"""Our kernel on the PC platform (issue 15, item 8): it finds the local APIC and the IOAPIC
through the ACPI MADT the loader pointed it to, reads the date from the CMOS RTC, starts the
HPET, calibrates the local APIC timer and the TSC against the PIT, and ticks. The figures it
prints are checked against what the monitor modelled."""
from __future__ import annotations

import re

import pytest

from emu.events import Observer
from emu.hw.acpi import PC_OVERRIDES, AcpiMachine
from emu.hw.devices.ioapic import IOAPIC_BASE
from emu.hw.devices.lapic import LAPIC_BASE
from emu.result import RunEnd


def lines(machine, prefix: str) -> list[str]:
    return [line for line in machine.serial_output().splitlines() if line.startswith(prefix)]


def test_the_kernel_reads_the_madt_the_monitor_generated(boot):
    machine, result = boot()
    assert result.end is RunEnd.EXIT and result.guest_value == 0
    (madt,) = lines(machine, "acpi: RSDP")
    ioapic_id = AcpiMachine().ioapic_id
    assert (f"revision 2, 3 tables; local APIC {LAPIC_BASE:#x}, IOAPIC {ioapic_id} at "
            f"{IOAPIC_BASE:#x} (GSI 0), 8259s present") in madt
    overrides = lines(machine, "acpi: IRQ")
    assert overrides == [f"acpi: IRQ {o.irq} -> GSI {o.gsi}, flags {o.flags:#x}"
                         for o in PC_OVERRIDES]
    assert lines(machine, "hpet:") == ["hpet: 0xfed00000, period 69841279 fs"]


def test_acpi_1_0_tables_give_the_same_machine(boot):
    machine, _ = boot(acpi_rsdp_revision=0)
    (madt,) = lines(machine, "acpi: RSDP")
    assert "revision 0, 3 tables; local APIC 0xfee00000" in madt


@pytest.mark.parametrize("boot_time", [1_700_000_000, 4_102_444_799, 951_782_400])
def test_the_rtc_tells_the_boot_time(boot, boot_time):
    """2023, the last second of 2099 (century register), 2000-02-29 (a leap day)."""
    machine, _ = boot(boot_time=boot_time)
    assert lines(machine, "rtc:") == [f"rtc: {boot_time} (UNIX seconds), as the loader said"]


@pytest.mark.parametrize("ips", [100_000_000, 37_000_000])
def test_timer_calibration_against_the_pit_finds_ips(boot, ips):
    machine, _ = boot(ips=ips)
    (line,) = lines(machine, "timer:")
    lapic, tsc = map(int, re.findall(r"(\d+) Hz", line))
    assert abs(lapic - ips) / ips < 0.001 and abs(tsc - ips) / ips < 0.001


def test_without_the_platform_the_kernel_says_so_and_boots(boot):
    machine, result = boot(platform=False)
    assert result.end is RunEnd.EXIT and result.guest_value == 0
    assert lines(machine, "acpi:") == ["acpi: no RSDP from the loader; no APIC, timer or clock"]


class Exits(Observer):
    def __init__(self) -> None:
        self.exit = None

    def on_guest_exit(self, event) -> None:
        self.exit = event


def test_a_virtual_second_of_ticks_is_spent_halted(boot):
    exits = Exits()
    machine, result = boot("test=timer", observers=[exits])
    assert result.end is RunEnd.EXIT and result.guest_value == 0
    assert result.exceptions[0x30] == 100
    (measured,) = lines(machine, "test timer: 100 ticks, HPET")
    microseconds = int(re.search(r"HPET (\d+) us", measured)[1])
    assert abs(microseconds - 1_000_000) < 1_000
    # The second passed in virtual time, not in instructions.
    skipped = machine.vtime_of(result.instructions) - result.instructions
    assert skipped > 0.99 * 100_000_000 and result.instructions < 2_000_000


def test_ticks_land_on_the_same_instructions_in_every_run(boot):
    first = boot("test=timer seconds=2 hz=250")[1]
    second = boot("test=timer seconds=2 hz=250")[1]
    assert first.instructions == second.instructions and first.exceptions == second.exceptions
