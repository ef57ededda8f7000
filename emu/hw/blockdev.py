"""The swap disk of the PC machine: a virtio-blk device on the virtio-mmio transport, where
it sits, which interrupt it raises and how the kernel hears of it.

Owns: the MMIO window (4 KiB at VIRTIO_BLK_BASE, in the PCI hole below the IOAPIC, where
QEMU's microvm puts its virtio-mmio devices), the interrupt (ISA IRQ 5: 8259 input 5 and
IOAPIC pin 5, edge-triggered as ISA lines are unless the kernel programs otherwise), the
announcement on the kernel command line in Linux's syntax (`virtio_mmio.device=4K@0xfeb00000:5`,
Documentation/admin-guide/kernel-parameters.txt; no ACPI or device-tree entry is needed for
it), and installing the device on a bus and a platform.
Does not own: the device (devices/virtio_blk.py), its transport (devices/virtio_mmio.py),
the disk's bytes (disk.py), the platform (platform.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from emu.errors import ConfigError
from emu.events import EventBus
from emu.hw.devices.virtio_blk import VirtioBlk
from emu.hw.devices.virtio_mmio import WINDOW_SIZE, VirtioMmio
from emu.hw.disk import DiskImage, check_disk_size
from emu.hw.memmap import MemoryMap
from emu.hw.memory import PhysicalMemory
from emu.hw.platform import PcPlatform, PortsAndMmio
from emu.inputs import check_input, display, file_sha256, refuse_overwriting

VIRTIO_BLK_BASE = 0xFEB00000
VIRTIO_BLK_IRQ = 5
DEFAULT_LATENCY = 20_000            # ticks from notify to completion: 200 us at 100 M/s
MAX_LATENCY = 10**12                # ticks: hours of virtual time at any --ips


def announcement(base: int = VIRTIO_BLK_BASE, irq: int = VIRTIO_BLK_IRQ) -> str:
    """The command-line word by which Linux (and our kernel) finds a virtio-mmio device."""
    return f"virtio_mmio.device={WINDOW_SIZE // 1024}K@{base:#x}:{irq}"


@dataclass(frozen=True, slots=True)
class SwapDevice:
    """The installed swap disk: its transport (registers) and the block device."""
    transport: VirtioMmio
    blk: VirtioBlk
    base: int
    irq: int

    @property
    def disk(self) -> DiskImage:
        return self.blk.disk


def install_swap_device(platform: PcPlatform, bus: PortsAndMmio, memory: PhysicalMemory,
                        events: EventBus, disk: DiskImage, *, latency: int = DEFAULT_LATENCY,
                        base: int = VIRTIO_BLK_BASE, irq: int = VIRTIO_BLK_IRQ) -> SwapDevice:
    """Put a virtio-blk device over `disk` at `base` on `bus`, raising ISA `irq` of
    `platform`, completing requests `latency` ticks after their notify. Its interrupts
    come from the platform's timers (device and transport are Timers), never from inside
    a register access, so no access needs to stop the CPU."""
    blk = VirtioBlk(disk, platform.clock, events, latency)
    line = platform.interrupts.isa_line(irq, "virtio-blk")
    transport = VirtioMmio("virtio-blk", blk, memory, line, events, platform.clock)
    bus.add_mmio(base, WINDOW_SIZE, transport, exact=False)
    platform.timers.add(blk)
    platform.timers.add(transport)
    return SwapDevice(transport, blk, base, irq)


# --- the machine's options ----------------------------------------------------------------

def check_swap_options(size: int | None, path: Path | None, latency: int, platform: bool,
                       inputs: tuple[tuple[str, Path], ...] = ()) -> None:
    """ConfigError for swap options that cannot work, before anything boots. `inputs`
    ((what, path) pairs: the kernel, modules) must not be the swap file, which is written."""
    if size is not None and path is not None:
        raise ConfigError("give --swap SIZE (a temporary disk) or --swap-file PATH (a kept "
                          "one), not both")
    if not 0 <= latency <= MAX_LATENCY:
        raise ConfigError(f"--swap-latency {latency}: give 0 (complete at once) to "
                          f"{MAX_LATENCY:,} ticks")
    if size is None and path is None:
        return
    if not platform:
        raise ConfigError("the swap disk interrupts through the platform's interrupt "
                          "controllers; drop --no-platform")
    if size is not None:
        check_disk_size(size)
    else:
        assert path is not None
        check_input(path, "swap file", 1 << 40,
                    hint=f"create one with `truncate -s 128M {display(path)}`, or use "
                         "--swap 128M for a temporary one")
        refuse_overwriting(path, "swap file", inputs)


def describe_swap(size: int | None, path: Path | None, latency: int) -> dict:
    """The swap options for a trace header: a kept file's name and SHA-256 (its contents
    are an input of the run)."""
    if size is None and path is None:
        return {}
    out: dict = {"swap": size, "swap_latency": latency}
    if path is not None:
        try:
            digest = file_sha256(path)
        except OSError:
            digest = ""
        out.update(swap_file=Path(path).name, swap_file_sha256=digest)
    return out


def kernel_cmdline(cmdline: str, swap: SwapDevice | None) -> str:
    """The user's command line, with the swap disk announced as Linux expects it: first,
    since everything after a `--` belongs to the first program."""
    if swap is None:
        return cmdline
    word = announcement(swap.base, swap.irq)
    return f"{word} {cmdline}" if cmdline else word


def swap_from_options(platform: PcPlatform, bus: PortsAndMmio, memory: PhysicalMemory,
                      events: EventBus, memmap: MemoryMap, *, size: int | None,
                      path: Path | None, latency: int) -> SwapDevice | None:
    """The swap disk the options ask for, installed; None if they ask for none."""
    if size is None and path is None:
        return None
    for region in memmap.regions:
        if region.base < VIRTIO_BLK_BASE + WINDOW_SIZE and VIRTIO_BLK_BASE < region.end:
            raise ConfigError(f"the memory map has {region} where the swap disk's registers "
                              f"go ({VIRTIO_BLK_BASE:#x}, 4 KiB); move that entry")
    disk = DiskImage.temporary(size) if size is not None else DiskImage.open(path)
    return install_swap_device(platform, bus, memory, events, disk, latency=latency)
