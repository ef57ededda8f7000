"""Device models, one module each, behind the bus's `Device` protocol (emu/hw/bus.py:
registers declared as data, `read(offset, size)`, `write(offset, size, value)`), each
following the datasheet it names. Timers read a `VirtualClock` and raise interrupts
through `IrqLine`s (emu/hw/clock.py, emu/hw/irq.py); where they sit is decided by
devices/pc.py (the monitor's own ports, the UART) and emu/hw/platform.py (the PC platform).
"""
