"""``scripts/soak.py --quick``: runs end to end and accounts for every request, with zero leaks.

No timing assertions: the quick run's figures mean nothing; what it checks is the script itself
and the invariants (answers + errors == requests sent, no hung request, counts back to zero).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quick_soak_accounts_for_every_request_and_leaks_nothing(tmp_path):
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "soak.py"), "--quick", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=240, cwd=ROOT)
    summary_path = tmp_path / "soak.json"
    assert summary_path.exists(), run.stdout[-3000:] + run.stderr[-3000:]
    summary = json.loads(summary_path.read_text())
    failed = [name for name, ok in summary["checks"].items() if not ok]
    assert run.returncode == 0 and not failed, (failed, summary["samples"], run.stdout[-3000:])
    accounting = summary["accounting"]
    assert accounting["sent"] == summary["answers"] + summary["errors"] and accounting["unaccounted"] == 0
    assert summary["requests_sent"] > 0 and summary["hung"] == 0
    assert summary["leaks"]["proxy_in_flight"] == 0 and summary["leaks"]["proxy_queued"] == 0
    assert all(v == 0 for v in summary["leaks"]["node_processes_active"].values())
    assert set(summary["rss_kb"]) == {"before_load", "start", "middle", "end", "after"}
    assert all(isinstance(v, int) and v > 0 for v in summary["rss_kb"].values())
    assert summary["faults_applied"] and summary["node_restarts"] >= 1
    assert set(summary["sent_by_kind"]) >= {"generate_stream", "chat", "embed", "v1_chat_stream", "v1_embeddings"}
    assert "PASS" in run.stdout and "requests sent" in run.stdout
