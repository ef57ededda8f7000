"""Register-level models of the PC's platform devices, one module per device, each following
the datasheet it names. They see offsets from their port base or MMIO base (`emu.bus.Device`),
read virtual time from a `VirtualClock` and raise interrupts through `IrqLine`s; where they
sit is decided by `emu.hw.platform`.
"""
