"""The `--inject SPEC` grammar: one injection per spec, `KIND:KEY=VALUE,KEY=VALUE...`.

    fail-function:function=NAME[,retval=N][,caller=SYMBOL][,after=C][,KNOBS]
        at the entry of the kernel function NAME, skip its body and return N (default 0:
        NULL for pointers; use retval=-12 for -ENOMEM) when the knobs say so; calls count
        only from SYMBOL, and only once the guest reached checkpoint C (port 0xf0; our
        kernel's 1 is "mm_init returned")
    ram:at=N,(paddr=ADDR|symbol=NAME|type=MEMMAP_TYPE|region=heap)[,bit=B][,flips=K][,seed=S]
        when N instructions have retired, flip K bits (default 1): of the byte at ADDR or
        at the symbol's address, or of a random frame of that memory-map type, or of a
        random page the kernel heap has mapped then (its range from heap_descriptor); bit
        B of the byte, or random bits (seeded)
    irq:at=N,vector=V
        raise external interrupt V when N instructions have retired
    spurious-pf:at=N
        from instruction N on, the next instruction that accesses memory raises #PF for
        its own address although the page is present (the handler must be idempotent)
KNOBS: probability=P (percent), interval=N, times=N (-1: no limit), space=BYTES,
fail-nth=N, seed=S; the meaning is Linux's fault-injection framework's (emu/inject/knobs.py).
Numbers are decimal or 0x-hex; `_` separators are allowed.

Owns: parsing a spec into an `InjectionSpec` with a one-line error for anything wrong.
Does not own: doing the injection (the injector modules).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from emu.errors import ConfigError
from emu.hw.memmap import MemoryType
from emu.inject.knobs import Knobs

KNOB_KEYS = {"probability": "probability", "interval": "interval", "times": "times",
             "space": "space", "fail-nth": "fail_nth", "seed": "seed"}
# kind -> (required keys, optional keys besides the knobs)
KINDS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "fail-function": (frozenset({"function"}), frozenset({"retval", "caller", "after"})),
    "ram": (frozenset({"at"}), frozenset({"paddr", "symbol", "type", "region", "bit",
                                          "flips", "seed"})),
    "irq": (frozenset({"at", "vector"}), frozenset()),
    "spurious-pf": (frozenset({"at"}), frozenset()),
}
TEXT_KEYS = frozenset({"function", "caller", "symbol", "type", "region"})
RAM_REGIONS = ("heap",)
USE = "use KIND:KEY=VALUE,... with KIND one of " + ", ".join(KINDS) + \
    " (see `emu run --help`)"


@dataclass(frozen=True, slots=True)
class InjectionSpec:
    kind: str
    params: dict = field(default_factory=dict)      # key -> int or str
    knobs: Knobs = Knobs()
    text: str = ""                                   # as the user wrote it

    def number(self, key: str, default: int | None = None) -> int | None:
        return self.params.get(key, default)


def _number(spec: str, key: str, value: str) -> int:
    try:
        return int(value.replace("_", ""), 0)
    except ValueError:
        raise ConfigError(f"--inject {spec}: {key}={value} is not a number") from None


def _pairs(spec: str, body: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in filter(None, body.split(",")):
        key, equals, value = item.partition("=")
        key = key.strip()
        if not equals or not value.strip():
            raise ConfigError(f"--inject {spec}: {item!r} is not KEY=VALUE; {USE}")
        if key in pairs:
            raise ConfigError(f"--inject {spec}: {key} is given twice")
        pairs[key] = value.strip()
    return pairs


def parse_spec(spec: str) -> InjectionSpec:
    """One `--inject` value; ConfigError (one line) for anything wrong with it."""
    kind, _, body = spec.partition(":")
    kind = kind.strip()
    if kind not in KINDS:
        raise ConfigError(f"--inject {spec}: unknown kind {kind!r}; {USE}")
    required, optional = KINDS[kind]
    pairs = _pairs(spec, body)
    allowed = required | optional | (set(KNOB_KEYS) if kind == "fail-function" else set())
    unknown = sorted(set(pairs) - allowed)
    if unknown:
        raise ConfigError(f"--inject {spec}: {kind} takes no {', '.join(unknown)}; it takes "
                          f"{', '.join(sorted(allowed))}")
    missing = sorted(required - set(pairs))
    if missing:
        raise ConfigError(f"--inject {spec}: {kind} needs {', '.join(missing)}")
    params = {key: value if key in TEXT_KEYS else _number(spec, key, value)
              for key, value in pairs.items() if key not in KNOB_KEYS}
    knobs = Knobs(**{KNOB_KEYS[key]: _number(spec, key, value)
                     for key, value in pairs.items() if key in KNOB_KEYS})
    _check(spec, kind, params, knobs)
    return InjectionSpec(kind, params, knobs, spec)


def _check(spec: str, kind: str, params: dict, knobs: Knobs) -> None:
    if not 0 <= knobs.probability <= 100:
        raise ConfigError(f"--inject {spec}: probability is a percentage, 0 to 100")
    if knobs.interval < 1 or knobs.times < -1 or knobs.space < 0 or knobs.fail_nth < 0:
        raise ConfigError(f"--inject {spec}: interval >= 1, times >= -1, space >= 0 and "
                          f"fail-nth >= 0")
    if params.get("at", 0) < 0:
        raise ConfigError(f"--inject {spec}: at= is an instruction count, not negative")
    if kind == "ram":
        targets = [key for key in ("paddr", "symbol", "type", "region") if key in params]
        if len(targets) != 1:
            raise ConfigError(f"--inject {spec}: ram needs exactly one of paddr=, symbol=, "
                              f"type=, region=")
        if "region" in params and params["region"] not in RAM_REGIONS:
            raise ConfigError(f"--inject {spec}: region={params['region']} is not a region; "
                              f"use one of {', '.join(RAM_REGIONS)}")
        if "type" in params and params["type"].upper() not in MemoryType.__members__:
            raise ConfigError(f"--inject {spec}: type={params['type']} is not a memory-map "
                              f"type; use one of {', '.join(MemoryType.__members__)}")
        if not 0 <= params.get("bit", 0) <= 7 or not 1 <= params.get("flips", 1) <= 64:
            raise ConfigError(f"--inject {spec}: bit is 0 to 7, flips 1 to 64")
    if kind == "irq" and not 32 <= params["vector"] <= 255:
        raise ConfigError(f"--inject {spec}: vector is an external interrupt, 32 to 255")
