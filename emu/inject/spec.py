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
    disk:fault=ioerr|torn|delay[,op=read|write][,sectors=A..B][,nth=N][,land=K]
        [,ticks=T][,KNOBS]
        on the swap disk, a read or write request (of kind op, touching sectors A to B,
        if given) fails when the knobs say so (nth=N: the Nth such request, as fail-nth):
        ioerr completes it with an I/O error; torn lets only its first K sectors (default
        1) land and reports success (writes only); delay completes it T ticks (default
        1,000,000) after it would have. KNOBS' space counts the requests' bytes
KNOBS (fail-function and disk): probability=P (percent), interval=N, times=N (-1: no
limit), space=BYTES, fail-nth=N, seed=S; the meaning is Linux's fault-injection framework's (emu/inject/knobs.py).
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
    "disk": (frozenset({"fault"}), frozenset({"op", "sectors", "land", "ticks"})),
}
KNOBBED = frozenset({"fail-function", "disk"})       # the kinds that take the knobs
TEXT_KEYS = frozenset({"function", "caller", "symbol", "type", "region", "fault", "op",
                       "sectors"})
RAM_REGIONS = ("heap",)
DISK_FAULTS = ("ioerr", "torn", "delay")
DISK_OPS = ("read", "write")
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
    if kind == "disk" and "nth" in pairs:      # the disk's name for its request number
        if "fail-nth" in pairs:
            raise ConfigError(f"--inject {spec}: nth= and fail-nth= are the same knob; "
                              f"give one")
        pairs["fail-nth"] = pairs.pop("nth")
    allowed = required | optional | (set(KNOB_KEYS) if kind in KNOBBED else set())
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
    if kind == "disk":
        _check_disk(spec, params)
    if kind == "irq" and not 32 <= params["vector"] <= 255:
        raise ConfigError(f"--inject {spec}: vector is an external interrupt, 32 to 255")


def sector_range(text: str) -> tuple[int, int] | None:
    """`A..B` (inclusive) or `A` as (first, last); None if it is neither."""
    first, dots, last = text.partition("..")
    try:
        low = int(first.replace("_", ""), 0)
        high = int(last.replace("_", ""), 0) if dots else low
    except ValueError:
        return None
    return (low, high) if 0 <= low <= high else None


def _check_disk(spec: str, params: dict) -> None:
    fault = params["fault"]
    if fault not in DISK_FAULTS:
        raise ConfigError(f"--inject {spec}: fault={fault} is not a disk fault; use one of "
                          f"{', '.join(DISK_FAULTS)}")
    if params.get("op", "write") not in DISK_OPS:
        raise ConfigError(f"--inject {spec}: op={params['op']} is not a request kind; use "
                          f"one of {', '.join(DISK_OPS)}")
    if fault == "torn" and params.get("op") == "read":
        raise ConfigError(f"--inject {spec}: a torn request is a write; drop op=read")
    if "sectors" in params and sector_range(params["sectors"]) is None:
        raise ConfigError(f"--inject {spec}: sectors={params['sectors']} is not A..B (first "
                          f"and last sector, A <= B) or one sector")
    if "land" in params and (fault != "torn" or params["land"] < 0):
        raise ConfigError(f"--inject {spec}: land=K (sectors that reach the disk, 0 or more) "
                          f"is for fault=torn")
    if "ticks" in params and (fault != "delay" or params["ticks"] < 1):
        raise ConfigError(f"--inject {spec}: ticks=T (1 or more) is for fault=delay")
