"""Device models, one module each, behind the bus's `Device` protocol (emu/hw/bus.py:
registers declared as data, `read(offset, size)`, `write(offset, size, value)`); pc.py
puts them at their ports.
"""
