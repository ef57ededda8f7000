"""Comparing a rerun with its recording, event by event, as the events happen.

Owns: `ReplayComparer`, an observer that takes each event the rerun emits, compares it with
the next recorded one (emu/replay/compare.py says which types and fields), and at the first
difference captures a report at that very instruction (the recorded and observed events,
the instruction count, RIP with its function and source line, the last matching events,
registers, the instruction, page walk and backtrace: emu/monitor/report.py) and stops the
run (RunEnd.DIVERGED). A recording cut short (no GuestExit) stops the rerun where it ends.
Does not own: running the machine or printing (the `emu replay` command).
"""
from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass
from typing import Iterator

from unicorn import x86_const as X

from emu.errors import TraceError
from emu.events import Event, Observer
from emu.monitor import report
from emu.monitor.trace import FlushRuns, run_line
from emu.monitor.trace_events import TraceFilter
from emu.replay.compare import Comparison
from emu.result import RunEnd

HISTORY = 5
_HEX_FIELDS = frozenset({"rip", "cr2", "address", "old", "new", "handler_rip", "value",
                         "error_code", "port"})


def describe_event(record: dict | None) -> str:
    """One line: `PortAccess @1234 port=0x3f8 size=1 value=0x41 write=True`."""
    if record is None:
        return "(nothing: the recording ends here)"
    parts = [f"{record.get('type')} @{record.get('icount')}"]
    for name, value in record.items():
        if name in ("type", "icount") or name == "vtime" and value == record.get("icount"):
            continue                    # virtual time shown only where halts skipped time
        if name in _HEX_FIELDS and isinstance(value, int) and not isinstance(value, bool):
            value = hex(value)
        parts.append(f"{name}={value}")
    return " ".join(str(part) for part in parts)


@dataclass(frozen=True, slots=True)
class Divergence:
    index: int                     # the compared event's number, from 1
    recorded: dict | None          # None: the rerun went on past the end of the recording
    observed: dict
    icount: int
    rip: int
    where: str                     # `name+0x12 (file.c:34)`
    report: str


class ReplayComparer(Observer):
    """Compares each event of the run with the next recorded one of the selected types."""

    def __init__(self, recorded: Iterator[dict], comparison: Comparison,
                 history: int = HISTORY, recorded_filter: TraceFilter | None = None) -> None:
        """`recorded_filter`: the events the recording kept (its `--trace-events`); the
        rerun's others are not compared (nor built)."""
        self.comparison = comparison
        self.filter = recorded_filter or TraceFilter()
        types = self.filter.recorded_types
        self.event_types = None if types is None else frozenset(types)
        self._runs = FlushRuns() if self.filter.flush_runs else None
        self._source = iter(recorded)
        self._last_type: str | None = None     # of the last recorded event read, any type
        self.matched = 0
        self.last: deque[dict] = deque(maxlen=history)
        self.divergence: Divergence | None = None
        self.cut_short = False          # the recording ended without a GuestExit
        self.finished = False           # the recording's GuestExit was matched
        self._machine = None
        self._pending: tuple[dict | None, dict] | None = None
        self._last_observed: dict | None = None

    def attach(self, machine) -> None:
        """The machine the rerun runs on (built with this observer): a divergence found
        while it was built (the Booted event) stops it before the first instruction."""
        self._machine = machine
        if self._pending is not None:
            self._diverge(*self._pending)

    def on_event(self, event: Event) -> None:
        if self.divergence is not None or self.finished or self.cut_short:
            return
        name = type(event).__name__
        if name == "GuestExit":
            self._last_observed = event.to_dict()
        if not self.filter.keeps(event):
            return
        vtime_of = self._machine.vtime_of if self._machine is not None else None
        vtime = vtime_of(event.icount) if vtime_of else event.icount
        items = self._runs.push(event, vtime) if self._runs else [(event, vtime, None)]
        for item in items:
            if self.divergence is not None or self.finished or self.cut_short:
                return
            if self.comparison.selects(type(item[0]).__name__):
                self._compare(type(item[0]).__name__, json.loads(run_line(*item)))

    def _compare(self, name: str, observed: dict) -> None:
        recorded = self._next_recorded()
        if recorded is None and self._last_type != "GuestExit":
            self.cut_short = True
            if self._machine is not None:
                self._machine.stop(RunEnd.UNTIL, "the recording ends here (cut short)")
            return
        if recorded is None or self.comparison.key(recorded) != self.comparison.key(observed):
            if self._machine is None:
                self._pending = (recorded, observed)
            else:
                self._diverge(recorded, observed)
            return
        self.matched += 1
        self.last.append(recorded)
        if name == "GuestExit":
            self.finished = True

    def finish(self) -> None:
        """The run ended: a recorded event of a compared type that it never produced is a
        divergence (the report shows the end of the run). TraceError for events recorded
        after the GuestExit."""
        if self.divergence is not None or self.cut_short:
            return
        missing = self._next_recorded()
        if missing is None:
            return
        if self.finished:
            raise TraceError("the trace has events after its GuestExit: a corrupt trace")
        self._diverge(missing, self._last_observed or {"type": "(the end of the run)"})

    def _next_recorded(self) -> dict | None:
        """The next recorded event of a compared type, or None at the end."""
        for record in self._source:
            self._last_type = str(record.get("type"))
            if self.comparison.selects(self._last_type):
                return record
        return None

    def _diverge(self, recorded: dict | None, observed: dict) -> None:
        machine = self._machine
        rip = observed.get("rip")
        if not isinstance(rip, int):
            rip = machine.cpu.reg(X.UC_X86_REG_RIP)
        symbols = machine.symbols
        line = symbols.line_of(rip)
        where = symbols.lookup(rip) + (f" ({line})" if line else "")
        index = self.matched + 1
        details = [f"  recorded: {describe_event(recorded)}",
                   f"  observed: {describe_event(observed)}",
                   f"  at instruction {observed.get('icount', 0):,}, RIP {rip:#x} {where}",
                   f"  compared: {self.comparison.text}; {self.matched:,} events matched "
                   f"before this one"]
        missed = recorded.get("icount") if recorded else None
        if isinstance(missed, int) and missed < observed.get("icount", 0):
            details.append(f"  the rerun passed instruction {missed:,} without the recorded "
                           f"event (the next one it made is shown)")
        details += ["", "last matching events:"]
        details += [f"  {describe_event(record)}" for record in self.last] or ["  (none)"]
        text = report.render(machine.cpu, f"event {index} differs from the recording",
                             symbols, machine.devices.com1.tail(10), rip,
                             heading="replay divergence", details="\n".join(details))
        self.divergence = Divergence(index, recorded, observed, int(observed.get("icount", 0)),
                                     rip, where, text)
        machine.stop(RunEnd.DIVERGED, f"replay diverged at event {index}")
