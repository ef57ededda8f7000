"""bench/pmm.py --quick runs to the end and writes its JSON. Only the shape is checked (and
that instruction counts add up): timings on a shared machine are not something a test may
assert, and whether the PMMs meet their target is the benchmark's report, not a test."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench" / "pmm.py"


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value) and value > 0


def test_quick_pmm_benchmark_writes_results(tmp_path):
    out = tmp_path / "pmm_results.json"
    proc = subprocess.run([sys.executable, str(BENCH), "--quick", "--json", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "| PMM | blocks |" in proc.stdout          # the Markdown table was printed

    results = json.loads(out.read_text())
    assert results["quick"] is True and results["repeats"] >= 3
    assert set(results["pair_cost"]) == {"bitmap", "buddy"}
    for pmm, orders in results["pair_cost"].items():
        assert set(orders) == {"order0", "order4"}, pmm
        for order, cost in orders.items():
            for key in ("instructions_per_pair", "loop_instructions_per_pair",
                        "pmm_instructions_per_pair"):
                assert _positive(cost[key]), (pmm, order, key, cost[key])
            assert cost["pmm_instructions_per_pair"] < cost["instructions_per_pair"]
            i1, i2 = cost["instructions"]
            assert 0 < i1 < i2 and all(_positive(s) for s in cost["seconds"])
        assert isinstance(results["target"]["met"][pmm], bool)
        boot = results["boot_64g"][pmm]
        assert boot["memory"] == 64 << 30
        for key in ("instructions", "seconds", "mips"):
            assert _positive(boot[key]), (pmm, key, boot[key])
    for name, samples in results["samples_seconds"].items():
        assert len(samples) == results["repeats"], name
        assert all(_positive(s) for s in samples), name
