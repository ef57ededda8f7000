"""bench/run.py --quick runs to the end and writes its JSON. Only the shape is checked:
timings on a shared machine are not something a test may assert."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

RUN = Path(__file__).resolve().parent.parent / "bench" / "run.py"


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value) and value > 0


def test_quick_benchmark_writes_results(tmp_path):
    out = tmp_path / "results.json"
    proc = subprocess.run([sys.executable, str(RUN), "--quick", "--json", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "| benchmark |" in proc.stdout          # the Markdown table was printed

    results = json.loads(out.read_text())
    assert results["quick"] is True
    assert results["repeats"] >= 3
    for key in ("compute", "page_faults", "bare_reference", "samples_seconds"):
        assert key in results

    compute = results["compute"]
    for key in ("instructions", "monitor_seconds", "bare_seconds", "monitor_mips",
                "bare_mips", "ratio"):
        assert _positive(compute[key]), (key, compute[key])
    assert "primes below" in compute["guest_result"]

    faults = results["page_faults"]
    for key in ("faults", "seconds", "faults_per_second", "instructions_per_fault",
                "ratio_to_target", "ratio_to_full_round_trip"):
        assert _positive(faults[key]), (key, faults[key])

    assert _positive(results["bare_reference"]["ratio"])
    for name, samples in results["samples_seconds"].items():
        assert len(samples) == results["repeats"], name
        assert all(_positive(s) for s in samples), name


def test_quick_platform_benchmark_writes_results(tmp_path):
    out = tmp_path / "platform.json"
    script = RUN.parent / "pc_platform.py"
    proc = subprocess.run([sys.executable, str(script), "--quick", "--json", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = json.loads(out.read_text())
    for part in ("compute", "page_faults"):
        assert _positive(results[part]["with_platform_seconds"])
        assert _positive(results[part]["without_platform_seconds"])
    timer = results["timer"]
    assert timer["virtual_seconds"] == 5 and _positive(timer["us_per_timer_interrupt"])
    assert "per timer interrupt" in proc.stdout


def test_quick_snapshot_and_trace_cost_benchmarks_write_results(tmp_path):
    for script, check in (("snapshot.py", _snapshot_shape), ("trace_cost.py", _trace_shape)):
        out = tmp_path / f"{script}.json"
        proc = subprocess.run([sys.executable, str(RUN.parent / script), "--quick", "--json",
                               str(out)], capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        check(json.loads(out.read_text()))


def _snapshot_shape(results: dict) -> None:
    for name in ("256 MiB", "64 GiB"):
        machine = results["machines"][name]
        for key in ("resident_bytes", "take_seconds", "restore_seconds", "file_bytes"):
            assert _positive(machine[key]), (name, key)


def _trace_shape(results: dict) -> None:
    for name in ("compute", "page faults", "heap"):
        workload = results["workloads"][name]
        assert _positive(workload["ratio"]) and _positive(workload["trace_bytes"])
        assert sum(s["bytes"] for s in workload["by_type"].values()) < workload["trace_bytes"]
        assert _positive(workload["zstd_ratio"]) and _positive(workload["filtered_ratio"])
        # compressed and filtered traces are smaller than the full one
        assert workload["zstd_bytes"] < workload["trace_bytes"]
        assert workload["filtered_bytes"] < workload["trace_bytes"]
        assert all(s["lines"] <= s["events"] for s in workload["by_type"].values())
