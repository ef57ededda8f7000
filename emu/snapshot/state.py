"""The Python state of a machine, captured and put back without each class saying what it
holds.

Owns: finding the components (every object reachable from the machine whose class is emu's
or an Observer: the CPU's parts, devices, the bus, the checkers, a tracer), capturing each
one's attributes as copies, and writing those copies back into the same objects on restore.
Does not own: guest RAM or the CPU registers (ram.py, snapshot.py).

Rules. A value is copied deeply, except for the objects inside it that are components
(kept by reference: their own state is captured on their own) or foreign (Unicorn, mmap,
files, functions, capstone...: kept by reference, their state is not Python's to restore;
`foreign_types` lists what was met so tests can keep the list honest). Enums and frozen
dataclasses are values. A ctypes Structure (the instruction counter's header) is captured
field by field, pointers excluded. A component may define `snapshot_state()` and
`restore_state(state)` to do it its own way (the trace recorder truncates its file), or
name in a class attribute `wiring_attributes` the attributes that record wiring rather than
state (hooks it added as the run went, which stay installed across a restore).
Classes listed in STATELESS are not walked: they hold nothing that changes during a run;
those in WIRING are walked but their own attributes are not captured.
"""
from __future__ import annotations

import ctypes
import dataclasses
from collections import deque
from enum import Enum
from typing import Any, Iterator

from emu.events import Observer

PLAIN = (int, float, str, bytes, bool, type(None), complex, range)
STATELESS = frozenset({"Symbols", "MachineConfig", "BootInfo", "Layout", "Snapshot"})
# Walked (they lead to components) but not captured: who is subscribed is wiring, and a run
# resumed from a file subscribes its own observers.
WIRING = frozenset({"EventBus"})
_POINTERS = (ctypes.c_void_p, ctypes.c_char_p)


def _is_value(obj: Any) -> bool:
    """Immutable enough to keep as it is: enums, frozen dataclasses."""
    if isinstance(obj, Enum):
        return True
    params = getattr(type(obj), "__dataclass_params__", None)
    return params is not None and params.frozen


def is_component(obj: Any) -> bool:
    # A tuple (a NamedTuple of emu's too) is a value; components inside one are still found
    # by walking it as a container.
    if isinstance(obj, (*PLAIN, tuple)) or isinstance(obj, type) or _is_value(obj):
        return False
    if isinstance(obj, Observer):
        return True
    module = type(obj).__module__ or ""
    return module == "emu" or module.startswith("emu.")


_LEAVES = frozenset(PLAIN)


def _attributes(obj: Any) -> Iterator[tuple[str, Any]]:
    names = list(getattr(obj, "__dict__", {}))
    for cls in type(obj).__mro__:
        slots = cls.__dict__.get("__slots__", ())
        names += [slots] if isinstance(slots, str) else list(slots)
    seen = set()
    for name in names:
        if name in seen or name in ("__dict__", "__weakref__"):
            continue
        seen.add(name)
        try:
            yield name, getattr(obj, name)
        except AttributeError:
            continue


def _structure_fields(structure: ctypes.Structure) -> dict[str, Any]:
    return {name: getattr(structure, name) for name, kind in structure._fields_
            if not issubclass(kind, _POINTERS) and not isinstance(getattr(structure, name),
                                                                 ctypes._CFuncPtr)}


class Capture:
    """Walks the graph once: `components` (path -> object), `foreign_types` met."""

    def __init__(self, root: Any, name: str = "machine") -> None:
        self.components: dict[str, Any] = {}
        self._ids: dict[int, str] = {}
        self.foreign_types: set[str] = set()
        self._visit(root, name)

    def path_of(self, obj: Any) -> str | None:
        return self._ids.get(id(obj))

    def _visit(self, obj: Any, path: str) -> None:
        pending = [(obj, path)]
        while pending:
            current, where = pending.pop(0)
            if id(current) in self._ids or type(current).__name__ in STATELESS:
                continue
            self._ids[id(current)] = where
            self.components[where] = current
            for name, value in _attributes(current):
                pending += self._inside(value, f"{where}.{name}")

    def _inside(self, value: Any, where: str) -> list[tuple[Any, str]]:
        """Components held by `value` (itself, or inside its containers), with paths."""
        if is_component(value):
            return [(value, where)]
        found = []
        if isinstance(value, (list, tuple, deque)):
            seen: dict[str, int] = {}
            for index, item in enumerate(value):
                if type(item) in _LEAVES:       # most items: numbers (a fast path)
                    continue
                # components by class and rank, so one observer more or less elsewhere in
                # the list does not move the others' paths (a file resumed without a trace)
                name = type(item).__name__
                seen[name] = seen.get(name, -1) + 1
                label = f"{name}#{seen[name]}" if is_component(item) else str(index)
                found += self._inside(item, f"{where}[{label}]")
        elif isinstance(value, dict):
            for index, (key, item) in enumerate(value.items()):
                label = repr(key) if isinstance(key, PLAIN) else f"#{index}"
                found += self._inside(item, f"{where}[{label}]")
        elif isinstance(value, (set, frozenset)):
            for index, item in enumerate(sorted(value, key=repr)):
                found += self._inside(item, f"{where}{{{index}}}")
        elif not isinstance(value, (*PLAIN, bytearray)) and not _is_value(value) and \
                not isinstance(value, ctypes.Structure):
            self.foreign_types.add(f"{type(value).__module__}.{type(value).__qualname__}")
        return found


# Types whose values copy_value keeps by reference: the plain ones, and every other type it
# met that is not a container it copies (the decision depends on the type alone, so it is
# remembered: restores copy tens of thousands of values).
_KEPT: set[type] = {*PLAIN, frozenset}


def copy_value(value: Any) -> Any:
    """A deep copy that keeps components and foreign objects by reference."""
    kind = type(value)
    if kind in _KEPT:
        return value
    if kind is list:
        return [item if type(item) in _KEPT else copy_value(item) for item in value]
    if kind is tuple:
        return tuple(item if type(item) in _KEPT else copy_value(item) for item in value)
    if kind is dict:
        return {copy_value(key): item if type(item) in _KEPT else copy_value(item)
                for key, item in value.items()}
    if kind is set:
        return {copy_value(item) for item in value}
    if kind is deque:
        return deque((copy_value(item) for item in value), value.maxlen)
    if kind is bytearray:
        return bytearray(value)
    _KEPT.add(kind)         # frozenset, enum, frozen dataclass, component, foreign
    return value


def capture(root: Any) -> tuple[Capture, dict[str, dict[str, Any]]]:
    """(the walk, path -> {attribute: copied value}) for every component under root."""
    walk = Capture(root)
    state: dict[str, dict[str, Any]] = {}
    for path, obj in walk.components.items():
        if type(obj).__name__ in WIRING:
            continue
        custom = getattr(obj, "snapshot_state", None)
        if callable(custom):
            state[path] = {"__custom__": custom()}
            continue
        attributes = {}
        wiring = getattr(type(obj), "wiring_attributes", ())
        for name, value in _attributes(obj):
            if name in wiring:
                continue
            if isinstance(value, ctypes.Structure):
                attributes[name] = {"__ctypes__": _structure_fields(value)}
            elif not callable(value) or is_component(value):
                attributes[name] = copy_value(value)
        state[path] = attributes
    return walk, state


def restore(components: dict[str, Any], state: dict[str, dict[str, Any]]) -> None:
    """Write the captured attributes back into the components (by the same paths)."""
    for path, attributes in state.items():
        obj = components.get(path)
        if obj is None:
            continue
        if "__custom__" in attributes:
            obj.restore_state(attributes["__custom__"])
            continue
        for name, value in attributes.items():
            if isinstance(value, dict) and "__ctypes__" in value:
                structure = getattr(obj, name)
                for field, field_value in value["__ctypes__"].items():
                    setattr(structure, field, field_value)
                continue
            object.__setattr__(obj, name, copy_value(value))
