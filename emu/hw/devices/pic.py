"""The two cascaded 8259A programmable interrupt controllers of a PC (ports 0x20-0x21 and
0xA0-0xA1) and the PIIX/ICH edge/level control registers (ELCR, ports 0x4D0-0x4D1).

Owns: ICW1-ICW4 initialisation (vector base, cascade, AEOI, special fully nested mode), OCW1
masks, OCW2 end of interrupt and priority rotation, OCW3 register reads, poll and special
mask mode, edge and level sensing, priority resolution, the INTA sequence through the
cascade, and the spurious IRQ7/IRQ15 answers. Everything follows the Intel 8259A datasheet
(order number 231468), sections "Interrupt Sequence", "Initialization Command Words" and
"Operation Command Words".
Does not own: which device drives which input (emu.hw.irq) or whether INTR reaches the CPU
(the local APIC's LINT0, see emu.hw.irq).

Modelled as documented behaviour, not refused:
- 8080/8085 mode (ICW4 bit 0 clear, or no ICW4): vectors are still 8086-style, base + IR.
- Buffered mode (ICW4 BUF, M/S) changes nothing: which chip is the slave is wiring.
- An OCW2 or OCW3 written during the ICW sequence is acted on; an ICW1 restarts it.
- Firmware state: initialised as a PC BIOS leaves it (master base 0x08, slave base 0x70,
  slave on IR2) with every input masked, as the Limine protocol promises the kernel.
"""
from __future__ import annotations

from typing import Callable

from emu.hw.bus import Access, Device, Register

MASTER_PORT = 0x20
SLAVE_PORT = 0xA0
ELCR_PORT = 0x4D0
BIOS_MASTER_BASE = 0x08
BIOS_SLAVE_BASE = 0x70
SPURIOUS_IR = 7

# ICW1 (written to the command port with bit 4 set)
_ICW1 = 0x10
_ICW1_IC4 = 0x01
_ICW1_SNGL = 0x02
_ICW1_LTIM = 0x08
# ICW4
_ICW4_AEOI = 0x02
_ICW4_SFNM = 0x10
# OCW3 (bits 4:3 = 01)
_OCW3 = 0x08
_OCW3_READ = 0x02
_OCW3_RIS = 0x01
_OCW3_POLL = 0x04
_OCW3_ESMM = 0x40
_OCW3_SMM = 0x20


class Pic8259(Device):
    """One 8259A. Offset 0: ICW1/OCW2/OCW3 writes, IRR/ISR/poll reads; offset 1: ICW2-4
    during initialisation, otherwise OCW1 (the IMR)."""
    registers = (
        Register(0, "ICW1/OCW2/OCW3", access=Access.WRITE),
        Register(0, "IRR/ISR", access=Access.READ),
        Register(1, "IMR"),
        Register(1, "ICW2-4", access=Access.WRITE, bank="init"),
    )

    def __init__(self, name: str, vector_base: int, cascade: int,
                 on_change: Callable[[], None] | None = None) -> None:
        super().__init__(name)
        self.on_change = on_change
        self.levels = 0          # input levels as last set
        self.elcr = 0            # per-input level sensing (PIIX ELCR)
        self.auto_eoi = self.special_nested = False
        self._initialise(single=False, ic4=True, level=False)
        self.vector_base = vector_base & 0xF8
        self.icw3 = cascade
        self.imr = 0xFF
        self.init_step = 0

    def _initialise(self, single: bool, ic4: bool, level: bool) -> None:
        """ICW1's resets (datasheet, "Initialization Command Word 1", a-f)."""
        self.single = single
        self.expect_icw4 = ic4
        self.level_triggered = level
        self.imr = 0
        self.isr = 0
        self.latched = 0         # edge-sensed requests; the edge sense circuit is reset
        self.lowest = 7          # IR7 lowest priority
        self.special_mask = False
        self.read_isr = False
        self.poll = False
        self.rotate_on_aeoi = False
        if not ic4:
            self.auto_eoi = self.special_nested = False
        self.init_step = 2

    # --- inputs and priority ----------------------------------------------------------------

    @property
    def level_mask(self) -> int:
        return 0xFF if self.level_triggered else self.elcr

    @property
    def irr(self) -> int:
        """Edge inputs latch a rising edge; level inputs follow the line."""
        level = self.level_mask
        return (self.latched & ~level) | (self.levels & level)

    def set_input(self, ir: int, level: bool) -> None:
        bit = 1 << ir
        if level and not self.levels & bit:
            self.latched |= bit
        self.levels = self.levels | bit if level else self.levels & ~bit

    def _rank(self, ir: int) -> int:
        """0 is the highest priority; the level after `lowest` is highest (rotation)."""
        return (ir - self.lowest - 1) % 8

    def _by_priority(self, bits: int) -> list[int]:
        return sorted((ir for ir in range(8) if bits >> ir & 1), key=self._rank)

    def highest_request(self) -> int | None:
        """The input INTR would be raised for, or None. In fully nested mode an in-service
        level blocks itself and everything below; special fully nested mode lets a level
        interrupt itself (the cascade); special mask mode lets masked ISR bits block nothing."""
        blocking = self.isr & ~self.imr if self.special_mask else self.isr
        in_service = [self._rank(ir) for ir in range(8) if blocking >> ir & 1]
        ceiling = min(in_service, default=8)
        requests = self._by_priority(self.irr & ~self.imr)
        if not requests:
            return None
        rank = self._rank(requests[0])
        if rank < ceiling or (rank == ceiling and self.special_nested):
            return requests[0]
        return None

    def int_output(self) -> bool:
        return self.highest_request() is not None

    def intack(self) -> int | None:
        """The INTA pulses: the acknowledged input (ISR set unless AEOI, edge latch cleared),
        or None, on which the chip answers with IR7 and sets no ISR bit."""
        ir = self.highest_request()
        if ir is None:
            return None
        self.latched &= ~(1 << ir)
        if self.auto_eoi:
            if self.rotate_on_aeoi:
                self.lowest = ir
        else:
            self.isr |= 1 << ir
        return ir

    # --- ports ------------------------------------------------------------------------------

    def active_banks(self) -> frozenset[str]:
        return frozenset(("init",)) if self.init_step else frozenset()

    def read(self, offset: int, size: int) -> int:
        value = 0
        for index in range(size):
            value |= self._read_byte((offset + index) & 1) << (8 * index)
        return value

    def write(self, offset: int, size: int, value: int) -> None:
        for index in range(size):
            self._write_byte((offset + index) & 1, (value >> (8 * index)) & 0xFF)

    def _read_byte(self, offset: int) -> int:
        if offset == 1:
            return self.imr
        if self.poll:
            self.poll = False
            ir = self.intack()
            self.notify()
            return 0x80 | ir if ir is not None else 0
        return self.isr if self.read_isr else self.irr

    def _write_byte(self, offset: int, value: int) -> None:
        if offset == 0 and value & _ICW1:
            self._initialise(single=bool(value & _ICW1_SNGL), ic4=bool(value & _ICW1_IC4),
                             level=bool(value & _ICW1_LTIM))
        elif offset == 0 and value & 0x18 == _OCW3:
            self._ocw3(value)
        elif offset == 0:
            self._ocw2(value)
        elif self.init_step:
            self._icw(value)
        else:
            self.imr = value
        self.notify()

    def _icw(self, value: int) -> None:
        if self.init_step == 2:
            self.vector_base = value & 0xF8
            self.init_step = 3 if not self.single else (4 if self.expect_icw4 else 0)
        elif self.init_step == 3:
            self.icw3 = value
            self.init_step = 4 if self.expect_icw4 else 0
        else:
            self.auto_eoi = bool(value & _ICW4_AEOI)
            self.special_nested = bool(value & _ICW4_SFNM)
            self.init_step = 0

    def _ocw2(self, value: int) -> None:
        """R SL EOI in bits 7:5, the level in bits 2:0 (datasheet, OCW2 table)."""
        command, level = value >> 5, value & 7
        if command in (0b001, 0b101):                 # non-specific EOI (and rotate)
            serviced = self._by_priority(self.isr)
            if serviced:
                self.isr &= ~(1 << serviced[0])
                if command == 0b101:
                    self.lowest = serviced[0]
        elif command in (0b011, 0b111):               # specific EOI (and rotate)
            self.isr &= ~(1 << level)
            if command == 0b111:
                self.lowest = level
        elif command == 0b110:                        # set priority
            self.lowest = level
        elif command in (0b100, 0b000):               # rotate in AEOI mode: set / clear
            self.rotate_on_aeoi = command == 0b100
        # 0b010 is "no operation".

    def _ocw3(self, value: int) -> None:
        if value & _OCW3_READ:
            self.read_isr = bool(value & _OCW3_RIS)
        self.poll = bool(value & _OCW3_POLL)
        if value & _OCW3_ESMM:
            self.special_mask = bool(value & _OCW3_SMM)

    def notify(self) -> None:
        """Tell the pair the INT output may have changed (the slave drives master IR2)."""
        if self.on_change is not None:
            self.on_change()


class PicPair:
    """The PC's master and slave 8259A, the slave's INT on master IR2. ISA IRQ n is input
    n of the master (n < 8) or n - 8 of the slave."""

    def __init__(self, master_base: int = BIOS_MASTER_BASE,
                 slave_base: int = BIOS_SLAVE_BASE) -> None:
        self.master = Pic8259("pic-master", master_base, cascade=0x04)
        self.slave = Pic8259("pic-slave", slave_base, cascade=0x02,
                             on_change=self._cascade)

    def set_input(self, irq: int, level: bool) -> None:
        chip = self.master if irq < 8 else self.slave
        chip.set_input(irq & 7, level)
        self._cascade()

    def _cascade(self) -> None:
        self.master.set_input(2, self.slave.int_output())

    def pending(self) -> bool:
        """INTR: the master has a request to present."""
        return self.master.int_output()

    def _slave_on(self, ir: int) -> bool:
        return not self.master.single and bool(self.master.icw3 >> ir & 1)

    def acknowledge(self) -> int:
        """The INTA sequence: the vector, from the slave when the master picks its cascade
        input. With nothing to present a chip answers IR7 (spurious), setting no ISR bit;
        a spurious IRQ15 still leaves master ISR bit 2 set, so the kernel must EOI the master."""
        ir = self.master.intack()
        if ir is None:
            vector = self.master.vector_base + SPURIOUS_IR
        elif self._slave_on(ir):
            slave_ir = self.slave.intack()
            vector = self.slave.vector_base + (SPURIOUS_IR if slave_ir is None else slave_ir)
        else:
            vector = self.master.vector_base + ir
        self._cascade()
        return vector

    def in_service(self) -> int:
        """The 16-bit ISR of the pair (slave in bits 15:8), for reports."""
        return self.master.isr | self.slave.isr << 8


class Elcr(Device):
    """The edge/level control registers of PIIX/ICH south bridges: one bit per ISA IRQ, 1 for
    level sensing; IRQ 0, 1, 2, 8 and 13 are always edge (PIIX4 datasheet, ELCR1/ELCR2)."""
    registers = (Register(0, "ELCR1"), Register(1, "ELCR2"))
    _WRITABLE = (0xF8, 0xDE)

    def __init__(self, pair: PicPair, name: str = "elcr") -> None:
        super().__init__(name)
        self.chips = (pair.master, pair.slave)

    def read(self, offset: int, size: int) -> int:
        value = 0
        for index in range(size):
            chip = (offset + index) & 1
            value |= self.chips[chip].elcr << (8 * index)
        return value

    def write(self, offset: int, size: int, value: int) -> None:
        for index in range(size):
            chip = (offset + index) & 1
            self.chips[chip].elcr = (value >> (8 * index)) & self._WRITABLE[chip]
            self.chips[chip].notify()
