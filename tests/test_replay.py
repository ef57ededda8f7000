"""`emu replay`: golden traces replay exactly; a changed kernel or input is caught at the
first event that differs, with a report that names the event, the instruction and the
function; a trace header holds everything needed to rerun, and bad replays are one line."""
from __future__ import annotations

import importlib.util
import json
import re
import shutil
from pathlib import Path

import pytest

from emu.build import build_guest, guest_source_dir
from emu.cli import main
from emu.monitor.trace import read_header, read_trace
from emu.replay import compare
from emu.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "traces" / "golden"
UPDATE = "python traces/golden/update.py"


def _recipes() -> list[str]:
    """Every golden trace update.py records: `emu run` recipes and `emu exec` programs."""
    spec = importlib.util.spec_from_file_location("golden_update", GOLDEN / "update.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return [*module.RECIPES, *module.PROGRAMS]


def replay(capsys, *argv: str) -> tuple[int, str, str]:
    status = main(["replay", *map(str, argv)])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.mark.parametrize("name", sorted(_recipes()))
def test_every_golden_trace_replays_exactly(capsys, name):
    trace = GOLDEN / f"{name}.jsonl"
    assert trace.is_file(), f"golden trace {name} missing: run `{UPDATE} {name}`"
    status, out, err = replay(capsys, trace)
    assert status == 0, f"{name} diverged; if the change was meant, run `{UPDATE}`\n{out}{err}"
    header, events = read_trace(trace)
    count = sum(1 for _ in events)
    assert f"replay matched: {count:,} events compared (all)" in out


def test_the_header_holds_everything_needed_to_rerun(kernel, tmp_path, capsys):
    trace = tmp_path / "run.jsonl"
    module = ROOT / "traces" / "malloclab" / "short1-bal.rep"
    assert main(["run", "--quiet", str(kernel), "--trace", str(trace), "--module", str(module),
                 "--cmdline", "replay=1 heap=list", "--ips", "50000000", "--keys", "ab",
                 "--acpi-rsdp-rev", "0", "--check", "heap"]) == 0
    capsys.readouterr()
    header = read_header(trace)
    assert header["version"] == 2
    assert header["kernel"]["source"] == "file" and header["kernel"]["path"] == str(kernel)
    config = header["config"]
    assert (config["ips"], config["keys"], config["acpi_rsdp_revision"], config["platform"]) == \
        (50_000_000, "ab", 0, True)
    assert header["inputs"] == [{"field": "modules", "index": 0, "path": str(module),
                                 "name": module.name,
                                 "sha256": __import__("hashlib").sha256(
                                     module.read_bytes()).hexdigest()}]
    assert header["run"]["checks"] == ["heap"]
    assert header["harness"]["unicorn"] == "2.1.4" and "emu" in header["harness"]
    assert replay(capsys, trace)[0] == 0


def test_a_different_boot_time_diverges_at_the_first_output_that_depends_on_it(capsys):
    status, out, err = replay(capsys, GOLDEN / "boot.jsonl", "--set", "boot_time=1800000000")
    assert status == 75
    # "boot time: 1700000000" against "1800000000": the second digit is the first difference
    assert "recorded: PortAccess" in out and "value=0x37" in out.split("observed")[0]
    observed = out.split("observed: ")[1].splitlines()[0]
    assert observed.startswith("PortAccess") and "port=0x3f8" in observed and "value=0x38" in observed
    assert "| boot time: 18" in out
    assert "serial_sink" in out and "kprintf" in out          # RIP and backtrace symbolized
    assert "last matching events:" in out and "registers:" in out


def test_a_different_seed_diverges_at_the_first_decision_it_changes(kernel, tmp_path, capsys):
    """kmalloc fails with probability 50% from a seeded generator: a rerun with another seed
    matches up to the first call whose decision differs, and the report names that call."""
    from emu.inject.knobs import Decider, Knobs
    first = next(n for n, (a, b) in enumerate(zip(
        *(iter(Decider(Knobs(probability=50, seed=s)).should_fail, None) for s in (1, 3))), 1)
        if a != b)
    trace = tmp_path / "seeded.jsonl"
    main(["run", "--quiet", str(kernel), "--trace", str(trace), "--module",
          str(ROOT / "traces" / "malloclab" / "short1-bal.rep"), "--cmdline",
          "replay=1 heap=chained", "--inject", "fail-function:function=kmalloc,probability=50,"
          "seed=1"])
    capsys.readouterr()
    assert read_header(trace)["seeds"] == {"inject.0": 1}
    assert replay(capsys, trace)[0] == 0
    status, out, _ = replay(capsys, trace, "--seed", "inject.0=3")
    assert status == 75
    pair = out.split("recorded: ")[1].splitlines()[:2]
    assert any(line.split("observed: ")[-1].startswith("Injection") and
               f"detail=call {first} from" in line for line in pair), pair
    if pair[0].startswith("Injection"):         # seed 1 failed the call, seed 3 did not
        assert f"passed instruction {int(pair[0].split('@')[1].split()[0]):,} without" in out
    status, _, err = replay(capsys, trace, "--seed", "inject.1=3")
    assert status == 2 and "no such seed; it has inject.0" in err


@pytest.fixture(scope="module")
def edited_kernel(tmp_path_factory) -> Path:
    """The project's kernel with one edit: vmm_walk_user (which unmaps a process's pages)
    flushes page 0 before its real work."""
    tree = tmp_path_factory.mktemp("guest-edit") / "guest"
    shutil.copytree(guest_source_dir(), tree)
    paging = tree / "mm" / "paging.c"
    text = paging.read_text()
    anchor = "void *ctx)\n{\n    walk_user(root, start, end, fn, ctx, false);"
    assert text.count(anchor) == 1
    paging.write_text(text.replace(anchor, anchor.replace("    walk_user(",
                                                          "    invlpg(0);\n    walk_user(")))
    return build_guest(source_dir=tree, build_dir=tree.parent / "build")


def test_an_edited_function_is_named_by_the_divergence_report(capsys, edited_kernel):
    status, out, err = replay(capsys, GOLDEN / "process-brk.jsonl", "--kernel", edited_kernel,
                              "--compare", "mm")
    assert status == 75, out + err
    assert "another kernel build" in err
    recorded = out.split("recorded: ")[1].splitlines()[0]
    observed = out.split("observed: ")[1].splitlines()[0]
    assert recorded != observed
    at = out.split("observed: ")[1].splitlines()[1]
    assert re.search(r"\w+\+0x[0-9a-f]+", at)          # the function, symbolized
    assert re.search(r"\((\w+)\.[ch]:\d+\)", at)      # with its source line


def test_the_mm_comparison_ignores_moved_code_where_all_does_not(capsys, edited_kernel):
    status, out, _ = replay(capsys, GOLDEN / "boot.jsonl", "--kernel", edited_kernel)
    assert status == 75            # the edit moved code: RIPs and counts differ
    status, out, _ = replay(capsys, GOLDEN / "boot.jsonl", "--kernel", edited_kernel,
                            "--compare", "mm")
    assert status == 0, out
    assert "events compared (mm)" in out


def test_a_trace_cut_short_replays_up_to_its_end(tmp_path, capsys):
    lines = (GOLDEN / "boot.jsonl").read_text().splitlines()
    cut = tmp_path / "cut.jsonl"
    cut.write_text("\n".join(lines[:1000]) + "\n")
    status, out, _ = replay(capsys, cut)
    assert status == 0
    assert "999 events compared" in out and "cut short" in out


def test_a_recorded_event_the_rerun_never_makes_is_a_divergence(tmp_path, capsys):
    lines = (GOLDEN / "boot.jsonl").read_text().splitlines()
    extra = json.loads(lines[-2])
    lines.insert(-1, json.dumps(dict(extra, icount=extra["icount"] + 1)))
    forged = tmp_path / "forged.jsonl"
    forged.write_text("\n".join(lines) + "\n")
    status, out, _ = replay(capsys, forged)
    assert status == 75
    assert "observed: GuestExit" in out


def _one_line_error(capsys, *argv) -> str:
    status, out, err = replay(capsys, *argv)
    assert status == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("emu: error:"), err
    return lines[0]


def test_bad_replays_are_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)         # the recorded relative path leads nowhere from here
    golden = (GOLDEN / "heap-replay.jsonl").read_text()
    moved = tmp_path / "elsewhere.jsonl"
    moved.write_text(golden)
    assert "short1-bal.rep" in _one_line_error(capsys, moved) and "--search" in \
        _one_line_error(capsys, moved)
    changed = tmp_path / "short1-bal.rep"
    changed.write_text("1\n1\na 0 8\n")
    message = _one_line_error(capsys, moved, "--search", tmp_path)
    assert "SHA-256" in message
    shutil.copy(ROOT / "traces" / "malloclab" / "short1-bal.rep", changed)
    assert replay(capsys, moved, "--search", tmp_path)[0] == 0
    assert "no event type" in _one_line_error(capsys, moved, "--compare", "Nope")
    assert "no field" in _one_line_error(capsys, moved, "--compare", "TlbFlush/nope")
    assert "FIELD=VALUE" in _one_line_error(capsys, moved, "--set", "kernel=x")
    old = tmp_path / "v1.jsonl"
    old.write_text(json.dumps({"format": "emu-trace", "version": 1}) + "\n")
    assert "version 1" in _one_line_error(capsys, old)


def test_a_trace_of_the_projects_kernel_names_no_local_path():
    header = read_header(GOLDEN / "boot.jsonl")
    assert header["kernel"]["source"] == "guest"
    assert "/" not in header["kernel"]["path"] and "/" not in header["config"]["kernel"]
    for name in _recipes():                       # inputs relative to the repository
        text = (GOLDEN / f"{name}.jsonl").read_text()
        assert str(ROOT) not in text and str(Path.home()) not in text, name


def test_a_golden_process_run_pages_on_demand_in_user_mode():
    """The process golden trace is worth its place: user-mode page faults the kernel's
    demand paging resolved, the program's initrd kept beside it and named by hash."""
    header, events = read_trace(GOLDEN / "process-brk.jsonl")
    faults = [e for e in events if e["type"] == "ExceptionDelivered" and e["vector"] == 14
              and e["cpl"] == 3]
    assert len(faults) >= 10
    (initrd,) = header["inputs"]
    assert initrd["path"] == "traces/golden/process-brk.initrd.tar" and initrd["sha256"]


def test_compare_specs():
    assert compare.parse("all").types is None
    mm = compare.parse("mm")
    assert mm.selects("Cr3Written") and not mm.selects("PortAccess")
    assert mm.key({"type": "Cr3Written", "icount": 5, "rip": 1, "old": 2, "new": 3}) == \
        {"type": "Cr3Written", "new": 3}
    spec = compare.parse("PortAccess/port/value,Marker")
    assert spec.key({"type": "Marker", "icount": 1, "value": 2}) == \
        {"type": "Marker", "icount": 1, "value": 2}
    with pytest.raises(ConfigError):
        spec.narrowed_to(["Marker"])
    assert compare.parse("all").narrowed_to(["Marker"]).selects("Marker")
