"""Captured Python state (state.py) as JSON for snapshot files, and back: no pickle.

Owns: the encoding of the values components hold (numbers, strings, bytes, lists, tuples,
dicts with any keys, sets, deques, enums and frozen dataclasses of emu, references to other
components by their path), and refusing to decode a class from outside emu.
Does not own: what is captured (state.py) or the file's layout (snapshot.py).

A foreign object (Unicorn, a file, a function) cannot be saved: it is written as
{"$foreign": type} and left as the new machine has it when loaded.
"""
from __future__ import annotations

import base64
import dataclasses
import importlib
from collections import deque
from enum import Enum
from typing import Any, Callable

from emu.errors import TraceError
from emu.snapshot.state import is_component

FOREIGN = "$foreign"


def _class_name(obj: Any) -> str:
    return f"{type(obj).__module__}:{type(obj).__qualname__}"


def _class(name: str) -> type:
    module, _, qualname = name.partition(":")
    if not (module == "emu" or module.startswith("emu.")):
        raise TraceError(f"snapshot names class {name}, which is not emu's: a corrupt file")
    try:
        target: Any = importlib.import_module(module)
        for part in qualname.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError):
        raise TraceError(f"snapshot names class {name}, which this emu does not have") \
            from None
    return target


def encode(value: Any, path_of: Callable[[Any], str | None]) -> Any:
    """JSON-ready form of a captured value; components become {"$ref": path}."""
    if value is None or isinstance(value, (bool, int, float, str)) and not isinstance(value, Enum):
        return value
    if isinstance(value, (bytes, bytearray)):
        key = "$b" if isinstance(value, bytes) else "$ba"
        return {key: base64.b64encode(bytes(value)).decode()}
    if isinstance(value, list):
        return [encode(item, path_of) for item in value]
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return {"$t": [encode(item, path_of) for item in value]}
    if isinstance(value, dict):
        return {"$d": [[encode(k, path_of), encode(v, path_of)] for k, v in value.items()]}
    if isinstance(value, (set, frozenset)):
        key = "$s" if isinstance(value, set) else "$fs"
        return {key: [encode(item, path_of) for item in value]}
    if isinstance(value, deque):
        return {"$q": [encode(item, path_of) for item in value], "max": value.maxlen}
    if isinstance(value, Enum):
        return {"$e": _class_name(value), "v": encode(value.value, path_of)}
    if is_component(value) and path_of(value) is not None:
        return {"$ref": path_of(value)}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {"$dc": _class_name(value),
                "f": {f.name: encode(getattr(value, f.name), path_of)
                      for f in dataclasses.fields(value)}}
    return {FOREIGN: _class_name(value)}


def decode(data: Any, resolve: Callable[[str], Any]) -> Any:
    """The value `encode` wrote; `resolve(path)` gives the new machine's component."""
    if not isinstance(data, (list, dict)):
        return data
    if isinstance(data, list):
        return [decode(item, resolve) for item in data]
    if len(data) == 1 and "$b" in data:
        return base64.b64decode(data["$b"])
    if "$ba" in data:
        return bytearray(base64.b64decode(data["$ba"]))
    if "$t" in data:
        return tuple(decode(item, resolve) for item in data["$t"])
    if "$d" in data:
        return {_hashable(decode(k, resolve)): decode(v, resolve) for k, v in data["$d"]}
    if "$s" in data:
        return {decode(item, resolve) for item in data["$s"]}
    if "$fs" in data:
        return frozenset(decode(item, resolve) for item in data["$fs"])
    if "$q" in data:
        return deque((decode(item, resolve) for item in data["$q"]), data.get("max"))
    if "$e" in data:
        return _class(data["$e"])(decode(data["v"], resolve))
    if "$ref" in data:
        return resolve(data["$ref"])
    if "$dc" in data:
        cls = _class(data["$dc"])
        return cls(**{k: decode(v, resolve) for k, v in data["f"].items()})
    raise TraceError(f"snapshot holds a value this emu cannot read ({sorted(data)[:3]})")


def _hashable(key: Any) -> Any:
    return tuple(key) if isinstance(key, list) else key
