"""Saving the RAM-backed framebuffer as a PNG (zlib from the standard library; no Pillow)."""
from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

from emu.errors import ConfigError, OutputError
from emu.inputs import display


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + \
        struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bytes(width: int, height: int, pitch: int, pixels: bytes) -> bytes:
    """Encode 32-bpp XRGB (little-endian B, G, R, X bytes) rows as an RGB PNG."""
    rows = bytearray()
    for y in range(height):
        row = pixels[y * pitch:y * pitch + 4 * width]
        rgb = bytearray(3 * width)
        rgb[0::3] = row[2::4]
        rgb[1::3] = row[1::4]
        rgb[2::3] = row[0::4]
        rows += b"\x00" + rgb
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + \
        _chunk(b"IDAT", zlib.compress(bytes(rows), 6)) + _chunk(b"IEND", b"")


def save_framebuffer(machine, path: Path) -> None:
    info = machine.boot.framebuffer
    if info is None:
        raise ConfigError("--screenshot: the kernel asked for no framebuffer")
    pixels = machine.memory.read(info.address, info.pitch * info.height)
    data = png_bytes(info.width, info.height, info.pitch, pixels)
    path = Path(path)
    try:
        if path.exists() and not path.is_file():
            path.write_bytes(data)         # a device (/dev/null): written, never replaced
            return
        partial = path.with_name(f".{path.name}.partial")
        try:                               # never a half-written PNG under the real name
            partial.write_bytes(data)
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot write screenshot {display(path)}: {exc.strerror}") \
            from None
