"""The PC platform assembled: every device of emu.hw wired to its interrupt lines, put at the
ports and addresses a PC has, described by ACPI tables made from the same objects.

Owns: the port and MMIO map below, the firmware state at hand-over, the interrupt wiring of
each device, the list of timers, and the CPU-facing helpers the run loop calls (`service`,
`idle_until_interrupt`, the MSR hooks, the CPUID facts).
Does not own: the bus (emu.hw.bus: `install` only calls `add_ports`/`add_mmio`), the CPU, the run
loop, or where the ACPI tables are copied (the loader).

Port map (first port, count, device):      MMIO map (base, size, device):
  0x020   2  8259A master                    0xFEC00000  4 KiB  IOAPIC (ID 1, GSI 0-23)
  0x040   4  8254 PIT                        0xFED00000  4 KiB  HPET (3 comparators)
  0x060   1  8042 data                       0xFEE00000  4 KiB  local APIC (ID 0, xAPIC)
  0x061   1  system control port B
  0x064   1  8042 status/command
  0x070   2  MC146818 RTC index/data, CMOS
  0x0A0   2  8259A slave
  0x4D0   2  ELCR (edge/level control)
  0x600  12  ACPI PM1a_EVT 0x600, PM1a_CNT 0x604, PM_TMR 0x608
  0xCF8   8  PCI CONFIG_ADDRESS/CONFIG_DATA, with RST_CNT at 0xCF9
ISA interrupts: PIT IRQ0 (IOAPIC pin 2), keyboard IRQ1, RTC IRQ8, SCI IRQ9 (level, active
high), mouse IRQ12 (no mouse); HPET comparators route to pins 20-23 or, in legacy
replacement mode, take IRQ0 and IRQ8.

Firmware state at hand-over (what a BIOS and Limine leave): 8259s initialised with vector
bases 0x08 and 0x70 and every input masked; ELCR marks IRQ9 (the SCI) level-triggered; IOAPIC
entries masked; local APIC software-enabled in virtual wire mode (LINT0 ExtINT, LINT1 NMI,
spurious vector 0xFF); PIT, HPET and the LAPIC timer stopped; RTC in BCD 24-hour mode at
`boot_time`; 8042 configuration 0x45.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Protocol

from emu.hw.bus import Device
from emu.hw.acpi import AcpiMachine, AcpiTables, build_tables
from emu.hw.clock import Rate, Timers, VirtualClock
from emu.hw.devices.acpi_pm import PM_BASE, PM_PORT_COUNT, SCI_IRQ, AcpiPm
from emu.hw.devices.hpet import HPET_BASE, HPET_SIZE, Hpet
from emu.hw.devices.ioapic import IOAPIC_BASE, IOAPIC_SIZE, IoApic
from emu.hw.devices.lapic import (LAPIC_BASE, LAPIC_SIZE, MSR_IA32_APIC_BASE,
                                  MSR_IA32_TSC_DEADLINE, LocalApic)
from emu.hw.devices.pci import CONFIG_ADDRESS_PORT, PCI_PORT_COUNT, PciHost
from emu.hw.devices.pic import ELCR_PORT, MASTER_PORT, SLAVE_PORT, Elcr, PicPair
from emu.hw.devices.pit import PIT_PORT, PORT_B, Pit8254, PortB
from emu.hw.devices.ps2 import DATA_PORT, KEYBOARD_IRQ, MOUSE_IRQ, STATUS_PORT, I8042
from emu.hw.devices.reset import ResetControl, ResetReason
from emu.hw.devices.rtc import RTC_IRQ, RTC_PORT, Mc146818Rtc
from emu.hw.irq import InterruptRouting

IOAPIC_ID = 1                    # distinct from the BSP's local APIC ID 0 (MP spec 3.6.6)
IDLE_LIMIT_SECONDS = 3600        # a halted CPU with no interrupt within this is dead
# Typed text starts once the guest idles: this many halts in a row, each after at most
# IDLE_RUN_LIMIT instructions since the last wake-up (an idle loop, not a kernel that halts
# in one task's system call while another runs).
IDLE_WAKEUPS_BEFORE_TYPING = 3
IDLE_RUN_LIMIT = 10_000
BSP_APIC_ID = 0


class PortsAndMmio(Protocol):
    """The part of emu.hw.bus.Bus that installing devices needs."""

    def add_ports(self, first_port: int, count: int, device: Device) -> None: ...

    def add_mmio(self, paddr: int, size: int, device: Device, exact: bool = True) -> object: ...


class _Watched(Device):
    """A device whose every access is followed by a call (see PcPlatform.install)."""

    def __init__(self, device: Device, after: Callable[[bool], None], mmio: bool) -> None:
        super().__init__(device.name)
        self.device = device
        self.after = after
        self.mmio = mmio
        self.registers = device.registers

    def read(self, offset: int, size: int) -> int:
        value = self.device.read(offset, size)
        self.after(self.mmio)
        return value

    def write(self, offset: int, size: int, value: int) -> None:
        self.device.write(offset, size, value)
        self.after(self.mmio)

    def active_banks(self) -> frozenset[str]:
        return self.device.active_banks()


@dataclass(frozen=True, slots=True)
class CpuidFact:
    """A CPUID output bit field the platform implies: (output & mask) must equal value."""
    leaf: int
    subleaf: int
    register: str                # "eax", "ebx", "ecx", "edx"
    mask: int
    value: int
    why: str


def cpuid_facts(ips: int) -> tuple[CpuidFact, ...]:
    """What CPUID must report for kernels to use this platform as it is (Intel SDM vol. 2A,
    CPUID): an xAPIC without x2APIC, the TSC-deadline timer, an always-running APIC timer,
    an invariant TSC, and the TSC/crystal frequency of virtual time."""
    return (
        CpuidFact(1, 0, "edx", 1 << 9, 1 << 9, "APIC: a local APIC is present"),
        CpuidFact(1, 0, "ecx", 1 << 21, 0, "x2APIC: not modelled"),
        CpuidFact(1, 0, "ecx", 1 << 24, 1 << 24, "TSC-deadline: LVT timer mode 2 works"),
        CpuidFact(1, 0, "ebx", 0xFF << 24, BSP_APIC_ID << 24, "initial APIC ID"),
        CpuidFact(6, 0, "eax", 1 << 2, 1 << 2, "ARAT: the APIC timer runs in every state"),
        CpuidFact(0x15, 0, "eax", 0xFFFFFFFF, 1, "TSC/crystal ratio denominator"),
        CpuidFact(0x15, 0, "ebx", 0xFFFFFFFF, 1, "TSC/crystal ratio numerator"),
        CpuidFact(0x15, 0, "ecx", 0xFFFFFFFF, ips, "crystal (and LAPIC timer) Hz = ticks/s"),
        CpuidFact(0x16, 0, "eax", 0xFFFF, ips // 1_000_000, "base frequency in MHz"),
        CpuidFact(0x80000007, 0, "edx", 1 << 8, 1 << 8, "invariant TSC"),
    )


class PcPlatform:
    def __init__(self, clock: VirtualClock, *, boot_time: int,
                 on_reset: Callable[[ResetReason], None], on_power_off: Callable[[], None],
                 cmos: Mapping[int, int] | None = None,
                 lapic_timer_rate: Rate | None = None) -> None:
        self.clock = clock
        self.pic = PicPair()
        self.elcr = Elcr(self.pic)
        self.elcr.write(0, 2, 1 << SCI_IRQ)                # firmware: the SCI is level
        self.ioapic = IoApic(IOAPIC_ID)
        self.lapic = LocalApic(clock, BSP_APIC_ID, timer_rate=lapic_timer_rate)
        self.lapic.firmware_virtual_wire()
        self.interrupts = InterruptRouting(self.pic, self.ioapic, self.lapic)
        lines = self.interrupts
        self.pit = Pit8254(clock, lines.isa_line(0, "pit"))
        self.port_b = PortB(self.pit)
        self.rtc = Mc146818Rtc(clock, boot_time, lines.isa_line(RTC_IRQ, "rtc"),
                               cmos=dict(cmos or {}))
        self.hpet = Hpet(clock, lines, legacy_displaced=(self.pit.irq0, self.rtc.irq))
        self.acpi_pm = AcpiPm(clock, on_power_off, lines.isa_line(SCI_IRQ, "sci"))
        self.reset_control = ResetControl(on_reset)
        # Typed text waits for the guest to wait for it (see `type_text`).
        self.ps2 = I8042(on_reset, lines.isa_line(KEYBOARD_IRQ, "keyboard"),
                         lines.isa_line(MOUSE_IRQ, "mouse"),
                         irq1_reaches_cpu=lambda: lines.isa_irq_unmasked(KEYBOARD_IRQ))
        self.pci = PciHost(self.reset_control)
        self._idle_streak = 0                 # halts in a row with little run between
        self._woke_at: int | None = None      # the tick the CPU last left a halt
        self.timers = Timers((self.pit, self.hpet, self.lapic, self.rtc, self.acpi_pm))

    # --- wiring -----------------------------------------------------------------------------

    def port_map(self) -> tuple[tuple[int, int, Device], ...]:
        return ((MASTER_PORT, 2, self.pic.master), (PIT_PORT, 4, self.pit),
                (DATA_PORT, 1, self.ps2.data), (PORT_B, 1, self.port_b),
                (STATUS_PORT, 1, self.ps2.command), (RTC_PORT, 2, self.rtc),
                (SLAVE_PORT, 2, self.pic.slave), (ELCR_PORT, 2, self.elcr),
                (PM_BASE, PM_PORT_COUNT, self.acpi_pm),
                (CONFIG_ADDRESS_PORT, PCI_PORT_COUNT, self.pci))

    @staticmethod
    def mmio_windows() -> tuple[tuple[int, int, str], ...]:
        """(base, size, name) of the MMIO windows: no RAM may be there."""
        return ((IOAPIC_BASE, IOAPIC_SIZE, "IOAPIC"), (HPET_BASE, HPET_SIZE, "HPET"),
                (LAPIC_BASE, LAPIC_SIZE, "local APIC"))

    def mmio_map(self) -> tuple[tuple[int, int, Device], ...]:
        return ((IOAPIC_BASE, IOAPIC_SIZE, self.ioapic), (HPET_BASE, HPET_SIZE, self.hpet),
                (LAPIC_BASE, LAPIC_SIZE, self.lapic))

    def install(self, bus: PortsAndMmio,
                after_access: Callable[[bool], None] | None = None) -> None:
        """Put every device on `bus` (before the first instruction runs). `after_access(mmio)`
        is called after every access to one of them, `mmio` True for an MMIO access (the
        machine checks then whether an interrupt became pending). MMIO regions are plain
        callbacks: no memory hook, so RAM accesses cost nothing extra (emu/hw/bus.py,
        `exact`)."""
        def watched(device: Device, mmio: bool) -> Device:
            return device if after_access is None else _Watched(device, after_access, mmio)
        for first, count, device in self.port_map():
            bus.add_ports(first, count, watched(device, False))
        for base, size, device in self.mmio_map():
            bus.add_mmio(base, size, watched(device, True), exact=False)

    def acpi_machine(self) -> AcpiMachine:
        return AcpiMachine(lapic_address=LAPIC_BASE, lapic_id=self.lapic.initial_id,
                           ioapic_id=self.ioapic.apic_id, ioapic_address=IOAPIC_BASE,
                           hpet_address=HPET_BASE, pm_base=PM_BASE, sci_irq=SCI_IRQ)

    def acpi_tables(self, base: int, revision: int = 2) -> AcpiTables:
        return build_tables(self.acpi_machine(), base, revision)

    # --- the run loop's side ----------------------------------------------------------------

    def service(self, now: int) -> bool:
        """Catch every timer up to `now`; True if an interrupt is pending (IF permitting)."""
        self.timers.advance(now)
        return self.interrupts.pending()

    def idle_until_interrupt(self, limit: int) -> int | None:
        """A halted CPU with IF set: skip virtual time from deadline to deadline until an
        interrupt is pending. Returns the tick it is pending at, or None if no timer will
        raise one (a dead halt) or none comes by tick `limit` (the run's budget). A timer
        whose interrupt is masked still has deadlines: each is visited, so `limit` bounds
        the work as well as the virtual time."""
        if self.ps2.typing_waits:
            self._note_idle()
        while not self.service(self.clock.now()):
            deadline = self.timers.next_deadline()
            if deadline is None or deadline > limit:
                self._woke_at = self.clock.now()
                return None
            self.clock.skip_to(deadline)
        self._woke_at = self.clock.now()
        return self.clock.now()

    def _note_idle(self) -> None:
        """One more halt: after IDLE_WAKEUPS_BEFORE_TYPING in a row of an idle loop, with
        IRQ 1 able to reach the CPU, the guest waits for a key (see `type_text`)."""
        ran = None if self._woke_at is None else self.clock.now() - self._woke_at
        idle = ran is not None and ran <= IDLE_RUN_LIMIT
        self._idle_streak = self._idle_streak + 1 if idle else 1
        if self._idle_streak >= IDLE_WAKEUPS_BEFORE_TYPING and self.ps2.keyboard_irq_on():
            self.ps2.start_typing()

    # --- the CPU's InterruptController protocol (emu/cpu/interrupts.py) ---------------------

    def next_due(self) -> int | None:
        """The instruction count of the next timer deadline (ticks minus halted time)."""
        deadline = self.timers.next_deadline()
        return None if deadline is None else max(deadline - self.clock.skipped, 0)

    def catch_up(self) -> bool:
        return self.service(self.clock.now())

    def acknowledge(self) -> int:
        return self.interrupts.acknowledge()

    def idle(self) -> bool:
        return self.idle_until_interrupt(self.clock.now() + IDLE_LIMIT_SECONDS *
                                         self.clock.ips) is not None

    def read_msr(self, index: int) -> int | None:
        """The value of an MSR the platform owns, or None if it is not one of them."""
        if index == MSR_IA32_APIC_BASE:
            return self.lapic.read_apic_base_msr()
        if index == MSR_IA32_TSC_DEADLINE:
            return self.lapic.read_tsc_deadline_msr()
        return None

    def write_msr(self, index: int, value: int) -> bool:
        """Take a WRMSR of an MSR the platform owns; False if it is not one of them."""
        if index == MSR_IA32_APIC_BASE:
            self.lapic.write_apic_base_msr(value)
        elif index == MSR_IA32_TSC_DEADLINE:
            self.lapic.write_tsc_deadline_msr(value)
        else:
            return False
        return True

    def cpuid(self) -> tuple[CpuidFact, ...]:
        """The CPUID facts of this platform at its clock's rate."""
        return cpuid_facts(self.clock.ips)

    def type_text(self, text: str) -> int:
        """Keys pressed on the PS/2 keyboard, as a person types at a prompt: the first
        comes once the guest waits for input with IRQ 1 unmasked (at the 8259 or its IOAPIC
        pin): idling in a `hlt` loop (IDLE_WAKEUPS_BEFORE_TYPING halts in a row), or
        reading the 8042 status; or once it spins on the status in a polling loop
        (emu.hw.devices.ps2).
        Pressed from the start, a key would sit in the 8042 while the kernel initialises its
        8259 (ICW1 resets the edge sense) or IOAPIC (an edge on a masked pin is lost): no
        interrupt would ever come, as on hardware, and no real firmware hands over a full
        output buffer. Returns characters no key types."""
        return self.ps2.type_text(text)

    def press_power_button(self) -> None:
        self.acpi_pm.press_power_button()
