"""Files the user names (kernels, modules, memory maps, traces): checked for kind and size
before a byte is read, so a directory, a device such as /dev/zero, a FIFO or an absurdly
large file is refused with one line that names the problem, never read without bound.

Owns: `check_input` (what kind of file, how large) and `read_input` (read at most `limit`
bytes, even if the file grows while it is read).
Does not own: what the bytes mean (each reader's business).
"""
from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from emu.errors import ConfigError

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
          (stat.S_ISSOCK, "a socket"))


def display(path: Path | str) -> str:
    """A path as messages show it: bytes that are not valid UTF-8 escaped, not fatal."""
    return os.fsdecode(os.fsencode(path)).encode("utf-8", "backslashreplace").decode("utf-8")


def check_input(path: Path | str, what: str, limit: int, hint: str = "") -> int:
    """The size of the regular file `path` (a `what`: "kernel", "module", ...). ConfigError
    when it is missing, not a regular file, or larger than `limit` bytes; `hint` says how
    to fix a missing file."""
    shown = display(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise ConfigError(f"{what} {shown} not found" + (f"; {hint}" if hint else "")) \
            from None
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {shown}: {exc.strerror}") from None
    for test, kind in _KINDS:
        if test(info.st_mode):
            raise ConfigError(f"{what} {shown} is {kind}, not a regular file; give the path "
                              "of the file itself")
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{what} {shown} is not a regular file")
    if info.st_size > limit:
        raise ConfigError(f"{what} {shown} is {info.st_size:,} bytes, more than the "
                          f"{limit:,} a {what} may have")
    return info.st_size


def read_input(path: Path | str, what: str, limit: int, hint: str = "") -> bytes:
    """The bytes of a user's file, after check_input; never more than `limit`."""
    size = check_input(path, what, limit, hint)
    try:
        with open(path, "rb") as stream:
            data = stream.read(size + 1)       # one more: a file that grew is noticed
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {display(path)}: {exc.strerror}") from None
    if len(data) != size:
        raise ConfigError(f"{what} {display(path)} changed while it was read; try again")
    return data


def file_sha256(path: Path | str) -> str:
    """The SHA-256 of a file, read in pieces (kernels, traces, build artifacts). Raises
    OSError."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def same_file(one: Path | str, other: Path | str) -> bool:
    """Do two paths name the same file (hard links and symlinks included)? False when
    either does not exist."""
    try:
        return os.path.samefile(one, other)
    except OSError:
        return False


def refuse_overwriting(output: Path | str, what: str, inputs) -> None:
    """ConfigError if the output path names one of the run's input files (the kernel, a
    module, an input trace...): an output must never destroy an input."""
    for name, path in inputs:
        if path is not None and (same_file(output, path) or
                                 os.path.abspath(output) == os.path.abspath(path)):
            raise ConfigError(f"{what} {display(output)} is the {name}; writing it would "
                              f"destroy an input: choose another path")


def check_output(path: Path | str, what: str) -> None:
    """ConfigError if an output path cannot be a file to write: a directory, a FIFO (opening
    it would wait for a reader forever) or a socket. A missing file, a regular file and a
    character device such as /dev/null are fine."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ConfigError(f"cannot write {what} {display(path)}: {exc.strerror}") from None
    for test, kind in _KINDS:
        if test(mode) and not stat.S_ISCHR(mode):
            raise ConfigError(f"{what} {display(path)} is {kind}; give the path of a file "
                              "to write")
