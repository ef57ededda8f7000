"""Finding the files a trace was recorded with: the kernel, modules and whatever else its
header lists, each verified by its SHA-256 before a replay uses it.

Owns: where a recorded file is looked for (its recorded path, then each `--search`
directory and the trace's own directory by file name), the project's own kernel rebuilt
when the trace says it was built from guest/, and the one-line errors for a file that is
missing or differs.
Does not own: the header's layout (header.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from emu.errors import ConfigError
from emu.inputs import display, file_sha256
from emu.replay.header import GUEST_SOURCE


@dataclass(frozen=True, slots=True)
class FoundInputs:
    kernel: Path
    kernel_matches: bool                     # False: another build, given with --kernel
    inputs: dict[tuple[str, int | None], Path]


def _sha256(path: Path) -> str | None:
    try:
        return file_sha256(path) if path.is_file() else None
    except OSError:
        return None


def _candidates(recorded: str, name: str, search: Iterable[Path],
                anchors: Iterable[Path]) -> list[Path]:
    """Where to look: the recorded path (a relative one also from each anchor: the trace's
    directory and those above it, so a trace kept in a repository finds the repository's
    files), then each search directory by name."""
    places = [Path(recorded)] if recorded else []
    if recorded and not Path(recorded).is_absolute():
        places += [Path(anchor) / recorded for anchor in anchors]
    places += [Path(directory) / name for directory in search if name]
    unique: list[Path] = []
    for place in places:
        if place not in unique:
            unique.append(place)
    return unique


def find(entry: Mapping, what: str, search: Iterable[Path], anchors: Iterable[Path] = ()) -> Path:
    """The file `entry` ({"path", "name", "sha256"}) was recorded with: its recorded path
    or a file of its name under a `search` directory, with the recorded hash."""
    wanted = entry.get("sha256", "")
    name = str(entry.get("name") or Path(str(entry.get("path", ""))).name)
    places = _candidates(str(entry.get("path", "")), name, search, anchors)
    mismatched = []
    for place in places:
        digest = _sha256(place)
        if digest is None:
            continue
        if not wanted or digest == wanted:
            return place
        mismatched.append(place)
    if mismatched:
        raise ConfigError(f"{what} {display(mismatched[0])} is not the file the trace was "
                          f"recorded with (SHA-256 differs from {wanted[:16]}...); give "
                          f"--search DIR with the original")
    raise ConfigError(f"{what} {name} (recorded at {entry.get('path')}) not found; give "
                      f"--search DIR with a copy of it")


def _own_kernel(entry: Mapping) -> Path | None:
    """The project's kernel rebuilt with the recorded defines, if the trace says it was
    ours and this build has the recorded hash."""
    if entry.get("source") != GUEST_SOURCE:
        return None
    from emu.build import build_guest
    defines = entry.get("defines") or {}
    if not isinstance(defines, dict):
        return None
    built = build_guest(defines={str(k): str(v) for k, v in defines.items()})
    return built if _sha256(built) == entry.get("sha256") else None


def find_kernel(header: Mapping, kernel: Path | None, search: Iterable[Path],
                anchors: Iterable[Path] = ()) -> tuple[Path, bool]:
    """(kernel, same build as recorded). `kernel` (--kernel) wins and may be another build
    (that is how two builds are compared); otherwise the recorded file, found by hash, or the
    project's kernel rebuilt."""
    entry = header.get("kernel")
    if not isinstance(entry, dict):
        entry = {"sha256": header.get("kernel_sha256", ""), "path": "", "name": ""}
    if kernel is not None:
        digest = _sha256(kernel)
        if digest is None:
            raise ConfigError(f"kernel {display(kernel)} not found or not a readable file")
        return kernel, digest == entry.get("sha256")
    try:
        return find(entry, "kernel", search, anchors), True
    except ConfigError:
        own = _own_kernel(entry)
        if own is not None:
            return own, True
        if entry.get("source") == GUEST_SOURCE:
            raise ConfigError("the project's kernel changed since the trace was recorded "
                              "(its SHA-256 differs); give --kernel ELF to replay with "
                              "another build, or record the trace again") from None
        raise


def find_inputs(header: Mapping, kernel: Path | None, search: Iterable[Path],
                trace: Path | None = None) -> FoundInputs:
    """Every input of the trace (kept at `trace`), verified; ConfigError (one line) for the
    first missing."""
    search = list(search)
    anchors = [] if trace is None else list(Path(trace).resolve().parents)
    search += anchors[:1]
    found_kernel, matches = find_kernel(header, kernel, search, anchors)
    entries = header.get("inputs") or []
    if not isinstance(entries, list):
        raise ConfigError("the trace header's inputs are not a list: a corrupt trace")
    inputs: dict[tuple[str, int | None], Path] = {}
    for entry in entries:
        if not isinstance(entry, dict) or "field" not in entry:
            raise ConfigError("the trace header lists an input without a field: a corrupt "
                              "trace")
        what = str(entry["field"]).rstrip("s")
        inputs[(str(entry["field"]), entry.get("index"))] = find(entry, what, search, anchors)
    return FoundInputs(found_kernel, matches, inputs)
