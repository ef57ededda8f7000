"""PCI configuration mechanism #1 (PCI Local Bus Specification 3.0, 3.2.2.3.2 "Software
Generation of Configuration Transactions"): CONFIG_ADDRESS at 0xCF8 and CONFIG_DATA at
0xCFC-0xCFF, with a host bridge at 00:00.0.

Owns: CONFIG_ADDRESS (enable bit 31, bus 23:16, device 15:11, function 10:8, register 7:2),
routing CONFIG_DATA accesses of any size at any of its four ports to the addressed function's
configuration space, "no device" (all ones) where nothing is registered, and `PciFunction`, a
256-byte configuration space with a writable mask and write-1-to-clear bits, so adding a
device is one `PciHost.add` call and BAR sizing falls out of the mask.
Does not own: what a function does beyond its configuration bytes (BAR decoding, interrupts),
or the reset control register at 0xCF9 (devices/reset.py), which sits inside the CONFIG_ADDRESS
dword: a byte access to 0xCF9 is forwarded to it, as ICH chipsets decode it.

The host bridge is an Intel 440FX PMC (8086:1237, revision 02, class 06/00/00): the host bridge
of QEMU's default PC, so every kernel's PCI code knows it as a plain host bridge and none
expects chipset-specific setup from it. Its configuration space is read-only except the
command register's memory-space and bus-master bits and the latency timer; its
chipset registers (PAM, DRAM rows) read 0.
Modelled as documented behaviour: CONFIG_ADDRESS is only a 32-bit access at 0xCF8; other
accesses to 0xCF8-0xCFB (except the byte at 0xCF9) read all ones and are otherwise ignored, as
they are ordinary I/O cycles with nothing behind them. With the enable bit clear, CONFIG_DATA
reads all ones and ignores writes. Bytes of an access that run past 0xCFF read all ones.
"""
from __future__ import annotations

from emu.hw.bus import Device, Register
from emu.errors import ConfigError

CONFIG_ADDRESS_PORT = 0xCF8
PCI_PORT_COUNT = 8
CONFIG_SPACE_SIZE = 256
ENABLE = 1 << 31
_ADDRESS_MASK = 0x80FF_FFFC              # reserved bits 30:24 and 1:0 read 0
_DATA_OFFSET = 4
_RESET_OFFSET = 1                        # 0xCF9
DEVICES_PER_BUS, FUNCTIONS_PER_DEVICE = 32, 8

VENDOR_ID, DEVICE_ID, COMMAND, STATUS = 0x00, 0x02, 0x04, 0x06
REVISION, CLASS_CODE, LATENCY_TIMER, HEADER_TYPE = 0x08, 0x09, 0x0D, 0x0E
INTEL, I440FX_PMC = 0x8086, 0x1237
CLASS_HOST_BRIDGE = 0x060000


class PciFunction:
    """One PCI function's configuration space. A write changes the bits set in `writable`;
    bits set in `clear_on_write` are cleared where the written value has a 1 (RW1C)."""

    def __init__(self, config: bytes, writable: bytes | None = None,
                 clear_on_write: bytes | None = None) -> None:
        zeros = bytes(CONFIG_SPACE_SIZE)
        writable = zeros if writable is None else writable
        clear_on_write = zeros if clear_on_write is None else clear_on_write
        for name, data in (("config", config), ("writable", writable),
                           ("clear_on_write", clear_on_write)):
            if len(data) != CONFIG_SPACE_SIZE:
                raise ConfigError(f"PCI function: {name} must be {CONFIG_SPACE_SIZE} bytes, "
                                  f"not {len(data)}")
        self.config = bytearray(config)
        self.writable = bytes(writable)
        self.clear_on_write = bytes(clear_on_write)

    @classmethod
    def type0(cls, vendor: int, device: int, class_code: int, revision: int = 0,
              header_type: int = 0x00, command: int = 0, status: int = 0,
              command_writable: int = 0x0007) -> "PciFunction":
        """A type-0 header with the identification fields set and the command register's
        `command_writable` bits writable (I/O, memory, bus master by default)."""
        config = bytearray(CONFIG_SPACE_SIZE)
        writable = bytearray(CONFIG_SPACE_SIZE)
        for offset, size, value in ((VENDOR_ID, 2, vendor), (DEVICE_ID, 2, device),
                                    (COMMAND, 2, command), (STATUS, 2, status),
                                    (REVISION, 1, revision), (CLASS_CODE, 3, class_code),
                                    (HEADER_TYPE, 1, header_type)):
            config[offset:offset + size] = value.to_bytes(size, "little")
        writable[COMMAND:COMMAND + 2] = command_writable.to_bytes(2, "little")
        return cls(bytes(config), bytes(writable))

    def set_writable(self, offset: int, size: int, mask: int) -> None:
        """Make the bits of `mask` writable in the `size` bytes at `offset` (a BAR of 4 KiB
        memory: `set_writable(0x10, 4, 0xFFFFF000)`)."""
        writable = bytearray(self.writable)
        writable[offset:offset + size] = mask.to_bytes(size, "little")
        self.writable = bytes(writable)

    def read(self, offset: int, size: int) -> int:
        return int.from_bytes(self.config[offset:offset + size], "little")

    def write(self, offset: int, size: int, value: int) -> None:
        for index in range(size):
            where = offset + index
            if where >= CONFIG_SPACE_SIZE:
                return
            byte = (value >> (8 * index)) & 0xFF
            keep = self.config[where] & ~self.writable[where]
            cleared = self.config[where] & ~(byte & self.clear_on_write[where])
            new = keep | (byte & self.writable[where])
            self.config[where] = new & cleared if self.clear_on_write[where] else new


def i440fx_host_bridge() -> PciFunction:
    bridge = PciFunction.type0(INTEL, I440FX_PMC, CLASS_HOST_BRIDGE, revision=0x02,
                               command=0x0006, status=0x0280, command_writable=0x0006)
    bridge.set_writable(LATENCY_TIMER, 1, 0xF8)
    return bridge


class PciHost(Device):
    registers = (Register(0, "CONFIG_ADDRESS", size=4), Register(1, "RST_CNT"),
                 Register(4, "CONFIG_DATA", size=4))

    def __init__(self, reset_control: Device | None = None, name: str = "pci-host") -> None:
        super().__init__(name)
        self.reset_control = reset_control
        self.address = 0
        self.functions: dict[tuple[int, int, int], PciFunction] = {}
        self.add(0, 0, i440fx_host_bridge())

    def add(self, device: int, function: int, config: PciFunction, bus: int = 0) -> None:
        """Put `config` at bus:device.function (bus 0 unless told)."""
        if not (0 <= bus < 256 and 0 <= device < DEVICES_PER_BUS
                and 0 <= function < FUNCTIONS_PER_DEVICE):
            raise ConfigError(f"PCI {bus:02x}:{device:02x}.{function} does not exist")
        if (bus, device, function) in self.functions:
            raise ConfigError(f"PCI {bus:02x}:{device:02x}.{function} is already taken")
        self.functions[(bus, device, function)] = config

    def _target(self) -> tuple[PciFunction | None, int]:
        address = self.address
        key = ((address >> 16) & 0xFF, (address >> 11) & 0x1F, (address >> 8) & 7)
        return self.functions.get(key), address & 0xFC

    def read(self, offset: int, size: int) -> int:
        if offset == 0 and size == 4:
            return self.address
        if offset == _RESET_OFFSET and size == 1 and self.reset_control is not None:
            return self.reset_control.read(0, 1)
        value = 0
        for index in range(size):
            value |= self._data_byte(offset + index) << (8 * index)
        return value

    def _data_byte(self, port_offset: int) -> int:
        if not _DATA_OFFSET <= port_offset < PCI_PORT_COUNT or not self.address & ENABLE:
            return 0xFF
        function, register = self._target()
        if function is None:
            return 0xFF
        return function.read(register + port_offset - _DATA_OFFSET, 1)

    def write(self, offset: int, size: int, value: int) -> None:
        if offset == 0 and size == 4:
            self.address = value & _ADDRESS_MASK
        elif offset == _RESET_OFFSET and size == 1 and self.reset_control is not None:
            self.reset_control.write(0, 1, value)
        elif offset >= _DATA_OFFSET and self.address & ENABLE:
            function, register = self._target()
            if function is not None:
                fits = min(size, PCI_PORT_COUNT - offset)
                function.write(register + offset - _DATA_OFFSET, fits, value)
