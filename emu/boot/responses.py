"""The Limine responses a loader writes, laid out before their address is known.

Owns: `Blob` (bytes whose pointers are fixed up once the blob's address is known) and the
response of every request emu answers, in the protocol's layouts (docs/LIMINE.md): strings,
arrays of pointers, `limine_file`, `limine_framebuffer`, the MP response for one CPU, the RSDP.
Does not own: where the blob goes, the memory map's entries or writing response pointers
into the requests (loader.py).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

from emu.boot.limine import HHDM_OFFSET

if TYPE_CHECKING:
    from emu.boot.loader import Session

ADDRESS_LIMIT = 1 << 64
_U64 = struct.Struct("<Q")


def align_up(value: int, align: int) -> int:
    return -(-value // align) * align


@dataclass(frozen=True, slots=True)
class Ptr:
    """A pointer to a blob offset, resolved when the blob's address is known."""
    target: int


class Blob:
    """Bytes laid out before their address is known; pointers are fixed up at link time."""

    def __init__(self) -> None:
        self.data = bytearray()
        self._pointers: list[int] = []

    def alloc(self, size: int, align: int = 8) -> int:
        offset = align_up(len(self.data), align)
        self.data.extend(bytes(offset + size - len(self.data)))
        return offset

    def string(self, text: str) -> int:
        # Arguments that were not valid UTF-8 reach Python as surrogate escapes: the guest
        # gets the bytes the user gave (a C string holds any byte but NUL).
        raw = text.encode("utf-8", "surrogateescape") + b"\0"
        offset = self.alloc(len(raw), 1)
        self.data[offset:offset + len(raw)] = raw
        return offset

    def set(self, offset: int, value: int | Ptr) -> None:
        if isinstance(value, Ptr):
            self._pointers.append(offset)
            value = value.target
        _U64.pack_into(self.data, offset, value % ADDRESS_LIMIT)

    def struct(self, *fields: int | Ptr, size: int = 0, align: int = 8) -> int:
        offset = self.alloc(max(size, 8 * len(fields)), align)
        for index, value in enumerate(fields):
            self.set(offset + 8 * index, value)
        return offset

    def pointers(self, targets: list[int]) -> int:
        return self.struct(*[Ptr(t) for t in targets], size=8 * max(len(targets), 1))

    def linked(self, base: int) -> bytes:
        out = bytearray(self.data)
        for offset in self._pointers:
            _U64.pack_into(out, offset, _U64.unpack_from(out, offset)[0] + base)
        return bytes(out)


def build_responses(session: "Session", blob: Blob) -> dict[str, int]:
    """Build a response for every request we can answer; returns name -> blob offset.
    The memory map response gets its count and array pointer in finish()."""
    config, out = session.config, {}
    cmdline = blob.string(config.cmdline)
    names = session.by_name

    def hhdm(paddr: int) -> int:
        return HHDM_OFFSET + paddr

    if "bootloader_info" in names:
        out["bootloader_info"] = blob.struct(
            0, Ptr(blob.string(config.bootloader_name)),
            Ptr(blob.string(config.bootloader_version)))
    if "executable_cmdline" in names:
        out["executable_cmdline"] = blob.struct(0, Ptr(cmdline))
    if "firmware_type" in names:
        out["firmware_type"] = blob.struct(0, 0)        # x86 BIOS
    if "stack_size" in names:
        out["stack_size"] = blob.struct(0)
    if "hhdm" in names:
        out["hhdm"] = blob.struct(0, HHDM_OFFSET)
    if "framebuffer" in names and session.framebuffer is not None:
        out["framebuffer"] = _framebuffer_response(session, blob)
    if "paging_mode" in names:
        out["paging_mode"] = blob.struct(0, 0)          # 4-level
    if "mp" in names:   # one CPU, the BSP, LAPIC ID 0; x2APIC not enabled
        cpu = blob.struct(0, 0, 0, 0)   # processor_id/lapic_id, reserved, goto, extra
        out["mp"] = blob.struct(0, 0, 1, Ptr(blob.pointers([cpu])))
    if "memmap" in names:
        out["memmap"] = blob.struct(0, 0, 0)
    if "entry_point" in names:
        out["entry_point"] = blob.struct(0)
    if "executable_file" in names:
        file = _file(blob, hhdm(session.kernel_file), len(session.data), "/boot/kernel",
                     cmdline)
        out["executable_file"] = blob.struct(0, Ptr(file))
    if "module" in names and session.modules:
        files = [_file(blob, hhdm(address), len(content), f"/boot/{path.name}",
                       blob.string(string))
                 for address, (path, string, content) in zip(session.module_files,
                                                             session.modules)]
        out["module"] = blob.struct(0, len(files), Ptr(blob.pointers(files)))
    if "date_at_boot" in names:
        out["date_at_boot"] = blob.struct(0, config.boot_time)
    if "rsdp" in names and session.acpi is not None:
        # Base revision 3 hands over the physical address (its HHDM need not cover ACPI
        # memory); the others an HHDM address.
        rsdp = session.acpi.rsdp_address
        out["rsdp"] = blob.struct(0, rsdp if session.revision >= 3 else hhdm(rsdp))
    if "executable_address" in names:
        out["executable_address"] = blob.struct(0, session.phys_base, session.elf.virt_base)
    return out


def _framebuffer_response(session: "Session", blob: Blob) -> int:
    fb = session.framebuffer
    # bpp u16, memory_model 1 (RGB), red 8@16, green 8@8, blue 8@0.
    format_word = 32 | 1 << 16 | 8 << 24 | 16 << 32 | 8 << 40 | 8 << 48 | 8 << 56
    no_modes = blob.alloc(8)
    info = blob.struct(HHDM_OFFSET + fb.address, fb.width, fb.height, fb.pitch,
                       format_word, 0, 0, 0, 0, Ptr(no_modes))
    return blob.struct(1, 1, Ptr(blob.pointers([info])))


def _file(blob: Blob, address: int, size: int, path: str, string: int) -> int:
    """A 112-byte limine_file; media type generic, no partition or UUIDs."""
    return blob.struct(0, address, size, Ptr(blob.string(path)), Ptr(string), size=112)
