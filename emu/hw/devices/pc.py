"""The PC the guest sees: which device sits at which port. The registration table.

Owns: wiring COM1, the debug-exit port, the checkpoint and marker ports, the host I/O
channel and the legacy ports a kernel pokes at boot onto a bus. Adding a device: its
module in emu/hw/devices/ and its line in `install_pc_devices`.
Does not own: what the devices do (one module each).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from emu.hw.bus import Bus, IgnoredPorts
from emu.hw.devices.debug_exit import DEBUG_EXIT_PORT, DebugExit, qemu_status
from emu.hw.devices.hostio import HOSTIO_PORT, HostIo
from emu.hw.devices.monitor_ports import CHECKPOINT_PORT, MARKER_PORT, CheckpointPort, MarkerPort
from emu.hw.devices.uart import COM1, Uart16550
from emu.hw.memory import PhysicalMemory

__all__ = ["install_pc_devices", "PcDevices", "PC_IGNORED_PORTS", "COM1", "DEBUG_EXIT_PORT",
           "CHECKPOINT_PORT", "MARKER_PORT", "Uart16550", "DebugExit", "CheckpointPort",
           "MarkerPort", "qemu_status", "HostIo", "HOSTIO_PORT"]


# Ports a kernel pokes at boot that this machine does not model. They read 0, not the
# floating 0xff of a real bus: a PS/2 status of 0xff says "input buffer full" and a driver
# waiting for it to drain would spin forever.
POST_PORT = 0x80
PC_IGNORED_PORTS = (
    (0x20, 2, "PIC master"),
    (0x40, 4, "PIT"),
    (0x60, 1, "PS/2 data"),
    (0x64, 1, "PS/2 status"),
    (0x80, 1, "POST"),
    (0xa0, 2, "PIC slave"),
)


@dataclass(frozen=True, slots=True)
class PcDevices:
    com1: Uart16550
    debug_exit: DebugExit
    ignored: tuple[IgnoredPorts, ...]
    checkpoint: CheckpointPort
    marker: MarkerPort
    hostio: HostIo | None = None


def install_pc_devices(bus: Bus, uart_on_text: Callable[[str], None] | None = None, *,
                       on_exit: Callable[[int], None],
                       clock: Callable[[], int] | None = None,
                       platform: bool = False,
                       memory: PhysicalMemory | None = None) -> PcDevices:
    """Wire COM1, the debug-exit port, the checkpoint and marker ports, the host I/O
    channel (given the `memory` its requests live in) and the ignored legacy ports onto
    `bus`. `clock` stamps markers with the exact instruction count (default: the event
    bus's clock). With `platform` (emu/hw/platform.py models the PIC, PIT and 8042), only
    the POST port is ignored."""
    com1 = Uart16550(COM1, events=bus.events, on_text=uart_on_text)
    bus.add_ports(com1.port_base, 8, com1)
    debug_exit = DebugExit(on_exit)
    bus.add_ports(debug_exit.port, DebugExit.port_count, debug_exit)
    checkpoint = CheckpointPort(bus.events)
    bus.add_ports(checkpoint.port, CheckpointPort.port_count, checkpoint)
    marker = MarkerPort(bus.events, clock)
    bus.add_ports(marker.port, MarkerPort.port_count, marker)
    hostio = None
    if memory is not None:
        hostio = HostIo(memory, bus.events)
        bus.add_ports(hostio.port, HostIo.port_count, hostio)
    ignored = tuple(bus.ignore_ports(first, count, fill=0, name=name)
                    for first, count, name in PC_IGNORED_PORTS
                    if not platform or first == POST_PORT)
    return PcDevices(com1, debug_exit, ignored, checkpoint, marker, hostio)
