"""Snapshots of a machine: in memory (fork, for time travel) and in files (to resume a run
in a new process).

Owns: `take(machine)` (RAM held by a fork, the CPU context, the Python state of every
component), `Snapshot.restore(machine)` (all three put back, then Unicorn's TLB and
translation cache and the counter's block cache flushed, since the code behind an address
may be different now), and the snapshot file: `save(machine, path, header)` writes the
registers (the CPU context without its host pointers), the state as JSON and the resident
RAM pages; `load(path)` reads it and `SavedSnapshot.apply(machine)` puts it into a machine
built from the same configuration.
Does not own: running (the machine), what the header says about the run (the commands).

File layout (version FILE_VERSION): line 1 is a JSON object {"format": "emu-snapshot",
"version", "icount", "header" (the trace header of the run: kernel, config, inputs), "context"
(base64), "state", "pages": [[guest physical base, length, compressed length], ...]}; then
each run of pages, zlib-compressed, in that order.
"""
from __future__ import annotations

import base64
import ctypes
import functools
import json
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from unicorn import UC_ARCH_X86, UC_CTL_IO_WRITE, UC_CTL_TLB_FLUSH, UC_MODE_64, Uc

from emu.engine import capi
from emu.errors import OutputError, TraceError
from emu.inputs import check_input, display
from emu.snapshot import codec, ram
from emu.snapshot import state as states

FORMAT = "emu-snapshot"
FILE_VERSION = 1
MAX_HEADER = 1 << 30
MAX_FILE = 1 << 44


def _flush(machine) -> None:
    """What Unicorn and the counter cached about code and translations is stale now."""
    machine.uc.ctl(UC_CTL_TLB_FLUSH, UC_CTL_IO_WRITE)
    machine.uc.ctl_flush_tb()
    machine.cpu.count.forget_code()


@dataclass
class Snapshot:
    """A machine at one instruction count, in memory. `close()` releases its RAM holder."""
    icount: int
    context: Any
    components: dict[str, Any]
    state: dict[str, dict[str, Any]]
    ram: ram.RamHolder
    foreign_types: set[str] = field(default_factory=set)

    def restore(self, machine) -> None:
        """Put `machine` (the one it was taken of) back to this instruction."""
        self.ram.copy_back()
        machine.uc.context_restore(self.context)
        states.restore(self.components, self.state)
        _flush(machine)

    def resident_bytes(self) -> int:
        return self.ram.resident_bytes()

    def close(self) -> None:
        self.ram.close()


def take(machine) -> Snapshot:
    """A snapshot of `machine` between instructions (not inside a hook)."""
    walk, captured = states.capture(machine)
    context = machine.uc.context_save()
    return Snapshot(machine.cpu.icount(), context, walk.components, captured,
                    ram.RamHolder(machine.memory), walk.foreign_types)


# ---- files ---------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _host_words() -> frozenset[int]:
    """Offsets of the 8-byte words of a context that differ between two Unicorn instances
    in the same state: host pointers, never saved."""
    contexts = []
    for _ in range(2):
        uc = Uc(UC_ARCH_X86, UC_MODE_64)
        context = uc.context_save()
        contexts.append(ctypes.string_at(capi.context_address(context), capi.context_size(uc)))
    one, other = contexts
    return frozenset(offset for offset in range(0, len(one) - 7, 8)
                     if one[offset:offset + 8] != other[offset:offset + 8])


def _context_bytes(machine) -> bytes:
    context = machine.uc.context_save()
    return ctypes.string_at(capi.context_address(context), capi.context_size(machine.uc))


def save(machine, path: Path, header: dict) -> int:
    """Write a snapshot of `machine` to `path`; returns the bytes written."""
    walk, captured = states.capture(machine)
    encoded = {where: {name: codec.encode(value, walk.path_of) for name, value in attrs.items()}
               for where, attrs in captured.items()}
    pages = [(base, zlib.compress(data, 1)) for base, data in ram.read_pages(machine.memory)]
    lengths = [[base, len(zlib.decompress(blob)), len(blob)] for base, blob in pages]
    record = {"format": FORMAT, "version": FILE_VERSION, "icount": machine.cpu.icount(),
              "header": header, "context": base64.b64encode(_context_bytes(machine)).decode(),
              "state": encoded, "pages": lengths}
    try:
        with open(path, "wb") as stream:
            stream.write(json.dumps(record, separators=(",", ":")).encode() + b"\n")
            for _, blob in pages:
                stream.write(blob)
            return stream.tell()
    except OSError as exc:
        raise OutputError(f"cannot write snapshot {display(path)}: {exc.strerror}") from None


@dataclass(frozen=True)
class SavedSnapshot:
    """A snapshot file, read: apply it to a machine built from `header`'s configuration."""
    path: Path
    icount: int
    header: dict
    context: bytes
    state: dict
    pages: list

    def apply(self, machine) -> None:
        ram.clear(machine.memory)
        with open(self.path, "rb") as stream:
            stream.readline(MAX_HEADER)
            for base, length, stored in self.pages:
                machine.memory.write(base, _inflate(stream, stored, length, self.path))
        _apply_context(machine, self.context)
        walk = states.Capture(machine)
        resolve = walk.components.get
        decoded = {where: {name: codec.decode(value, resolve) for name, value in attrs.items()
                           if not _foreign(value)}
                   for where, attrs in self.state.items()}
        states.restore(walk.components, decoded)
        _flush(machine)


def _inflate(stream: BinaryIO, stored: int, length: int, path: Path) -> bytes:
    data = zlib.decompress(stream.read(stored))
    if len(data) != length:
        raise TraceError(f"snapshot {display(path)} is cut short or corrupt (RAM pages)")
    return data


def _foreign(data: Any) -> bool:
    if isinstance(data, dict):
        return codec.FOREIGN in data or any(_foreign(v) for v in data.values())
    if isinstance(data, list):
        return any(_foreign(v) for v in data)
    return False


def _apply_context(machine, saved: bytes) -> None:
    context = machine.uc.context_save()
    address, size = capi.context_address(context), capi.context_size(machine.uc)
    if len(saved) != size:
        raise TraceError("the snapshot's CPU context is of another Unicorn build")
    live = bytearray(ctypes.string_at(address, size))
    merged = bytearray(saved)
    for offset in _host_words():
        merged[offset:offset + 8] = live[offset:offset + 8]
    ctypes.memmove(address, bytes(merged), size)
    machine.uc.context_restore(context)


def load(path: Path) -> SavedSnapshot:
    """Read a snapshot file's header; TraceError (one line) for anything else."""
    check_input_as_snapshot(path)
    try:
        with open(path, "rb") as stream:
            line = stream.readline(MAX_HEADER)
        record = json.loads(line)
    except OSError as exc:
        raise TraceError(f"cannot read snapshot {display(path)}: {exc.strerror}") from None
    except (ValueError, UnicodeDecodeError):
        raise TraceError(f"{display(path)} is not an emu snapshot (line 1 is not JSON)") \
            from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise TraceError(f"{display(path)} is not an emu snapshot")
    if record.get("version") != FILE_VERSION:
        raise TraceError(f"{display(path)} is snapshot version {record.get('version')}; this "
                         f"emu reads version {FILE_VERSION}")
    try:
        return SavedSnapshot(Path(path), int(record["icount"]), dict(record["header"]),
                             base64.b64decode(record["context"]), dict(record["state"]),
                             [tuple(int(n) for n in page) for page in record["pages"]])
    except (KeyError, TypeError, ValueError):
        raise TraceError(f"snapshot {display(path)} has a malformed header") from None


def check_input_as_snapshot(path: Path) -> None:
    from emu.errors import ConfigError
    try:
        check_input(path, "snapshot", MAX_FILE)
    except ConfigError as exc:
        raise TraceError(str(exc)) from None
