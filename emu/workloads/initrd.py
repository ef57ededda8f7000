"""The initial RAM disk: the USTAR archive (POSIX.1-1988) our kernel indexes as its files
(guest/fs/initrd.c reads it; the first Limine module with the "ustar" magic).

Owns: guest paths of initrd members, packing host files or a whole directory into an
archive (the standard library's tarfile in USTAR format), and checking an archive a user
gives (`emu run --initrd FILE`) against what the kernel's reader understands, so a bad one
is refused in one line on the host instead of a kernel panic.
Does not own: running anything (emu/workloads/process.py), the kernel's reader.
"""
from __future__ import annotations

import os
import stat
import tarfile
from pathlib import Path
from typing import Iterable

from emu.errors import ConfigError
from emu.inputs import check_input, display

BLOCK = 512
MAX_FILE_BYTES = 1 << 31          # one initrd member (the guest maps them whole)
MAX_ARCHIVE_BYTES = 1 << 32
MAX_FILES = 10_000                # the kernel looks paths up linearly
# Type flags of POSIX.1-1988 the kernel indexes (regular file, old regular, directory) or
# skips without harm (links, devices, FIFOs, contiguous files).
INDEXED_TYPES = frozenset(b"0\x005")
SKIPPED_TYPES = frozenset(b"123467")
USTAR_HINT = "write it with `tar --format=ustar` (no pax or GNU long-name headers)"


def guest_file_path(text: str) -> str:
    """A guest path for the initrd: absolute, no '.' or '..', at most 255 bytes."""
    parts = [p for p in text.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        raise ConfigError(f"guest path {text!r} must name a file (no '..')")
    path = "/" + "/".join(parts)
    if len(os.fsencode(path)) > 255:
        raise ConfigError(f"guest path {text!r} is longer than USTAR allows (255 bytes)")
    return path


def pack_initrd(entries: Iterable[tuple[Path, str]], out: Path) -> int:
    """Write a USTAR archive of (host file, guest path) pairs to `out`; returns its size.
    Files are checked (kind, size) before they are read; the mode keeps only the
    permission bits."""
    with tarfile.open(out, "w", format=tarfile.USTAR_FORMAT) as archive:
        seen: set[str] = set()
        for host, guest in entries:
            path = guest_file_path(guest)
            if path in seen:
                raise ConfigError(f"two files for the guest path {path}")
            seen.add(path)
            size = check_input(host, "file", MAX_FILE_BYTES)
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size = size
            info.mode = 0o755 if os.access(host, os.X_OK) else 0o644
            try:
                with open(host, "rb") as stream:
                    archive.addfile(info, stream)
            except (OSError, ValueError) as exc:
                raise ConfigError(f"cannot pack {display(host)}: {exc}") from None
    return out.stat().st_size


def directory_entries(root: Path) -> list[tuple[Path, str]]:
    """Every file under `root` as (host file, guest path), the guest path relative to
    `root` ("DIR/bin/prog" is /bin/prog), in sorted order. Symbolic links to files are
    followed, links to directories are not (no loops); anything that is not a regular
    file (a FIFO, a device) is refused by pack_initrd."""
    out: list[tuple[Path, str]] = []

    def refuse(exc: OSError) -> None:
        raise ConfigError(f"--initrd {display(root)}: cannot read {display(exc.filename)}: "
                          f"{exc.strerror}")
    for top, dirs, files in os.walk(root, onerror=refuse):
        dirs.sort()
        for name in sorted(files):
            host = Path(top) / name
            out.append((host, "/" + host.relative_to(root).as_posix()))
            if len(out) > MAX_FILES:
                raise ConfigError(f"--initrd {display(root)} holds more than {MAX_FILES:,} "
                                  "files")
    return out


def _octal(field: bytes, what: str, offset: int) -> int:
    text = field.split(b"\0", 1)[0].strip(b" ")
    if field[:1] and field[0] & 0x80:
        raise ConfigError(f"the member at offset {offset} has a base-256 {what}; "
                          f"{USTAR_HINT}")
    try:
        return int(text or b"0", 8)
    except ValueError:
        raise ConfigError(f"the member at offset {offset} has a broken {what} field") from None


def _check_header(header: bytes, offset: int) -> tuple[int, int]:
    """(type flag, size) of a member's header, or ConfigError with the rule it breaks."""
    if header[257:262] != b"ustar":
        raise ConfigError(f"no USTAR header at offset {offset} (the kernel reads plain, "
                          "uncompressed USTAR archives)")
    stored = _octal(header[148:156], "checksum", offset)
    computed = sum(header[:148]) + 8 * 0x20 + sum(header[156:])
    if stored != computed:
        raise ConfigError(f"the header at offset {offset} has a bad checksum")
    kind = header[156]
    if kind not in INDEXED_TYPES and kind not in SKIPPED_TYPES:
        raise ConfigError(f"the member at offset {offset} has type {chr(kind)!r}, which the "
                          f"kernel does not read; {USTAR_HINT}")
    return kind, _octal(header[124:136], "size", offset)


def check_archive(path: Path) -> int:
    """Check that `path` is a USTAR archive the kernel reads as the user meant: every
    header has the magic and a good checksum, every member fits in the file, no pax or GNU
    extension headers (the kernel would index their members under truncated names).
    Returns the number of members it indexes; ConfigError naming the archive otherwise."""
    size = check_input(path, "initrd", MAX_ARCHIVE_BYTES)
    indexed = 0
    try:
        with open(path, "rb") as stream:
            offset = 0
            while offset + BLOCK <= size:
                stream.seek(offset)
                header = stream.read(BLOCK)
                if header.count(0) == BLOCK:
                    break
                kind, length = _check_header(header, offset)
                blocks = -(-length // BLOCK)
                if offset + BLOCK + length > size:
                    raise ConfigError(f"the member at offset {offset} runs past the end "
                                      f"({length:,} bytes)")
                indexed += kind in INDEXED_TYPES
                offset += BLOCK * (1 + blocks)
    except OSError as exc:
        raise ConfigError(f"cannot read initrd {display(path)}: {exc.strerror}") from None
    except ConfigError as exc:
        raise ConfigError(f"initrd {display(path)}: {exc}") from None
    if size < BLOCK:
        raise ConfigError(f"initrd {display(path)}: {size} bytes, not a USTAR archive")
    if indexed == 0:
        raise ConfigError(f"initrd {display(path)} holds no files")
    if indexed > MAX_FILES:
        raise ConfigError(f"initrd {display(path)} holds more than {MAX_FILES:,} files")
    return indexed


def initrd_beside(trace: Path) -> Path:
    """Where a traced run keeps the initrd it packed: beside the trace, named after it, so
    that `emu replay` finds it (by name in the trace's directory, verified by hash)."""
    return trace.with_name(trace.stem + ".initrd.tar")


def initrd_module(path: Path, out: Path) -> Path:
    """The module to hand the kernel for `--initrd PATH`: a directory packed into the
    archive `out`, or an archive checked and passed as it is. ConfigError for anything
    else."""
    try:
        info = os.stat(path)
    except OSError as exc:
        raise ConfigError(f"--initrd {display(path)}: {exc.strerror}") from None
    if stat.S_ISDIR(info.st_mode):
        entries = directory_entries(path)
        if not entries:
            raise ConfigError(f"--initrd {display(path)}: the directory holds no files")
        if any(os.path.abspath(host) == os.path.abspath(out) for host, _ in entries):
            raise ConfigError(f"--initrd {display(path)} holds {display(out)}, where it "
                              "would be packed: choose a trace path outside it")
        pack_initrd(entries, out)
        return out
    check_archive(path)
    return path
