"""Helpers for the platform device tests: a clock the test moves by hand, and a probe that
stands where a controller input would be."""
from __future__ import annotations

from emu.hw.clock import DEFAULT_IPS, VirtualClock
from emu.hw.irq import ControllerInput, IrqLine


class ManualTime:
    """An instruction counter the test sets; `clock` reads it. Deadlines the devices
    announce through `clock.wake_at` are kept in `wakes`."""

    def __init__(self, ips: int = DEFAULT_IPS) -> None:
        self.tick = 0
        self.clock = VirtualClock(lambda: self.tick, ips)
        self.wakes: list[int] = []
        self.clock.on_wake = self.wakes.append

    def at(self, tick: int) -> "ManualTime":
        assert tick >= self.tick, "time runs forward"
        self.tick = tick
        return self


class LineProbe:
    """A controller input of its own: counts rising edges and keeps the level."""

    def __init__(self, name: str = "probe") -> None:
        self.edges = 0
        self.level = False
        self.line = IrqLine(name, (ControllerInput(self, 0),))

    def set_input(self, index: int, level: bool) -> None:
        if level and not self.level:
            self.edges += 1
        self.level = level


class ProbeLines:
    """An `IrqLines` provider whose lines are probes, for devices that route at run time."""

    def __init__(self) -> None:
        self.isa: dict[int, LineProbe] = {}
        self.gsi: dict[int, LineProbe] = {}

    def isa_line(self, irq: int, name: str) -> IrqLine:
        return self.isa.setdefault(irq, LineProbe(name)).line

    def gsi_line(self, gsi: int, name: str) -> IrqLine:
        return self.gsi.setdefault(gsi, LineProbe(name)).line


def remap_pics(pair, icw4: int = 0x01, master_base: int = 0x20, slave_base: int = 0x28) -> None:
    """The classic ICW sequence on an 8259 pair (ICW1 edge + IC4, ICW2 base, ICW3 cascade,
    ICW4), as kernels remap the PICs; ICW1 leaves every input unmasked."""
    for chip, base, icw3 in ((pair.master, master_base, 0x04), (pair.slave, slave_base, 0x02)):
        chip.write(0, 1, 0x11)
        chip.write(1, 1, base)
        chip.write(1, 1, icw3)
        chip.write(1, 1, icw4)
