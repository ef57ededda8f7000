"""Trace files: versioned JSON lines, written as the run goes, readable after a crash.

Format (documented for users in traces/README.md):
  line 1: {"format": "emu-trace", "version": 2, "kernel_sha256": ..., "config": {...},
           "kernel": {...}, "inputs": [...], "run": {...}, "seeds": {...}, "harness": {...}}
          (everything needed to run it again: emu/replay/header.py builds it)
  then one event per line: {"type": "ExceptionDelivered", "icount": ..., ..., "vtime": ...}
  the last line of a run is a GuestExit event, whatever ended it (a crash, the budget, a
  signal, an error of the harness: the machine emits it before the error propagates).

Which events are written is the recorder's TraceFilter (emu/monitor/trace_events.py,
`--trace-events`), kept in the header's `run.trace_events`; a run of `invlpg`s is one line
(FlushRuns). A file named `*.zst` is written zstd-compressed; readers recognise it by its
magic number. Lines are written in batches, flushed at the first event FLUSH_SECONDS after
the last flush and when the recorder closes, so only a SIGKILL can lose the last moments of
a run; a crash leaves a readable prefix. Reading streams: memory does not grow with the
trace's length.
"""
from __future__ import annotations

import io
import json
import os
from json.encoder import encode_basestring_ascii
import time
from pathlib import Path
from collections import deque
from dataclasses import fields
from typing import IO, Callable, Iterator

from emu.errors import ConfigError, OutputError, TraceError
from emu.events import Event, Observer, TlbFlush
from emu.inputs import check_input, display
from emu.monitor.trace_events import TraceFilter

FORMAT = "emu-trace"
VERSION = 2
# Older versions, and what tells a user how to deal with one.
OLD_VERSIONS = {1: "version 1 (before replay: its header cannot rerun the run); record it "
                   "again with `emu run --trace`"}
FLUSH_SECONDS = 0.1
BATCH_LINES = 256                   # lines gathered before a write (one write, not 256)
ZSTD_SUFFIX = ".zst"
ZSTD_LEVEL = 3                      # zstd's default: fast, and ~10x smaller on traces
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
MAX_LINE = 1 << 20                  # no event is a megabyte long: a longer line is corrupt
MAX_TRACE_BYTES = 1 << 40           # a sanity bound; traces stream, so size costs no memory


def _line_encoder(cls: type[Event]) -> Callable[[Event, int], str]:
    """A function that writes one event type's trace line: the same text as
    `json.dumps(record, separators=(",", ":"))` of the event's fields and vtime, about six
    times faster (recording cost, issue 13). It is generated from the type's fields, as
    dataclasses generate `__init__`: integers go in through `%d`, booleans inline, None,
    text and tuples through their JSON form."""
    parts, values = [f'"type":"{cls.__name__}"'], []
    for field in fields(cls):
        name = field.name                                    # a Python identifier
        if field.type == "int":
            parts.append(f'"{name}":%d')
            values.append(f"event.{name}")
        elif field.type == "bool":
            parts.append(f'"{name}":%s')
            values.append(f'("true" if event.{name} else "false")')
        else:
            parts.append(f'"{name}":%s')
            converter = _CONVERTERS.get(field.type, _json)
            values.append(f"{converter.__name__}(event.{name})")
    template = "{" + ",".join([*parts, '"vtime":%d']) + "}\n"
    source = (f"def line(event, vtime):\n"
              f"    return {template!r} % ({', '.join([*values, 'vtime'])})\n")
    namespace = {function.__name__: function for function in (_json, *_CONVERTERS.values())}
    exec(source, namespace)                                  # noqa: S102 (our own text)
    return namespace["line"]


def _json(value) -> str:
    return json.dumps(value, separators=(",", ":"))


def _json_bool(value) -> str:
    return "true" if value is True else "false" if value is False else _json(value)


def _json_optional_int(value) -> str:
    return "null" if value is None else "%d" % value


def _json_str(value) -> str:
    return encode_basestring_ascii(value) if type(value) is str else _json(value)


# The annotated types whose JSON a cheaper call makes than json.dumps.
_CONVERTERS = {"bool": _json_bool, "int | None": _json_optional_int, "str": _json_str}


_ENCODERS: dict[type, Callable[[Event, int], str]] = {}


def event_line(event: Event, vtime_of: Callable[[int], int] | None) -> str:
    """An event as a trace line holds it, newline included: its fields and its virtual time,
    `icount` while no machine says otherwise (a replay compares its rerun's events in this
    form)."""
    encoder = _ENCODERS.get(type(event)) or _encoder_for(type(event))
    return encoder(event, vtime_of(event.icount) if vtime_of else event.icount)


def _encoder_for(cls: type[Event]) -> Callable[[Event, int], str]:
    encoder = _ENCODERS[cls] = _line_encoder(cls)
    return encoder


def run_line(event: Event, vtime: int, run: tuple[int, int, int] | None) -> str:
    """The trace line of an event, or of a run of flushes that starts with it (FlushRuns):
    the first flush's fields plus `count`, `stride` and `last_icount`."""
    encoder = _ENCODERS.get(type(event)) or _encoder_for(type(event))
    line = encoder(event, vtime)
    if run is None:
        return line
    return line[:-2] + ',"count":%d,"stride":%d,"last_icount":%d}\n' % run


class FlushRuns:
    """Coalesces a run of `invlpg`s into one record, so that a kernel that flushes a range
    page by page (or the TLB a million times) does not make a line per flush: TlbFlush
    events recorded one after the other (nothing recorded between them) from the same
    `rip`, whose addresses step by the same `stride` (bytes, may be 0 or negative). The
    record is the first flush with `count`, `stride` and `last_icount` (the last flush's
    instruction count); a lone flush stays as it is. The recorder and the replay's comparer
    both pass their events through one, so a replay compares the same records.

    `push(event, vtime)` returns the (event, vtime, run) items to write now, in order; `run`
    is None or (count, stride, last_icount). `end()` returns the pending run."""

    def __init__(self) -> None:
        self.pending: TlbFlush | None = None       # the first flush of the open run
        self._vtime = 0
        self._count = 0
        self._stride = 0
        self._last: TlbFlush | None = None

    def push(self, event: Event, vtime: int) -> list[tuple[Event, int, tuple | None]]:
        first = self.pending
        if type(event) is TlbFlush:
            if first is not None and event.rip == first.rip:
                step = event.address - self._last.address
                if self._count == 1 or step == self._stride:
                    self._stride, self._last = step, event
                    self._count += 1
                    return []
            out = self.end()
            self.pending = self._last = event
            self._vtime, self._count, self._stride = vtime, 1, 0
            return out
        if first is None:
            return [(event, vtime, None)]
        return [*self.end(), (event, vtime, None)]

    def end(self) -> list[tuple[Event, int, tuple | None]]:
        if self.pending is None:
            return []
        run = (self._count, self._stride, self._last.icount) if self._count > 1 else None
        out = [(self.pending, self._vtime, run)]
        self.pending = self._last = None
        return out

    def state(self) -> list[int] | None:
        """The open run as plain numbers (a snapshot file holds it), or None."""
        if self.pending is None:
            return None
        first, last = self.pending, self._last
        return [first.icount, first.rip, first.address, self._vtime, self._count,
                self._stride, last.icount, last.address]

    def set_state(self, state: list[int] | None) -> None:
        if state is None:
            self.pending = self._last = None
            return
        icount, rip, address, self._vtime, self._count, self._stride, last, last_address = \
            state
        self.pending = TlbFlush(icount, rip, address)
        self._last = TlbFlush(last, rip, last_address)


def compressed_name(path: Path) -> bool:
    """A trace named `*.zst` is written with zstd; readers recognise either kind by content."""
    return Path(path).suffix == ZSTD_SUFFIX


class _Sink:
    """Where trace text goes: a plain file, or a zstd stream into one. `mark()` returns a
    position that `cut(position)` can go back to (a snapshot restore): a zstd stream ends
    its frame there, and a reader reads frame after frame."""

    def __init__(self, path: Path) -> None:
        self._raw: IO[bytes] = open(path, "wb")
        self._compressor = None
        if compressed_name(path):
            import zstandard
            self._zstd = zstandard
            self._context = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
            self._compressor = self._context.compressobj()

    @property
    def closed(self) -> bool:
        return self._raw.closed

    def write(self, text: str) -> None:
        data = text.encode("utf-8", "surrogateescape")
        self._raw.write(self._compressor.compress(data) if self._compressor else data)

    def flush(self) -> None:
        if self._compressor:
            self._raw.write(self._compressor.flush(self._zstd.COMPRESSOBJ_FLUSH_BLOCK))
        self._raw.flush()

    def mark(self) -> int:
        if self._compressor:
            self._raw.write(self._compressor.flush(self._zstd.COMPRESSOBJ_FLUSH_FINISH))
            self._compressor = self._context.compressobj()
        self._raw.flush()
        return self._raw.tell()

    def cut(self, position: int) -> None:
        if self._compressor:
            self._compressor = self._context.compressobj()
        self._raw.flush()
        self._raw.seek(position)
        self._raw.truncate()

    def close(self) -> None:
        try:
            if self._compressor:
                self._raw.write(self._compressor.flush(self._zstd.COMPRESSOBJ_FLUSH_FINISH))
                self._compressor = None
        finally:
            self._raw.close()


class TraceRecorder(Observer):
    """Writes the events its filter keeps (emu/monitor/trace_events.py; default all) to a
    JSON-lines file, zstd-compressed if its name ends in `.zst`, each with its `vtime`: the
    virtual time (emu/hw/clock.py) at the event, `icount` plus the instructions skipped
    while halted. `vtime_of(icount)` is the machine's; until it is set (events before the
    machine exists), no time was skipped."""

    def __init__(self, path: Path, header: dict, events: TraceFilter | None = None) -> None:
        """`header`: the run's description (emu/replay/header.py), written as line 1 after
        the format and version; its `run.trace_events` should name `events`."""
        self.path = Path(path)
        self.filter = events or TraceFilter()
        self._runs = FlushRuns() if self.filter.flush_runs else None
        # Subscribed only to the kept types: the others are never built. A partial type
        # (syscalls among the exceptions) is subscribed and filtered here.
        recorded = self.filter.recorded_types
        self.event_types = None if recorded is None else frozenset(recorded)
        self._partial = self.filter.syscalls
        try:
            self._file = _Sink(path)
        except OSError as exc:
            raise OutputError(f"cannot write trace {display(path)}: {exc.strerror}") from None
        except ImportError:
            raise ConfigError(f"a compressed trace ({display(path)}) needs the zstandard "
                              "package: pip install zstandard") from None
        # Events waiting to be written, as (event, vtime, flush run) items: encoded together
        # at the next drain, in one tight loop, which costs less than one at a time
        # between stretches of emulation.
        self._pending: list[tuple[Event, int, tuple | None]] = []
        self._flushed = time.monotonic()
        self.vtime_of: Callable[[int], int] | None = None
        # The header says what this recorder records: a replay filters and coalesces alike.
        run = {**(header.get("run") or {}), "trace_events": self.filter.text,
               "events": self.filter.recorded_types}
        self._write(json.dumps({"format": FORMAT, "version": VERSION, **header, "run": run},
                               separators=(",", ":")) + "\n")

    def on_event(self, event: Event) -> None:
        if self._partial and not self.filter.keeps(event):
            return
        vtime_of = self.vtime_of
        vtime = vtime_of(event.icount) if vtime_of else event.icount
        pending = self._pending
        runs = self._runs
        if runs is not None and (runs.pending is not None or type(event) is TlbFlush):
            pending += runs.push(event, vtime)
        else:
            pending.append((event, vtime, None))
        if len(pending) >= BATCH_LINES or time.monotonic() - self._flushed >= FLUSH_SECONDS:
            self._drain()

    def _drain(self) -> None:
        """Write the events gathered so far, and flush them to the file."""
        encoders = _ENCODERS            # run_line, inlined: this loop writes every line
        text = "".join([
            (encoders.get(type(event)) or _encoder_for(type(event)))(event, vtime)
            if run is None else run_line(event, vtime, run)
            for event, vtime, run in self._pending])
        self._pending.clear()
        self._write(text)

    def _write(self, text: str) -> None:
        try:
            self._file.write(text)
            self._file.flush()
        except OSError as exc:
            raise OutputError(f"cannot write trace {display(self.path)}: {exc.strerror}") \
                from None
        self._flushed = time.monotonic()

    def snapshot_state(self) -> dict:
        """For emu/snapshot: where the file stands (a restore cuts what came after)."""
        self._drain()
        return {"recorder": f"{os.getpid()}:{id(self)}", "position": self._file.mark(),
                "runs": self._runs.state() if self._runs else None}

    def restore_state(self, state: dict) -> None:
        """Back to a snapshot of this recorder: the events written since are cut off. A
        snapshot of another recorder (a run resumed from a file) leaves this one alone."""
        if state.get("recorder") != f"{os.getpid()}:{id(self)}" or self._file.closed:
            return
        self._pending.clear()
        self._file.cut(state["position"])
        if self._runs is not None:
            self._runs.set_state(state.get("runs"))

    def close(self) -> None:
        """Flush and close; an error writing the last buffered lines is an OutputError."""
        if self._file.closed:
            return
        try:
            if self._runs is not None:
                self._pending += self._runs.end()
            self._drain()
        finally:
            try:
                self._file.close()
            except OSError as exc:
                raise OutputError(f"cannot write trace {display(self.path)}: "
                                  f"{exc.strerror}") from None


def read_trace(path: Path) -> tuple[dict, "TraceEvents"]:
    """(header, events), events read lazily. Raises TraceError naming the line for anything
    malformed; a truncated last line (a crash mid-write) is reported, not dropped."""
    try:
        check_input(path, "trace", MAX_TRACE_BYTES)
    except ConfigError as exc:          # missing, a directory, a device: said as a trace's
        raise TraceError(str(exc)) from None
    stream = _open_text(path)
    try:
        header = _header(path, stream)
    except BaseException:
        stream.close()
        raise
    return header, TraceEvents(path, stream)


def _open_text(path: Path) -> IO[str]:
    """The trace's text, decompressed if the file is zstd (by its magic number, whatever
    its name)."""
    try:
        raw = open(path, "rb")
        if raw.read(len(ZSTD_MAGIC)) != ZSTD_MAGIC:
            raw.seek(0)
            return io.TextIOWrapper(raw, encoding="utf-8")
    except OSError as exc:
        raise TraceError(f"cannot read trace {display(path)}: {exc.strerror}") from None
    raw.seek(0)
    try:
        import zstandard
    except ImportError:
        raw.close()
        raise TraceError(f"{display(path)} is compressed (zstd): reading it needs the "
                         "zstandard package: pip install zstandard") from None
    reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
    return io.TextIOWrapper(io.BufferedReader(_Readable(reader)), encoding="utf-8")


class _Readable(io.RawIOBase):
    """A zstd stream reader as a raw stream, whose damage (a file cut mid-frame, a corrupt
    frame) reads as a TraceError like a corrupt line would."""

    def __init__(self, reader) -> None:
        self._reader = reader

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        try:
            data = self._reader.read(len(buffer))
        except Exception as exc:        # zstandard.ZstdError: damaged compressed data
            raise TraceError(f"corrupt compressed trace ({exc})") from None
        buffer[:len(data)] = data
        return len(data)

    def close(self) -> None:
        self._reader.close()
        super().close()


def read_events_of(path: Path, types: tuple[str, ...]) -> list[dict]:
    """Every event of these types, in order, in one pass that parses only their lines (the
    recorder writes `{"type":"NAME"` first; a line written otherwise is parsed to check).
    For a replay's inputs, read before it starts. TraceError as read_trace."""
    header, events = read_trace(path)
    starts = tuple(f'{{"type":"{name}"' for name in types)
    found = []
    try:
        for number, line in enumerate(events.lines(), start=2):
            if line.startswith(starts) or not line.startswith('{"type":'):
                record = _parse(path, number, line)
                if record.get("type") in types:
                    found.append(record)
    finally:
        events.close()
    return found


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

    def lines(self) -> Iterator[str]:
        """The raw lines that follow (not parsed; UTF-8 errors are TraceErrors)."""
        while True:
            self._number += 1
            try:
                line = self._stream.readline(MAX_LINE)
            except UnicodeDecodeError:
                raise TraceError(f"{display(self._path)}:{self._number}: not UTF-8 text") \
                    from None
            if not line:
                return
            yield line

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
    """The trace's last complete event (a plain trace is read from the end, a compressed
    one streamed through), or None if it cannot be read or holds no event. For bounding a
    rerun, not for checking."""
    try:
        with open(path, "rb") as stream:
            compressed = stream.read(len(ZSTD_MAGIC)) == ZSTD_MAGIC
            stream.seek(0, 2)
            size = stream.tell()
            stream.seek(max(0, size - MAX_LINE))
            tail = [] if compressed else stream.read().splitlines()
        if compressed:
            tail = _compressed_tail(path)
    except (OSError, TraceError):
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


def _compressed_tail(path: Path, keep: int = 4) -> list[str]:
    """The last `keep` lines of a compressed trace, read through once."""
    lines: deque[str] = deque(maxlen=keep + 1)
    with _open_text(path) as stream:
        try:
            for line in stream:
                lines.append(line)
        except UnicodeDecodeError:
            pass
    return list(lines)
