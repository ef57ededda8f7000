"""PCI configuration mechanism #1 through ports 0xCF8-0xCFF: the host bridge, empty slots,
every access size at every data port, registered functions, and the byte at 0xCF9."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emu.errors import ConfigError
from emu.hw.devices.pci import PciFunction, PciHost
from emu.hw.devices.reset import ResetControl, ResetReason


def address(bus: int, device: int, function: int, register: int) -> int:
    return 1 << 31 | bus << 16 | device << 11 | function << 8 | register


def config_read(host: PciHost, bdf: tuple[int, int, int], register: int, size: int) -> int:
    host.write(0, 4, address(*bdf, register & 0xFC))
    return host.read(4 + (register & 3), size)


def test_host_bridge_identity():
    host = PciHost()
    assert config_read(host, (0, 0, 0), 0x00, 4) == 0x1237_8086
    assert config_read(host, (0, 0, 0), 0x08, 4) == 0x0600_0002
    assert config_read(host, (0, 0, 0), 0x0E, 1) == 0x00
    assert config_read(host, (0, 0, 0), 0x04, 4) == 0x0280_0006


def test_sub_dword_accesses_at_each_data_port():
    host = PciHost()
    assert config_read(host, (0, 0, 0), 0x01, 1) == 0x80
    assert config_read(host, (0, 0, 0), 0x02, 2) == 0x1237
    assert config_read(host, (0, 0, 0), 0x03, 1) == 0x12
    assert config_read(host, (0, 0, 0), 0x0B, 1) == 0x06
    host.write(0, 4, address(0, 0, 0, 0))
    assert host.read(5, 4) == 0xFF_12_37_80                # bytes past 0xCFF read all ones


def test_no_device_reads_all_ones_and_ignores_writes():
    host = PciHost()
    assert config_read(host, (0, 1, 0), 0x00, 4) == 0xFFFF_FFFF
    assert config_read(host, (0, 0, 1), 0x00, 2) == 0xFFFF
    assert config_read(host, (3, 0, 0), 0x00, 1) == 0xFF
    host.write(0, 4, address(0, 1, 0, 0x04))
    host.write(4, 4, 0x1234)
    assert host.read(4, 4) == 0xFFFF_FFFF


def test_config_address_reads_back_without_reserved_bits():
    host = PciHost()
    host.write(0, 4, 0xFFFF_FFFF)
    assert host.read(0, 4) == 0x80FF_FFFC
    host.write(0, 4, address(0, 0, 0, 0) & 0x7FFF_FFFF)   # enable bit clear
    assert host.read(4, 4) == 0xFFFF_FFFF
    assert host.read(0, 2) == 0xFFFF and host.read(2, 1) == 0xFF   # not CONFIG_ADDRESS


def test_host_bridge_writable_bits_only():
    host = PciHost()
    host.write(0, 4, address(0, 0, 0, 0x00))
    host.write(4, 4, 0)                                    # vendor/device are read-only
    assert host.read(4, 4) == 0x1237_8086
    host.write(0, 4, address(0, 0, 0, 0x04))
    host.write(4, 2, 0xFFFF)
    assert host.read(4, 2) == 0x0006
    host.write(0, 4, address(0, 0, 0, 0x0C))
    host.write(5, 1, 0xFF)                                 # latency timer at 0x0D
    assert host.read(5, 1) == 0xF8


def test_registered_function_bar_sizing_and_rw1c_status():
    host = PciHost()
    nic = PciFunction.type0(0x8086, 0x100E, 0x020000, status=0x0010)
    nic.set_writable(0x10, 4, 0xFFFE_0000)                 # 128 KiB memory BAR
    status = bytearray(256)
    status[0x07] = 0xF9                                    # error bits are RW1C
    nic.clear_on_write = bytes(status)
    nic.config[0x07] = 0x80
    host.add(3, 0, nic)
    host.write(0, 4, address(0, 3, 0, 0x10))
    host.write(4, 4, 0xFFFF_FFFF)
    assert host.read(4, 4) == 0xFFFE_0000
    host.write(0, 4, address(0, 3, 0, 0x04))
    assert host.read(6, 2) == 0x8010
    host.write(6, 2, 0x8000)                               # clear the error bit
    assert host.read(6, 2) == 0x0010
    with pytest.raises(ConfigError):
        host.add(3, 0, nic)
    with pytest.raises(ConfigError):
        host.add(32, 0, nic)
    with pytest.raises(ConfigError):
        PciFunction(bytes(10))


def test_port_cf9_byte_is_the_reset_register():
    reasons: list[ResetReason] = []
    host = PciHost(ResetControl(reasons.append))
    host.write(0, 4, 0x0000_0600)                          # a dword at 0xCF8: no reset
    assert reasons == []
    host.write(1, 1, 0x06)
    assert reasons == [ResetReason.CF9_HARD]
    assert host.read(1, 1) == 0x02


@given(st.integers(0, 63))
def test_bytes_words_and_dwords_agree(dword):
    host = PciHost()
    whole = config_read(host, (0, 0, 0), 4 * dword, 4)
    low = config_read(host, (0, 0, 0), 4 * dword, 2)
    high = config_read(host, (0, 0, 0), 4 * dword + 2, 2)
    parts = [config_read(host, (0, 0, 0), 4 * dword + i, 1) for i in range(4)]
    assert whole == low | high << 16 == sum(b << (8 * i) for i, b in enumerate(parts))
