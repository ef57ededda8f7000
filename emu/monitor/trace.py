"""Trace files: versioned JSON lines, written as the run goes, readable after a crash.

Format (documented for users in traces/README.md):
  line 1: {"format": "emu-trace", "version": 2, "kernel_sha256": ..., "config": {...},
           "kernel": {...}, "inputs": [...], "run": {...}, "seeds": {...}, "harness": {...}}
          (everything needed to run it again: emu/replay/header.py builds it)
  then one event per line: {"type": "ExceptionDelivered", "icount": ..., ..., "vtime": ...}
  the last line of a run is a GuestExit event, whatever ended it (a crash, the budget, a
  signal, an error of the harness: the machine emits it before the error propagates).

Writing is buffered and flushed at least every FLUSH_SECONDS and when the recorder closes,
so only a SIGKILL can lose the last moments of a run; a crash leaves a readable prefix.
Reading streams: memory does not grow with the trace's length.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import IO, Callable, Iterator

from emu.errors import ConfigError, OutputError, TraceError
from emu.events import Event, Observer
from emu.inputs import check_input, display

FORMAT = "emu-trace"
VERSION = 2
# Older versions, and what tells a user how to deal with one.
OLD_VERSIONS = {1: "version 1 (before replay: its header cannot rerun the run); record it "
                   "again with `emu run --trace`"}
FLUSH_SECONDS = 0.1
MAX_LINE = 1 << 20                  # no event is a megabyte long: a longer line is corrupt
MAX_TRACE_BYTES = 1 << 40           # a sanity bound; traces stream, so size costs no memory


def event_record(event: Event, vtime_of: Callable[[int], int] | None) -> dict:
    """An event as a trace line holds it (a replay compares its rerun's events in this form):
    its fields and its virtual time, `icount` while no machine says otherwise."""
    record = event.to_dict()
    record["vtime"] = vtime_of(event.icount) if vtime_of else event.icount
    return record


class TraceRecorder(Observer):
    """Writes every event to a JSON-lines file, each with its `vtime`: the virtual time
    (emu/hw/clock.py) at the event, `icount` plus the instructions skipped while halted.
    `vtime_of(icount)` is the machine's; until it is set (events before the machine
    exists), no time was skipped."""

    def __init__(self, path: Path, header: dict) -> None:
        """`header`: the run's description (emu/replay/header.py), written as line 1 after
        the format and version."""
        self.path = Path(path)
        try:
            self._file: IO[str] = open(path, "w", encoding="utf-8",
                                       errors="surrogateescape")
        except OSError as exc:
            raise OutputError(f"cannot write trace {display(path)}: {exc.strerror}") from None
        self._flushed = time.monotonic()
        self.vtime_of: Callable[[int], int] | None = None
        self._write({"format": FORMAT, "version": VERSION, **header})

    def _write(self, record: dict) -> None:
        try:
            self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
            now = time.monotonic()
            if now - self._flushed >= FLUSH_SECONDS:
                self._file.flush()
                self._flushed = now
        except OSError as exc:
            raise OutputError(f"cannot write trace {display(self.path)}: {exc.strerror}") \
                from None

    def on_event(self, event: Event) -> None:
        self._write(event_record(event, self.vtime_of))

    def snapshot_state(self) -> dict:
        """For emu/snapshot: where the file stands (a restore cuts what came after)."""
        self._file.flush()
        return {"recorder": f"{os.getpid()}:{id(self)}", "position": self._file.tell()}

    def restore_state(self, state: dict) -> None:
        """Back to a snapshot of this recorder: the events written since are cut off. A
        snapshot of another recorder (a run resumed from a file) leaves this one alone."""
        if state.get("recorder") != f"{os.getpid()}:{id(self)}" or self._file.closed:
            return
        self._file.flush()
        self._file.seek(state["position"])
        self._file.truncate()

    def close(self) -> None:
        """Flush and close; an error writing the last buffered lines is an OutputError."""
        if self._file.closed:
            return
        try:
            self._file.close()
        except OSError as exc:
            raise OutputError(f"cannot write trace {display(self.path)}: {exc.strerror}") \
                from None


def read_trace(path: Path) -> tuple[dict, "TraceEvents"]:
    """(header, events), events read lazily. Raises TraceError naming the line for anything
    malformed; a truncated last line (a crash mid-write) is reported, not dropped."""
    try:
        check_input(path, "trace", MAX_TRACE_BYTES)
    except ConfigError as exc:          # missing, a directory, a device: said as a trace's
        raise TraceError(str(exc)) from None
    try:
        stream = open(path, "r", encoding="utf-8")
    except OSError as exc:
        raise TraceError(f"cannot read trace {display(path)}: {exc.strerror}") from None
    try:
        header = _header(path, stream)
    except BaseException:
        stream.close()
        raise
    return header, TraceEvents(path, stream)


def read_header(path: Path) -> dict:
    """The header alone (the file is closed again); TraceError as read_trace."""
    header, events = read_trace(path)
    events.close()
    return header


def _header(path: Path, stream: IO[str]) -> dict:
    try:
        first = stream.readline(MAX_LINE)
    except UnicodeDecodeError:
        raise TraceError(f"{display(path)} is not a trace file (not UTF-8 text)") from None
    if not first:
        raise TraceError(f"{display(path)} is empty: not a trace file")
    header = _parse(path, 1, first)
    if header.get("format") != FORMAT:
        raise TraceError(f"{display(path)} is not an emu trace (line 1 has no \"format\": "
                         f"\"{FORMAT}\")")
    version = header.get("version")
    if version in OLD_VERSIONS:
        raise TraceError(f"{display(path)} is trace {OLD_VERSIONS[version]}")
    if version != VERSION:
        raise TraceError(f"{display(path)} is trace version {header.get('version')}; this "
                         f"emu reads version {VERSION}")
    return header


class TraceEvents:
    """The events of a trace, read lazily; `close()` closes the file (also unstarted), and
    so does reading to the end."""

    def __init__(self, path: Path, stream: IO[str]) -> None:
        self._path = path
        self._stream = stream
        self._number = 1

    def __iter__(self) -> "TraceEvents":
        return self

    def __next__(self) -> dict:
        if self._stream.closed:
            raise StopIteration
        self._number += 1
        try:
            line = self._stream.readline(MAX_LINE)
        except UnicodeDecodeError:
            self.close()
            raise TraceError(f"{display(self._path)}:{self._number}: not UTF-8 text") from None
        if not line:
            self.close()
            raise StopIteration
        try:
            record = _parse(self._path, self._number, line)
        except TraceError:
            self.close()
            raise
        if "type" not in record or "icount" not in record:
            self.close()
            raise TraceError(f"{display(self._path)}:{self._number}: event without type or "
                             "icount")
        return record

    def close(self) -> None:
        self._stream.close()


def _parse(path: Path, number: int, line: str) -> dict:
    if len(line) >= MAX_LINE and not line.endswith("\n"):
        raise TraceError(f"{display(path)}:{number}: a line over {MAX_LINE:,} characters: "
                         "corrupt trace")
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise TraceError(f"{display(path)}:{number}: corrupt trace line ({exc.msg})") \
            from None
    if not isinstance(record, dict):
        raise TraceError(f"{display(path)}:{number}: corrupt trace line (not an object)")
    return record


def last_event(path: Path) -> dict | None:
    """The trace's last complete event (read from the end, without reading the rest), or
    None if it cannot be read or holds no event. For bounding a rerun, not for checking."""
    try:
        with open(path, "rb") as stream:
            stream.seek(0, 2)
            size = stream.tell()
            stream.seek(max(0, size - MAX_LINE))
            tail = stream.read().splitlines()
    except OSError:
        return None
    for line in reversed(tail[1:] if len(tail) > 1 else tail):
        try:
            record = json.loads(line)
        except (ValueError, UnicodeDecodeError):
            continue
        if isinstance(record, dict) and "type" in record and isinstance(record.get("icount"),
                                                                         int):
            return record
    return None
