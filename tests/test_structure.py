"""The house rules of emu/, checked on its source (docs/ARCHITECTURE.md states them):
imports only go down the layers; only emu/engine/capi.py touches Unicorn's private API; no
class over 300 lines and no function over 60; every package is in pyproject's list; the
README's exit-status tables are the ones in emu/result.py; docs the code cites exist."""
from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

from emu.result import EXEC_EXIT_STATUS_MEANINGS, EXIT_STATUS_MEANINGS

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "emu"

# Bottom up. A module may import its own unit and any unit of a lower layer; two units of
# one layer do not import each other (the CPU does not know the loader, and so on).
LAYERS: tuple[tuple[str, ...], ...] = (
    ("emu", "emu.errors", "emu.x86", "emu.result", "emu.events"),
    ("emu.arch", "emu.inputs", "emu.signals"),
    ("emu.build",),
    ("emu.engine",),
    ("emu.hw",),
    ("emu.cpu", "emu.boot"),
    ("emu.monitor", "emu.snapshot"),
    ("emu.machine", "emu.bare"),
    ("emu.workloads", "emu.replay", "emu.gdb", "emu.export"),
    ("emu.inject",),
    ("emu.commands",),
    ("emu.cli",),
    ("emu.launch",),
)
PRIVATE_API_HOME = "emu.engine.capi"
PRIVATE_NAMES = ("unicorn.unicorn_py3", "_uch", "uclib", "_binding")
MAX_CLASS_LINES = 300
MAX_FUNCTION_LINES = 60
# name -> why it may be longer (none today)
SIZE_ALLOWLIST: dict[str, str] = {}


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out.append((".".join(parts), path))
    return out


def _unit(module: str) -> tuple[int, str]:
    """(layer, unit) of a module: the longest LAYERS name it is or lies under."""
    best = None
    for layer, units in enumerate(LAYERS):
        for unit in units:
            if (module == unit or (unit != "emu" and module.startswith(unit + "."))) and \
                    (best is None or len(unit) > len(best[1])):
                best = (layer, unit)
    assert best is not None, f"{module} is in no layer of LAYERS"
    return best


def _imports(module: str, path: Path) -> list[str]:
    """emu modules imported by `module` (relative imports resolved; TYPE_CHECKING-only
    imports count too: a type is a dependency)."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.append(base)
            found += [f"{base}.{alias.name}" for alias in node.names]
    modules = {name for name, _ in _modules()}
    return sorted({name for name in found if name in modules})


@pytest.mark.parametrize("module, path", _modules(), ids=[m for m, _ in _modules()])
def test_imports_only_go_down_the_layers(module: str, path: Path) -> None:
    layer, unit = _unit(module)
    for imported in _imports(module, path):
        other_layer, other_unit = _unit(imported)
        if other_unit == unit or other_unit == "emu":
            continue
        assert other_layer < layer, (
            f"{module} (layer {layer}, {unit}) imports {imported} (layer {other_layer}, "
            f"{other_unit}): imports must go down the layers of docs/ARCHITECTURE.md")


@pytest.mark.parametrize("module, path", _modules(), ids=[m for m, _ in _modules()])
def test_only_the_engine_touches_unicorns_private_api(module: str, path: Path) -> None:
    if module == PRIVATE_API_HOME:
        return
    text = path.read_text()
    for name in PRIVATE_NAMES:
        assert not re.search(rf"(?<![\w]){re.escape(name)}\b", text), \
            f"{module} uses Unicorn's private {name}; go through {PRIVATE_API_HOME}"


def test_no_class_over_300_lines_and_no_function_over_60() -> None:
    too_long = []
    for module, path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            limit = MAX_CLASS_LINES if isinstance(node, ast.ClassDef) else \
                MAX_FUNCTION_LINES if isinstance(node, (ast.FunctionDef,
                                                        ast.AsyncFunctionDef)) else None
            if limit is None:
                continue
            lines = node.end_lineno - node.lineno + 1
            name = f"{module}.{node.name}"
            if lines > limit and name not in SIZE_ALLOWLIST:
                too_long.append(f"{name}: {lines} lines (limit {limit})")
    assert too_long == []


def test_every_package_is_listed_in_pyproject() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(config["tool"]["setuptools"]["packages"])
    packages = {module for module, path in _modules() if path.name == "__init__.py"}
    assert packages - listed == set(), "add these to [tool.setuptools] packages"
    assert listed - packages == {"emu.guest"}


def test_every_package_says_what_it_owns() -> None:
    for module, path in _modules():
        docstring = ast.get_docstring(ast.parse(path.read_text()))
        assert docstring and "TODO" not in docstring, f"{module} has no docstring"


# The README's exit-status tables: the line "Exit status of `emu COMMAND`:", a blank line,
# then a table whose header is "| status | meaning |".
STATUS_TABLES = {"run": EXIT_STATUS_MEANINGS, "exec": EXEC_EXIT_STATUS_MEANINGS}
STATUS_TABLE = re.compile(r"^Exit status of `emu (\w[\w-]*)`:\n\n\| status \| meaning \|\n"
                          r"\| --- \| --- \|\n((?:\|.*\|\n)+)", re.M)
STATUS_ROW = re.compile(r"^\| (\d+(?:-\d+)?) \| (.+?) \|$", re.M)


def test_the_readme_exit_status_tables_are_the_code_s() -> None:
    readme = (ROOT / "README.md").read_text()
    tables = {command: dict(STATUS_ROW.findall(rows))
              for command, rows in STATUS_TABLE.findall(readme)}
    assert set(tables) == set(STATUS_TABLES), f"status tables in the README: {sorted(tables)}"
    for command, meanings in STATUS_TABLES.items():
        rows = tables[command]
        for code, _meaning in meanings:
            assert code in rows, f"exit status {code} is not in the README's emu {command} table"
        assert set(rows) == {code for code, _ in meanings}, command
    # Every status-like row belongs to one of those tables (no third, stale table).
    assert readme.count("| status | meaning |") == len(STATUS_TABLES)
    listed = sum(len(STATUS_ROW.findall(rows)) for _, rows in STATUS_TABLE.findall(readme))
    assert len(STATUS_ROW.findall(readme)) == listed


def test_docs_the_code_cites_exist() -> None:
    cited = set()
    for _, path in _modules():
        cited.update(re.findall(r"\bdocs/([A-Z][A-Z_]+\.md)", path.read_text()))
    missing = sorted(name for name in cited if not (ROOT / "docs" / name).is_file())
    assert missing == [], f"cited but not in docs/: {missing}"
