"""Port I/O and MMIO dispatch from Unicorn to device models.

Owns: which device answers which port or physical range, the `Device` protocol, and turning
an access to a port or physical address with nothing behind it into GuestCrash.
Does not own: what devices do (emu/hw/devices/), RAM (emu/hw/memory.py), the I/O permission check of
user-mode IN/OUT (the CPU layer, asked through `IoGate`), the crash report (the machine
layer).

Unicorn 2.1 facts this relies on (tests/test_devices.py checks them):
- IN/OUT reach `UC_HOOK_INSN` callbacks `in(uc, port, size, ud) -> value` and
  `out(uc, port, size, value, ud)`; RIP is exact there.
- MMIO callbacks see an aligned 8-byte access as two 4-byte pieces (offset, offset + 4), an
  unaligned read as two aligned reads of its size around it (bytes outside it included), an
  unaligned write as single bytes. RIP inside an MMIO callback is stale: it is the start of
  the translated block, so decoding "the instruction at RIP" there finds the wrong one.
- A `UC_HOOK_MEM_READ | UC_HOOK_MEM_WRITE` hook bounded to the MMIO range fires first, once
  per access of up to 8 bytes (16-byte SSE accesses come as two), with the physical address,
  the size and, for writes, the whole value; with it installed RIP is exact everywhere.
  So the bus makes the device access in that hook, and the MMIO callbacks only hand Unicorn
  the bytes piece by piece. The price: every guest memory access gets a range check, about
  1.5x on memory-heavy code, paid only once some MMIO device exists.
- `UC_HOOK_MEM_*_UNMAPPED` reports physical addresses with an exact RIP; returning False
  makes `emu_start` raise UcError, so the run loop calls `guard.reraise()` first.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Flag
from typing import Callable, ClassVar, Iterable, Literal, Protocol

from unicorn import (UC_HOOK_MEM_FETCH_PROT, UC_HOOK_MEM_READ,
                     UC_HOOK_MEM_UNMAPPED, UC_HOOK_MEM_WRITE, UC_MEM_FETCH_PROT,
                     UC_MEM_FETCH_UNMAPPED, UC_MEM_READ_UNMAPPED, UC_MEM_WRITE,
                     UC_MEM_WRITE_UNMAPPED, UcError)
from unicorn.x86_const import UC_X86_INS_IN, UC_X86_INS_OUT, UC_X86_REG_RIP

from emu.errors import ConfigError, GuestCrash
from emu.events import EventBus, MmioAccess, PortAccess
from emu.engine.guard import PORT_IN, PORT_OUT, HookGuard
from emu.x86 import PAGE_SIZE, PHYSICAL_LIMIT

PORT_COUNT = 0x10000


class IoGate(Protocol):
    """The CPU's I/O permission check (emu/cpu/iogate.py), asked before a port access is made
    while `io_checks` is on; `deny_io` returns what a refused IN hands back."""
    io_checks: bool

    def permits_io(self, port: int, size: int) -> bool: ...

    def deny_io(self, size: int, is_in: bool) -> int: ...


class Access(Flag):
    READ = 1
    WRITE = 2
    RW = READ | WRITE


@dataclass(frozen=True, slots=True)
class Register:
    """One register of a device, so reports and traces can name accesses.
    `bank` names a mode in which the register replaces the unbanked one at the same offset
    (the 16550's divisor latch when LCR.DLAB is set)."""
    offset: int
    name: str
    size: int = 1
    access: Access = Access.RW
    bank: str | None = None


class Device:
    """A device model: it sees offsets from the start of its port range or MMIO region.
    Subclasses declare `registers` and implement `read` and `write`; `value` and the result
    of `read` are little-endian integers of `size` bytes."""
    registers: ClassVar[tuple[Register, ...]] = ()

    def __init__(self, name: str) -> None:
        self.name = name

    def read(self, offset: int, size: int) -> int:
        raise NotImplementedError

    def write(self, offset: int, size: int, value: int) -> None:
        raise NotImplementedError

    def active_banks(self) -> frozenset[str]:
        """Banks (see Register.bank) selected by the device's current state."""
        return frozenset()

    def register_at(self, offset: int, write: bool) -> Register | None:
        """The register an access at `offset` reaches now, or None."""
        wanted = Access.WRITE if write else Access.READ
        banks = self.active_banks()
        plain = None
        for register in self.registers:
            if register.offset != offset or not register.access & wanted:
                continue
            if register.bank is None:
                plain = plain or register
            elif register.bank in banks:
                return register
        return plain


class IgnoredPorts(Device):
    """Ports a kernel probes at boot that the machine does not model: reads return `fill`
    in every byte, writes are dropped."""

    def __init__(self, name: str, fill: int = 0xff) -> None:
        super().__init__(name)
        self.fill = fill & 0xff

    def read(self, offset: int, size: int) -> int:
        return int.from_bytes(bytes([self.fill]) * size, "little")

    def write(self, offset: int, size: int, value: int) -> None:
        pass


def _mask(size: int) -> int:
    return (1 << (8 * size)) - 1


@dataclass(frozen=True, slots=True)
class MmioRegion:
    base: int
    size: int
    device: Device

    @property
    def end(self) -> int:
        return self.base + self.size


@dataclass(frozen=True, slots=True)
class _Window:
    """One device access, and the span of pieces Unicorn will ask for to carry it."""
    region: MmioRegion
    write: bool
    start: int
    size: int
    value: int
    first: int
    end: int

    @classmethod
    def around(cls, region: MmioRegion, write: bool, start: int, size: int,
               value: int) -> "_Window":
        first, end = start, start + size
        if not write and start % size:
            # Unicorn reads unaligned MMIO as two aligned reads of the access size.
            first = start - start % size
            end = first + 2 * size
        return cls(region, write, start, size, value, first, end)

    def holds(self, region: MmioRegion, write: bool, offset: int, size: int) -> bool:
        return (region is self.region and write == self.write
                and self.first <= offset and offset + size <= self.end)

    def piece(self, offset: int, size: int) -> int:
        """The bytes of the access at [offset, offset+size); bytes outside it read 0."""
        shift = 8 * (offset - self.start)
        value = self.value >> shift if shift >= 0 else self.value << -shift
        return value & _mask(size)


UnknownPorts = Literal["error", "float"]
_UNMAPPED_VERBS = {UC_MEM_READ_UNMAPPED: ("read", "from"),
                   UC_MEM_WRITE_UNMAPPED: ("write", "to"),
                   UC_MEM_FETCH_UNMAPPED: ("instruction fetch", "from")}


class Bus:
    """Routes IN/OUT and MMIO accesses to devices and emits PortAccess/MmioAccess events.

    `read_code(vaddr, size)` returns guest-virtual bytes; it is optional and only names the
    faulting instruction in crash messages. `unknown_ports` says what an IN or OUT on a port
    with no device does: "error" (GuestCrash: in a memory-manager kernel a wild port access
    is a bug worth seeing) or "float" (reads return all ones as on a PC, writes vanish)."""

    def __init__(self, uc, events: EventBus, guard: HookGuard,
                 read_code: Callable[[int, int], bytes] | None = None,
                 unknown_ports: UnknownPorts = "error", io_gate: IoGate | None = None) -> None:
        if unknown_ports not in ("error", "float"):
            raise ConfigError(f"unknown_ports must be 'error' or 'float', not {unknown_ports!r}")
        self.uc = uc
        self.events = events
        self.guard = guard
        self.read_code = read_code
        self.unknown_ports = unknown_ports
        self.io_gate = io_gate
        self._ports: dict[int, tuple[Device, int]] = {}
        self._mmio: list[MmioRegion] = []
        self.in_access = False          # a device access is being made (an instruction retires)
        # The stamp of a port access (the CPU's cheaper port_now once it is attached).
        self.port_clock: Callable[[], int] = events.now
        self._window: _Window | None = None
        self._named_holes: list[tuple[int, int, str]] = []
        guard.hook_instruction(UC_X86_INS_IN, PORT_IN, self._in, on_error=0)
        guard.hook_instruction(UC_X86_INS_OUT, PORT_OUT, self._out)
        self._unbacked_hooks = [uc.hook_add(UC_HOOK_MEM_UNMAPPED | UC_HOOK_MEM_FETCH_PROT,
                                            guard.wrap(self._nothing_there, on_error=False))]

    def limit_unbacked_checks(self, ram: Iterable[tuple[int, int]]) -> None:
        """Watch for accesses with nothing behind them only outside `ram` ((base, length)
        ranges). An unbounded UC_HOOK_MEM_UNMAPPED hook sends every guest store through
        Unicorn's slow path (measured: 3-5x on a store-heavy loop); hooks bounded to the
        holes never cover RAM and cost nothing there."""
        for handle in self._unbacked_hooks:
            self.uc.hook_del(handle)
        callback = self.guard.wrap(self._nothing_there, on_error=False)
        holes, cursor = [], 0
        for base, length in sorted(ram):
            if base > cursor:
                holes.append((cursor, base - 1))
            cursor = max(cursor, base + length)
        if cursor < PHYSICAL_LIMIT:
            holes.append((cursor, PHYSICAL_LIMIT - 1))
        self._unbacked_hooks = [
            self.uc.hook_add(UC_HOOK_MEM_UNMAPPED | UC_HOOK_MEM_FETCH_PROT, callback, None,
                             first, last) for first, last in holes]

    def name_hole(self, paddr: int, size: int, meaning: str) -> None:
        """Say what an access to [paddr, paddr+size), which has nothing behind it, means
        ("boot stack overflow"): the crash message starts with it."""
        self._named_holes.append((paddr, paddr + size, meaning))

    # --- wiring ----------------------------------------------------------------------------

    def add_ports(self, first_port: int, count: int, device: Device) -> None:
        """Put `device` behind ports [first_port, first_port+count); it sees offsets."""
        if count <= 0 or first_port < 0 or first_port + count > PORT_COUNT:
            raise ValueError(f"bad port range {first_port:#x}+{count} for {device.name}")
        for port in range(first_port, first_port + count):
            if port in self._ports:
                raise ValueError(f"port {port:#x} of {device.name} is already taken by "
                                 f"{self._ports[port][0].name}")
        for port in range(first_port, first_port + count):
            self._ports[port] = (device, port - first_port)

    def ignore_ports(self, first_port: int, count: int, fill: int = 0xff,
                     name: str = "ignored") -> IgnoredPorts:
        """Ports nobody models: reads return `fill` in every byte, writes are dropped."""
        device = IgnoredPorts(name, fill)
        self.add_ports(first_port, count, device)
        return device

    def add_mmio(self, paddr: int, size: int, device: Device, exact: bool = True) -> MmioRegion:
        """Put `device` behind physical [paddr, paddr+size), page aligned and not RAM.
        Add devices before the first `emu_start`: Unicorn may not run hooks added later in
        code it has already translated. `exact`: a memory hook bounded to the region makes
        each access whole (an 8-byte access is one call) with an exact RIP, at the price of
        a range check on every guest memory access (about 1.5x on memory-heavy code, see
        above); without it the device sees Unicorn's pieces (8-byte accesses as two 4-byte
        ones) and events are stamped with the time at the start of the translated block.
        Devices with 32-bit registers (APIC, IOAPIC, HPET) do not need it."""
        if paddr % PAGE_SIZE or size <= 0 or size % PAGE_SIZE:
            raise ValueError(f"MMIO for {device.name} at {paddr:#x}+{size:#x} is not whole pages")
        region = MmioRegion(paddr, size, device)
        for other in self._mmio:
            if other.base < region.end and region.base < other.end:
                raise ValueError(f"MMIO for {device.name} at {paddr:#x} overlaps "
                                 f"{other.device.name} at {other.base:#x}")
        try:
            self.uc.mmio_map(paddr, size, self.guard.wrap(self._read_piece, on_error=0), region,
                             self.guard.wrap(self._write_piece), region)
        except UcError as exc:
            raise ValueError(f"cannot put MMIO for {device.name} at {paddr:#x}+{size:#x}: "
                             f"{exc} (is there RAM there?)") from None
        if exact:
            self.uc.hook_add(UC_HOOK_MEM_READ | UC_HOOK_MEM_WRITE,
                             self.guard.wrap(self._mmio_access), region, paddr, region.end - 1)
        self._mmio.append(region)
        return region

    def port_owner(self, port: int) -> tuple[Device, int] | None:
        """(device, offset) behind `port`, or None."""
        return self._ports.get(port)

    def mmio_owner(self, paddr: int) -> MmioRegion | None:
        for region in self._mmio:
            if region.base <= paddr < region.end:
                return region
        return None

    # --- port I/O --------------------------------------------------------------------------

    def _in(self, _handle, port: int, size: int, _user_data) -> int:
        gate = self.io_gate
        if gate is not None and gate.io_checks and not gate.permits_io(port, size):
            return gate.deny_io(size, True)
        owner = self._ports.get(port)
        if owner is not None:
            device, offset = owner
            self.in_access = True
            value = device.read(offset, size) & _mask(size)
        elif self.unknown_ports == "float":
            value = _mask(size)
        else:
            self._emit_port(port, size, _mask(size), False)     # the trace shows the access
            raise GuestCrash(f"in from port {port:#x} with no device behind it"
                             f"{self._at(self.uc)}")
        self._emit_port(port, size, value, False)
        return value

    def _out(self, _handle, port: int, size: int, value: int, _user_data) -> None:
        gate = self.io_gate
        if gate is not None and gate.io_checks and not gate.permits_io(port, size):
            gate.deny_io(size, False)
            return
        value &= _mask(size)
        owner = self._ports.get(port)
        if owner is not None:
            device, offset = owner
            self.in_access = True
            device.write(offset, size, value)
        elif self.unknown_ports == "error":
            self._emit_port(port, size, value, True)
            raise GuestCrash(f"out of {value:#x} to port {port:#x} with no device behind it"
                             f"{self._at(self.uc)}")
        self._emit_port(port, size, value, True)

    def _emit_port(self, port: int, size: int, value: int, write: bool) -> None:
        if self.events.wants(PortAccess):
            self.in_access = True
            self.events.emit(PortAccess(self.port_clock(), port, size, value, write))
        self.in_access = False

    # --- MMIO ------------------------------------------------------------------------------

    def _mmio_access(self, uc, access: int, paddr: int, size: int, value: int,
                     region: MmioRegion) -> None:
        """The whole access, before Unicorn splits it: make it on the device here."""
        offset = paddr - region.base
        write = access == UC_MEM_WRITE
        self.in_access = True
        if write:
            value &= _mask(size)
            region.device.write(offset, size, value)
        else:
            value = region.device.read(offset, size) & _mask(size)
        self.in_access = False
        self._window = _Window.around(region, write, offset, size, value)
        self._emit_mmio(paddr, size, value, write)

    def _read_piece(self, uc, offset: int, size: int, region: MmioRegion) -> int:
        window = self._window
        if window is not None and window.holds(region, False, offset, size):
            if offset + size == window.end:
                self._window = None
            return window.piece(offset, size)
        # An access the hook did not see: one that starts below the region, in RAM.
        self.in_access = True
        value = region.device.read(offset, size) & _mask(size)
        self.in_access = False
        self._emit_mmio(region.base + offset, size, value, False)
        return value

    def _write_piece(self, uc, offset: int, size: int, value: int, region: MmioRegion) -> None:
        window = self._window
        if window is not None and window.holds(region, True, offset, size):
            if offset + size == window.end:
                self._window = None
            return
        value &= _mask(size)
        self.in_access = True
        region.device.write(offset, size, value)
        self.in_access = False
        self._emit_mmio(region.base + offset, size, value, True)

    def _emit_mmio(self, paddr: int, size: int, value: int, write: bool) -> None:
        if self.events.wants(MmioAccess):
            self.events.emit(MmioAccess(self.events.now(), paddr, size, value, write))

    # --- nothing there ---------------------------------------------------------------------

    def _nothing_there(self, uc, access: int, paddr: int, size: int, value: int,
                       _user_data) -> bool:
        if access == UC_MEM_FETCH_PROT:
            region = self.mmio_owner(paddr)
            what = f"MMIO of {region.device.name}" if region else "not executable"
            raise GuestCrash(f"instruction fetch from physical {paddr:#x}, which is {what}"
                             f"{self._at(uc)}")
        verb, preposition = _UNMAPPED_VERBS[access]
        plural = "" if size == 1 else "s"
        if access != UC_MEM_FETCH_UNMAPPED:     # the trace shows the access (a read: all ones)
            write = access == UC_MEM_WRITE_UNMAPPED
            self._emit_mmio(paddr, size, value if write else _mask(size), write)
        for start, end, meaning in self._named_holes:
            if start <= paddr < end:
                raise GuestCrash(f"{meaning}: {verb} of {size} byte{plural} {preposition} "
                                 f"physical {paddr:#x}{self._at(uc)}")
        raise GuestCrash(f"{verb} of {size} byte{plural} {preposition} physical {paddr:#x} "
                         f"with nothing behind it{self._at(uc)}")

    def _at(self, uc) -> str:
        """" (RIP 0x...: instruction)" for crash messages."""
        rip = uc.reg_read(UC_X86_REG_RIP)
        return f" (RIP {rip:#x}{_describe(self.read_code, rip)})"


_disassembler = None


def _describe(read_code: Callable[[int, int], bytes] | None, rip: int) -> str:
    """": mnemonic operands" of the instruction at rip, or "" if it cannot be read."""
    global _disassembler
    if read_code is None:
        return ""
    try:
        code = read_code(rip, 16)
    except Exception:  # noqa: BLE001 - only decorates a message that is being raised anyway
        return ""
    if _disassembler is None:
        from capstone import CS_ARCH_X86, CS_MODE_64, Cs
        _disassembler = Cs(CS_ARCH_X86, CS_MODE_64)
    for insn in _disassembler.disasm(code, rip, 1):
        return f": {insn.mnemonic} {insn.op_str}".rstrip()
    return ""
