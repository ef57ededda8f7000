"""The hardware around the CPU: guest RAM (memory.py), memory maps (memmap.py), the port and
MMIO bus (bus.py) and the device models behind it (devices/, one module each; pc.py wires
the PC).

May import: emu.errors, emu.x86, emu.events, emu.engine. Imported by emu.cpu, emu.boot and
above. The bus asks the CPU's I/O permission check through a protocol, never by import.
"""
