"""What commands print: standard output and standard error, with their failures turned
into emu's errors (a closed pipe into OutputClosed, a full disk into OutputError), so no
command meets a bare OSError from a print.

Owns: writing text for the user, and the host's side of a guest program's streams
(`program_streams`: its fd 1 and 2 as raw bytes here, fd 0 from emu's standard input).
Does not own: what is written.
"""
from __future__ import annotations

import errno
import os
import sys

from emu.errors import OutputClosed, OutputError


def _write(stream, name: str, text: str, flush: bool) -> None:
    try:
        stream.write(text)
        if flush:
            stream.flush()
    except BrokenPipeError:
        raise OutputClosed(f"{name} was closed") from None
    except OSError as exc:
        if exc.errno == errno.EPIPE:
            raise OutputClosed(f"{name} was closed") from None
        raise OutputError(f"cannot write to {name}: {exc.strerror}") from None
    except UnicodeEncodeError:
        _write(stream, name, text.encode(stream.encoding or "utf-8", "backslashreplace")
               .decode(stream.encoding or "utf-8"), flush)


_unflushed = False          # out() wrote to standard output since the last flush


def out(text: str = "", end: str = "\n") -> None:
    """A line (or any text) on standard output."""
    global _unflushed
    _unflushed = True
    _write(sys.stdout, "standard output", text + end, flush=False)


def live(text: str) -> None:
    """Serial output as it comes: written and flushed at once."""
    _write(sys.stdout, "standard output", text, flush=True)


def err(line: str) -> None:
    """A line on standard error."""
    _write(sys.stderr, "standard error", line + "\n", flush=True)


def write_bytes(stream_name: str, data: bytes) -> None:
    """Raw bytes on standard output or standard error (a program's own output), flushed at
    once. A reader that went away raises BrokenPipeError, for the caller to pass on."""
    stream = sys.stdout if stream_name == "stdout" else sys.stderr
    if stream_name == "stdout":
        flush()
    stream.flush()
    stream.buffer.write(data)
    stream.buffer.flush()


def program_streams():
    """A HostConsole (emu/workloads/process.py) for the kernel's processes: their fd 1 and
    fd 2 byte for byte on emu's standard output and error, fd 0 read from emu's standard
    input (always at its end when emu has none)."""
    from emu.workloads.process import HostConsole
    try:
        os.fstat(0)
        stdin: int | None = 0
    except OSError:
        stdin = None
    return HostConsole(lambda data: write_bytes("stdout", data),
                       lambda data: write_bytes("stderr", data), stdin)


def silence_stdout() -> None:
    """Standard output's reader is gone: what Python would flush at exit must not fail
    again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def flush() -> None:
    """Flush what out() wrote (a flush of nothing can fail too, on a full device)."""
    global _unflushed
    if _unflushed:
        _unflushed = False
        _write(sys.stdout, "standard output", "", flush=True)
