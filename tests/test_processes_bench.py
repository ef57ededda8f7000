"""bench/processes.py --quick runs to the end and writes its JSON. The shape is checked, and
what holds on any machine: exact instruction counts are positive and add up, every fault
of the region was measured, a bigger mmap amortizes better per page, a process alone takes
no tick. Whether the fault meets its target is the benchmark's report, not a test; timings
are not asserted."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench" / "processes.py"


def test_quick_process_benchmark_writes_results(tmp_path):
    out = tmp_path / "processes_results.json"
    proc = subprocess.run([sys.executable, str(BENCH), "--quick", "--json", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "| (a) demand-zero fault" in proc.stdout

    results = json.loads(out.read_text())
    fault = results["demand_zero_fault"]
    assert fault["faults_on_region"] == fault["pages"] == sum(fault["histogram"].values())
    assert 0 < fault["min"] <= fault["median"] <= fault["max"]
    assert fault["min"] > 512            # zeroing the page alone is 512 rep stosq iterations
    assert isinstance(fault["met"], bool)
    cycle = results["mmap_touch_munmap"]
    for step in cycle.values():
        i1, i2 = step["instructions"]
        assert 0 < i1 < i2 and step["per_page"] > fault["min"]
    assert cycle["64"]["per_page"] < cycle["1"]["per_page"]
    fork = results["fork_exit_wait"]
    assert fork["per_step"] > 4096 and fork["mib"] == 16
    preemption = results["preemption"]
    assert preemption["switch"]["ticks"] > 0 and preemption["switch"]["min"] > 0
    assert preemption["single_process_ticks"] == 0     # nobody waits: no tick
    for name, timing in results["slowdown"].items():
        assert timing["instructions"] > 0 and timing["slowdown"] > 1, name
        assert len(timing["samples_seconds"]["native"]) == results["repeats"]
