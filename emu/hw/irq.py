"""Interrupt routing: the wires from device outputs to controller inputs, and the CPU's side
of the INTR/INTA handshake.

Owns: which controller input each interrupt line drives (ISA IRQ n reaches 8259 input n and
IOAPIC pin n, except where an interrupt source override moves it: IRQ0 is pin 2 on a PC);
the wired OR of several lines on one input; disconnecting a line (the HPET's legacy
replacement route takes IRQ0 and IRQ8 from the PIT and the RTC); connecting the IOAPIC to the
local APIC; and `pending()` / `acknowledge()`, which decide which controller answers the CPU.
Does not own: what the controllers do with their inputs (devices/pic.py, ioapic.py,
lapic.py), the CPU's RFLAGS.IF (the run loop checks it), or pushing the frame through the IDT
(the CPU layer).

Which controller is in charge follows how the kernel programmed them, as on hardware:
- The local APIC presents its highest-priority pending fixed interrupt (from the IOAPIC, its
  own LVT timer and error entries, self-IPIs) when it is enabled globally (IA32_APIC_BASE
  bit 11) and in software (SVR bit 8) and the interrupt's priority class is above the PPR's
  (Intel SDM vol. 3 11.8.3).
- The 8259 pair's INTR output reaches the CPU as an ExtINT through LINT0 (virtual wire mode,
  SDM 11.5.1, as firmware leaves it) when the local APIC is globally disabled, or when it is
  software-enabled with LVT LINT0 unmasked in ExtINT mode. A kernel that masks the 8259 (OCW1
  0xFF) or masks LINT0 has turned the path off; one that unmasks IOAPIC entries uses the
  APIC path. Both may be live at once: the local APIC is asked first, as QEMU's PC does.
- `acknowledge()` is the INTA cycle: the controller in charge moves its request from IRR to
  ISR and returns the vector. If nothing is deliverable any more (the source went away, TPR
  was raised, the line was masked), the answer is the controller's spurious vector: the local
  APIC's SVR vector (ISR untouched, SDM 11.9), or the 8259's IRQ7 (IRQ15 through the slave,
  which leaves master ISR bit 2 set) (8259A datasheet, "Interrupt Sequence").
End of interrupt: the kernel writes the LAPIC's EOI register (a level-triggered vector also
clears the IOAPIC's remote IRR through `LocalApic.eoi_broadcast`) or sends OCW2 to the 8259s;
both are register writes on the devices, nothing here.

When to ask `pending()`: at a timer deadline (after `advance`), and after any port or MMIO
access the guest makes, since an access can raise or unmask an interrupt at once (a self-IPI,
an EOI that uncovers a lower-priority request, an unmasked IOAPIC entry with its pin asserted,
a keyboard byte after a read of port 0x60), and after the machine itself calls in (typed
text, the power button).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Protocol

from emu.errors import ConfigError
from emu.hw.devices.ioapic import MASKED as IOAPIC_MASKED

if TYPE_CHECKING:
    from emu.hw.devices.ioapic import IoApic
    from emu.hw.devices.lapic import LocalApic
    from emu.hw.devices.pic import PicPair

ISA_IRQ_COUNT = 16
CASCADE_IRQ = 2                 # the slave 8259's INT output drives master input 2
PC_ISA_OVERRIDES: Mapping[int, int] = {0: 2}   # MADT interrupt source override: IRQ0 -> GSI 2


class InputSink(Protocol):
    """A controller with numbered inputs (8259 pair: ISA IRQ 0-15; IOAPIC: pins)."""

    def set_input(self, index: int, level: bool) -> None: ...


class ControllerInput:
    """One controller input: the wired OR of the connected lines that drive it; a change
    of that OR is passed to `sink.set_input(index, level)`."""
    __slots__ = ("sink", "index", "lines", "level")

    def __init__(self, sink: InputSink, index: int) -> None:
        self.sink = sink
        self.index = index
        self.lines: list[IrqLine] = []
        self.level = False

    def refresh(self) -> None:
        level = any(line.level and line.connected for line in self.lines)
        if level != self.level:
            self.level = level
            self.sink.set_input(self.index, level)


class IrqLine:
    """One device's interrupt output, wired to one or more controller inputs. `level` is
    the electrical level (True: high). An edge-triggered source pulses it; a level-triggered
    source holds it. A disconnected line does not reach its inputs."""

    def __init__(self, name: str, inputs: tuple[ControllerInput, ...] = ()) -> None:
        self.name = name
        self._inputs = inputs
        self.level = False
        self._connected = True
        for pin in inputs:
            pin.lines.append(self)

    def set(self, level: bool) -> None:
        level = bool(level)
        if level != self.level:
            self.level = level
            for pin in self._inputs:
                pin.refresh()

    def raise_(self) -> None:
        self.set(True)

    def lower(self) -> None:
        self.set(False)

    def pulse(self) -> None:
        """A rising edge followed by the return to low: one edge-triggered interrupt."""
        self.set(True)
        self.set(False)

    @property
    def connected(self) -> bool:
        return self._connected

    @connected.setter
    def connected(self, value: bool) -> None:
        if bool(value) != self._connected:
            self._connected = bool(value)
            for pin in self._inputs:
                pin.refresh()


class IrqLines(Protocol):
    """What a device needs to get interrupt lines (the HPET re-routes at run time)."""

    def isa_line(self, irq: int, name: str) -> IrqLine: ...

    def gsi_line(self, gsi: int, name: str) -> IrqLine: ...


class InterruptRouting:
    """The board's interrupt wiring and the CPU-facing INTR/INTA interface."""

    def __init__(self, pic: "PicPair", ioapic: "IoApic", lapic: "LocalApic",
                 isa_overrides: Mapping[int, int] = PC_ISA_OVERRIDES) -> None:
        self.pic = pic
        self.ioapic = ioapic
        self.lapic = lapic
        self.isa_overrides = dict(isa_overrides)
        ioapic.apic_bus = lapic
        lapic.eoi_broadcast = ioapic.end_of_interrupt
        self._pic_inputs = {irq: ControllerInput(pic, irq) for irq in range(ISA_IRQ_COUNT)}
        self._ioapic_inputs = {pin: ControllerInput(ioapic, pin) for pin in range(ioapic.pin_count)}

    def gsi_of(self, irq: int) -> int:
        """The IOAPIC pin (global system interrupt) ISA IRQ `irq` arrives on."""
        return self.isa_overrides.get(irq, irq)

    def isa_line(self, irq: int, name: str) -> IrqLine:
        """A line on ISA IRQ `irq`: 8259 input `irq` and IOAPIC pin `gsi_of(irq)`."""
        if not 0 <= irq < ISA_IRQ_COUNT or irq == CASCADE_IRQ:
            raise ConfigError(f"{name}: ISA IRQ {irq} does not exist (0-15, 2 is the cascade)")
        inputs = [self._pic_inputs[irq]]
        pin = self._ioapic_inputs.get(self.gsi_of(irq))
        if pin is not None:
            inputs.append(pin)
        return IrqLine(name, tuple(inputs))

    def gsi_line(self, gsi: int, name: str) -> IrqLine:
        """A line on IOAPIC pin `gsi` only (PCI interrupts, HPET comparators)."""
        if gsi not in self._ioapic_inputs:
            raise ConfigError(f"{name}: GSI {gsi} is not a pin of the IOAPIC "
                              f"(0-{self.ioapic.pin_count - 1})")
        return IrqLine(name, (self._ioapic_inputs[gsi],))

    # --- the CPU's side ---------------------------------------------------------------------

    def pic_routed(self) -> bool:
        """True when the 8259 pair's INTR output can reach the CPU (see the module text)."""
        return self.lapic.passes_extint()

    def isa_irq_unmasked(self, irq: int) -> bool:
        """Could ISA IRQ `irq` reach the CPU as the kernel programmed the controllers: its
        IOAPIC pin unmasked, or its 8259 input (and the cascade) unmasked with the 8259
        routed to the CPU?"""
        pin = self.gsi_of(irq)
        if pin in self._ioapic_inputs and not self.ioapic.entry(pin) & IOAPIC_MASKED:
            return True
        if not self.pic_routed():
            return False
        master, slave = self.pic.master.imr, self.pic.slave.imr
        if irq < 8:
            return not master >> irq & 1
        return not (slave >> (irq - 8) & 1 or master >> CASCADE_IRQ & 1)

    def pending(self) -> bool:
        """An interrupt would be taken now if RFLAGS.IF is set (the caller checks IF)."""
        if self.lapic.deliverable():
            return True
        return self.lapic.passes_extint() and self.pic.pending()

    def acknowledge(self) -> int:
        """The INTA cycle: the vector to deliver, moved from IRR to ISR by the controller
        that answers; that controller's spurious vector if nothing is deliverable now."""
        if self.lapic.deliverable():
            return self.lapic.acknowledge()
        if self.lapic.passes_extint():
            return self.pic.acknowledge()
        return self.lapic.acknowledge()
