"""Build the guest kernel in `guest/` into an ELF image.

The C toolchain is the clang inside the `ziglang` package, run as
``python -m ziglang cc``; nothing else needs to be installed.

Public API:

    build_guest(source_dir=None, build_dir=None, defines={}, verbose=False) -> Path
        Compile and link every ``*.c`` and ``*.S`` file under `source_dir`
        (default: the repository's ``guest/``) with ``kernel.ld`` and return
        the path of the ELF, ``<build_dir>/kernel-<hash>.elf`` (default build
        dir: ``<repo>/build/guest``).

        `defines` become ``-DNAME=VALUE``. Raises `emu.errors.BuildError` if
        the sources do not compile or link (the message holds the first
        compiler errors), `emu.errors.ConfigError` for a malformed define.

Incremental: the file name carries a hash of every file under `source_dir`
(relative path and contents), the flags, the defines and the ziglang version.
If that file exists it is returned without running the compiler.

Reproducible: the same inputs give the same bytes wherever the tree lives.
Absolute paths are rewritten by ``-ffile-prefix-map``, the zig caches live
under the build directory, the linker writes no build-id and no timestamps,
and the result is written to a temporary file and renamed into place.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from emu.errors import BuildError, ConfigError

__all__ = ["build_guest", "DEFAULT_SOURCE_DIR", "DEFAULT_BUILD_DIR"]

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SOURCE_DIR = REPO_ROOT / "guest"
DEFAULT_BUILD_DIR = REPO_ROOT / "build" / "guest"

# Bump when the build recipe changes in a way the hashed inputs do not show.
_RECIPE_VERSION = "1"

_TARGET = "x86_64-freestanding-none"
_LINKER_SCRIPT = "kernel.ld"
_ENTRY = "kmain"
_COMPILED_SUFFIXES = (".c", ".S")

# Code generation for a kernel: no SSE/x87 state to save on interrupts, no
# red zone (interrupts push onto the kernel stack below RSP), addresses in
# the top 2 GiB (-mcmodel=kernel), no PIC, frame pointers for backtraces.
_CODEGEN_FLAGS = (
    "-std=gnu17",
    "-ffreestanding",
    "-nostdinc",
    "-nostdlib",
    "-static",
    "-fno-stack-protector",
    "-fno-stack-check",
    "-fno-sanitize=all",
    "-mno-red-zone",
    "-mcmodel=kernel",
    "-mno-sse",
    "-mno-sse2",
    "-mno-mmx",
    "-mno-80387",
    "-fno-omit-frame-pointer",
    "-fno-pic",
    "-fno-pie",
    "-fno-strict-aliasing",
    "-fno-common",
    "-fno-asynchronous-unwind-tables",
    "-fno-unwind-tables",
    "-g",
    "-O2",
)
_WARNING_FLAGS = ("-Wall", "-Wextra", "-Werror")
# zig passes `--entry _start` itself, overriding ENTRY() in the script.
_LINK_FLAGS = (f"-Wl,--entry={_ENTRY}", "-Wl,--build-id=none", "-Wl,--fatal-warnings")

_DEFINE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_ERROR_EXCERPT_LINES = 15
_BUILD_TIMEOUT_S = 600


def build_guest(
    source_dir: Path | None = None,
    build_dir: Path | None = None,
    defines: Mapping[str, str] = MappingProxyType({}),
    verbose: bool = False,
) -> Path:
    """Build the guest kernel and return the path of its ELF file.

    Returns at once, without running the compiler, if an ELF for exactly
    these inputs was built before. Raises BuildError if compiling or
    linking fails, ConfigError if a define name is not a C identifier.
    """
    source_dir = Path(source_dir if source_dir is not None else DEFAULT_SOURCE_DIR).resolve()
    build_dir = Path(build_dir if build_dir is not None else DEFAULT_BUILD_DIR).resolve()
    define_flags = _define_flags(defines)
    sources = _source_files(source_dir)
    digest = _input_hash(source_dir, sources, define_flags)
    output = build_dir / f"kernel-{digest}.elf"
    if output.is_file():
        return output

    build_dir.mkdir(parents=True, exist_ok=True)
    compiled = [p for p in sources if p.suffix in _COMPILED_SUFFIXES]
    fd, tmp_name = tempfile.mkstemp(prefix=".kernel-", suffix=".tmp", dir=build_dir)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        _run_zig_cc(source_dir, build_dir, compiled, define_flags, tmp, verbose)
        os.replace(tmp, output)
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
    """Every regular file under source_dir except hidden ones, sorted by relative path."""
    if not (source_dir / _LINKER_SCRIPT).is_file():
        raise BuildError(f"no guest sources: {source_dir / _LINKER_SCRIPT} does not exist")
    files = []
    for path in source_dir.rglob("*"):
        rel = path.relative_to(source_dir)
        if path.is_file() and not any(part.startswith(".") for part in rel.parts):
            files.append(path)
    return sorted(files, key=lambda p: p.relative_to(source_dir).as_posix())


def _zig_version() -> str:
    try:
        return importlib.metadata.version("ziglang")
    except importlib.metadata.PackageNotFoundError:
        raise BuildError("the ziglang package is not installed (pip install ziglang)") from None


def _input_hash(source_dir: Path, sources: list[Path], define_flags: list[str]) -> str:
    h = hashlib.sha256()

    def field(data: bytes) -> None:
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)

    for item in (_RECIPE_VERSION, _zig_version(), _TARGET, _LINKER_SCRIPT):
        field(item.encode())
    for flag in (*_CODEGEN_FLAGS, *_WARNING_FLAGS, *_LINK_FLAGS, *define_flags):
        field(flag.encode())
    for path in sources:
        field(path.relative_to(source_dir).as_posix().encode())
        field(path.read_bytes())
    return h.hexdigest()[:16]


def _zig_lib_dir() -> Path:
    """Where the ziglang package lives, to map its path out of debug info."""
    spec = importlib.util.find_spec("ziglang")
    if spec is None or spec.origin is None:
        raise BuildError("the ziglang package is not installed (pip install ziglang)")
    return Path(spec.origin).resolve().parent


def _command(
    source_dir: Path, build_dir: Path, compiled: list[Path], define_flags: list[str], out: Path
) -> list[str]:
    prefix_maps = [
        f"-ffile-prefix-map={source_dir}=guest",
        f"-ffile-prefix-map={build_dir}=build",
        f"-ffile-prefix-map={_zig_lib_dir()}=zig",
    ]
    return [
        sys.executable, "-m", "ziglang", "cc",
        "-target", _TARGET,
        *_CODEGEN_FLAGS, *_WARNING_FLAGS, *prefix_maps,
        "-I.", *define_flags,
        "-T", _LINKER_SCRIPT, *_LINK_FLAGS,
        *(p.relative_to(source_dir).as_posix() for p in compiled),
        "-o", str(out),
    ]  # fmt: skip


def _run_zig_cc(
    source_dir: Path,
    build_dir: Path,
    compiled: list[Path],
    define_flags: list[str],
    out: Path,
    verbose: bool,
) -> None:
    cmd = _command(source_dir, build_dir, compiled, define_flags, out)
    env = dict(os.environ)
    env["ZIG_GLOBAL_CACHE_DIR"] = str(build_dir / "zig-cache" / "global")
    env["ZIG_LOCAL_CACHE_DIR"] = str(build_dir / "zig-cache" / "local")
    env["SOURCE_DATE_EPOCH"] = "0"
    if verbose:
        print("emu.build: " + " ".join(cmd), file=sys.stderr)
    try:
        proc = subprocess.run(
            cmd, cwd=source_dir, env=env, capture_output=True, text=True,
            errors="replace", timeout=_BUILD_TIMEOUT_S, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise BuildError(f"guest build timed out after {_BUILD_TIMEOUT_S} s") from None
    except OSError as e:
        raise BuildError(f"cannot run the guest compiler: {e}") from None
    output = (proc.stdout + proc.stderr).strip()
    if verbose and output:
        print(output, file=sys.stderr)
    if proc.returncode != 0:
        raise BuildError(
            f"guest build failed (zig cc exit status {proc.returncode}):\n"
            + _error_excerpt(output)
        )


def _error_excerpt(output: str) -> str:
    """The compiler output from its first error line on, a screenful at most."""
    lines = output.splitlines()
    start = next((i for i, line in enumerate(lines) if "error" in line.lower()), 0)
    excerpt = lines[start : start + _ERROR_EXCERPT_LINES]
    if len(lines) > start + _ERROR_EXCERPT_LINES:
        excerpt.append("...")
    return "\n".join(excerpt) if excerpt else "(the compiler printed nothing)"
