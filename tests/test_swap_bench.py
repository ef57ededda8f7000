"""bench/swap.py --quick runs to the end and writes its JSON. The shape is checked and what
holds anywhere: both throughput runs swapped the same pages, the swap-in cost is a
deterministic count above a page copy, every policy swapped at least as often as Belady's
OPT, writes went out in clusters, a clock step is a positive count. Timings are not
asserted."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench" / "swap.py"


def test_quick_swap_benchmark_writes_results(tmp_path):
    out = tmp_path / "swap_results.json"
    proc = subprocess.run([sys.executable, str(BENCH), "--quick", "--json", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "| pages swapped per host second, checker on |" in proc.stdout
    results = json.loads(out.read_text())
    on, off = results["throughput"]["checker on"], results["throughput"]["checker off"]
    assert on["pages_swapped"] == off["pages_swapped"] > 256
    assert on["pages_per_second"] > 0 and results["throughput"]["checker_cost_ratio"] > 0
    swap_in = results["swap_in"]
    assert swap_in["faults"] > 0 and 0 < swap_in["min"] <= swap_in["median"] <= swap_in["max"]
    assert swap_in["min"] > 512          # the fault handler and the page-table update at least
    for row in results["policies"].values():
        assert all(row[policy] >= row["opt"] > 0 for policy in ("clock", "fifo", "random"))
        assert row["references"] > row["pages"] > 64
    completion = results["completion"]
    assert completion and all(row["median_us"] > 0 for row in completion.values())
    assert any(kind.endswith("-page writes") and int(kind.split("-")[0]) > 1
               for kind in completion)                 # writes go out in clusters
    clock = results["clock_step"]
    assert clock["steps"] > 0 and 20 < clock["min"] <= clock["median"] <= clock["max"]
