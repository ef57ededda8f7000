"""What every benchmark script does last: write its JSON and print its table."""
from __future__ import annotations

import json
import os
import platform
from pathlib import Path


def host() -> dict:
    """The machine the figures came from (they are ratios, but the load still matters)."""
    return {"python": platform.python_version(), "machine": platform.machine(),
            "cpus": os.cpu_count(), "load_average": list(os.getloadavg())}


def publish(path: Path, results: dict, table: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(table)
    print(f"\nwrote {path} in {results['wall_seconds']:.0f} s")
