"""Campaigns: one workload run many times, each with a different injection, each run
classified, the failures grouped by signature, and a one-line reproducer for each group.

A campaign file (TOML; paths are relative to it):

    name = "kmalloc fails after mm_init"
    [machine]                    # MachineConfig, by the names of emu run's options
    cmdline = "replay=1 heap=list"
    modules = ["../traces/malloclab/short1-bal.rep"]
    memory = "256M"              # optional: kernel, memmap, max_instructions, ips, ...
    checks = ["pt", "heap"]      # the outside checkers that watch every run
    [injection]
    template = "fail-function:function=kmalloc,after=1,fail-nth={n}"
    n = "1..auto"                # "A..B", "A,B,C" or "1..auto": auto is the number of
                                 # calls of the function in a clean run
    [accept]                     # what the workload may do under injection and still pass
    exit = [0, 1]                # guest exit values
    output = ["^replay: error: op \\d+ .*returned 0x0$"]   # serial lines (regexes)
    panic = "^panic: (.*)"       # how the kernel says it panicked (default: ours)
    reject = ["did not come back"]   # lines that fail any run, the clean one too
                                 # (default: our kernel's report of a leak)

A process workload adds (our kernel runs it as init, emu/workloads/process.py):

    [process]
    program = "../tests/programs/mm_workload.c"   # C (built with zig) or a static ELF
    args = ["3"]                 # optional: its arguments
    files = [["data.bin", "/data"]]   # optional: (host file, guest path) in the initrd
    seed = 0                     # optional: the seed of its random bytes

The initrd is packed once, into the build cache, and named by the reproducer's --module.

Owns: the file's validation (one-line errors), the variants, running one variant
(`run_variant`, a pure function of picklable data so any executor can call it),
classification, signatures and reproducer command lines.
Does not own: where variants run (executors.py), the injectors, the checkers.
"""
from __future__ import annotations

import hashlib
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

from emu.build import build_program, cache
from emu.errors import ConfigError
from emu.inject.spec import parse_spec
from emu.inputs import read_input
from emu.workloads.process import ProgramSpec, command_line, pack_initrd

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

MAX_CAMPAIGN_BYTES = 1 << 20
MAX_MEMBER_BYTES = 1 << 31         # one file of a process workload's initrd
OUR_PANIC = r"^panic: (.*)"
OUR_REJECT = (r"^proc: -?\d+ frames did not come back",)
# MachineConfig fields a campaign may set, and the emu run option that sets each.
MACHINE_KEYS = {"kernel": "KERNEL", "memory": "--memory", "memmap": "--memmap",
                "cmdline": "--cmdline", "modules": "--module",
                "max_instructions": "--max-instructions", "boot_time": "--boot-time",
                "ips": "--ips", "platform": "--no-platform"}
CHECKS = ("pt", "heap")
CLASSES = ("passed", "panic", "violation", "heap-finding", "output", "hang", "triple-fault",
           "crash", "halt", "exit", "error")
DEFAULT_BUDGET = 200_000_000


@dataclass(frozen=True)
class Campaign:
    name: str
    folder: Path
    machine: dict                  # MACHINE_KEYS -> value (paths resolved)
    checks: tuple[str, ...]
    template: str
    points: str                    # "1..auto", "1..40", "3,5,8"
    accept_exit: tuple[int, ...] = (0,)
    accept_output: tuple[str, ...] = ()
    panic: str = OUR_PANIC
    reject_output: tuple[str, ...] = OUR_REJECT

    def specs(self, n: int) -> tuple[str, ...]:
        return (self.template.replace("{n}", str(n)),)

    def job(self) -> dict:
        """What run_variant needs besides the specs: plain data."""
        return {"machine": self.machine, "checks": list(self.checks),
                "accept_exit": list(self.accept_exit),
                "accept_output": list(self.accept_output), "panic": self.panic,
                "reject_output": list(self.reject_output)}


@dataclass(frozen=True)
class Outcome:
    index: int
    n: int
    specs: tuple[str, ...]
    kind: str                      # one of CLASSES
    detail: str = ""
    location: str = ""
    instructions: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def signature(self) -> tuple[str, str]:
        return self.kind, _mask(self.location or self.detail)

    def to_dict(self) -> dict:
        return {"index": self.index, "n": self.n, "specs": list(self.specs),
                "class": self.kind, "detail": self.detail, "location": self.location,
                "instructions": self.instructions}


def _mask(text: str) -> str:
    """Numbers and addresses out of a message, so that one bug gives one signature."""
    return re.sub(r"0x[0-9a-fA-F]+|\d+", "N", text)


def load_campaign(path: Path) -> Campaign:
    """Read and check a campaign file; ConfigError names what is wrong and where."""
    path = Path(path)
    text = read_input(path, "campaign", MAX_CAMPAIGN_BYTES).decode("utf-8", "replace")
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"campaign {path}: not TOML ({exc})") from None
    unknown = sorted(set(document) - {"name", "machine", "process", "injection", "accept"})
    if unknown:
        raise ConfigError(f"campaign {path}: unknown section or key {', '.join(unknown)}; "
                          f"use name, [machine], [process], [injection], [accept]")
    machine = dict(document.get("machine", {}))
    checks = tuple(machine.pop("checks", ()))
    _check_machine(path, machine, checks)
    machine = _resolve(path, machine)
    if "process" in document:
        machine = _with_process(path, document["process"], machine)
    injection = document.get("injection", {})
    if set(injection) != {"template", "n"}:
        raise ConfigError(f"campaign {path}: [injection] needs exactly template and n")
    template, points = str(injection["template"]), str(injection["n"])
    if "{n}" not in template:
        raise ConfigError(f"campaign {path}: the template must contain {{n}} (the point)")
    parse_spec(template.replace("{n}", "1"))           # the grammar's own errors
    _check_points(path, points, template)
    accept = document.get("accept", {})
    unknown = sorted(set(accept) - {"exit", "output", "panic", "reject"})
    if unknown:
        raise ConfigError(f"campaign {path}: [accept] takes exit, output, panic, reject, "
                          f"not {', '.join(unknown)}")
    for pattern in [*accept.get("output", ()), accept.get("panic", OUR_PANIC),
                    *accept.get("reject", OUR_REJECT)]:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ConfigError(f"campaign {path}: {pattern!r} is not a regex ({exc})") from None
    return Campaign(str(document.get("name", path.stem)), path.parent.resolve(),
                    machine, checks, template, points,
                    tuple(int(v) for v in accept.get("exit", (0,))),
                    tuple(accept.get("output", ())), accept.get("panic", OUR_PANIC),
                    tuple(accept.get("reject", OUR_REJECT)))


def _check_machine(path: Path, machine: dict, checks: tuple) -> None:
    unknown = sorted(set(machine) - set(MACHINE_KEYS))
    if unknown:
        raise ConfigError(f"campaign {path}: [machine] takes {', '.join(MACHINE_KEYS)} and "
                          f"checks, not {', '.join(unknown)}")
    if any(check not in CHECKS for check in checks):
        raise ConfigError(f"campaign {path}: checks are {', '.join(CHECKS)}")


def _check_points(path: Path, points: str, template: str) -> None:
    if re.fullmatch(r"\d+\.\.(\d+|auto)", points):
        if points.endswith("auto") and not template.startswith("fail-function:"):
            raise ConfigError(f"campaign {path}: n = \"..auto\" counts the calls of a "
                              f"fail-function template; give the last point")
        return
    if not re.fullmatch(r"\d+(,\d+)*", points):
        raise ConfigError(f"campaign {path}: n is \"A..B\", \"A..auto\" or \"A,B,C\", not "
                          f"{points!r}")


def _resolve(path: Path, machine: dict) -> dict:
    folder = path.parent
    out = dict(machine)
    if "kernel" in out:
        out["kernel"] = str((folder / out["kernel"]).resolve())
    out["modules"] = [str((folder / module).resolve()) for module in out.get("modules", ())]
    return out


def _with_process(path: Path, process, machine: dict) -> dict:
    """The machine that runs [process] as init: its initrd first among the modules, the
    command line naming it (the campaign's own command line kept after)."""
    if not isinstance(process, dict) or "program" not in process or \
            set(process) - {"program", "args", "files", "seed"}:
        raise ConfigError(f"campaign {path}: [process] takes program and optionally args, "
                          f"files, seed")
    try:
        args = tuple(str(arg) for arg in process.get("args", ()))
        files = tuple((path.parent / host, str(guest)) for host, guest in
                      process.get("files", ()))
        seed = int(process.get("seed", 0))
    except (TypeError, ValueError):
        raise ConfigError(f"campaign {path}: [process] args is a list of words, files a "
                          f"list of [host, guest] pairs, seed a number") from None
    program = (path.parent / str(process["program"])).resolve()
    if program.suffix == ".c":
        program = build_program(program)
    spec = ProgramSpec(program, args, files, seed=seed, argv0=program.name)
    initrd = _initrd(spec)
    return {**machine, "modules": [str(initrd), *machine.get("modules", ())],
            "cmdline": command_line(spec, str(machine.get("cmdline", "")))}


def _initrd(spec: ProgramSpec) -> Path:
    """The spec's initrd in the build cache, named by what goes into it."""
    digest = hashlib.sha256()
    for host, guest in ((spec.program, spec.guest_path), *spec.files):
        digest.update(guest.encode() + b"\0" + read_input(host, "file", MAX_MEMBER_BYTES))
    target = cache.cache_root() / "initrds" / f"{digest.hexdigest()[:16]}.tar"
    if not cache.is_fresh(target):
        built = cache.temporary(target.parent, ".tar")
        try:
            pack_initrd([(spec.program, spec.guest_path), *spec.files], built)
            cache.publish(built, target)
        finally:
            built.unlink(missing_ok=True)
    return target


def expand_points(points: str, calls: int | None) -> list[int]:
    """The point numbers of "A..B", "A..auto" (B = calls) or "A,B,C"."""
    if ".." in points:
        first, last = points.split("..")
        return list(range(int(first), (calls if last == "auto" else int(last)) + 1))
    return [int(value) for value in points.split(",")]


def sample(points: list[int], count: int | None) -> list[int]:
    """`count` points spread evenly over the list (first and last included)."""
    if count is None or count >= len(points):
        return points
    if count <= 1:
        return points[:1]
    return sorted({points[round(i * (len(points) - 1) / (count - 1))] for i in range(count)})


def reproducer(campaign: Campaign, outcome: Outcome) -> str:
    """The `emu run` line that reruns one variant alone."""
    machine = campaign.machine
    words = ["emu", "run"]
    if "kernel" in machine:
        words.append(machine["kernel"])
    for key, option in MACHINE_KEYS.items():
        if key in ("kernel", "modules", "platform") or key not in machine:
            continue
        words += [option, str(machine[key])]
    for module in machine.get("modules", ()):
        words += ["--module", module]
    if machine.get("platform") is False:
        words.append("--no-platform")
    if campaign.checks:
        words += ["--check", ",".join(campaign.checks)]
    for spec in outcome.specs:
        words += ["--inject", spec]
    return " ".join(shlex.quote(word) for word in words)
