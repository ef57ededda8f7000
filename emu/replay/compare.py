"""Which recorded events a replay compares, and which of their fields (`--compare`).

Owns: the comparison spec (`all`, the preset `mm`, or `Type[/field/field...],...`), its
validation against the event types of emu/events.py, and the compared part of an event.
Does not own: reading traces or deciding what a difference means (divergence.py).

`all` compares every event, every field, the instruction count included: the rerun must be
the recording, instruction for instruction. A kernel change that moves code shifts RIPs and
counts, so `mm` compares what a memory manager does, by kind and address: exceptions
(vector, kind, error code, CR2, CPL: page faults and system calls), CR3 loads (the root
loaded: the old one is the previous load's, or the loader's, which sits after the kernel
file and so moves with its size), `invlpg`s (address) and how the run ended, ignoring RIPs
and instruction counts.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Mapping

from emu import events as event_types
from emu.errors import ConfigError

PRESETS = {
    "mm": "ExceptionDelivered/vector/kind/error_code/cr2/cpl,Cr3Written/new,"
          "TlbFlush/address,GuestExit/status/reason",
}
ALL = "all"


def event_fields() -> dict[str, tuple[str, ...]]:
    """Every event type of emu/events.py and its fields (icount first)."""
    found: dict[str, tuple[str, ...]] = {}
    pending = list(event_types.Event.__subclasses__())
    while pending:
        cls = pending.pop()
        found[cls.__name__] = tuple(field.name for field in dataclasses.fields(cls))
        pending += cls.__subclasses__()
    return found


@dataclass(frozen=True, slots=True)
class Comparison:
    """`types`: None compares every type; else type -> its compared fields (None: all)."""
    types: Mapping[str, tuple[str, ...] | None] | None = None
    text: str = ALL

    def selects(self, type_name: str) -> bool:
        return self.types is None or type_name in self.types

    def key(self, record: Mapping) -> dict:
        """The compared part of an event record (a dict as traces hold it)."""
        wanted = None if self.types is None else self.types.get(record.get("type"))
        if wanted is None:
            return dict(record)
        return {"type": record.get("type"), **{name: record.get(name) for name in wanted}}

    def narrowed_to(self, recorded_types: list[str] | None) -> "Comparison":
        """This comparison on a trace that recorded only `recorded_types` (its event
        filter): ConfigError if it asks for a type the trace does not have."""
        if recorded_types is None:
            return self
        if self.types is None:
            return Comparison({name: None for name in recorded_types}, self.text)
        missing = sorted(set(self.types) - set(recorded_types))
        if missing:
            raise ConfigError(f"--compare {self.text}: the trace did not record "
                              f"{', '.join(missing)} (it holds {', '.join(recorded_types)})")
        return self


def parse(text: str) -> Comparison:
    """`all`, a preset name, or `Type[/field...]` items separated by commas."""
    text = (text or ALL).strip()
    if text == ALL:
        return Comparison()
    spec = PRESETS.get(text, text)
    known = event_fields()
    types: dict[str, tuple[str, ...] | None] = {}
    for item in spec.split(","):
        name, *wanted = [part.strip() for part in item.strip().split("/")]
        if name not in known:
            raise ConfigError(f"--compare {text}: no event type {name!r}; choose from "
                              f"{', '.join(sorted(known))}, or the presets "
                              f"{', '.join([ALL, *PRESETS])}")
        bad = [field for field in wanted if field not in known[name]]
        if bad:
            raise ConfigError(f"--compare {text}: {name} has no field {bad[0]!r}; its fields: "
                              f"{', '.join(known[name])}")
        types[name] = tuple(wanted) if wanted else None
    return Comparison(types, text)
