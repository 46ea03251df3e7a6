"""The benchmark script runs end to end on its tiny configuration.

Timings belong to the benchmark itself (``python scripts/bench.py``), never to the test suite:
this only checks that every section runs, the results are written, and no stream was lost.
"""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quick_benchmark_runs_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench.py"), "--quick", "--out", str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=170)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    results = json.loads((out / "bench.json").read_text())
    assert {"small", "streams", "long", "routing", "memory", "targets", "meta"} <= results.keys()
    assert (out / "bench.md").read_text().startswith("# Aivonx Proxy benchmark")

    small = results["small"]["rows"]
    assert {"direct", "proxy"} <= {row["path"] for row in small}
    assert all(row["requests"] > 0 and row["errors"] == 0 for row in small)

    # Every stream, on every path, ended with its done line.
    for section in ("streams", "long"):
        for row in results[section]["rows"]:
            total = row.get("streams_total", row.get("streams"))
            assert total > 0 and row["streams_done"] == total, (section, row)
    assert all(row["errors"] == 0 for row in results["long"]["rows"])

    routing = results["routing"]["runs"]
    assert "least_active" in routing and "blind_random" in routing
    assert all(run["failed"] == 0 and run["requests"] > 0 for run in routing.values())

    memory = results["memory"]
    assert memory["idle_stream_failures"] == 0
    assert memory["kb_per_idle_stream"] is not None and memory["kb_per_node"] is not None
