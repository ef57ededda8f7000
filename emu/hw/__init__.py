"""The hardware around the CPU: guest RAM (memory.py), memory maps (memmap.py), the port and
MMIO bus (bus.py) and the device models behind it (devices/, one module each), and the PC
platform other people's kernels expect, on virtual time: the interrupt controllers and
their routing (irq.py), the virtual clock every timer reads (clock.py), the ACPI tables
that describe the machine (acpi.py), and the wiring of it all (platform.py, devices/pc.py).

May import: emu.errors, emu.x86, emu.events, emu.inputs, emu.engine. Imported by emu.cpu,
emu.boot and above. Nothing here reads host time; the bus asks the CPU's I/O permission
check through a protocol, never by import.
"""
