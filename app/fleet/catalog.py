"""Fleet-wide model views built from the nodes' cached lists (no live fan-out).

One entry per canonical model name, newest first; where nodes disagree on a
model's digest (same tag, different weights) the drift is reported.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from app.fleet.node import NodeState


def _version_tuple(text: str) -> tuple[int, ...] | None:
    # Open WebUI's rule: strip a leading "v" and any "-suffix", then compare dotted numbers.
    match = re.match(r"^v?(\d+(?:\.\d+)*)", text.strip())
    if match is None:
        return None
    return tuple(int(part) for part in match.group(1).split("."))


def lowest_version(nodes: Iterable[NodeState]) -> str | None:
    versions = [(t, n.version) for n in nodes if n.version and (t := _version_tuple(n.version)) is not None]
    if not versions:
        return None
    return min(versions)[1]


def _sort_time(stamp: str) -> float:
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except (ValueError, TypeError):
        return 0.0


def merged_tags(nodes: Iterable[NodeState]) -> list[dict[str, Any]]:
    """`/api/tags` of the fleet: each model once (its newest copy), newest first."""
    best: dict[str, tuple[float, dict[str, Any]]] = {}
    for node in nodes:
        for key, entry in node.models.items():
            stamp = _sort_time(entry.modified_at)
            current = best.get(key)
            if current is None or stamp > current[0]:
                best[key] = (stamp, entry.raw)
    ordered = sorted(best.items(), key=lambda item: (-item[1][0], item[0]))
    return [raw for _, (_, raw) in ordered]


def merged_ps(nodes: Iterable[NodeState]) -> list[dict[str, Any]]:
    """`/api/ps` of the fleet: each loaded model once, the copy that stays loaded longest."""
    best: dict[str, dict[str, Any]] = {}
    for node in nodes:
        for key, raw in node.loaded.items():
            current = best.get(key)
            if current is None or str(raw.get("expires_at", "")) > str(current.get("expires_at", "")):
                best[key] = raw
    return [best[key] for key in sorted(best)]


def model_matrix(nodes: Iterable[NodeState]) -> list[dict[str, Any]]:
    """Every model × the nodes that have it, with digest drift flagged."""
    rows: dict[str, dict[str, Any]] = {}
    for node in nodes:
        for key, entry in node.models.items():
            row = rows.setdefault(key, {"name": entry.name, "key": key, "nodes": [], "digests": set()})
            row["nodes"].append({
                "node_id": node.id, "node": node.name, "digest": entry.digest, "size": entry.size,
                "loaded": key in node.loaded,
            })
            if entry.digest:
                row["digests"].add(entry.digest)
    result = []
    for key in sorted(rows):
        row = rows[key]
        digests = row.pop("digests")
        row["digest_drift"] = len(digests) > 1
        result.append(row)
    return result
