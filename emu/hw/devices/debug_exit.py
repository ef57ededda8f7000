"""QEMU's isa-debug-exit device: the guest ends the run with a value.

Owns: the exit register and QEMU's mapping of the value to its own exit status.
Does not own: stopping the CPU (the `on_exit` callback the machine provides).
"""
from __future__ import annotations

from typing import Callable

from emu.hw.bus import Access, Device, Register

DEBUG_EXIT_PORT = 0xf4


def qemu_status(value: int) -> int:
    """The status QEMU's process exits with after a guest writes `value` to isa-debug-exit:
    (value << 1) | 1, so never 0 (a shell sees it modulo 256)."""
    return (value << 1) | 1


class DebugExit(Device):
    """QEMU's isa-debug-exit (iobase 0xf4, iosize 4): a write of v, of any size, calls
    `on_exit(v)`, which stops the machine with exit value v. Unlike QEMU, which exits with
    `qemu_status(v)`, this emulator reports v itself. Reads return 0."""
    registers = (Register(0, "EXIT", size=4, access=Access.WRITE),)
    port_count = 4

    def __init__(self, on_exit: Callable[[int], None], port: int = DEBUG_EXIT_PORT,
                 name: str = "debug-exit") -> None:
        super().__init__(name)
        self.on_exit = on_exit
        self.port = port
        self.value: int | None = None

    def read(self, offset: int, size: int) -> int:
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        self.value = value
        self.on_exit(value)
