"""The fuzz suite: whatever a hostile user gives emu, every command ends with a documented
status, never a traceback, a death by signal, a hang or unbounded memory; status 2 prints
exactly one line (tests/fuzzing.py judges each ending).

Generated cases (Hypothesis, derandomized so CI sees the same cases; EMU_FUZZ_EXAMPLES
raises the count for a longer hunt): memory-map files with wrong types at every level,
mutated kernels (header and program-header fields, truncations, flipped bytes), foreign
ELF classes, byte orders and machines, malloc-lab traces valid and corrupted, emu traces,
and random combinations of every option of every command with awkward paths (devices,
FIFOs, directories, names that are not UTF-8). Hand-made cases live in tests/fuzz_corpus/.
Every option a later change adds joins OPTIONS below.
"""
from __future__ import annotations

import os
import stat
import struct
import tarfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emu.errors import TraceError
from emu.monitor.checks import RULE_IDS
from emu.monitor.trace import read_trace
from fuzzing import run_emu

EXAMPLES = int(os.environ.get("EMU_FUZZ_EXAMPLES", "25"))
CORPUS = Path(__file__).resolve().parent / "fuzz_corpus"
GOLDEN = Path(__file__).resolve().parent.parent / "traces" / "golden"
BUDGET = ["--max-instructions", "3000000"]
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow, HealthCheck.data_too_large])


def judge(ending, allowed=None) -> None:
    """No universal problem, and the status among `allowed` when given. The devices a case
    may name as outputs are still devices (a screenshot once replaced /dev/null)."""
    for device in ("/dev/null", "/dev/zero", "/dev/full"):
        assert stat.S_ISCHR(os.stat(device).st_mode), f"{device} is no longer a device"
    assert ending.problems() == [], (ending.problems(), ending.status, ending.err[-2000:])
    if allowed is not None:
        assert ending.status in allowed, (ending.status, ending.err[-2000:])


@pytest.fixture(scope="module")
def kernel_bytes(kernel) -> bytes:
    return kernel.read_bytes()


@pytest.fixture(scope="module")
def hello() -> Path:
    """A static Linux program (tests/programs/hello.c): the program `emu exec` runs."""
    from differential import program
    return program("hello")


@pytest.fixture
def paths(tmp_path, kernel, hello):
    """Awkward paths a user might give anywhere a path goes, and two good ones for emu exec
    and --initrd (a program, an archive holding it)."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    regular = tmp_path / "empty.bin"
    regular.write_bytes(b"")
    weird = os.fsencode(tmp_path) + b"/\xff\xfe-name"
    # The campaign's default output folder is beside it: a copy keeps the corpus clean.
    campaign = tmp_path / "tiny-campaign.toml"
    campaign.write_text((CORPUS / "tiny-campaign.toml").read_text().replace(
        "../../traces", str(CORPUS.parent.parent / "traces")))
    initrd = tmp_path / "initrd.tar"
    with tarfile.open(initrd, "w", format=tarfile.USTAR_FORMAT) as archive:
        archive.add(hello, "bin/hello")
    return {"campaign": str(campaign), "kernel": str(kernel), "missing": str(tmp_path / "missing"),
            "program": str(hello), "initrd": str(initrd),
            "directory": str(tmp_path), "dev-null": "/dev/null", "dev-zero": "/dev/zero",
            "dev-full": "/dev/full", "fifo": str(fifo), "empty": str(regular),
            "not-utf8": os.fsdecode(weird), "nested-missing": str(tmp_path / "a" / "b")}


# ---- memory-map files ------------------------------------------------------------------

SIZES = st.sampled_from(["0", "4K", "16M", "1.5G", "0x100000", "-1", "1T", "lots", "",
                         "16MiB", "2X", "9" * 30])
VALUES = st.recursive(
    st.one_of(st.integers(min_value=-2**70, max_value=2**70), SIZES, st.booleans(),
              st.floats(allow_nan=False, allow_infinity=False),
              st.sampled_from(["usable", "reserved", "acpi_nvs", "bad_memory", "weird"])),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.sampled_from(["base", "length", "type", "x"]),
                                            inner, max_size=3)),
    max_leaves=6)


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"


@st.composite
def memory_maps(draw) -> str:
    """Mostly well-formed TOML, with wrong types and keys at every level, or junk."""
    shape = draw(st.sampled_from(["regions", "regions", "regions", "array", "junk", "top"]))
    if shape == "junk":
        return draw(st.text(max_size=200))
    if shape == "top":
        return f"{draw(st.sampled_from(['region', 'regions', 'x']))} = " \
               f"{toml_value(draw(VALUES))}\n"
    if shape == "array":
        return f"region = {toml_value(draw(st.lists(VALUES, max_size=4)))}\n"
    lines = []
    regions = draw(st.lists(st.dictionaries(
        st.sampled_from(["base", "length", "type", "extra"]), VALUES, max_size=4), max_size=4))
    valid = draw(st.booleans())
    if valid:      # a real map first, so some cases boot
        lines += ['[[region]]', 'base = "1M"', 'length = "63M"', 'type = "usable"']
    for region in regions:
        lines.append("[[region]]")
        lines += [f"{key} = {toml_value(value)}" for key, value in region.items()]
    return "\n".join(lines) + "\n"


@FUZZ
@given(text=memory_maps())
def test_fuzz_memory_maps(tmp_path, kernel, text):
    path = tmp_path / "map.toml"
    path.write_text(text)
    judge(run_emu(["run", "--quiet", str(kernel), "--memmap", str(path), *BUDGET]))


# ---- kernels ---------------------------------------------------------------------------

HEADER_FIELDS = {"e_ident_class": (4, "B"), "e_ident_data": (5, "B"), "e_type": (16, "H"),
                 "e_machine": (18, "H"), "e_entry": (24, "Q"), "e_phoff": (32, "Q"),
                 "e_phentsize": (54, "H"), "e_phnum": (56, "H"), "e_shoff": (40, "Q"),
                 "e_shnum": (60, "H")}
PHDR_FIELDS = {"p_type": (0, "I"), "p_flags": (4, "I"), "p_offset": (8, "Q"),
               "p_vaddr": (16, "Q"), "p_filesz": (32, "Q"), "p_memsz": (40, "Q"),
               "p_align": (48, "Q")}
INTERESTING = st.one_of(st.integers(0, 16), st.sampled_from([0xFFFF, 0xFFFFFFFF, 2**63,
                                                              2**64 - 1, 0x1000, 0x200000,
                                                              0xFFFFFFFF80000000]),
                        st.integers(0, 2**64 - 1))


def _put(data: bytearray, offset: int, fmt: str, value: int) -> None:
    size = struct.calcsize(fmt)
    if offset + size <= len(data):
        struct.pack_into("<" + fmt, data, offset, value & ((1 << (8 * size)) - 1))


@st.composite
def mutated_kernels(draw, original: bytes) -> bytes:
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["header", "phdr", "phdr", "truncate", "flip"]))
        if kind == "header":
            offset, fmt = HEADER_FIELDS[draw(st.sampled_from(sorted(HEADER_FIELDS)))]
            _put(data, offset, fmt, draw(INTERESTING))
        elif kind == "phdr":
            phoff, = struct.unpack_from("<Q", original, 32)
            index = draw(st.integers(0, 3))
            offset, fmt = PHDR_FIELDS[draw(st.sampled_from(sorted(PHDR_FIELDS)))]
            delta = draw(st.sampled_from(["set", "add"]))
            value = draw(INTERESTING)
            at = phoff + 56 * index + offset
            if delta == "add" and at + struct.calcsize(fmt) <= len(data):
                value += struct.unpack_from("<" + fmt, data, at)[0]
            _put(data, at, fmt, value)
        elif kind == "truncate":
            del data[draw(st.integers(0, len(data))):]
        else:
            for _ in range(draw(st.integers(1, 16))):
                if data:
                    at = draw(st.integers(0, min(len(data) - 1, 8191)))
                    data[at] ^= 1 << draw(st.integers(0, 7))
    return bytes(data)


@FUZZ
@given(data=st.data())
def test_fuzz_mutated_kernels(tmp_path, kernel_bytes, data):
    path = tmp_path / "mutant.elf"
    path.write_bytes(data.draw(mutated_kernels(kernel_bytes)))
    # A mutant that still loads may crash or spin: 70-72 are fine; it must end.
    judge(run_emu(["run", "--quiet", str(path), *BUDGET]))


@FUZZ
@given(elf_class=st.integers(0, 4), data_order=st.integers(0, 3),
       machine=st.sampled_from([0, 3, 40, 62, 183, 243, 0xBEEF]),
       elf_type=st.integers(0, 5), phnum=st.integers(0, 4), tail=st.binary(max_size=512))
def test_fuzz_foreign_elf_files(tmp_path, elf_class, data_order, machine, elf_type, phnum,
                                tail):
    header = bytearray(64)
    header[:4] = b"\x7fELF"
    header[4], header[5], header[6] = elf_class, data_order, 1
    struct.pack_into("<HHIQQQIHHHHHH", header, 16, elf_type, machine, 1,
                     0xFFFFFFFF80000000, 64, 0, 0, 64, 56, phnum, 64, 0, 0)
    path = tmp_path / "foreign.elf"
    path.write_bytes(bytes(header) + tail)
    ending = run_emu(["run", "--quiet", str(path), *BUDGET])
    judge(ending, {2, 70, 71, 72} | set(range(64)))


# ---- traces ----------------------------------------------------------------------------

@st.composite
def malloclab_traces(draw) -> str:
    """A valid trace, perhaps corrupted afterwards."""
    ids = draw(st.integers(1, 8))
    live: dict[int, int] = {}
    ops = []
    for _ in range(draw(st.integers(0, 24))):
        free = [i for i in range(ids) if i not in live]
        choice = draw(st.sampled_from(["a", "r", "f"]))
        if choice == "a" and free:
            block = draw(st.sampled_from(free))
            live[block] = draw(st.integers(0, 5000))
            ops.append(f"a {block} {live[block]}")
        elif live:
            block = draw(st.sampled_from(sorted(live)))
            if choice == "r":
                live[block] = draw(st.integers(0, 5000))
                ops.append(f"r {block} {live[block]}")
            else:
                del live[block]
                ops.append(f"f {block}")
    ops += [f"f {block}" for block in live]
    lines = [str(ids), str(len(ops)), *ops]
    corruption = draw(st.sampled_from(["none", "none", "token", "drop", "add", "junk"]))
    if corruption == "token" and lines:
        at = draw(st.integers(0, len(lines) - 1))
        lines[at] = draw(st.sampled_from(["x", "-1", "a", "f 99", "r 0 -5", "a 0 9" * 3,
                                          "99999999999", "", "a 0 4294967296"]))
    elif corruption == "drop" and lines:
        del lines[draw(st.integers(0, len(lines) - 1))]
    elif corruption == "add":
        lines.insert(draw(st.integers(0, len(lines))), draw(st.sampled_from(
            ["a 0 8", "f 0", "2", "# comment"])))
    elif corruption == "junk":
        return draw(st.text(max_size=100))
    return "\n".join(lines) + "\n"


@FUZZ
@given(text=malloclab_traces())
def test_fuzz_heap_traces(tmp_path, kernel, text):
    path = tmp_path / "t.rep"
    path.write_text(text)
    ending = run_emu(["heap-replay", str(path), "--kernel", str(kernel), "--heap", "list",
                      "--max-instructions", "20000000"])
    judge(ending, {0, 1, 2})


@FUZZ
@given(lines=st.lists(st.one_of(
    st.just('{"format":"emu-trace","version":1,"kernel_sha256":"","config":{}}'),
    st.just('{"format":"emu-trace","version":2,"kernel_sha256":"","config":{}}'),
    st.just('{"type":"GuestExit","icount":5,"status":0,"reason":"exit"}'),
    st.text(max_size=40), st.binary(max_size=40).map(lambda b: b.decode("latin-1"))),
    max_size=6), raw=st.binary(max_size=64))
def test_fuzz_emu_traces_are_read_or_refused_as_traces(tmp_path, lines, raw):
    path = tmp_path / "trace.jsonl"
    path.write_bytes("\n".join(lines).encode("utf-8", "surrogateescape") + raw)
    try:
        header, events = read_trace(path)
        for _ in events:
            pass
    except TraceError:
        pass


# ---- options and paths -----------------------------------------------------------------

COUNTS = st.sampled_from(["1", "0", "-3", "lots", "3000000", "0x10", "1_000", "99" * 12])
IPS = st.sampled_from(["1000000", "100000000", "999", "0", "1e9", str(10**12), "0x5f5e100"])
KEYS = "path|ls\\n|Hello, World!|\u00e9|"
INJECT = st.sampled_from([
    "fail-function:function=kmalloc,fail-nth=1", "fail-function:function=pmm_alloc,times=3",
    "fail-function:function=nope", "ram:at=1000,type=usable,flips=64,seed=3",
    "ram:at=10,paddr=0xa0000", "ram:at=10,symbol=kmain,bit=7", "irq:at=50000,vector=255",
    "spurious-pf:at=200000", "spurious-pf:at=0", "ram:at=10,region=heap",
    "ram:at=900000,region=heap,flips=64", "disk:fault=ioerr,op=write,nth=3",
    "disk:fault=torn,sectors=8..15,land=1", "disk:fault=delay,probability=30,ticks=99",
    "disk:fault=ioerr,sectors=5..1", "bogus", "ram:at=x", ":", ""])
SWAP_SIZES = st.sampled_from(["1M", "64K", "63K", "1000", "0", "-1", "2T", "lots", "1.5M",
                              "128M", ""])
LATENCIES = st.sampled_from(["0", "1", "-1", "x", "20000", str(10**13), "0x100"])
OPTIONS = {   # every option of every command, with awkward values; new options join here
    "run": {"--memory": SIZES, "--memmap": "path|pc|tiny|fragmented|bogus",
            "--cmdline": "text", "--module": "path", "--max-instructions": COUNTS,
            "--boot-time": st.sampled_from(["0", "-5", "1700000000", str(2**70), "x"]),
            "--no-count": None, "--trace": "path", "--screenshot": "path", "--quiet": None,
            "--trace-events": st.sampled_from(["all", "exceptions,cr3,syscalls", "none", "",
                                               "Cr3Written,ports", "bogus", "tlb,,"]),
            "--trace-counters": COUNTS, "--serial-input": "path",
            "--check": st.sampled_from(["pt", "heap", "pt,heap", "bogus", ""]),
            "--allow": st.sampled_from([",".join(RULE_IDS[:2]), "NOPE", "", "write_exec"]),
            "--strict": None, "--check-every": COUNTS, "--ips": IPS, "--no-platform": None,
            "--acpi-rsdp-rev": st.sampled_from(["0", "2", "1", "x"]), "--keys": KEYS,
            "--inject": INJECT,
            "--until": st.sampled_from(["1", "100000", "heap_init", "nope", "0", "-1", "9x"]),
            "--save-snapshot": "path", "--snapshot-every": COUNTS, "--snapshot-dir": "path",
            "--resume": "path", "--gdb": st.sampled_from(["-1", "65536", "x"]),
            "--initrd": "path", "--swap": SWAP_SIZES, "--swap-file": "path",
            "--swap-latency": LATENCIES},
    "exec": {"--file": "path|:|:/etc/x|/dev/null:/etc/data|/dev/null:/a/../b|/dev/null:",
             "--kernel": "path", "--memory": SIZES, "--memmap": "path|pc|tiny|bogus",
             "--cmdline": "text", "--module": "path", "--max-instructions": COUNTS,
             "--boot-time": st.sampled_from(["0", "1700000000", str(2**70), "x"]),
             "--ips": IPS, "--no-platform": None, "--acpi-rsdp-rev": st.sampled_from(["0", "x"]),
             "--keys": KEYS, "--inject": INJECT, "--no-count": None,
             "--env": st.sampled_from(["A=1", "X=a b", "=x", "noequals", "", "A=\u00e9"]),
             "--seed": st.sampled_from(["0", "7", "-1", "x", str(2**70)]),
             "--trace": "path", "--trace-counters": COUNTS, "--check": None, "--strict": None,
             "--summary": None,
             "--swap": SWAP_SIZES, "--swap-file": "path", "--swap-latency": LATENCIES},
    "pt": {"--memory": SIZES, "--memmap": "path|pc|tiny", "--cmdline": "text",
           "--max-instructions": COUNTS, "--cr3": st.sampled_from(["0", "0x1000", "x", "-1"]),
           "--at-checkpoint": COUNTS, "--no-count": None, "--ips": IPS, "--no-platform": None,
           "--keys": KEYS, "--inject": INJECT, "--swap": SWAP_SIZES, "--swap-file": "path",
           "--swap-latency": LATENCIES},
    "heap-replay": {"--heap": st.sampled_from(["list", "chained", "all", "nope"]),
                    "--debug": None, "--bare": None, "--json": None, "--kernel": "path",
                    "--memory": SIZES, "--max-instructions": COUNTS,
                    "--heap-cache": st.sampled_from(["0", "16", "8192", "8193", "-1", "x"])},
    "replay": {"--kernel": "path", "--search": "path",
               "--compare": st.sampled_from(["all", "mm", "Cr3Written/old", "Nope", "",
                                             "TlbFlush/x", "GuestExit,PortAccess/value"]),
               "--set": st.sampled_from(["boot_time=1800000000", "ips=1000000", "nope=1",
                                         "cmdline=test=int3", "keys=x", "memory=0"]),
               "--seed": st.sampled_from(["inject.0=7", "inject.9=1", "x", "inject.0=y", ""])},
    "campaign": {"--out": "path", "--workers": COUNTS, "--sample": COUNTS, "--no-snapshot": None,
                 "--executor": "local|dask|bogus", "--scheduler": "local|tcp://127.0.0.1:1|x"},
    "trace": {"--perfetto": None},
    "build": {},
}
TEXTS = st.one_of(st.text(max_size=30), st.sampled_from(["test=int3", "pmm=buddy",
                                                         "heap=slab", "selftest=pmm",
                                                         "init=/bin/hello", "init=/bin/nope",
                                                         "init=/bin/hello -- a b",
                                                         "\udcff\udcfe", "a\u00e9\u4e2d"]))


@st.composite
def command_lines(draw, paths: dict) -> list:
    command = draw(st.sampled_from(sorted(OPTIONS)))
    argv = [command]
    if command in ("run", "pt"):
        argv += draw(st.sampled_from([[], [paths["kernel"]], [paths[draw(st.sampled_from(
            sorted(paths)))]]]))
    if command == "heap-replay":
        argv.append(draw(st.sampled_from([paths[name] for name in sorted(paths)] +
                                         [str(CORPUS / "small.rep")])))
    if command == "replay":
        argv.append(draw(st.sampled_from([paths[name] for name in sorted(paths)] +
                                         [str(GOLDEN / "boot.jsonl")])))
    if command == "trace":
        argv += ["export", draw(st.sampled_from([paths[name] for name in sorted(paths)] +
                                                [str(GOLDEN / "boot.jsonl")])),
                 draw(st.sampled_from([paths[name] for name in sorted(paths)      # inputs
                                       if name not in ("kernel", "campaign")]))]  # stay
    if command == "campaign":
        argv.append(draw(st.sampled_from([paths[name] for name in sorted(paths)])))
    options = sorted(OPTIONS[command])
    chosen = draw(st.lists(st.sampled_from(options), max_size=5, unique=True)) if options else []
    for option in chosen:
        kind = OPTIONS[command][option]
        if kind is None:
            argv.append(option)
        elif kind == "text":
            argv += [option, draw(TEXTS)]
        elif isinstance(kind, str):
            choices = kind.split("|")
            pick = draw(st.sampled_from(choices))
            argv += [option, paths[draw(st.sampled_from(sorted(paths)))] if pick == "path"
                     else pick]
        else:
            argv += [option, draw(kind)]
    if command in ("run", "pt") and "--no-count" not in argv and \
            "--max-instructions" not in argv:
        argv += BUDGET
    if command == "exec":           # PROGRAM [ARGS...] come last: they are the program's
        argv.append(draw(st.sampled_from([paths["program"]] * 4 + sorted(paths.values()))))
        argv += draw(st.lists(TEXTS, max_size=3))
    return argv


@FUZZ
@given(data=st.data())
def test_fuzz_option_combinations(paths, data):
    argv = data.draw(command_lines(paths))
    judge(run_emu(argv))
    assert Path(paths["kernel"]).read_bytes()[:4] == b"\x7fELF"     # no input overwritten


# ---- the corpus --------------------------------------------------------------------------

def _corpus_cases() -> list:
    out = []
    for path in sorted(CORPUS.glob("*.toml")):
        out.append(pytest.param(["run", "--quiet", "--memmap", str(path), *BUDGET],
                                id=path.name))
    for path in sorted(CORPUS.glob("*.rep")):
        out.append(pytest.param(["heap-replay", str(path), "--heap", "list",
                                 "--max-instructions", "20000000"], id=path.name))
    return out


@pytest.mark.parametrize("argv", _corpus_cases())
def test_corpus(argv):
    judge(run_emu(argv))
