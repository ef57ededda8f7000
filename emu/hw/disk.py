"""The bytes behind a block device: a host file read and written at offsets.

Owns: creating the sparse temporary file of `--swap SIZE` (unlinked at once, so it is gone
at exit however the run ends, and costs no disk space until the guest writes), opening the
user's `--swap-file PATH` (kept; checked for kind and size before use, as every input is),
the size rules, and turning host I/O errors into OutputError.
Does not own: what the bytes mean (the guest's swap area) or requests (devices/virtio_blk.py).
"""
from __future__ import annotations

import os
import tempfile
import weakref
from pathlib import Path

from emu.errors import ConfigError, OutputError
from emu.inputs import check_input, display, file_sha256

SECTOR = 512
MIN_DISK = 64 << 10                     # a swap header page and a handful of slots
MAX_DISK = 1 << 40
DISK_ALIGN = 4096                       # swap slots are pages


def check_disk_size(size: int, what: str = "--swap") -> None:
    """ConfigError unless `size` bytes make a usable swap device."""
    if size < MIN_DISK:
        raise ConfigError(f"{what}: {size:,} bytes is too small for a swap device; give at "
                          f"least 64K (e.g. --swap 128M)")
    if size > MAX_DISK:
        raise ConfigError(f"{what}: {size:,} bytes is more than the 1 TiB a swap device may "
                          "have")
    if size % DISK_ALIGN:
        rounded = -(-size // DISK_ALIGN) * DISK_ALIGN
        raise ConfigError(f"{what}: {size:,} bytes is not a whole number of 4 KiB swap "
                          f"slots (try {rounded:,})")


class DiskImage:
    """A disk of `size` bytes in the host file open as `fd`. `path` is None for a
    temporary one."""

    def __init__(self, fd: int, size: int, path: Path | None) -> None:
        self.fd = fd
        self.size = size
        self.path = path
        self.bytes_read = 0
        self.bytes_written = 0
        self._closer = weakref.finalize(self, os.close, fd)

    @classmethod
    def temporary(cls, size: int) -> "DiskImage":
        """A sparse file of `size` zero bytes that no one else can see."""
        check_disk_size(size)
        try:
            handle = tempfile.TemporaryFile(prefix="emu-swap-")
            fd = os.dup(handle.fileno())
            handle.close()
            os.ftruncate(fd, size)
        except OSError as exc:
            raise OutputError(f"cannot create a {size:,}-byte temporary swap file: "
                              f"{exc.strerror}") from None
        return cls(fd, size, None)

    @classmethod
    def open(cls, path: Path) -> "DiskImage":
        """The user's swap file, read and written in place."""
        size = check_input(path, "swap file", MAX_DISK,
                           hint=f"create one with `truncate -s 128M {display(path)}`, or use "
                                "--swap 128M for a temporary one")
        check_disk_size(size, f"--swap-file {display(path)}")
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError as exc:
            raise ConfigError(f"cannot open swap file {display(path)} for reading and "
                              f"writing: {exc.strerror}") from None
        return cls(fd, size, Path(path))

    def sha256(self) -> str:
        return "" if self.path is None else file_sha256(self.path)

    def _where(self) -> str:
        return "the temporary swap file" if self.path is None else \
            f"swap file {display(self.path)}"

    def read(self, offset: int, length: int) -> bytes:
        try:
            data = os.pread(self.fd, length, offset)
        except OSError as exc:
            raise OutputError(f"cannot read {self._where()}: {exc.strerror}") from None
        self.bytes_read += length
        return data + bytes(length - len(data))       # a file cut short reads as zeroes

    def write(self, offset: int, data: bytes) -> None:
        try:
            done = os.pwrite(self.fd, data, offset)
            while done < len(data):
                done += os.pwrite(self.fd, data[done:], offset + done)
        except OSError as exc:
            raise OutputError(f"cannot write {self._where()}: {exc.strerror}") from None
        self.bytes_written += len(data)

    def flush(self) -> None:
        """Make what was written durable (a kept file only: a temporary one dies anyway)."""
        if self.path is None:
            return
        try:
            os.fdatasync(self.fd)
        except OSError as exc:
            raise OutputError(f"cannot flush {self._where()}: {exc.strerror}") from None

    def close(self) -> None:
        """Close the file (a temporary one is gone then); also done when collected."""
        self._closer()
        self.fd = -1
