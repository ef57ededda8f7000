"""Fault-injection campaigns (emu campaign, emu/inject/): the campaign file is checked, a
correct kernel passes every point, a planted unchecked allocation is found, grouped and
reduced to a reproducer that fails alone, the local and Dask executors agree, and the pytest
plugin runs a workload with injections."""
from __future__ import annotations

import re
import shlex
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from emu.build import build_guest
from emu.cli import main
from emu.errors import ConfigError
from emu.inject.campaign import expand_points, load_campaign, sample
from emu.inject.runner import clean_run, run_campaign
from emu.inject.variant import minimize, run_variant

TRACE = Path(__file__).resolve().parent.parent / "traces" / "malloclab" / "short1-bal.rep"
CAMPAIGN = f"""
name = "kmalloc after mm_init"
[machine]
cmdline = "replay=1 heap=list"
modules = ["{TRACE}"]
checks = ["pt", "heap"]
KERNEL
[injection]
template = "fail-function:function=kmalloc,after=1,fail-nth={{n}}"
n = "1..auto"
[accept]
exit = [0, 1]
output = ['^replay: error: op \\d+ \\(a \\d+ \\d+\\): allocation returned 0x0$',
          '^replay: heap=list ops=12 errors=1 ']
"""


def campaign_file(tmp_path: Path, kernel: Path | None = None, text: str = CAMPAIGN) -> Path:
    path = tmp_path / "kmalloc.toml"
    path.write_text(text.replace("KERNEL", f'kernel = "{kernel}"' if kernel else ""))
    return path


@pytest.fixture(scope="module")
def planted_kernel() -> Path:
    return build_guest(defines={"PLANT_BUG": "201"})


# --- the file -------------------------------------------------------------------------------

@pytest.mark.parametrize("change, says", [
    (("[injection]", "[bogus]\n[injection]"), "unknown section or key bogus"),
    (('n = "1..auto"', 'n = "1..x"'), 'n is "A..B", "A..auto" or "A,B,C"'),
    (("fail-nth={n}", "fail-nth=3"), "must contain {n}"),
    (("fail-function:function=kmalloc,after=1,fail-nth={n}", "ram:at={n},paddr=0"),
     '"..auto" counts the calls of a fail-function template'),
    (("checks = [\"pt\", \"heap\"]", "checks = [\"nope\"]"), "checks are pt, heap"),
    (("cmdline =", "colour = 1\ncmdline ="), "[machine] takes"),
    (("exit = [0, 1]", "exit = [0, 1]\nwhatever = 2"), "[accept] takes exit, output, panic, reject"),
    (("'^replay: heap", "'(^replay: heap"), "is not a regex"),
    (("fail-function:", "fail-functon:"), "unknown kind 'fail-functon'"),
    (("[machine]", "[machine\n"), "not TOML"),
])
def test_a_bad_campaign_file_is_one_line(tmp_path, change, says):
    path = campaign_file(tmp_path, text=CAMPAIGN.replace(*change))
    with pytest.raises(ConfigError) as info:
        load_campaign(path)
    assert says in str(info.value) and "\n" not in str(info.value)


def test_points_and_samples():
    assert expand_points("1..auto", 4) == [1, 2, 3, 4]
    assert expand_points("3..5", None) == [3, 4, 5] and expand_points("2,7", None) == [2, 7]
    assert sample(list(range(1, 101)), 5) == [1, 26, 51, 75, 100]   # round half to even
    assert sample([1, 2], 5) == [1, 2] and sample([4, 5, 6], 1) == [4]


# --- running ---------------------------------------------------------------------------------

def test_the_correct_kernel_survives_every_kmalloc_failure(tmp_path, kernel):
    report = run_campaign(load_campaign(campaign_file(tmp_path)), tmp_path / "out",
                          workers=2)
    assert report.calls == 6 and len(report.outcomes) == 6
    assert report.counts() == {"passed": 6} and report.groups == []
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "| passed | 6 |" in summary and "(the clean run made 6 calls)" in summary
    assert len((tmp_path / "out" / "results.jsonl").read_text().splitlines()) == 6


def test_a_planted_unchecked_allocation_is_found_and_reproduced(tmp_path, planted_kernel,
                                                                 capsys):
    report = run_campaign(load_campaign(campaign_file(tmp_path, planted_kernel)),
                          tmp_path / "out", workers=2)
    (group,) = report.groups
    kind, where = group.signature
    assert kind == "panic" and "#PF" in where
    # The trace's six allocations are 2040, 2040, 48, 4072, 4072, 4072 bytes: a failure of
    # any but the 48-byte one hits the stamp (planted bug 201 stamps blocks over 1 KiB).
    assert sorted(outcome.n for outcome in group.outcomes) == [1, 2, 4, 5, 6]
    assert report.counts() == {"panic": 5, "passed": 1}
    assert group.reproduces and group.specs == (
        "fail-function:function=kmalloc,after=1,fail-nth=1",)
    assert (tmp_path / "out" / group.trace).exists()
    words = shlex.split(group.command)
    assert words[:3] == ["emu", "run", str(planted_kernel)]
    capsys.readouterr()
    status = main(words[1:])                        # the one line, alone: it fails again
    printed = capsys.readouterr()
    assert status == 1 and "panic: unhandled exception: #PF" in printed.out + printed.err


def test_delta_debugging_keeps_only_the_injection_that_matters(tmp_path, planted_kernel):
    campaign = load_campaign(campaign_file(tmp_path, planted_kernel))
    job, _, _ = clean_run(campaign)
    specs = ("irq:at=400000,vector=0xff", "fail-function:function=kmalloc,after=1,fail-nth=2",
             "ram:at=1000,paddr=0x8000000,bit=1")
    failing = run_variant(job, 0, 0, specs)
    assert failing.kind == "panic"
    assert minimize(job, failing) == (specs[1],)


def _outcomes(report) -> list[dict]:
    return [{**outcome.to_dict(), "output": outcome.extra.get("output")}
            for outcome in report.outcomes]


@pytest.mark.parametrize("template, points", [
    ("fail-function:function=kmalloc,after=1,fail-nth={n}", "1..auto"),
    ("ram:at={n},region=heap,flips=8,seed=3", "300000,420000,560000"),
    ("irq:at={n},vector=0x30", "250000,500000"),
])
def test_variants_from_a_snapshot_end_as_fresh_boots_do(tmp_path, planted_kernel, template,
                                                        points):
    """Same class, detail, instruction count and serial output, variant for variant, on a
    kernel with a planted bug (so failures are compared too), with one worker so that
    every variant after the first reuses the machine its predecessor ran on."""
    text = CAMPAIGN.replace("fail-function:function=kmalloc,after=1,fail-nth={{n}}",
                            template.replace("{n}", "{{n}}")).replace('"1..auto"',
                                                                      f'"{points}"')
    campaign = load_campaign(campaign_file(tmp_path, planted_kernel, text))
    fresh = run_campaign(campaign, tmp_path / "fresh", workers=1, snapshot=False)
    started = run_campaign(campaign, tmp_path / "snap", workers=1, snapshot=True)
    assert _outcomes(started) == _outcomes(fresh)
    assert len(started.outcomes) >= 2
    if template.startswith("fail-function"):
        assert {outcome.kind for outcome in fresh.outcomes} == {"panic", "passed"}


def test_the_start_point_is_before_every_injection():
    from emu.inject.runner import start_point
    job = {"counted": ["kmalloc", None, 1]}
    calls = [100, 250, 900]
    nth = "fail-function:function=kmalloc,after=1,fail-nth={}".format
    assert start_point(job, (nth(1),), calls) == (100, 0)
    assert start_point(job, (nth(3),), calls) == (900, 2)
    assert start_point(job, (nth(7),), calls) == (900, 2)      # never fails: the last
    assert start_point(job, ("fail-function:function=kmalloc,after=1,probability=5",),
                       calls) == (100, 0)
    assert start_point(job, ("fail-function:function=kfree,fail-nth=2",), calls) == (0, 0)
    assert start_point(job, (nth(3), "ram:at=300,paddr=0"), calls) == (299, 2)
    assert start_point(job, ("disk:fault=ioerr,nth=1",), calls) == (0, 0)
    assert start_point(job, ("irq:at=0,vector=0x30",), []) == (0, 0)


def test_the_command_line_runs_a_sample(tmp_path, capsys):
    for boot_each in ([], ["--no-snapshot"]):
        status = main(["campaign", str(campaign_file(tmp_path)), "--sample", "2",
                       "--workers", "1", "--out", str(tmp_path / "o"), *boot_each])
        err = capsys.readouterr().err
        assert status == 0 and "--- 2 runs: passed 2" in err
    assert main(["campaign", str(tmp_path / "missing.toml")]) == 2


@pytest.mark.slow
def test_local_and_dask_executors_agree(tmp_path, planted_kernel):
    campaign = load_campaign(campaign_file(tmp_path, planted_kernel))
    local = run_campaign(campaign, tmp_path / "local", workers=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # Dask's own deprecation notices
        dask = run_campaign(campaign, tmp_path / "dask", executor="dask", workers=2)
    assert [o.to_dict() for o in local.outcomes] == [o.to_dict() for o in dask.outcomes]
    assert [g.signature for g in local.groups] == [g.signature for g in dask.groups]


# --- the pytest plugin --------------------------------------------------------------------------

def test_the_plugin_imports_nothing_heavy():
    code = ("import sys, emu.inject.pytest_plugin; "
            "print(sorted(m for m in ('unicorn', 'capstone', 'elftools', 'emu.machine') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "[]", out.stderr


def test_the_plugin_runs_a_workload_with_injections(pytester, kernel):
    path = campaign_file(pytester.path)
    pytester.makepyfile(f"""
        import pytest
        from emu.inject.pytest_plugin import campaign_points

        @pytest.mark.emu(cmdline="replay=1 heap=list", modules=[{str(TRACE)!r}])
        def test_third_kmalloc_fails(emu_run):
            run = emu_run(inject=["fail-function:function=kmalloc,after=1,fail-nth=3"],
                          checks=("pt", "heap"))
            assert run.end == "exit" and run.exit_value == 1
            assert "allocation returned 0x0" in run.output
            assert len(run.injections) == 1 and not run.violations and not run.findings

        @pytest.mark.emu(cmdline="replay=1 heap=list", modules=[{str(TRACE)!r}])
        @pytest.mark.parametrize("spec", campaign_points({str(path)!r}, sample=2))
        def test_points(emu_run, spec):
            assert emu_run(inject=[spec]).end == "exit"
    """)
    result = pytester.runpytest_subprocess("-q", "--emu-kernel", str(kernel))
    result.assert_outcomes(passed=3)
    disabled = pytester.runpytest_subprocess("-q", "-p", "no:emu")
    assert "fixture 'emu_run' not found" in disabled.stdout.str()


# --- a process workload ---------------------------------------------------------------------

PROGRAMS = Path(__file__).resolve().parent / "programs"
PROCESS_CAMPAIGN = f"""
name = "kmalloc while a process runs"
[machine]
checks = ["pt"]
KERNEL
[process]
program = "{PROGRAMS / 'mm_workload.c'}"
[injection]
template = "fail-function:function=kmalloc,after=5,fail-nth={{n}}"
n = "1..auto"
[accept]
output = ['^init: exited with wait status 0x(0|300|9)$',
          '^\\S*mm_workload-[0-9a-f]+\\[\\d+\\]: out of memory at .*: killed \\S+\\[\\d+\\], RSS \\d+ KiB, the largest of \\d+ processes$']
"""


def test_a_process_campaign_survives_allocation_failures(tmp_path):
    campaign = load_campaign(campaign_file(tmp_path, text=PROCESS_CAMPAIGN))
    report = run_campaign(campaign, tmp_path / "out", workers=2, sample_count=4)
    assert report.calls > 20 and len(report.outcomes) == 4
    assert report.counts() == {"passed": 4}
    assert "init=/bin/mm_workload-" in campaign.machine["cmdline"]
    assert campaign.machine["modules"][0].endswith(".tar")


def test_a_process_campaign_refuses_a_leaking_kernel(tmp_path):
    """Planted bug 301 keeps unmapped user frames: the kernel's line that frames did not
    come back after the last process is not an accepted output (and the checker's process
    rules see the leak first), so even the clean run fails."""
    leaking = build_guest(defines={"PLANT_BUG": "301"})
    campaign = load_campaign(campaign_file(tmp_path, leaking, PROCESS_CAMPAIGN))
    with pytest.raises(ConfigError, match="fails without injection .*(USER_FRAME_LEAK|frames did not come back)"):
        run_campaign(campaign, tmp_path / "out", workers=1, sample_count=1)


@pytest.mark.parametrize("process, says", [
    ('args = ["x"]', "[process] takes program"),
    ('program = "p.c"\ncolour = 1', "[process] takes program"),
    ('program = "p.c"\nfiles = [1]', "files a list of [host, guest] pairs"),
])
def test_a_bad_process_section_is_one_line(tmp_path, process, says):
    path = tmp_path / "c.toml"
    path.write_text(f'[process]\n{process}\n[injection]\ntemplate = "fail-function:'
                    f'function=kmalloc,fail-nth={{n}}"\nn = "1..3"\n')
    with pytest.raises(ConfigError, match=re.escape(says)):
        load_campaign(path)


@pytest.mark.slow
def test_process_variants_from_a_snapshot_end_as_fresh_boots_do(tmp_path):
    """The process workload has the tick running (preemption): a variant may end with an
    interrupt held, and the next one, restored from a snapshot, must not inherit it."""
    text = PROCESS_CAMPAIGN.replace('n = "1..auto"', 'n = "122..128"')
    campaign = load_campaign(campaign_file(tmp_path, text=text))
    fresh = run_campaign(campaign, tmp_path / "fresh", workers=1, snapshot=False)
    restored = run_campaign(campaign, tmp_path / "restored", workers=1)
    assert len(fresh.outcomes) == 7 and fresh.counts() == {"passed": 7}
    assert _outcomes(restored) == _outcomes(fresh)
