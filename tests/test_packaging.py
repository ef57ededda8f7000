"""A non-editable install carries the guest sources: `pip install .` then `emu run` from
any directory builds the kernel from the installed package data and boots it."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _generated(directory: str, names: list[str]) -> set[str]:
    """What a clean checkout does not have: VCS data, virtual environments, build outputs."""
    top = Path(directory) == ROOT
    return {name for name in names
            if name in (".git", ".venv", "__pycache__", ".hypothesis")
            or name.endswith(".egg-info") or (top and name == "build")}


@pytest.mark.slow
def test_a_non_editable_install_builds_and_boots_the_kernel(tmp_path: Path) -> None:
    target = tmp_path / "site"
    source = tmp_path / "source"              # a clean tree: no build/ left by other builds
    shutil.copytree(ROOT, source, ignore=_generated)
    # --no-deps: this interpreter already has the dependencies; the wheel is built from
    # the tree as a user's `pip install .` builds it (setuptools from the package index).
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target",
         str(target), str(source)], capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr
    assert (target / "emu" / "guest" / "kernel.ld").is_file()
    assert not (target / "emu" / "guest" / "__init__.py").exists()
    env = dict(os.environ, PYTHONPATH=str(target), EMU_CACHE_DIR=str(tmp_path / "cache"))
    run = subprocess.run([sys.executable, "-m", "emu.cli", "run", "--quiet"], cwd="/",
                         env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    assert "guest exited with 0" in run.stderr
    built = list((tmp_path / "cache" / "guest").glob("kernel-*.elf"))
    assert len(built) == 1                      # built here, from the installed sources
    probe = subprocess.run([sys.executable, "-c", "import emu.build as b; "
                            "print(b.guest_source_dir())"], cwd="/", env=env,
                           capture_output=True, text=True, timeout=60)
    assert probe.stdout.strip().startswith(str(target))
