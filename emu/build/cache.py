"""The build cache: where built artifacts live, and how they are trusted.

Owns: the cache directory (EMU_CACHE_DIR, else $XDG_CACHE_HOME/emu, else ~/.cache/emu; a
private directory under the system temporary directory when that one is unusable),
publishing an artifact atomically with a sidecar holding its SHA-256 (a reader trusts an
artifact only if the sidecar matches: a truncated or damaged file is rebuilt, never
loaded), and removing temporaries that a killed build left behind.
Does not own: what is built (kernel.py, the instruction counter) or how (zig.py).

Several runs may build at once: each writes its own temporary file in the target's
directory and renames it into place; the same inputs give the same bytes, so the last
rename wins harmlessly.
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from emu.errors import BuildError
from emu.inputs import file_sha256

STALE_TEMPORARY_S = 3600       # a build takes seconds; an hour-old temporary is abandoned
TEMPORARY_PREFIX = ".tmp-"
_ENV_DIR = "EMU_CACHE_DIR"


def cache_root() -> Path:
    """The cache directory, created if needed; a usable fallback when it cannot be."""
    explicit = os.environ.get(_ENV_DIR)
    if explicit:
        root = Path(explicit)
    else:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        root = Path(base) / "emu"
    if _usable(root):
        return root
    user = os.getuid() if hasattr(os, "getuid") else "user"
    fallback = Path(tempfile.gettempdir()) / f"emu-cache-{user}"
    if _usable(fallback):
        return fallback
    raise BuildError(f"no usable cache directory ({root} and {fallback} cannot be written); "
                     f"set {_ENV_DIR} to a writable directory")


def _usable(directory: Path) -> bool:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return directory.is_dir() and os.access(directory, os.W_OK | os.X_OK)


def sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def is_fresh(path: Path) -> bool:
    """Is `path` a published artifact whose bytes still match its sidecar?"""
    try:
        return path.is_file() and sidecar(path).read_text().strip() == file_sha256(path)
    except (OSError, UnicodeDecodeError):
        return False


def temporary(directory: Path, suffix: str) -> Path:
    """A new temporary file name in `directory` (created empty) for an artifact."""
    directory.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(directory)
    fd, name = tempfile.mkstemp(prefix=TEMPORARY_PREFIX, suffix=suffix, dir=directory)
    os.close(fd)
    return Path(name)


def publish(built: Path, target: Path) -> None:
    """Move `built` (in target's directory) to `target`, then write its sidecar; a reader
    that sees the artifact without a matching sidecar rebuilds it."""
    digest = file_sha256(built)
    os.replace(built, target)
    side = temporary(target.parent, ".sha256")
    side.write_text(digest + "\n")
    os.replace(side, sidecar(target))


def remove_stale_temporaries(directory: Path) -> None:
    """Delete temporaries of builds that were killed (older than STALE_TEMPORARY_S)."""
    cutoff = time.time() - STALE_TEMPORARY_S
    try:
        entries = list(directory.glob(TEMPORARY_PREFIX + "*"))
    except OSError:
        return
    for entry in entries:
        try:
            if entry.is_file() and entry.stat().st_mtime < cutoff:
                entry.unlink()
        except OSError:
            pass                    # another build removed or is still writing it
