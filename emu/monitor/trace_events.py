"""Which events a trace records (`--trace-events`), shared by the recorder and the replay.

Owns: the names a user gives (event type names of emu/events.py, and the short groups
below), turning them into a `TraceFilter`, and the filter's text as the trace header keeps
it (`run.trace_events`), so that `emu replay` drops the same events from its rerun before
comparing. Does not own: writing (emu/monitor/trace.py) or comparing (emu/replay/).

A filter decides per event type, except `syscalls`, which keeps the Syscall events and only
the ExceptionDelivered events of kind `syscall` (SYSCALL entries) unless `exceptions` asks
for all of them. A type
the filter drops is never built: the recorder subscribes only to what it keeps, so the
emitters' `bus.wants()` says no and no hook runs for it.
"""
from __future__ import annotations

from dataclasses import dataclass

from emu.errors import ConfigError
from emu.events import Event, ExceptionDelivered

ALL = "all"
# Always recorded, whatever the filter: how the run began and ended (a replay needs the
# end), and what came from outside the guest (a replay feeds it back).
ALWAYS = frozenset({"Booted", "GuestExit", "HostInput", "SerialInput", "KeyInput"})
GROUPS: dict[str, tuple[str, ...]] = {
    "exceptions": ("ExceptionDelivered",),     # faults, interrupts and system calls
    "returns": ("InterruptReturn",),           # the iretq/sysret ending each of them
    "counters": ("GuestCounters",),            # --trace-counters samples
    "cr3": ("Cr3Written",),
    "tlb": ("TlbFlush",),
    "ports": ("PortAccess",),
    "mmio": ("MmioAccess",),
    "serial": ("SerialOutput",),
    "checks": ("InvariantViolation", "HeapFinding", "Checkpoint", "DeviceError"),
    "processes": ("ProcessStart", "ProcessExec", "ProcessExit", "UserFault"),
    "swap": ("SwapOut", "SwapIn", "BlockRequest"),
    "markers": ("Marker",),
    "injections": ("Injection",),
}
SYSCALLS = "syscalls"          # Syscall, and ExceptionDelivered of kind "syscall" only
NONE = "none"                  # nothing beyond ALWAYS
EACH_FLUSH = "each-flush"      # every invlpg on its own line, runs not coalesced


def event_type_names() -> tuple[str, ...]:
    """Every event type of emu/events.py, by name."""
    found: set[str] = set()
    pending = list(Event.__subclasses__())
    while pending:
        cls = pending.pop()
        found.add(cls.__name__)
        pending += cls.__subclasses__()
    return tuple(sorted(found))


@dataclass(frozen=True, slots=True)
class TraceFilter:
    """`types`: recorded whole; `syscalls`: also the SYSCALL entries among the exceptions;
    `flush_runs`: a run of `invlpg`s is one record (FlushRuns in trace.py), unless
    `each-flush` asks for every one. `text` is the canonical spec (what the header keeps)."""
    types: frozenset[str] | None = None        # None: every type
    syscalls: bool = False
    flush_runs: bool = True
    text: str = ALL

    @property
    def recorded_types(self) -> list[str] | None:
        """The event types a trace with this filter can hold (None: any)."""
        if self.types is None:
            return None
        return sorted(self.types | ({"ExceptionDelivered"} if self.syscalls else set()))

    def keeps(self, event: Event) -> bool:
        if self.types is None or type(event).__name__ in self.types:
            return True
        return self.syscalls and isinstance(event, ExceptionDelivered) and \
            event.kind == "syscall"


def parse(text: str | None) -> TraceFilter:
    """`all`, or a comma list of groups (GROUPS, `syscalls`), event type names and
    `each-flush`."""
    text = (text or ALL).strip()
    known = event_type_names()
    types: set[str] | None = set(ALWAYS & set(known))
    syscalls = False
    flush_runs = True
    for name in (part.strip() for part in text.split(",")):
        if name == ALL:
            types = None
        elif name == EACH_FLUSH:
            flush_runs = False
        elif name == SYSCALLS:
            syscalls = True
            if types is not None:
                types.add("Syscall")
        elif name == NONE:
            pass
        elif name in GROUPS or name in known:
            if types is not None:
                types.update(GROUPS.get(name, (name,)))
        else:
            raise ConfigError(f"--trace-events {text}: no event group or type {name!r}; "
                              f"choose from {', '.join([ALL, NONE, *GROUPS, SYSCALLS])} or "
                              f"{', '.join(known)}, and {EACH_FLUSH} to record every "
                              "invlpg of a run")
    if types is None:
        chosen = [ALL]
        syscalls = False
    else:
        syscalls = syscalls and "ExceptionDelivered" not in types
        chosen = sorted(types - ALWAYS) + ([SYSCALLS] if syscalls else [])
        chosen = chosen or [NONE]
    chosen += [] if flush_runs else [EACH_FLUSH]
    return TraceFilter(None if types is None else frozenset(types), syscalls, flush_runs,
                       ",".join(chosen))


# A trace recorded before filters existed holds every event, each flush on its own line.
LEGACY = TraceFilter(flush_runs=False, text=f"{ALL},{EACH_FLUSH}")


def from_header(header: dict) -> TraceFilter:
    """The filter a trace was recorded with (its header's `run.trace_events`; LEGACY if
    absent). ConfigError for a name this emu does not know."""
    run = header.get("run") if isinstance(header.get("run"), dict) else {}
    if "trace_events" not in run:
        return LEGACY
    return parse(str(run.get("trace_events")))
