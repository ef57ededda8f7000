"""bench/heap.py --quick runs to the end and writes its JSON. Only the shape and the sanity
of the figures are checked: whether an allocator meets its targets is the benchmark's
report, not a test's verdict."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

HEAP_BENCH = Path(__file__).resolve().parent.parent / "bench" / "heap.py"
TRACES = Path(__file__).resolve().parent.parent / "traces" / "malloclab"
HEAPS = ["list", "buddy", "slab", "chained"]


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value) and value > 0


@pytest.mark.skipif(not TRACES.is_dir(), reason=f"no malloc-lab traces in {TRACES}")
def test_quick_heap_benchmark_writes_results(tmp_path, kernel):
    out = tmp_path / "heap_results.json"
    proc = subprocess.run([sys.executable, str(HEAP_BENCH), "--quick", "--json", str(out),
                           "--kernel", str(kernel)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "| trace | list | buddy | slab | chained | TLSF | o1heap | liballoc |" \
        in proc.stdout
    assert "slab path" in proc.stdout and "Best mean utilization" in proc.stdout

    results = json.loads(out.read_text())
    assert results["quick"] is True
    assert results["heaps"] == HEAPS
    assert results["traces"] == ["short1-bal", "short2-bal"]
    for heap in HEAPS:
        for trace in results["traces"]:
            run = results["results"][heap][trace]
            assert run["mode"] == "bare" and run["ok"], (heap, trace, run["integrity"])
            assert 0 < run["utilization"] <= 1
            for key in ("instructions", "instructions_per_op", "inside_instructions",
                        "inside_instructions_per_call", "peak_payload", "peak_footprint"):
                assert _positive(run[key]), (heap, trace, key, run[key])
        assert 0 < results["mean_utilization"][heap] <= 1

    best = results["best"]
    assert best["heap"] in HEAPS
    assert best["mean_utilization"] == max(results["mean_utilization"].values())
    assert best["target"] == 0.75 and isinstance(best["met"], bool)

    slab = results["slab_path"]
    assert slab["ok"] and slab["calls"] == 2 * slab["pairs"]
    for key in ("instructions_per_pair_inside_allocator",
                "instructions_per_pair_between_markers",
                "warm_instructions_per_pair_inside_allocator",
                "warm_instructions_per_pair_between_markers"):
        assert _positive(slab[key]), (key, slab[key])
    assert slab["warm_instructions_per_pair_inside_allocator"] <= \
        slab["instructions_per_pair_inside_allocator"]          # the cold round costs more
    assert slab["target"] == 60 and isinstance(slab["met"], bool)
    assert set(results["peers"]["mean_utilization"]) == {"TLSF", "o1heap", "liballoc"}
