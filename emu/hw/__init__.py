"""The PC platform other people's kernels expect, on virtual time: the interrupt controllers
(8259A pair, IOAPIC, local APIC) and their routing (`irq.py`), the timers (8254 PIT, HPET,
local APIC timer, ACPI PM timer, MC146818 RTC), the 8042 PS/2 keyboard controller, PCI
configuration mechanism #1, the ACPI power-management and reset registers (`devices/`), the
ACPI tables that describe them (`acpi.py`), and the virtual clock all of them read
(`clock.py`). Nothing here touches Unicorn or host time: the machine supplies the instruction
counter, the bus (`emu.bus`) carries accesses to the models, and the run loop delivers what
`InterruptRouting.acknowledge()` returns through the guest IDT.
"""
