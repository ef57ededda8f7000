"""disk: faults on the swap disk's requests (an I/O error, a torn write, a late completion),
chosen by request number, sector range or the knobs.

Owns: which requests count (reads or writes, those touching a sector range), the knobs'
decision for each, and the Injection event of each fault.
Does not own: what a fault does to a request (MediaFault in emu/hw/devices/virtio_blk.py).
"""
from __future__ import annotations

from emu.errors import ConfigError
from emu.events import Injection
from emu.hw.devices.virtio_blk import MediaFault
from emu.hw.disk import SECTOR
from emu.inject.knobs import Decider
from emu.inject.spec import InjectionSpec, sector_range

DEFAULT_DELAY = 1_000_000          # ticks: 10 ms at the default 100 M ticks a second
_OPS = {"read": "in", "write": "out"}


class DiskFault:
    def __init__(self, machine, spec: InjectionSpec) -> None:
        if machine.swap is None:
            raise ConfigError(f"--inject {spec.text}: the machine has no disk; add --swap SIZE "
                              f"or --swap-file PATH")
        self.machine, self.spec = machine, spec
        params = spec.params
        self.kind = params["fault"]
        op = params.get("op", "write" if self.kind == "torn" else None)
        self.op = _OPS[op] if op else None
        self.sectors = sector_range(params["sectors"]) if "sectors" in params else None
        amount = params.get("land", 1) if self.kind == "torn" else \
            params.get("ticks", DEFAULT_DELAY) if self.kind == "delay" else 0
        self.fault = MediaFault(self.kind, amount)
        self.decider = Decider(spec.knobs)
        machine.swap.blk.fault_hooks.append(self._decide)

    def describe(self) -> str:
        return f"disk {self.kind} ({self.spec.text})"

    def _decide(self, kind: str, sector: int, length: int) -> MediaFault | None:
        if self.op is not None and kind != self.op:
            return None
        if self.sectors is not None:
            first, last = self.sectors
            if sector > last or sector + max(1, length // SECTOR) - 1 < first:
                return None
        if not self.decider.should_fail(length):
            return None
        events = self.machine.events
        if events.wants(Injection):
            what = {"ioerr": "I/O error",
                    "torn": f"torn: {min(self.fault.amount, length // SECTOR)} of "
                            f"{length // SECTOR} sectors land",
                    "delay": f"completes {self.fault.amount:,} ticks late"}[self.kind]
            op = "read" if kind == "in" else "write"
            events.emit(Injection(events.now(), "disk", f"sector {sector}",
                                  f"request {self.decider.calls} ({op} of {length} bytes): "
                                  f"{what}"))
        return self.fault
