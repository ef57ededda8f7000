"""Building static Linux x86-64 programs from C with the ziglang package, for `emu exec`,
its tests and its benchmarks: `python -m ziglang cc -target x86_64-linux-musl -static`.

Public API:

    build_program(source, flags=("-O1",), build_dir=None) -> Path
        Compile one C file into a static musl executable and return its path,
        ``<build_dir>/<stem>-<hash>``, the hash covering the source, the flags and the
        ziglang version; a cached executable whose bytes match its recorded digest is
        returned without running the compiler (the first build of musl itself takes zig
        about half a minute; it is cached under the build directory too).

Owns: the target and flags of such programs. Does not own: running zig (zig.py) or
trusting cached files (cache.py).
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

from emu.build import cache
from emu.build.zig import zig_cc, zig_version

TARGET = "x86_64-linux-musl"
BASE_FLAGS = ("-target", TARGET, "-static", "-fno-sanitize=all")


def default_program_dir() -> Path:
    return cache.cache_root() / "programs"


def build_program(source: Path, flags: Sequence[str] = ("-O1",),
                  build_dir: Path | None = None) -> Path:
    """The static executable built from `source` (see the module docstring). Raises
    BuildError with the compiler's first errors when it does not compile."""
    source = Path(source)
    directory = Path(build_dir) if build_dir is not None else default_program_dir()
    digest = hashlib.sha256()
    for part in (zig_version(), *BASE_FLAGS, *flags):
        digest.update(part.encode() + b"\0")
    digest.update(source.read_bytes())
    target = directory / f"{source.stem}-{digest.hexdigest()[:16]}"
    if cache.is_fresh(target):
        return target
    built = cache.temporary(directory, ".bin")
    try:
        zig_cc([*BASE_FLAGS, *flags, "-o", str(built), str(source)],
               cache_dir=directory / "zig", what=f"the program {source.name}")
        built.chmod(0o755)
        cache.publish(built, target)
    finally:
        built.unlink(missing_ok=True)
    return target
