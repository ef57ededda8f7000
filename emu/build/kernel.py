"""Build the project's guest kernel (guest/) into an ELF image.

Public API:

    build_guest(source_dir=None, build_dir=None, defines={}, verbose=False) -> Path
        Compile and link every ``*.c`` and ``*.S`` file under `source_dir` (default: the
        guest sources shipped with emu) with ``kernel.ld`` and return the path of the ELF,
        ``<build_dir>/kernel-<hash>.elf`` (default build dir: ``<cache>/guest``, see
        emu/build/cache.py). `defines` become ``-DNAME=VALUE``. Raises BuildError if the
        sources do not compile or link (the message holds the first compiler errors),
        ConfigError for a malformed define.

The guest sources: shipped as package data (``emu/guest`` in an installed emu), or the
repository's ``guest/`` in a source checkout (an editable install).

Incremental: the file name carries a hash of every file under `source_dir` (relative path
and contents), the flags, the defines and the ziglang version. If that file exists and
matches its recorded digest it is returned without running the compiler.

Reproducible: the same inputs give the same bytes wherever the tree lives. Absolute paths
are rewritten by ``-ffile-prefix-map``, the linker writes no build-id and no timestamps, and
the result is written to a temporary file and renamed into place.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

import emu
from emu.build import cache
from emu.build.zig import zig_cc, zig_lib_dir, zig_version
from emu.errors import BuildError, ConfigError

__all__ = ["build_guest", "guest_source_dir", "default_build_dir"]

# Bump when the build recipe changes in a way the hashed inputs do not show.
_RECIPE_VERSION = "2"

_TARGET = "x86_64-freestanding-none"
_LINKER_SCRIPT = "kernel.ld"
_ENTRY = "kmain"
_COMPILED_SUFFIXES = (".c", ".S")
_SOURCE_SUFFIXES = (".c", ".S", ".h", ".ld")

# Code generation for a kernel: no SSE/x87 state to save on interrupts, no red zone
# (interrupts push onto the kernel stack below RSP), addresses in the top 2 GiB
# (-mcmodel=kernel), no PIC, frame pointers for backtraces.
_CODEGEN_FLAGS = (
    "-std=gnu17", "-ffreestanding", "-nostdinc", "-nostdlib", "-static",
    "-fno-stack-protector", "-fno-stack-check", "-fno-sanitize=all", "-mno-red-zone",
    "-mcmodel=kernel", "-mno-sse", "-mno-sse2", "-mno-mmx", "-mno-80387",
    "-fno-omit-frame-pointer", "-fno-pic", "-fno-pie", "-fno-strict-aliasing", "-fno-common",
    "-fno-asynchronous-unwind-tables", "-fno-unwind-tables", "-g", "-O2",
)
_WARNING_FLAGS = ("-Wall", "-Wextra", "-Werror")
# zig passes `--entry _start` itself, overriding ENTRY() in the script.
_LINK_FLAGS = (f"-Wl,--entry={_ENTRY}", "-Wl,--build-id=none", "-Wl,--fatal-warnings")

_DEFINE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def guest_source_dir() -> Path:
    """The guest sources: installed beside the package, or a source checkout's guest/."""
    package = Path(emu.__file__).resolve().parent
    for candidate in (package / "guest", package.parent / "guest"):
        if (candidate / _LINKER_SCRIPT).is_file():
            return candidate
    raise BuildError(f"the guest sources are missing (no {_LINKER_SCRIPT} beside {package});"
                     " reinstall emu")


def default_build_dir() -> Path:
    return cache.cache_root() / "guest"


def build_guest(
    source_dir: Path | None = None,
    build_dir: Path | None = None,
    defines: Mapping[str, str] = MappingProxyType({}),
    verbose: bool = False,
) -> Path:
    """Build the guest kernel and return the path of its ELF file.

    Returns at once, without running the compiler, if an ELF for exactly these inputs was
    built before and is intact. Raises BuildError if compiling or linking fails, ConfigError
    if a define name is not a C identifier.
    """
    source_dir = Path(source_dir if source_dir is not None else guest_source_dir()).resolve()
    build_dir = Path(build_dir if build_dir is not None else default_build_dir()).resolve()
    define_flags = _define_flags(defines)
    sources = _source_files(source_dir)
    output = build_dir / f"kernel-{_input_hash(source_dir, sources, define_flags)}.elf"
    if cache.is_fresh(output):
        return output
    compiled = [p for p in sources if p.suffix in _COMPILED_SUFFIXES]
    tmp = cache.temporary(build_dir, ".elf")
    try:
        zig_cc(_arguments(source_dir, build_dir, compiled, define_flags, tmp),
               cache_dir=build_dir / "zig", what="the guest kernel", cwd=source_dir,
               verbose=verbose)
        cache.publish(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)
    return output


def _define_flags(defines: Mapping[str, str]) -> list[str]:
    flags = []
    for name in sorted(defines):
        if not _DEFINE_NAME.match(name):
            raise ConfigError(f"guest define {name!r} is not a C identifier")
        flags.append(f"-D{name}={defines[name]}")
    return flags


def _source_files(source_dir: Path) -> list[Path]:
    """Every source file under source_dir except hidden ones, sorted by relative path."""
    if not (source_dir / _LINKER_SCRIPT).is_file():
        raise BuildError(f"no guest sources: {source_dir / _LINKER_SCRIPT} does not exist")
    files = []
    for path in source_dir.rglob("*"):
        rel = path.relative_to(source_dir)
        if path.is_file() and path.suffix in _SOURCE_SUFFIXES and \
                not any(part.startswith(".") for part in rel.parts):
            files.append(path)
    return sorted(files, key=lambda p: p.relative_to(source_dir).as_posix())


def _input_hash(source_dir: Path, sources: list[Path], define_flags: list[str]) -> str:
    h = hashlib.sha256()

    def field(data: bytes) -> None:
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)

    for item in (_RECIPE_VERSION, zig_version(), _TARGET, _LINKER_SCRIPT):
        field(item.encode())
    for flag in (*_CODEGEN_FLAGS, *_WARNING_FLAGS, *_LINK_FLAGS, *define_flags):
        field(flag.encode())
    for path in sources:
        field(path.relative_to(source_dir).as_posix().encode())
        field(path.read_bytes())
    return h.hexdigest()[:16]


def _arguments(source_dir: Path, build_dir: Path, compiled: list[Path],
               define_flags: list[str], out: Path) -> list[str]:
    prefix_maps = [
        f"-ffile-prefix-map={source_dir}=guest",
        f"-ffile-prefix-map={build_dir}=build",
        f"-ffile-prefix-map={zig_lib_dir()}=zig",
    ]
    return [
        "-target", _TARGET,
        *_CODEGEN_FLAGS, *_WARNING_FLAGS, *prefix_maps,
        "-I.", *define_flags,
        "-T", _LINKER_SCRIPT, *_LINK_FLAGS,
        *(p.relative_to(source_dir).as_posix() for p in compiled),
        "-o", str(out),
    ]  # fmt: skip
