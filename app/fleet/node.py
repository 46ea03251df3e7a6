"""A node's runtime state: what the proxy knows about one Ollama server right now.

The registered record (name, URL, admin switches) comes from the store; health,
latency, counters and model lists are learned from probes and real traffic and
live only in memory, so the hot path never touches the database.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from app.fleet.names import try_model_key

ACTIVE = "active"
STANDBY = "standby"

# Weight of the newest sample in the moving averages (time to first byte, generation speed).
EWMA_ALPHA = 0.3
# A speed measured longer ago than this counts as unknown again, so a node that lost traffic
# to faster ones is tried (and re-timed) now and then instead of being judged on old numbers.
SPEED_MAX_AGE = 300.0
RECENT_ERRORS = 20


def _ewma(old: float | None, sample: float) -> float:
    return sample if old is None else old + EWMA_ALPHA * (sample - old)


def finite(value: float | None, digits: int = 4) -> float | None:
    """JSON-safe number: ``None`` for unknown, never ``NaN`` or ``Infinity``."""
    if value is None or not math.isfinite(value):
        return None
    return round(value, digits)


@dataclass
class ModelEntry:
    """One model as a node lists it in ``/api/tags`` (the raw entry is kept for merging)."""

    key: str
    name: str
    digest: str
    size: int
    modified_at: str
    raw: dict[str, Any]


@dataclass
class NodeState:
    id: str
    name: str
    url: str
    enabled: bool = True
    draining: bool = False
    max_concurrency: int | None = None
    labels: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict, repr=False)

    status: str = STANDBY
    checked: bool = False
    in_flight: int = 0
    queued: int = 0
    version: str | None = None
    models: dict[str, ModelEntry] = field(default_factory=dict)
    loaded: dict[str, dict[str, Any]] = field(default_factory=dict)
    probe_latency: float | None = None
    probe_duration: float | None = None  # seconds the last health check took (metrics)
    ttfb: float | None = None
    ttfb_by_model: dict[str, float] = field(default_factory=dict)
    speed: float | None = None  # generated tokens per second, as the node reports them
    speed_by_model: dict[str, float] = field(default_factory=dict)
    speed_timed_at: float | None = None  # time.monotonic() of the newest speed sample
    last_check: datetime | None = None
    last_error: str | None = None
    consecutive_failures: int = 0
    consecutive_successes: int = 0
    requests_total: int = 0
    failures_total: int = 0
    recent_errors: deque[tuple[datetime, str]] = field(default_factory=lambda: deque(maxlen=RECENT_ERRORS))

    # -- admin record ---------------------------------------------------------------------------

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> NodeState:
        node = cls(id=record["id"], name=record["name"], url=record["url"])
        node.apply_record(record)
        return node

    def apply_record(self, record: dict[str, Any]) -> None:
        self.name = record["name"]
        self.url = record["url"]
        self.enabled = bool(record.get("enabled", True))
        self.draining = bool(record.get("draining", False))
        self.max_concurrency = record.get("max_concurrency")
        self.labels = dict(record.get("labels") or {})
        self.headers = dict(record.get("headers") or {})

    # -- routing predicates ---------------------------------------------------------------------

    @property
    def routable(self) -> bool:
        """Takes new requests: healthy, switched on by the operator, not draining."""
        return self.status == ACTIVE and self.enabled and not self.draining

    @property
    def has_room(self) -> bool:
        return self.max_concurrency is None or self.in_flight < self.max_concurrency

    def has_model(self, key: str) -> bool:
        return key in self.models

    def has_loaded(self, key: str) -> bool:
        return key in self.loaded

    def latency_estimate(self, key: str | None = None) -> float | None:
        """Seconds to first byte we expect here: per model, then per node, then the probe."""
        if key is not None and key in self.ttfb_by_model:
            return self.ttfb_by_model[key]
        if self.ttfb is not None:
            return self.ttfb
        return self.probe_latency

    def speed_estimate(self, key: str | None = None, now: float | None = None) -> float | None:
        """Tokens per second we expect here: per model, then per node; ``None`` before any answer
        was timed or when the newest timing is older than :data:`SPEED_MAX_AGE`."""
        if self.speed_timed_at is None:
            return None
        if (time.monotonic() if now is None else now) - self.speed_timed_at > SPEED_MAX_AGE:
            return None
        if key is not None and key in self.speed_by_model:
            return self.speed_by_model[key]
        return self.speed

    # -- learning -------------------------------------------------------------------------------

    def record_ttfb(self, seconds: float, key: str | None) -> None:
        self.ttfb = _ewma(self.ttfb, seconds)
        if key is not None:
            self.ttfb_by_model[key] = _ewma(self.ttfb_by_model.get(key), seconds)

    def record_speed(self, tokens_per_second: float, key: str | None) -> None:
        self.speed_timed_at = time.monotonic()
        self.speed = _ewma(self.speed, tokens_per_second)
        if key is not None:
            self.speed_by_model[key] = _ewma(self.speed_by_model.get(key), tokens_per_second)

    def forget_measurements(self) -> None:
        """A different server now answers at this node's address: what we learnt no longer holds."""
        self.version = self.probe_latency = self.ttfb = self.speed = self.speed_timed_at = None
        self.ttfb_by_model.clear()
        self.speed_by_model.clear()

    def record_error(self, message: str) -> None:
        self.last_error = message
        self.recent_errors.append((datetime.now(UTC), message))

    def set_models(self, entries: list[dict[str, Any]]) -> None:
        models: dict[str, ModelEntry] = {}
        for raw in entries:
            if not isinstance(raw, dict):
                continue
            name = raw.get("name") or raw.get("model")
            key = try_model_key(name)
            if key is None:
                continue
            models[key] = ModelEntry(
                key=key,
                name=str(name),
                digest=str(raw.get("digest") or ""),
                size=int(raw.get("size") or 0) if isinstance(raw.get("size"), int | float) else 0,
                modified_at=str(raw.get("modified_at") or ""),
                raw=raw,
            )
        self.models = models

    def set_loaded(self, entries: list[dict[str, Any]]) -> None:
        loaded: dict[str, dict[str, Any]] = {}
        for raw in entries:
            if not isinstance(raw, dict):
                continue
            key = try_model_key(raw.get("name") or raw.get("model"))
            if key is not None:
                loaded[key] = raw
        self.loaded = loaded

    # -- views ----------------------------------------------------------------------------------

    def public(self) -> dict[str, Any]:
        """The node as the state API shows it: no outbound header values, only finite numbers."""
        return {
            "id": self.id,
            "name": self.name,
            "url": self.url,
            "status": self.status,
            "enabled": self.enabled,
            "draining": self.draining,
            "idle": self.in_flight == 0,
            "max_concurrency": self.max_concurrency,
            "labels": dict(self.labels),
            "header_names": sorted(self.headers),
            "in_flight": self.in_flight,
            "queued": self.queued,
            "version": self.version,
            "latency_ms": {
                "probe": finite(None if self.probe_latency is None else self.probe_latency * 1000, 2),
                "ttfb": finite(None if self.ttfb is None else self.ttfb * 1000, 2),
                "ttfb_by_model": {m: finite(v * 1000, 2) for m, v in self.ttfb_by_model.items()},
            },
            "tokens_per_second": {
                "node": finite(self.speed, 1),
                "by_model": {m: finite(v, 1) for m, v in self.speed_by_model.items()},
            },
            "models": [
                {"name": m.name, "digest": m.digest, "size": m.size, "modified_at": m.modified_at}
                for m in sorted(self.models.values(), key=lambda m: m.key)
            ],
            "loaded_models": [
                {"name": str(raw.get("name") or raw.get("model")), "size_vram": raw.get("size_vram"),
                 "expires_at": raw.get("expires_at")}
                for _, raw in sorted(self.loaded.items())
            ],
            "last_check": self.last_check.isoformat() if self.last_check else None,
            "last_error": self.last_error,
            "recent_errors": [{"time": t.isoformat(), "error": e} for t, e in self.recent_errors],
            "consecutive_failures": self.consecutive_failures,
            "requests_total": self.requests_total,
            "failures_total": self.failures_total,
        }
