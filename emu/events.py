"""Typed monitor events and the bus that hands them to observers.

An observer is a class whose `on_*` methods are all optional (like trio's Instrument). The
bus looks at which methods each observer overrides, so an emitter can ask `bus.wants(Event)`
before it builds an event, and the machine installs a Unicorn hook only when some observer
wants what that hook produces. `on_event` receives every event (the trace recorder uses it).

Every event carries `icount`, exact: the instructions retired before the instruction that
caused it (a port access, a CR3 write, a fault), or, for GuestExit, every instruction the
run retired (emu/cpu/counting.py). A trace is therefore ordered and reproducible.
"""
from __future__ import annotations

from dataclasses import MISSING, dataclass, fields
from typing import Callable, ClassVar, Iterable

SYSCALL_VECTOR = 256           # ExceptionDelivered.vector of a SYSCALL entry (not an IDT vector)


@dataclass(frozen=True, slots=True)
class Event:
    handler: ClassVar[str] = "on_event"
    icount: int

    def to_dict(self) -> dict:
        """Plain JSON-ready form: {"type": ..., field: value, ...}."""
        out = {"type": type(self).__name__}
        for field in fields(self):
            out[field.name] = getattr(self, field.name)
        return out


@dataclass(frozen=True, slots=True)
class Booted(Event):
    """The loader is done (icount 0): the Limine base revision in effect, the requests it
    answered and those it left unanswered, whose response pointers stay NULL."""
    handler: ClassVar[str] = "on_booted"
    base_revision: int
    answered: tuple[str, ...]
    ignored: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ExceptionDelivered(Event):
    """An exception or interrupt went through the guest IDT (or ended the run)."""
    handler: ClassVar[str] = "on_exception"
    vector: int
    kind: str              # "fault", "software", "external", "double", "syscall"
    rip: int               # the instruction that faulted, or the return address
    error_code: int | None
    cr2: int | None        # for #PF only
    cpl: int               # privilege level the exception came from
    handler_rip: int       # where the guest handler was entered (0 if not delivered)
    # Where the return frame's RIP slot is, the key an InterruptReturn names: the frame
    # pushed (above the error code); for SYSCALL, where a ring-3 frame would go on the
    # stack TSS.RSP0 names (the kernel builds its own there, as ours and Linux do). 0: none.
    frame: int = 0


@dataclass(frozen=True, slots=True)
class InterruptReturn(Event):
    """The guest leaves a handler: the `iretq` (or `sysretq`) at `rip` pops the frame at
    `frame` (RSP at an iretq; for sysretq the SYSCALL convention of
    ExceptionDelivered.frame). It ends the delivery with the same `frame`, the latest one:
    matched by the kernel stack, not by order, so a handler that switched stacks (a
    scheduler) ends the right one. (Where it returns to is not read: a read of guest
    memory through the page tables would cost more than the rest of the event.)"""
    handler: ClassVar[str] = "on_interrupt_return"
    rip: int
    frame: int


@dataclass(frozen=True, slots=True)
class GuestCounters(Event):
    """The guest's memory counters, sampled by emu/monitor/counters.py (`--trace-counters
    N`: at the first event N instructions after the last sample): the PMM's free frames,
    the heap's pages (cached ones included), swap slots in use, and the resident pages of
    each live process as ((pid, pages), ...). -1: the kernel exports no such counter."""
    handler: ClassVar[str] = "on_guest_counters"
    free_frames: int
    heap_pages: int
    swap_slots: int
    rss: tuple[tuple[int, int], ...]


@dataclass(frozen=True, slots=True)
class Cr3Written(Event):
    handler: ClassVar[str] = "on_cr3_write"
    rip: int
    old: int
    new: int


@dataclass(frozen=True, slots=True)
class TlbFlush(Event):
    """`invlpg` of one page (address) by the guest."""
    handler: ClassVar[str] = "on_tlb_flush"
    rip: int
    address: int


@dataclass(frozen=True, slots=True)
class PortAccess(Event):
    handler: ClassVar[str] = "on_port_access"
    port: int
    size: int
    value: int
    write: bool


@dataclass(frozen=True, slots=True)
class MmioAccess(Event):
    handler: ClassVar[str] = "on_mmio_access"
    address: int           # physical
    size: int
    value: int
    write: bool


@dataclass(frozen=True, slots=True)
class SerialOutput(Event):
    """One line (without its newline) written by the guest to a UART."""
    handler: ClassVar[str] = "on_serial_output"
    port: int
    text: str


@dataclass(frozen=True, slots=True)
class GuestExit(Event):
    """The run ended. `status` is the guest's exit code, or None for a crash."""
    handler: ClassVar[str] = "on_guest_exit"
    status: int | None
    reason: str


@dataclass(frozen=True, slots=True)
class Checkpoint(Event):
    """The guest wrote `number` to the checkpoint port (guest/test/checkpoint.h): "look now"."""
    handler: ClassVar[str] = "on_checkpoint"
    number: int


@dataclass(frozen=True, slots=True)
class InvariantViolation(Event):
    """The invariant checker (checker.py) found `rule` broken at `address` (virtual or
    physical, as the rule says); `detail` explains, with the page walk where one applies."""
    handler: ClassVar[str] = "on_invariant_violation"
    rule: str
    address: int
    detail: str


@dataclass(frozen=True, slots=True)
class Marker(Event):
    """The guest wrote `value` to the marker port 0xf1 (1: a measured region starts, 2: it
    ends). `icount` is exact: the instructions retired before the `out` itself."""
    handler: ClassVar[str] = "on_marker"
    value: int


@dataclass(frozen=True, slots=True)
class HeapFinding(Event):
    """The outside heap checker (heapcheck.py) saw `rule` broken by a kmalloc-family call:
    `address` and `size` name the block, `caller` the symbolized return address of the
    outermost call, `detail` the rest (the block it overlaps, the heap's range...)."""
    handler: ClassVar[str] = "on_heap_finding"
    rule: str
    address: int
    size: int
    caller: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Injection(Event):
    """A fault injector acted (emu/inject/): `kind` (fail-function, ram, irq, spurious-pf, disk),
    `target` (the function, address or vector), `detail` (which call, the bits flipped)."""
    handler: ClassVar[str] = "on_injection"
    kind: str
    target: str
    detail: str


@dataclass(frozen=True, slots=True)
class HostInput(Event):
    """The guest read `data` (hex) from the host's stream `stream` (0: stdin) through the
    host I/O channel: recorded so a run's input is part of its trace."""
    handler: ClassVar[str] = "on_host_input"
    stream: int
    data: str


@dataclass(frozen=True, slots=True)
class Syscall(Event):
    """A process's system call returned (the kernel's trace_syscall tracepoint,
    guest/proc/trace.h; exit and a successful execve's old image never return). `name` is
    Linux's for `number`, `args` the six argument registers, `result` signed (a negative
    errno on failure); `implemented` is False when the kernel has no such call (-ENOSYS)."""
    handler: ClassVar[str] = "on_syscall"
    pid: int
    number: int
    name: str
    args: tuple[int, ...]
    result: int
    implemented: bool = True


@dataclass(frozen=True, slots=True)
class UserFault(Event):
    """A page fault on a user address was resolved (trace_fault): `access` is read, write
    or execute; `resolution` zero-fill, file, copy-on-write, stack-growth, sigsegv, sigbus
    or out-of-memory; `user` False for a fault of the kernel touching user memory for a
    system call; `region` the VM region's [start, end), or None (no region)."""
    handler: ClassVar[str] = "on_user_fault"
    pid: int
    address: int
    rip: int
    access: str
    resolution: str
    user: bool
    region: tuple[int, int] | None


@dataclass(frozen=True, slots=True)
class ProcessStart(Event):
    """A process exists: the first one, or a fork's child (`path` the program it runs)."""
    handler: ClassVar[str] = "on_process_start"
    pid: int
    ppid: int
    path: str


@dataclass(frozen=True, slots=True)
class ProcessExec(Event):
    """A process runs a new program image (execve)."""
    handler: ClassVar[str] = "on_process_exec"
    pid: int
    path: str


@dataclass(frozen=True, slots=True)
class ProcessExit(Event):
    """A process ended and its address space is gone: `wait_status` as Linux's wait4
    gives it, `status` as a shell shows it (the exit code, or 128 + the signal),
    `peak_rss` in bytes, `syscalls` made, `faults` by resolution (the non-zero ones)."""
    handler: ClassVar[str] = "on_process_exit"
    pid: int
    path: str
    wait_status: int
    status: int
    peak_rss: int
    syscalls: int
    faults: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class BlockRequest(Event):
    """A block device completed a request (emu/hw/devices/virtio_blk.py): `kind` "in",
    "out", "flush", "get-id" or "unsupported" (with the raw type), the first `sector` (512
    bytes each), `length` in bytes of data, `status` "ok", "ioerr" or "unsupp", and the
    guest-physical data `segments` ((address, length) pairs, in order)."""
    handler: ClassVar[str] = "on_block_request"
    device: str
    kind: str
    sector: int
    length: int
    status: str
    segments: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True, slots=True)
class SwapOut(Event):
    """A user page left memory for swap `slot` (guest/mm/swap.c's swap_note_out): the
    address space's `root` (CR3), its `vaddr`, the `frame` it leaves, and whether its data
    were `written` now (False: the slot already held them)."""
    handler: ClassVar[str] = "on_swap_out"
    root: int
    vaddr: int
    frame: int
    slot: int
    written: bool


@dataclass(frozen=True, slots=True)
class SwapIn(Event):
    """A user page came back from swap `slot` into `frame`, mapped at `vaddr` of `root`."""
    handler: ClassVar[str] = "on_swap_in"
    root: int
    vaddr: int
    frame: int
    slot: int


@dataclass(frozen=True, slots=True)
class DeviceError(Event):
    """The guest broke a device's protocol (a descriptor outside RAM, a notify before the
    driver was ready): the device set its failure status; `detail` says what was wrong."""
    handler: ClassVar[str] = "on_device_error"
    device: str
    detail: str


@dataclass(frozen=True, slots=True)
class SerialInput(Event):
    """`data` (hex) arrived at the receive side of the UART at `port` from outside the guest
    (`emu run --serial-input FILE`), when the guest looked at an empty receiver. `emu replay`
    feeds it back from the trace at the same instruction instead of reading the file."""
    handler: ClassVar[str] = "on_serial_input"
    port: int
    data: str


@dataclass(frozen=True, slots=True)
class KeyInput(Event):
    """`text` was typed on the PS/2 keyboard (`--keys`, queued at boot; the configuration
    holds it, so a replay types it again and this event is compared like any other)."""
    handler: ClassVar[str] = "on_key_input"
    text: str


def _quick_init(cls: type[Event]) -> None:
    """Give an event type an `__init__` that stores each field through its slot's own
    descriptor, bound once: a frozen dataclass's own looks `object.__setattr__` up anew for
    every field and then the slot by name (about twice the cost; the slot directly saves a
    third more), and events are built on hot paths (every port access of a traced run).
    Same signature, defaults and effect; the class stays a frozen dataclass."""
    params, body, namespace = [], [], {}
    for field in fields(cls):
        name = field.name                                   # a Python identifier
        if field.default is MISSING:
            params.append(name)
        else:
            namespace[f"_default_{name}"] = field.default
            params.append(f"{name}=_default_{name}")
        namespace[f"_set_{name}"] = getattr(cls, name).__set__      # the slot's descriptor
        body.append(f"    _set_{name}(self, {name})\n")
    source = f"def __init__(self, {', '.join(params)}):\n{''.join(body)}"
    exec(source, namespace)                                 # noqa: S102 (our own text)
    namespace["__init__"].__qualname__ = f"{cls.__qualname__}.__init__"
    cls.__init__ = namespace["__init__"]


for _event_type in (Booted, ExceptionDelivered, InterruptReturn, GuestCounters, Cr3Written,
                    TlbFlush, PortAccess, MmioAccess, SerialOutput, GuestExit, Checkpoint, InvariantViolation, Marker,
                    HeapFinding, Injection, HostInput, SerialInput, KeyInput, Syscall,
                    UserFault, ProcessStart, ProcessExec, ProcessExit, BlockRequest, SwapOut,
                    SwapIn, DeviceError):
    _quick_init(_event_type)


class Observer:
    """Base class for observers; override only the `on_*` methods you need. An observer
    whose `on_event` wants only some types names them in `event_types` (None: every type),
    so that the others are not even built for it."""

    event_types: frozenset[str] | None = None

    def on_event(self, event: Event) -> None: ...
    def on_booted(self, event: Booted) -> None: ...
    def on_injection(self, event: Injection) -> None: ...
    def on_exception(self, event: ExceptionDelivered) -> None: ...
    def on_interrupt_return(self, event: InterruptReturn) -> None: ...
    def on_guest_counters(self, event: GuestCounters) -> None: ...
    def on_cr3_write(self, event: Cr3Written) -> None: ...
    def on_tlb_flush(self, event: TlbFlush) -> None: ...
    def on_port_access(self, event: PortAccess) -> None: ...
    def on_mmio_access(self, event: MmioAccess) -> None: ...
    def on_serial_output(self, event: SerialOutput) -> None: ...
    def on_guest_exit(self, event: GuestExit) -> None: ...
    def on_marker(self, event: Marker) -> None: ...
    def on_heap_finding(self, event: HeapFinding) -> None: ...
    def on_checkpoint(self, event: Checkpoint) -> None: ...
    def on_invariant_violation(self, event: InvariantViolation) -> None: ...
    def on_host_input(self, event: HostInput) -> None: ...
    def on_syscall(self, event: Syscall) -> None: ...
    def on_user_fault(self, event: UserFault) -> None: ...
    def on_process_start(self, event: ProcessStart) -> None: ...
    def on_process_exec(self, event: ProcessExec) -> None: ...
    def on_process_exit(self, event: ProcessExit) -> None: ...
    def on_block_request(self, event: BlockRequest) -> None: ...
    def on_device_error(self, event: DeviceError) -> None: ...
    def on_swap_out(self, event: SwapOut) -> None: ...
    def on_swap_in(self, event: SwapIn) -> None: ...
    def on_serial_input(self, event: SerialInput) -> None: ...
    def on_key_input(self, event: KeyInput) -> None: ...


def _event_classes() -> list[type[Event]]:
    """Every event type (a name may appear twice: `slots=True` makes a new class)."""
    found, pending = [], list(Event.__subclasses__())
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending += cls.__subclasses__()
    return found


def _overrides(observer: Observer, method: str) -> bool:
    return getattr(type(observer), method) is not getattr(Observer, method)


class EventBus:
    """Dispatches events to the observers that override the matching method."""

    def __init__(self, observers: Iterable[Observer] = (), clock: Callable[[], int] = lambda: 0):
        self.clock = clock
        self._observers: list[Observer] = []
        self._routes: dict[str, list[Callable[[Event], None]]] = {}
        self._catch_all: list[Callable[[Event], None]] = []
        # handler -> everyone an event of it reaches (its routes, then the catch-alls):
        # one lookup per emit, which runs for every traced port access.
        self._deliveries: dict[str, tuple[Callable[[Event], None], ...]] = {}
        self._to_catch_all: tuple[Callable[[Event], None], ...] = ()
        for observer in observers:
            self.subscribe(observer)

    def subscribe(self, observer: Observer) -> None:
        self._observers.append(observer)
        self._route(observer)
        self._publish()

    def unsubscribe(self, observer: Observer) -> None:
        """Stop delivering to `observer` (a campaign's injector, after its variant ran)."""
        self._observers.remove(observer)
        self._routes, self._catch_all = {}, []
        for remaining in self._observers:
            self._route(remaining)
        self._publish()

    @property
    def observers(self) -> tuple[Observer, ...]:
        return tuple(self._observers)

    def _route(self, observer: Observer) -> None:
        if _overrides(observer, "on_event"):
            if observer.event_types is None:
                self._catch_all.append(observer.on_event)
            else:
                handlers = {cls.handler for cls in _event_classes()
                            if cls.__name__ in observer.event_types}
                for handler in sorted(handlers):
                    self._routes.setdefault(handler, []).append(observer.on_event)
        for name in vars(Observer):
            if name.startswith("on_") and name != "on_event" and _overrides(observer, name):
                self._routes.setdefault(name, []).append(getattr(observer, name))

    def _publish(self) -> None:
        self._to_catch_all = tuple(self._catch_all)
        self._deliveries = {handler: (*routes, *self._catch_all)
                            for handler, routes in self._routes.items()}

    def wants(self, event_type: type[Event]) -> bool:
        """True if emitting events of this type would reach anyone."""
        return bool(self._deliveries.get(event_type.handler, self._to_catch_all))

    def now(self) -> int:
        return self.clock()

    def emit(self, event: Event) -> None:
        for deliver in self._deliveries.get(event.handler, self._to_catch_all):
            deliver(event)
