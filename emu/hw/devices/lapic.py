"""The local APIC of the one CPU, in xAPIC mode at 0xFEE00000 (Intel SDM vol. 3, chapter 11
"Advanced Programmable Interrupt Controller"; register map in Table 11-1).

Owns: the ID, version, TPR/PPR, EOI, LDR/DFR, SVR, the 256-bit ISR/IRR/TMR, ESR, ICR (self
IPIs), the six LVT entries (timer, thermal, performance, LINT0, LINT1, error), the timer's
registers (counting lives in lapic_timer.py), interrupt acceptance and the priority rules of
11.8.3, the INTA answer (`acknowledge`), and the IA32_APIC_BASE (0x1B) and IA32_TSC_DEADLINE
(0x6E0) MSR values the CPU layer forwards.
Does not own: the IOAPIC (which calls `accepts`/`accept_interrupt` and listens to
`eoi_broadcast`), the 8259 (reached through LINT0 as decided in emu.hw.irq), or delivering
the vector through the IDT (the CPU layer).

Modelled as documented behaviour, not refused:
- x2APIC is not modelled: IA32_APIC_BASE bit 10 stays 0 and CPUID must not report x2APIC.
- Moving the APIC base (IA32_APIC_BASE bits 35:12) is recorded in the MSR value but the MMIO
  window stays at 0xFEE00000 (the bus maps it once). Clearing the global enable bit (11)
  returns every register to its power-up state (SDM 11.4.3) and the window then reads 0.
- Clearing SVR bit 8 (software disable) sets every LVT mask bit, which then cannot be cleared
  until it is re-enabled (they stay set after); fixed interrupts arriving are discarded, and
  those already in IRR/ISR are held, not delivered (SDM 11.4.7.2: only INIT, NMI, SMI and
  SIPI are answered normally).
- ICR: fixed (and lowest-priority) IPIs that reach this CPU (shorthand self or all-including-
  self, or a destination naming it) set IRR; other delivery modes (NMI, SMI, INIT, SIPI) and
  IPIs for other CPUs go nowhere. Delivery status always reads idle.
- EOI broadcast suppression (SVR bit 12) is not supported: version bit 24 is 0, the bit reads
  0. No CMCI LVT (max LVT entry 5); 0x2F0 is a reserved register.
- Registers are 32 bits in 16-byte slots. Reads of any size return the slot's bytes (bytes
  4-15 read 0); writes count only at a slot's start with size 4 (size 8 uses its low half);
  other writes are ignored. An access to a reserved slot sets ESR bit 7 (illegal register
  address) and raises the LVT error interrupt.
"""
from __future__ import annotations

from typing import Callable

from emu.hw.bus import Access, Device, Register
from emu.hw.clock import Rate, VirtualClock
from emu.hw.devices.lapic_timer import DIVIDE_WRITABLE, ApicTimer

LAPIC_BASE = 0xFEE00000
LAPIC_SIZE = 0x1000
LAPIC_VERSION = 0x0005_0014      # integrated xAPIC (0x14), max LVT entry 5, no EOI suppression
MSR_IA32_APIC_BASE = 0x1B
MSR_IA32_TSC_DEADLINE = 0x6E0
APIC_BASE_BSP = 1 << 8
APIC_BASE_ENABLE = 1 << 11

# Register offsets (Table 11-1)
ID, VERSION, TPR, APR, PPR, EOI, RRD, LDR, DFR, SVR = (
    0x20, 0x30, 0x80, 0x90, 0xA0, 0xB0, 0xC0, 0xD0, 0xE0, 0xF0)
ISR_BASE, TMR_BASE, IRR_BASE, ESR = 0x100, 0x180, 0x200, 0x280
ICR_LOW, ICR_HIGH = 0x300, 0x310
LVT_TIMER, LVT_THERMAL, LVT_PERF, LVT_LINT0, LVT_LINT1, LVT_ERROR = (
    0x320, 0x330, 0x340, 0x350, 0x360, 0x370)
TIMER_INITIAL, TIMER_CURRENT, TIMER_DIVIDE = 0x380, 0x390, 0x3E0

SVR_ENABLE = 1 << 8
_SVR_WRITABLE = 0x3FF            # vector, software enable, focus processor checking
LVT_MASKED = 1 << 16
LVT_DELIVERY_SHIFT = 8
DELIVERY_FIXED, DELIVERY_LOWEST, DELIVERY_NMI, DELIVERY_EXTINT = 0, 1, 4, 7
_LVT_WRITABLE = {LVT_TIMER: 0x0007_00FF, LVT_THERMAL: 0x0001_07FF, LVT_PERF: 0x0001_07FF,
                 LVT_LINT0: 0x0001_A7FF, LVT_LINT1: 0x0001_A7FF, LVT_ERROR: 0x0001_00FF}
_ICR_LOW_WRITABLE = 0x000C_CFFF
ICR_LOGICAL = 1 << 11
ICR_LEVEL_TRIGGER = 1 << 15
SHORTHAND_NONE, SHORTHAND_SELF, SHORTHAND_ALL, SHORTHAND_OTHERS = 0, 1, 2, 3
ESR_SEND_ILLEGAL_VECTOR = 1 << 5
ESR_RECEIVE_ILLEGAL_VECTOR = 1 << 6
ESR_ILLEGAL_REGISTER = 1 << 7
FIRST_LEGAL_VECTOR = 16          # vectors 0-15 are reserved (SDM 11.5.2)
BROADCAST = 0xFF


def _bank(base: int, name: str) -> tuple[Register, ...]:
    return tuple(Register(base + 0x10 * index, f"{name}{index}", size=4, access=Access.READ)
                 for index in range(8))


def _highest(bits: int) -> int:
    """The highest vector set in a 256-bit register, or 0 if none."""
    return bits.bit_length() - 1 if bits else 0


class LocalApic(Device):
    registers = (
        Register(ID, "ID", size=4), Register(VERSION, "VERSION", size=4, access=Access.READ),
        Register(TPR, "TPR", size=4), Register(APR, "APR", size=4, access=Access.READ),
        Register(PPR, "PPR", size=4, access=Access.READ),
        Register(EOI, "EOI", size=4, access=Access.WRITE),
        Register(RRD, "RRD", size=4, access=Access.READ), Register(LDR, "LDR", size=4),
        Register(DFR, "DFR", size=4), Register(SVR, "SVR", size=4),
        *_bank(ISR_BASE, "ISR"), *_bank(TMR_BASE, "TMR"), *_bank(IRR_BASE, "IRR"),
        Register(ESR, "ESR", size=4), Register(ICR_LOW, "ICR_LOW", size=4),
        Register(ICR_HIGH, "ICR_HIGH", size=4), Register(LVT_TIMER, "LVT_TIMER", size=4),
        Register(LVT_THERMAL, "LVT_THERMAL", size=4), Register(LVT_PERF, "LVT_PERF", size=4),
        Register(LVT_LINT0, "LVT_LINT0", size=4), Register(LVT_LINT1, "LVT_LINT1", size=4),
        Register(LVT_ERROR, "LVT_ERROR", size=4), Register(TIMER_INITIAL, "TIMER_INITIAL", size=4),
        Register(TIMER_CURRENT, "TIMER_CURRENT", size=4, access=Access.READ),
        Register(TIMER_DIVIDE, "TIMER_DIVIDE", size=4),
    )
    _IMPLEMENTED = frozenset(register.offset for register in registers)

    def __init__(self, clock: VirtualClock, apic_id: int = 0, name: str = "lapic",
                 timer_rate: Rate | None = None) -> None:
        super().__init__(name)
        self.clock = clock
        self.initial_id = apic_id & 0xFF
        self.eoi_broadcast: Callable[[int], None] | None = None
        self.timer = ApicTimer(clock, self._timer_fired, timer_rate)
        self.apic_base = LAPIC_BASE | APIC_BASE_BSP | APIC_BASE_ENABLE
        self.power_up()

    def power_up(self) -> None:
        """The state after power-up or RESET (SDM 11.4.7.1)."""
        self.apic_id = self.initial_id
        self.tpr = self.ldr = self.icr = 0
        self.dfr = 0xFFFFFFFF
        self.svr = 0xFF
        self.isr = self.irr = self.tmr = 0
        self.esr = self._errors = 0
        self.lvt = {offset: LVT_MASKED for offset in _LVT_WRITABLE}
        self.timer.reset()

    def firmware_virtual_wire(self) -> None:
        """As firmware hands the CPU over: software-enabled, spurious vector 0xFF, LINT0 the
        8259's ExtINT, LINT1 NMI (MP spec 3.6.2.2 virtual wire mode)."""
        self.svr = SVR_ENABLE | 0xFF
        self.lvt[LVT_LINT0] = DELIVERY_EXTINT << LVT_DELIVERY_SHIFT
        self.lvt[LVT_LINT1] = DELIVERY_NMI << LVT_DELIVERY_SHIFT

    # --- state the router asks about ---------------------------------------------------------

    @property
    def globally_enabled(self) -> bool:
        return bool(self.apic_base & APIC_BASE_ENABLE)

    @property
    def software_enabled(self) -> bool:
        return self.globally_enabled and bool(self.svr & SVR_ENABLE)

    @property
    def spurious_vector(self) -> int:
        return self.svr & 0xFF

    def ppr(self) -> int:
        """Processor priority (SDM 11.8.3.1): TPR, or the in-service class if higher."""
        isrv = _highest(self.isr)
        return self.tpr if (self.tpr >> 4) >= (isrv >> 4) else isrv & 0xF0

    def deliverable(self) -> bool:
        """The highest IRR vector's priority class is above the PPR's (SDM 11.8.3)."""
        if not self.software_enabled or not self.irr:
            return False
        return (_highest(self.irr) >> 4) > (self.ppr() >> 4)

    def acknowledge(self) -> int:
        """INTA: the highest IRR vector moves to ISR; the spurious vector (ISR untouched) if
        nothing is deliverable (SDM 11.9)."""
        if not self.deliverable():
            return self.spurious_vector
        vector = _highest(self.irr)
        self.irr &= ~(1 << vector)
        self.isr |= 1 << vector
        return vector

    def passes_extint(self) -> bool:
        """Whether the 8259's INTR reaches the CPU through LINT0 (see emu.hw.irq)."""
        if not self.globally_enabled:
            return True
        lint0 = self._lvt_value(LVT_LINT0)
        return (not lint0 & LVT_MASKED
                and (lint0 >> LVT_DELIVERY_SHIFT) & 7 == DELIVERY_EXTINT)

    # --- the APIC bus: messages from the IOAPIC and from our own sources ---------------------

    def accepts(self, logical: bool, destination: int) -> bool:
        """Does an interrupt message for `destination` reach this APIC (SDM 11.6.2)?"""
        if not self.software_enabled:
            return False
        if destination == BROADCAST:
            return True
        if not logical:
            return destination == self.apic_id
        ldr = self.ldr >> 24
        if self.dfr >> 28 == 0xF:                         # flat model
            return bool(ldr & destination)
        return (ldr >> 4 == destination >> 4) and bool(ldr & destination & 0xF)   # cluster

    def accept_interrupt(self, vector: int, level: bool) -> None:
        """A fixed interrupt arrives: set IRR, and TMR for level-triggered (SDM 11.5.5)."""
        if not self.software_enabled:
            return
        if vector < FIRST_LEGAL_VECTOR:
            self._error(ESR_RECEIVE_ILLEGAL_VECTOR)
            return
        bit = 1 << vector
        self.irr |= bit
        self.tmr = self.tmr | bit if level else self.tmr & ~bit

    def _error(self, bits: int) -> None:
        self._errors |= bits
        entry = self._lvt_value(LVT_ERROR)
        if not entry & LVT_MASKED:
            vector = entry & 0xFF
            if vector >= FIRST_LEGAL_VECTOR:        # no error loop on an illegal error vector
                self.accept_interrupt(vector, False)

    def _timer_fired(self) -> None:
        entry = self._lvt_value(LVT_TIMER)
        if not entry & LVT_MASKED:
            self.accept_interrupt(entry & 0xFF, False)

    # --- MMIO ------------------------------------------------------------------------------

    def read(self, offset: int, size: int) -> int:
        if not self.globally_enabled:
            return 0
        self.timer.advance(self.clock.now())
        slot, within = offset & ~0xF, offset & 0xF
        if slot not in self._IMPLEMENTED:
            self._error(ESR_ILLEGAL_REGISTER)
            return 0
        return (self._read_register(slot) >> (8 * within)) & ((1 << (8 * size)) - 1)

    def write(self, offset: int, size: int, value: int) -> None:
        if not self.globally_enabled:
            return
        now = self.clock.now()
        self.timer.advance(now)
        slot = offset & ~0xF
        if slot not in self._IMPLEMENTED:
            self._error(ESR_ILLEGAL_REGISTER)
            return
        if offset != slot or size not in (4, 8):
            return
        self._write_register(slot, value & 0xFFFFFFFF, now)

    def _lvt_value(self, offset: int) -> int:
        value = self.lvt[offset]
        return value if self.svr & SVR_ENABLE else value | LVT_MASKED

    def _read_register(self, slot: int) -> int:
        if ISR_BASE <= slot < ESR:
            bank, index = divmod(slot - ISR_BASE, 0x80)
            bits = (self.isr, self.tmr, self.irr)[bank]
            return (bits >> (32 * (index >> 4))) & 0xFFFFFFFF
        if slot in self.lvt:
            entry = self._lvt_value(slot)
            return entry | (self.timer.mode << 17 if slot == LVT_TIMER else 0)
        simple = {ID: self.apic_id << 24, VERSION: LAPIC_VERSION, TPR: self.tpr,
                  PPR: self.ppr(), LDR: self.ldr, DFR: self.dfr, SVR: self.svr,
                  ESR: self.esr, ICR_LOW: self.icr & 0xFFFFFFFF, ICR_HIGH: self.icr >> 32,
                  TIMER_INITIAL: self.timer.initial, TIMER_DIVIDE: self.timer.divide_config}
        if slot == TIMER_CURRENT:
            return self.timer.current_count(self.clock.now())
        return simple.get(slot, 0)           # APR, RRD, EOI read 0

    def _write_register(self, slot: int, value: int, now: int) -> None:
        if slot in self.lvt:
            self._write_lvt(slot, value, now)
        elif slot == EOI:
            self._end_of_interrupt()
        elif slot == ICR_LOW:
            self.icr = (self.icr & ~0xFFFFFFFF) | (value & _ICR_LOW_WRITABLE)
            self._send_ipi()
        elif slot == TIMER_INITIAL:
            self.timer.load(value, now)
        elif slot == TIMER_DIVIDE:
            self.timer.set_divide(value & DIVIDE_WRITABLE, now)
        else:
            self._write_plain(slot, value)

    def _write_plain(self, slot: int, value: int) -> None:
        if slot == ID:
            self.apic_id = value >> 24
        elif slot == TPR:
            self.tpr = value & 0xFF
        elif slot == LDR:
            self.ldr = value & 0xFF000000
        elif slot == DFR:
            self.dfr = value | 0x0FFFFFFF
        elif slot == SVR:
            self.svr = value & _SVR_WRITABLE
            if not self.svr & SVR_ENABLE:    # software disable sets every LVT mask bit
                self.lvt = {offset: entry | LVT_MASKED for offset, entry in self.lvt.items()}
        elif slot == ESR:                 # a write latches the errors since the last one
            self.esr, self._errors = self._errors, 0
        elif slot == ICR_HIGH:
            self.icr = (self.icr & 0xFFFFFFFF) | (value & 0xFF000000) << 32
        # VERSION, PPR, APR, RRD, ISR, TMR, IRR, TIMER_CURRENT are read-only.

    def _write_lvt(self, slot: int, value: int, now: int) -> None:
        value &= _LVT_WRITABLE[slot]
        if not self.svr & SVR_ENABLE:
            value |= LVT_MASKED
        if slot == LVT_TIMER:
            self.timer.set_mode((value >> 17) & 3, now)
            value &= ~(3 << 17)
        self.lvt[slot] = value

    def _end_of_interrupt(self) -> None:
        """EOI: retire the highest in-service vector; a level-triggered one (TMR set) is
        broadcast to the IOAPIC so it clears remote IRR (SDM 11.8.5)."""
        if not self.isr:
            return
        vector = _highest(self.isr)
        self.isr &= ~(1 << vector)
        if self.tmr >> vector & 1 and self.eoi_broadcast is not None:
            self.eoi_broadcast(vector)

    def _send_ipi(self) -> None:
        """ICR low written: deliver a fixed IPI to this CPU if it is a destination."""
        icr = self.icr
        mode = (icr >> 8) & 7
        shorthand = (icr >> 18) & 3
        vector = icr & 0xFF
        if mode not in (DELIVERY_FIXED, DELIVERY_LOWEST) or shorthand == SHORTHAND_OTHERS:
            return
        if vector < FIRST_LEGAL_VECTOR:
            self._error(ESR_SEND_ILLEGAL_VECTOR)
            return
        to_us = shorthand in (SHORTHAND_SELF, SHORTHAND_ALL) or self.accepts(
            bool(icr & ICR_LOGICAL), icr >> 56)
        if to_us:
            self.accept_interrupt(vector, False)

    # --- MSRs forwarded by the CPU layer ----------------------------------------------------

    def read_apic_base_msr(self) -> int:
        return self.apic_base

    def write_apic_base_msr(self, value: int) -> None:
        """IA32_APIC_BASE: base address bits 35:12, BSP (8, read-only), enable (11)."""
        enable = value & APIC_BASE_ENABLE
        self.apic_base = (value & 0xF_FFFF_F000) | APIC_BASE_BSP | enable
        if not enable:
            self.power_up()

    def read_tsc_deadline_msr(self) -> int:
        return self.timer.read_deadline()

    def write_tsc_deadline_msr(self, value: int) -> None:
        self.timer.write_deadline(value, self.clock.now())

    # --- the Timer contract (emu.hw.clock) ---------------------------------------------------

    def next_deadline(self) -> int | None:
        return self.timer.next_deadline()

    def advance(self, now: int) -> None:
        self.timer.advance(now)

