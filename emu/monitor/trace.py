"""Trace files: versioned JSON lines, written as the run goes, readable after a crash.

Format (documented for users in traces/README.md):
  line 1: {"format": "emu-trace", "version": 1, "kernel_sha256": ..., "config": {...}}
  then one event per line: {"type": "ExceptionDelivered", "icount": ..., ...}
  the last line of a finished run is a GuestExit event.
Every line is flushed when written, so a run that dies leaves a readable prefix.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import IO, Iterator

from emu.errors import ConfigError, TraceError
from emu.events import Event, Observer

FORMAT = "emu-trace"
VERSION = 1


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file (the kernel's, for trace headers); "" if it cannot be read."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return ""
    return digest.hexdigest()


class TraceRecorder(Observer):
    """Writes every event to a JSON-lines file."""

    def __init__(self, path: Path, kernel_sha256: str, config: dict) -> None:
        try:
            self._file: IO[str] = open(path, "w", encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot write trace file {path}: {exc.strerror}") from None
        self._write({"format": FORMAT, "version": VERSION, "kernel_sha256": kernel_sha256,
                     "config": config})

    def _write(self, record: dict) -> None:
        self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._file.flush()

    def on_event(self, event: Event) -> None:
        self._write(event.to_dict())

    def close(self) -> None:
        self._file.close()


def read_trace(path: Path) -> tuple[dict, Iterator[dict]]:
    """(header, events). Raises TraceError naming the line for anything malformed; a
    truncated last line (a crash mid-write) is reported, not silently dropped."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise TraceError(f"cannot read trace {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise TraceError(f"{path} is not a trace file (not UTF-8 text)") from None
    if not lines:
        raise TraceError(f"{path} is empty: not a trace file")
    header = _parse(path, 1, lines[0])
    if header.get("format") != FORMAT:
        raise TraceError(f"{path} is not an emu trace (line 1 has no \"format\": \"{FORMAT}\")")
    if header.get("version") != VERSION:
        raise TraceError(f"{path} is trace version {header.get('version')}; this emu reads "
                         f"version {VERSION}")

    def events() -> Iterator[dict]:
        for number, line in enumerate(lines[1:], start=2):
            record = _parse(path, number, line)
            if "type" not in record or "icount" not in record:
                raise TraceError(f"{path}:{number}: event without type or icount")
            yield record

    return header, events()


def _parse(path: Path, number: int, line: str) -> dict:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise TraceError(f"{path}:{number}: corrupt trace line ({exc.msg})") from None
    if not isinstance(record, dict):
        raise TraceError(f"{path}:{number}: corrupt trace line (not an object)")
    return record
