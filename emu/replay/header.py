"""The header of a version-2 trace: everything `emu replay` needs to run the recording again.

Owns: turning a MachineConfig and the run's options into the header's JSON (every field of
the config, generically, so a field added later is recorded without a change here; every
file the config names as an input with its SHA-256), and turning a header back into a
MachineConfig once the inputs are found (emu/replay/inputs.py).
Does not own: writing the trace (emu/monitor/trace.py) or finding files.

Header fields (traces/README.md documents them for users):
  kernel_sha256  the kernel ELF's SHA-256 (kept at the top for quick comparison)
  kernel         {"path", "name", "sha256", "source": "guest" (the project's own build,
                 `defines` with it) or "file"}
  config         every MachineConfig field; paths as given
  inputs         [{"field", "index", "path", "name", "sha256"}] for each file besides the
                 kernel (modules; later an initrd, a swap file)
  run            the options outside the config that make events: checks, allow, strict,
                 check_every, events (the trace's event filter)
  seeds          named seeds of the run: `inject.N` for the Nth injection that draws random
                 numbers (its `seed=`; the guest's own randomness comes from its command
                 line and boot time, which the config holds). `with_seeds` changes them.
  harness        {"emu", "unicorn", "trace_version"}
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping

import unicorn

import emu
from emu.errors import ConfigError, TraceError
from emu.inputs import check_input, file_sha256
from emu.machine import MachineConfig

GUEST_SOURCE = "guest"         # kernel.source: built from the project's guest/ tree
FILE_SOURCE = "file"


MAX_INPUT_BYTES = 1 << 40        # hashing streams; the machine bounds inputs by RAM


def _digest(path: Path, what: str) -> str:
    """The SHA-256 of an input; "" for a missing file (the machine then says it is missing,
    with its hint). An input that is not a regular file (a device, a FIFO: a read that
    never ends) is refused with the input check's one-line ConfigError."""
    if not Path(path).exists():
        return ""
    check_input(path, what, MAX_INPUT_BYTES)
    try:
        return file_sha256(path)
    except OSError:
        return ""


def _json_value(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (tuple, list)):
        return [_json_value(item) for item in value]
    return value


def input_fields(config: MachineConfig) -> list[tuple[str, int | None, Path]]:
    """(field, index or None, path) of every file the config names besides the kernel."""
    found = []
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if field.name == "kernel":
            continue
        if isinstance(value, Path):
            found.append((field.name, None, value))
        elif isinstance(value, tuple) and value and all(isinstance(v, Path) for v in value):
            found += [(field.name, index, path) for index, path in enumerate(value)]
    return found


SEEDED_INJECTIONS = ("fail-function", "ram", "disk")     # the kinds with a seeded generator


def _spec_seed(spec: str) -> int:
    for item in spec.partition(":")[2].split(","):
        key, _, value = item.partition("=")
        if key.strip() == "seed":
            return int(value.strip().replace("_", ""), 0)
    return 0                                     # emu/inject/knobs.py's default


def seeds_of(config: MachineConfig) -> dict[str, int]:
    """The run's named seeds: `inject.N` -> the seed of the Nth injection (from 0) whose kind
    draws random numbers."""
    return {f"inject.{index}": _spec_seed(spec) for index, spec in enumerate(config.injections)
            if spec.partition(":")[0].strip() in SEEDED_INJECTIONS}


def with_seeds(config: MachineConfig, seeds: Mapping[str, int]) -> MachineConfig:
    """`config` with named seeds (as seeds_of names them) changed: the injection's spec gets
    `seed=VALUE` in place of its own. ConfigError for a name the run does not have."""
    known = seeds_of(config)
    unknown = sorted(set(seeds) - set(known))
    if unknown:
        raise ConfigError(f"--seed {unknown[0]}: the trace has no such seed; it has "
                          f"{', '.join(known) or 'none'}")
    specs = list(config.injections)
    for name, value in seeds.items():
        index = int(name.split(".")[1])
        kind, _, body = specs[index].partition(":")
        items = [item for item in body.split(",") if item.partition("=")[0].strip() != "seed"]
        specs[index] = f"{kind}:{','.join([*items, f'seed={value}'])}"
    return dataclasses.replace(config, injections=tuple(specs))


def build_header(config: MachineConfig, *, own_kernel: bool = False,
                 defines: Mapping[str, str] | None = None,
                 run: Mapping[str, Any] | None = None) -> dict:
    """The header fields of a trace of a run of `config` (without format and version)."""
    from emu.monitor.trace import VERSION
    kernel_sha256 = _digest(config.kernel, "kernel")
    # The project's own kernel lives in a cache directory of this machine: a replay rebuilds
    # it from guest/, so only its name is recorded.
    path = config.kernel.name if own_kernel else str(config.kernel)
    kernel = {"path": path, "name": config.kernel.name, "sha256": kernel_sha256,
              "source": GUEST_SOURCE if own_kernel else FILE_SOURCE}
    if own_kernel:
        kernel["defines"] = dict(defines or {})
    recorded = {field.name: _json_value(getattr(config, field.name))
                for field in dataclasses.fields(config)}
    recorded["kernel"] = path
    return {
        "kernel_sha256": kernel_sha256,
        "kernel": kernel,
        "config": recorded,
        "inputs": [{"field": name, "index": index, "path": str(path), "name": path.name,
                    "sha256": _digest(path, name.rstrip("s"))}     # modules: "module"
                   for name, index, path in input_fields(config)],
        "run": dict(run or {}),
        "seeds": seeds_of(config),
        "harness": {"emu": emu.__version__, "unicorn": unicorn.__version__,
                    "trace_version": VERSION},
    }


def _field_value(recorded: Any) -> Any:
    """A recorded JSON value as the config field wants it: lists become tuples."""
    if isinstance(recorded, list):
        return tuple(_field_value(item) for item in recorded)
    return recorded


def config_from_header(header: Mapping[str, Any], kernel: Path,
                       inputs: Mapping[tuple[str, int | None], Path],
                       overrides: Mapping[str, Any] | None = None) -> MachineConfig:
    """The recorded MachineConfig with `kernel` and the found `inputs` ((field, index) ->
    path) in place of the recorded paths, and `overrides` (field -> value) applied.
    TraceError for a header this emu cannot turn into a config."""
    recorded = header.get("config")
    if not isinstance(recorded, dict):
        raise TraceError("the trace header has no config object: not a replayable trace")
    known = {field.name: field for field in dataclasses.fields(MachineConfig)}
    unknown = sorted(set(recorded) - set(known))
    if unknown:
        raise TraceError(f"the trace was recorded with options this emu does not know "
                         f"({', '.join(unknown)}); replay it with the emu that recorded it")
    values: dict[str, Any] = {}
    for name, value in recorded.items():
        values[name] = _field_value(value)
    grouped: dict[str, list[tuple[int, Path]]] = {}
    for (name, index), path in inputs.items():
        if index is None:
            values[name] = path
        else:
            grouped.setdefault(name, []).append((index, path))
    for name, paths in grouped.items():
        values[name] = tuple(path for _, path in sorted(paths))
    values["kernel"] = kernel
    values.update(overrides or {})
    try:
        return MachineConfig(**values)
    except TypeError as exc:
        raise TraceError(f"the trace header's config is malformed: {exc}") from None
