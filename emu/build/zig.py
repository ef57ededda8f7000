"""The C toolchain: the clang inside the `ziglang` package, run as `python -m ziglang cc`, so
a fresh machine needs nothing but pip. The one place that runs it (the guest kernel, the
instruction counter's library, the tests' host build of the PMM).

Owns: the command, its environment (zig's caches under the caller's cache directory,
SOURCE_DATE_EPOCH=0 for reproducible output), the time limit, and turning a failure into a
BuildError that quotes the first compiler errors.
Does not own: flags or inputs (each caller's), where outputs go (cache.py).
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Sequence

from emu.errors import BuildError

TIMEOUT_S = 600
_ERROR_EXCERPT_LINES = 15


def zig_version() -> str:
    try:
        return importlib.metadata.version("ziglang")
    except importlib.metadata.PackageNotFoundError:
        raise BuildError("the ziglang package is not installed (pip install ziglang)") from None


def zig_lib_dir() -> Path:
    """Where the ziglang package lives (to map its path out of debug info)."""
    spec = importlib.util.find_spec("ziglang")
    if spec is None or spec.origin is None:
        raise BuildError("the ziglang package is not installed (pip install ziglang)")
    return Path(spec.origin).resolve().parent


def zig_cc(args: Sequence[str], *, cache_dir: Path, what: str, cwd: Path | None = None,
           verbose: bool = False) -> str:
    """Run `zig cc args` (in `cwd`) and return what it printed. Raises BuildError naming
    `what` ("the guest kernel", ...) with the first errors when it fails or times out."""
    command = [sys.executable, "-m", "ziglang", "cc", *args]
    env = dict(os.environ, ZIG_GLOBAL_CACHE_DIR=str(cache_dir / "zig-global"),
               ZIG_LOCAL_CACHE_DIR=str(cache_dir / "zig-local"), SOURCE_DATE_EPOCH="0")
    if verbose:
        print("emu.build: " + " ".join(command), file=sys.stderr)
    try:
        proc = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                              errors="replace", timeout=TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise BuildError(f"building {what} timed out after {TIMEOUT_S} s") from None
    except OSError as exc:
        raise BuildError(f"cannot run the C compiler for {what}: {exc.strerror}") from None
    output = (proc.stdout + proc.stderr).strip()
    if verbose and output:
        print(output, file=sys.stderr)
    if proc.returncode != 0:
        raise BuildError(f"building {what} failed (zig cc exit status {proc.returncode}):\n"
                         + error_excerpt(output))
    return output


def error_excerpt(output: str) -> str:
    """The compiler output from its first error line on, a screenful at most."""
    lines = output.splitlines()
    start = next((i for i, line in enumerate(lines) if "error" in line.lower()), 0)
    excerpt = lines[start:start + _ERROR_EXCERPT_LINES]
    if len(lines) > start + _ERROR_EXCERPT_LINES:
        excerpt.append("...")
    return "\n".join(excerpt) if excerpt else "(the compiler printed nothing)"
