"""The virtio-mmio transport, version 2 (OASIS virtio v1.2, section 4.2 "Virtio Over MMIO"):
the registers through which a driver finds, negotiates with and feeds a virtio device.

Owns: the register file below, the device status and feature negotiation (a FEATURES_OK
the device cannot accept is left clear, 3.1.1), the queues' configuration through
QueueSel, notifications, the interrupt status and its line (high while any status bit is
set: used buffers bit 0, configuration change bit 1), reset (status 0), and the device's
failure state: a protocol breach (DeviceFault) sets DEVICE_NEEDS_RESET, raises a
configuration-change interrupt (2.1.2), emits a DeviceError event, and the device ignores
its queues until the driver resets it.
Does not own: what the device does (a `VirtioBackend`, e.g. virtio_blk.py), the rings
(virtqueue.py), the interrupt controller (an IrqLine from emu/hw/irq.py). A PCI transport
would own the same duties through capabilities in configuration space and reuse both.

Register map (32-bit registers; configuration space from 0x100 in any width):
  0x000 MagicValue R "virt"      0x034 QueueNumMax R          0x080 QueueDescLow/High W
  0x004 Version R 2              0x038 QueueNum W             0x090 QueueDriverLow/High W
  0x008 DeviceID R               0x044 QueueReady RW          0x0a0 QueueDeviceLow/High W
  0x00c VendorID R               0x050 QueueNotify W          0x0fc ConfigGeneration R
  0x010 DeviceFeatures R         0x060 InterruptStatus R      0x100 device configuration
  0x014 DeviceFeaturesSel W      0x064 InterruptACK W
  0x020 DriverFeatures W         0x070 Status RW
  0x024 DriverFeaturesSel W      0x030 QueueSel W
Reads of write-only registers return 0; writes to read-only ones are ignored. Breaches that
the spec says a driver MUST NOT commit and that would leave the device in an undefined
state (a notify before DRIVER_OK, changing a live queue, a register access that is not 32
bits) are reported as device failures: a harness for kernel developers says so at once.
"""
from __future__ import annotations

from typing import Callable, Protocol, Sequence

from emu.errors import DeviceFault
from emu.events import DeviceError, EventBus
from emu.hw.bus import Access, Device, Register
from emu.hw.clock import VirtualClock
from emu.hw.devices.virtqueue import SplitQueue
from emu.hw.irq import IrqLine
from emu.hw.memory import PhysicalMemory

MAGIC = 0x74726976                     # "virt"
VERSION = 2
VENDOR_ID = 0x00554D45                 # "EMU"
CONFIG_BASE = 0x100
WINDOW_SIZE = 0x1000

# Device status bits (2.1)
ACKNOWLEDGE, DRIVER, DRIVER_OK, FEATURES_OK = 1, 2, 4, 8
DEVICE_NEEDS_RESET, FAILED = 64, 128
# Interrupt status bits (4.2.2)
INT_USED_BUFFER, INT_CONFIG_CHANGE = 1, 2
# Feature bits every virtio 1.x device has (6)
F_VERSION_1 = 1 << 32

MAGIC_VALUE, VERSION_REG, DEVICE_ID, VENDOR = 0x000, 0x004, 0x008, 0x00C
DEVICE_FEATURES, DEVICE_FEATURES_SEL = 0x010, 0x014
DRIVER_FEATURES, DRIVER_FEATURES_SEL = 0x020, 0x024
QUEUE_SEL, QUEUE_NUM_MAX, QUEUE_NUM, QUEUE_READY = 0x030, 0x034, 0x038, 0x044
QUEUE_NOTIFY, INTERRUPT_STATUS, INTERRUPT_ACK, STATUS = 0x050, 0x060, 0x064, 0x070
QUEUE_DESC_LOW, QUEUE_DESC_HIGH = 0x080, 0x084
QUEUE_DRIVER_LOW, QUEUE_DRIVER_HIGH = 0x090, 0x094
QUEUE_DEVICE_LOW, QUEUE_DEVICE_HIGH = 0x0A0, 0x0A4
CONFIG_GENERATION = 0x0FC

_R, _W = Access.READ, Access.WRITE
REGISTERS = (
    Register(MAGIC_VALUE, "MagicValue", 4, _R), Register(VERSION_REG, "Version", 4, _R),
    Register(DEVICE_ID, "DeviceID", 4, _R), Register(VENDOR, "VendorID", 4, _R),
    Register(DEVICE_FEATURES, "DeviceFeatures", 4, _R),
    Register(DEVICE_FEATURES_SEL, "DeviceFeaturesSel", 4, _W),
    Register(DRIVER_FEATURES, "DriverFeatures", 4, _W),
    Register(DRIVER_FEATURES_SEL, "DriverFeaturesSel", 4, _W),
    Register(QUEUE_SEL, "QueueSel", 4, _W), Register(QUEUE_NUM_MAX, "QueueNumMax", 4, _R),
    Register(QUEUE_NUM, "QueueNum", 4, _W), Register(QUEUE_READY, "QueueReady", 4),
    Register(QUEUE_NOTIFY, "QueueNotify", 4, _W),
    Register(INTERRUPT_STATUS, "InterruptStatus", 4, _R),
    Register(INTERRUPT_ACK, "InterruptACK", 4, _W), Register(STATUS, "Status", 4),
    Register(QUEUE_DESC_LOW, "QueueDescLow", 4, _W),
    Register(QUEUE_DESC_HIGH, "QueueDescHigh", 4, _W),
    Register(QUEUE_DRIVER_LOW, "QueueDriverLow", 4, _W),
    Register(QUEUE_DRIVER_HIGH, "QueueDriverHigh", 4, _W),
    Register(QUEUE_DEVICE_LOW, "QueueDeviceLow", 4, _W),
    Register(QUEUE_DEVICE_HIGH, "QueueDeviceHigh", 4, _W),
    Register(CONFIG_GENERATION, "ConfigGeneration", 4, _R),
)
# Queue address registers: (low offset, attribute of SplitQueue)
_QUEUE_ADDRESSES = {QUEUE_DESC_LOW: "desc", QUEUE_DRIVER_LOW: "driver",
                    QUEUE_DEVICE_LOW: "device"}


class VirtioBackend(Protocol):
    """A virtio device behind a transport: its identity, features and configuration space,
    and what it does when a queue is notified. `attach` hands it the transport."""
    device_id: int
    features: int                          # offered feature bits, F_VERSION_1 included
    queue_sizes: Sequence[int]             # QueueNumMax of each queue

    def attach(self, transport: "VirtioMmio") -> None: ...

    def config_read(self, offset: int, size: int) -> int: ...

    def notify(self, queue: SplitQueue) -> None: ...

    def reset(self) -> None: ...


class VirtioMmio(Device):
    """One virtio-mmio window (4 KiB) in front of `backend`, raising `line`. The backend
    calls `used_buffers(queue)` when it returned buffers and `fail(fault)` on a breach.

    A `Timer` too (emu/hw/clock.py): an interrupt that arises inside a register access (a
    breach found there) raises the line at the next `advance`, which the transport asks
    for at once with `clock.wake_at(now)`. The CPU takes interrupts between translated
    blocks; stopping Unicorn from inside an MMIO callback would re-run the block from its
    start, repeating the access (measured with Unicorn 2.1.4, mmio_map without a memory
    hook). Lowering the line (an acknowledge) needs no stop and happens at once."""
    registers = REGISTERS

    def __init__(self, name: str, backend: VirtioBackend, memory: PhysicalMemory,
                 line: IrqLine, events: EventBus, clock: VirtualClock) -> None:
        super().__init__(name)
        self.backend = backend
        self.memory = memory
        self.line = line
        self.events = events
        self.clock = clock
        self._in_access = False
        self._raise_due: int | None = None
        self.queues = [SplitQueue(memory, index, size)
                       for index, size in enumerate(backend.queue_sizes)]
        self.failures: list[str] = []
        self._reset_state()
        self._write_handlers = self._writes()
        backend.attach(self)

    def _reset_state(self) -> None:
        self.status = 0
        self.interrupt_status = 0
        self.device_features_sel = 0
        self.driver_features_sel = 0
        self.driver_features = 0
        self.queue_sel = 0
        for queue in self.queues:
            queue.reset()
        self._raise_due = None
        self.line.lower()

    @property
    def failed(self) -> bool:
        return bool(self.status & DEVICE_NEEDS_RESET)

    @property
    def live(self) -> bool:
        """The driver finished initialisation and the device has not failed."""
        return bool(self.status & DRIVER_OK) and not self.failed

    # --- the backend's side -------------------------------------------------------------

    def used_buffers(self, queue: SplitQueue) -> None:
        """The device returned buffers on `queue`: interrupt unless the driver asked not."""
        if not queue.interrupt_suppressed():
            self._interrupt(INT_USED_BUFFER)

    def fail(self, fault: DeviceFault) -> None:
        """A protocol breach: DEVICE_NEEDS_RESET, a configuration-change interrupt, a
        DeviceError event. The device then ignores its queues until reset."""
        detail = str(fault)
        self.failures.append(detail)
        self.status |= DEVICE_NEEDS_RESET
        self.events.emit(DeviceError(self.events.now(), self.name, detail))
        self._interrupt(INT_CONFIG_CHANGE)

    def _interrupt(self, bits: int) -> None:
        self.interrupt_status |= bits
        if not self._in_access:
            self.line.raise_()
        elif self._raise_due is None:
            self._raise_due = self.clock.now()
            self.clock.wake_at(self._raise_due)

    # --- Timer --------------------------------------------------------------------------

    def next_deadline(self) -> int | None:
        return self._raise_due

    def advance(self, now: int) -> None:
        if self._raise_due is not None and self._raise_due <= now:
            self._raise_due = None
            if self.interrupt_status:
                self.line.raise_()

    # --- registers ----------------------------------------------------------------------

    def read(self, offset: int, size: int) -> int:
        self._in_access = True
        try:
            return self._read(offset, size)
        finally:
            self._in_access = False

    def write(self, offset: int, size: int, value: int) -> None:
        self._in_access = True
        try:
            self._write(offset, size, value)
        finally:
            self._in_access = False

    def _read(self, offset: int, size: int) -> int:
        if offset >= CONFIG_BASE:
            return self.backend.config_read(offset - CONFIG_BASE, size)
        if size != 4 or offset % 4:
            self._breach(f"a {size}-byte read at register offset {offset:#x} (registers are "
                         "read 32 bits at a time)")
            return 0
        queue = self.queues[self.queue_sel] if self.queue_sel < len(self.queues) else None
        simple = {MAGIC_VALUE: MAGIC, VERSION_REG: VERSION, DEVICE_ID: self.backend.device_id,
                  VENDOR: VENDOR_ID, INTERRUPT_STATUS: self.interrupt_status,
                  STATUS: self.status, CONFIG_GENERATION: 0,
                  QUEUE_NUM_MAX: queue.max_size if queue else 0,
                  QUEUE_READY: int(queue.ready) if queue else 0}
        if offset == DEVICE_FEATURES:
            return (self.backend.features >> (32 * self.device_features_sel)) & 0xFFFFFFFF \
                if self.device_features_sel < 2 else 0
        return simple.get(offset, 0)

    def _write(self, offset: int, size: int, value: int) -> None:
        if offset >= CONFIG_BASE:
            return                        # nothing in the configuration space is writable
        if size != 4 or offset % 4:
            self._breach(f"a {size}-byte write at register offset {offset:#x} (registers "
                         "are written 32 bits at a time)")
            return
        handler = self._write_handlers.get(offset & ~0x7 if offset in _HIGH_HALVES else offset)
        if handler is not None:
            handler(offset, value)

    def _writes(self) -> dict[int, Callable[[int, int], None]]:
        return {DEVICE_FEATURES_SEL: self._set_device_features_sel,
                DRIVER_FEATURES_SEL: self._set_driver_features_sel,
                DRIVER_FEATURES: self._set_driver_features, QUEUE_SEL: self._set_queue_sel,
                QUEUE_NUM: self._set_queue_num, QUEUE_READY: self._set_queue_ready,
                QUEUE_NOTIFY: self._notify, INTERRUPT_ACK: self._acknowledge,
                STATUS: self._set_status, QUEUE_DESC_LOW: self._set_queue_address,
                QUEUE_DRIVER_LOW: self._set_queue_address,
                QUEUE_DEVICE_LOW: self._set_queue_address}

    def _set_device_features_sel(self, _offset: int, value: int) -> None:
        self.device_features_sel = value

    def _set_driver_features_sel(self, _offset: int, value: int) -> None:
        self.driver_features_sel = value

    def _set_driver_features(self, _offset: int, value: int) -> None:
        if self.driver_features_sel < 2:
            shift = 32 * self.driver_features_sel
            self.driver_features = (self.driver_features & ~(0xFFFFFFFF << shift)) | \
                (value << shift)

    def _set_queue_sel(self, _offset: int, value: int) -> None:
        self.queue_sel = value

    def _selected(self, what: str) -> SplitQueue | None:
        """The selected queue if the driver may configure it now; a breach otherwise."""
        if self.queue_sel >= len(self.queues):
            return None                   # QueueNumMax read 0: no such queue, writes vanish
        queue = self.queues[self.queue_sel]
        if queue.ready:
            self._breach(f"{what} of queue {queue.index} while it is ready (4.2.3.2)")
            return None
        return queue

    def _set_queue_num(self, _offset: int, value: int) -> None:
        queue = self._selected("QueueNum")
        if queue is not None:
            queue.size = value

    def _set_queue_address(self, offset: int, value: int) -> None:
        queue = self._selected("an address")
        if queue is None:
            return
        low = offset & ~0x7
        name = _QUEUE_ADDRESSES[low]
        old = getattr(queue, name)
        new = (old & 0xFFFFFFFF) | (value << 32) if offset != low else \
            (old & ~0xFFFFFFFF) | value
        setattr(queue, name, new)

    def _set_queue_ready(self, _offset: int, value: int) -> None:
        if self.queue_sel >= len(self.queues):
            return
        queue = self.queues[self.queue_sel]
        if not value & 1:
            queue.ready = False
            return
        try:
            queue.validate()
        except DeviceFault as fault:
            self.fail(fault)
            return
        queue.ready = True

    def _notify(self, _offset: int, value: int) -> None:
        if self.failed:
            return
        if not self.status & DRIVER_OK:
            self._breach(f"a notify of queue {value} before DRIVER_OK (3.1.1)")
            return
        if value >= len(self.queues) or not self.queues[value].ready:
            self._breach(f"a notify of queue {value}, which is not ready")
            return
        self.backend.notify(self.queues[value])

    def _acknowledge(self, _offset: int, value: int) -> None:
        self.interrupt_status &= ~value
        if not self.interrupt_status:
            self.line.lower()

    def _set_status(self, _offset: int, value: int) -> None:
        if value == 0:
            self.backend.reset()
            self._reset_state()
            return
        value &= 0xFF
        if value & FEATURES_OK and not self.status & FEATURES_OK and \
                not self._features_acceptable():
            value &= ~FEATURES_OK         # the driver reads it back and gives up (3.1.1)
        self.status = value | (self.status & DEVICE_NEEDS_RESET)

    def _features_acceptable(self) -> bool:
        wanted = self.driver_features
        return wanted & ~self.backend.features == 0 and bool(wanted & F_VERSION_1)

    def _breach(self, what: str) -> None:
        self.fail(DeviceFault(f"the driver made {what}"))


_HIGH_HALVES = frozenset({QUEUE_DESC_HIGH, QUEUE_DRIVER_HIGH, QUEUE_DEVICE_HIGH})
