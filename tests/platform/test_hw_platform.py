"""The assembled platform on a stand-in bus: the port and MMIO map, whole interrupt paths as
a kernel programs them (PIC + PIT, IOAPIC + HPET, LAPIC timer, keyboard), halting until the
next interrupt, power-off and reset, MSRs, and the ACPI tables agreeing with the devices."""
from __future__ import annotations

from acpi_reader import Memory, gas, madt_entries, walk
from emu.hw.devices.reset import ResetReason
from emu.hw.platform import (IDLE_RUN_LIMIT, IDLE_WAKEUPS_BEFORE_TYPING, PcPlatform,
                              cpuid_facts)
from hw_rig import ManualTime

IPS = 100_000_000


class StandInBus:
    """Port and MMIO dispatch as emu.hw.bus.Bus does it: devices see offsets."""

    def __init__(self) -> None:
        self.ports: dict[int, tuple[object, int]] = {}
        self.regions: list[tuple[int, int, object]] = []

    def add_ports(self, first_port, count, device) -> None:
        for port in range(first_port, first_port + count):
            assert port not in self.ports, f"port {port:#x} taken twice"
            self.ports[port] = (device, port - first_port)

    def add_mmio(self, paddr, size, device, exact=True):
        for base, length, _ in self.regions:
            assert paddr + size <= base or base + length <= paddr
        self.regions.append((paddr, size, device))

    def outb(self, port: int, value: int, size: int = 1) -> None:
        device, offset = self.ports[port]
        device.write(offset, size, value)

    def inb(self, port: int, size: int = 1) -> int:
        device, offset = self.ports[port]
        return device.read(offset, size)

    def _region(self, paddr: int):
        for base, length, device in self.regions:
            if base <= paddr < base + length:
                return device, paddr - base
        raise AssertionError(f"nothing at {paddr:#x}")

    def mmio_write(self, paddr: int, value: int, size: int = 4) -> None:
        device, offset = self._region(paddr)
        device.write(offset, size, value)

    def mmio_read(self, paddr: int, size: int = 4) -> int:
        device, offset = self._region(paddr)
        return device.read(offset, size)


class Machine:
    def __init__(self) -> None:
        self.time = ManualTime(IPS)
        self.resets: list[ResetReason] = []
        self.power_offs = 0
        self.platform = PcPlatform(self.time.clock, boot_time=1_700_000_000,
                                   on_reset=self.resets.append, on_power_off=self._off)
        self.bus = StandInBus()
        self.platform.install(self.bus)

    def _off(self) -> None:
        self.power_offs += 1

    def remap_pics(self, mask_master: int, mask_slave: int = 0xFF) -> None:
        for command, data, base, cascade, mask in ((0x20, 0x21, 0x20, 0x04, mask_master),
                                                    (0xA0, 0xA1, 0x28, 0x02, mask_slave)):
            for port, value in ((command, 0x11), (data, base), (data, cascade), (data, 0x01),
                                (data, mask)):
                self.bus.outb(port, value)

    def ioapic_entry(self, pin: int, low: int) -> None:
        for index, value in ((0x11 + 2 * pin, 0), (0x10 + 2 * pin, low)):
            self.bus.mmio_write(0xFEC00000, index)
            self.bus.mmio_write(0xFEC00010, value)

    def run_until_interrupt(self, limit: int = 10 * IPS) -> tuple[int, int]:
        """The run loop's contract, with the CPU halted: (tick, vector)."""
        tick = self.platform.idle_until_interrupt(limit)
        assert tick is not None, "no interrupt came"
        return tick, self.platform.interrupts.acknowledge()


def test_port_and_mmio_map():
    machine = Machine()
    ports = machine.bus.ports
    for port in (0x20, 0x21, 0x40, 0x43, 0x60, 0x61, 0x64, 0x70, 0x71, 0xA0, 0xA1, 0x4D0,
                 0x4D1, 0x600, 0x60B, 0xCF8, 0xCF9, 0xCFF):
        assert port in ports
    assert 0x62 not in ports and 0x80 not in ports
    assert sorted(base for base, _, _ in machine.bus.regions) == [
        0xFEC00000, 0xFED00000, 0xFEE00000]


def test_firmware_state_delivers_nothing_until_the_kernel_programs_it():
    machine = Machine()
    machine.platform.type_text("x")
    machine.platform.pit.write(3, 1, 0x34)
    machine.platform.pit.write(0, 1, 0xA9)
    machine.platform.pit.write(0, 1, 0x04)
    assert machine.platform.idle_until_interrupt(IPS // 100) is None
    assert machine.bus.inb(0x4D1) == 0x02                 # IRQ9 (SCI) level-triggered


def test_pic_and_pit_at_1000_hz_at_exact_ticks():
    machine = Machine()
    machine.remap_pics(mask_master=0xFE)                  # IRQ0 only
    machine.bus.outb(0x43, 0x34)                          # counter 0, lo/hi, mode 2
    machine.bus.outb(0x40, 1193 & 0xFF)
    machine.bus.outb(0x40, 1193 >> 8)
    ticks = []
    for _ in range(3):
        tick, vector = machine.run_until_interrupt()
        assert vector == 0x20
        machine.bus.outb(0x20, 0x20)                      # EOI
        ticks.append(tick)
    pulse = lambda n: -(-n * 88 * IPS // 105_000_000)     # noqa: E731 - the k-th PIT pulse
    assert ticks == [pulse(1 + 1193), pulse(1 + 2 * 1193), pulse(1 + 3 * 1193)]


def test_hpet_legacy_replacement_through_the_ioapic():
    machine = Machine()
    machine.ioapic_entry(2, 0x30)                         # IRQ0 arrives on pin 2
    machine.bus.mmio_write(0xFED00100, 0x4C, 8)           # T0: enabled, periodic, VAL_SET
    machine.bus.mmio_write(0xFED00108, 14318, 8)          # ~1 ms
    machine.bus.mmio_write(0xFED00108, 14318, 8)
    machine.bus.mmio_write(0xFED00010, 0x3, 8)            # enable, legacy replacement
    assert not machine.platform.pit.irq0.connected
    tick, vector = machine.run_until_interrupt()
    assert vector == 0x30
    expected = -(-14318 * 69_841_279 * IPS // 10**15)
    assert tick == expected
    machine.bus.mmio_write(0xFEE000B0, 0)                 # LAPIC EOI
    tick, vector = machine.run_until_interrupt()
    assert vector == 0x30 and tick == -(-2 * 14318 * 69_841_279 * IPS // 10**15)


def test_lapic_timer_tsc_deadline_through_the_msr():
    machine = Machine()
    machine.remap_pics(mask_master=0xFF)
    machine.bus.mmio_write(0xFEE00320, 2 << 17 | 0xEC)    # LVT timer: TSC-deadline
    assert machine.platform.write_msr(0x6E0, 123_456)
    assert machine.platform.read_msr(0x6E0) == 123_456
    assert machine.run_until_interrupt() == (123_456, 0xEC)
    assert machine.platform.read_msr(0x6E0) == 0
    assert machine.platform.read_msr(0x1B) == 0xFEE00900
    assert machine.platform.read_msr(0x10) is None and not machine.platform.write_msr(0x10, 1)


def test_keyboard_interrupt_through_the_8259_and_port_0x60():
    machine = Machine()
    machine.remap_pics(mask_master=0xFD)                  # IRQ1 only
    machine.platform.type_text("k")
    machine.platform.ps2.start_typing()                   # the guest waits at its prompt
    assert machine.run_until_interrupt() == (0, 0x21)
    assert machine.bus.inb(0x64) & 1 and machine.bus.inb(0x60) == 0x25
    machine.bus.outb(0x20, 0x20)
    assert machine.run_until_interrupt()[1] == 0x21
    assert machine.bus.inb(0x60) == 0xA5


def test_typed_keys_wait_for_the_guest_to_wait_with_irq1_unmasked():
    """`--keys` is typed at a prompt, not during boot: a key pressed before the kernel's
    ICW1 (which resets the 8259's edge sense) would hold IRQ 1 high with no edge left to
    interrupt, and the kernel would never see a key."""
    machine = Machine()
    machine.platform.type_text("k")
    assert not machine.bus.inb(0x64) & 1                  # nothing pressed during boot
    machine.remap_pics(mask_master=0xFD)
    for _ in range(IDLE_WAKEUPS_BEFORE_TYPING - 1):        # not idle for long enough yet
        assert machine.platform.idle_until_interrupt(IPS // 100) is None
    assert machine.run_until_interrupt() == (0, 0x21)
    assert machine.bus.inb(0x60) == 0x25


def test_typed_keys_wait_while_irq1_is_masked_however_idle_the_guest():
    machine = Machine()
    machine.platform.type_text("k")
    for _ in range(2 * IDLE_WAKEUPS_BEFORE_TYPING):
        assert machine.platform.idle_until_interrupt(IPS // 100) is None
    machine.remap_pics(mask_master=0xFD)
    assert machine.run_until_interrupt() == (0, 0x21)


def test_typed_keys_wait_while_the_guest_runs_between_its_halts():
    """A kernel that halts in one task's system call while another task runs is not idle
    (TacOS's init halts in waitpid while its shell starts: keys typed then went to no
    reader)."""
    machine = Machine()
    machine.remap_pics(mask_master=0xFD)
    machine.platform.type_text("k")
    for _ in range(2 * IDLE_WAKEUPS_BEFORE_TYPING):
        assert machine.platform.idle_until_interrupt(IPS // 100) is None
        machine.time.at(machine.time.tick + IDLE_RUN_LIMIT + 1)   # a busy task between
    assert not machine.platform.interrupts.pending()


def test_typed_keys_come_through_an_unmasked_ioapic_pin():
    machine = Machine()
    machine.platform.type_text("k")
    machine.ioapic_entry(1, 0x31)                         # IRQ 1 on pin 1, vector 0x31
    machine.bus.mmio_write(0xFEE000F0, 0x1FF)             # LAPIC software-enabled
    assert not machine.bus.inb(0x64) & 1                  # this read found it empty...
    assert machine.run_until_interrupt() == (0, 0x31)     # ...and the key came after it
    assert machine.bus.inb(0x60) == 0x25


def test_rtc_update_interrupt_on_the_slave_8259():
    machine = Machine()
    machine.remap_pics(mask_master=0xFB, mask_slave=0xFE)
    machine.bus.outb(0x70, 0x0B)
    machine.bus.outb(0x71, 0x12)                          # UIE, 24-hour, BCD
    tick, vector = machine.run_until_interrupt()
    assert (tick, vector) == (IPS, 0x28)
    machine.bus.outb(0x70, 0x0C)
    assert machine.bus.inb(0x71) == 0x90 | 0x40           # IRQF, UF (and PF, unasked)


def test_power_off_reset_and_acpi_tables_agree_with_the_devices():
    machine = Machine()
    tables = machine.platform.acpi_tables(0x0FFE_0000)
    acpi = walk(Memory(tables.base, tables.blob), tables.rsdp_address)
    fadt, madt, hpet = acpi.tables["FACP"], acpi.tables["APIC"], acpi.tables["HPET"]
    machine.bus.mmio_write(0xFEC00000, 0)
    ioapic_id = machine.bus.mmio_read(0xFEC00010) >> 24
    assert madt_entries(madt)[1][1][0] == ioapic_id
    assert madt.field("I", 36) == 0xFEE00000
    assert gas(hpet, 40)[4] == 0xFED00000
    assert hpet.field("I", 36) == machine.bus.mmio_read(0xFED00000)
    machine.bus.outb(fadt.field("I", 64), 0x2000, size=2)      # SLP_TYP S5 | SLP_EN
    assert machine.power_offs == 1
    reset_space, _, _, _, reset_port = gas(fadt, 116)
    machine.bus.outb(reset_port, fadt.data[128])
    assert reset_space == 1 and machine.resets == [ResetReason.CF9_HARD]
    machine.bus.outb(0x64, 0xFE)
    assert machine.resets[-1] == ResetReason.KEYBOARD_CONTROLLER
    timer = fadt.field("I", 76)
    machine.time.at(IPS)
    assert machine.bus.inb(timer, 4) == 3_579_545             # one second of PM timer


def test_cpuid_facts_follow_the_tick_rate():
    facts = cpuid_facts(IPS)
    wanted = {(fact.leaf, fact.register, fact.mask): fact.value for fact in facts}
    assert wanted[(0x15, "ecx", 0xFFFFFFFF)] == IPS
    assert wanted[(0x16, "eax", 0xFFFF)] == 100
    assert wanted[(1, "ecx", 1 << 21)] == 0                  # no x2APIC
    assert wanted[(1, "ecx", 1 << 24)] == 1 << 24            # TSC-deadline
    assert all(fact.value & ~fact.mask == 0 for fact in facts)
    assert cpuid_facts(2_000_000_000)[8].value == 2000


def test_identical_scripts_give_identical_interrupt_timelines():
    timelines = []
    for _ in range(2):
        machine = Machine()
        machine.remap_pics(mask_master=0xFA, mask_slave=0xFE)
        machine.bus.outb(0x43, 0x34)
        machine.bus.outb(0x40, 0x00)
        machine.bus.outb(0x40, 0x10)
        machine.bus.outb(0x70, 0x0B)
        machine.bus.outb(0x71, 0x42)                      # periodic, 1024 Hz
        timeline = []
        for _ in range(20):
            tick, vector = machine.run_until_interrupt()
            timeline.append((tick, vector))
            if vector == 0x28:
                machine.bus.outb(0x70, 0x0C)
                machine.bus.inb(0x71)
                machine.bus.outb(0xA0, 0x20)
            machine.bus.outb(0x20, 0x20)
        timelines.append(timeline)
    assert timelines[0] == timelines[1]
    assert {vector for _, vector in timelines[0]} == {0x20, 0x28}
    ticks = [tick for tick, _ in timelines[0]]
    assert ticks == sorted(ticks)
