"""Injected failures: what a sick node does, on demand, for a counted number of requests.

A fault is ``{"mode", "count", "routes", "after_chunks", "delay", "message"}``:

* ``error_500`` — 500 ``{"error": ...}`` before the first byte.
* ``busy`` — 503 with Ollama's queue-full text.
* ``hang`` — accept the request and send nothing until the client leaves.
* ``garbage`` — 200 whose body is half a JSON line (not parseable).
* ``slow_tags`` — ``/api/tags``, ``/api/ps`` and ``/api/version`` answer after ``delay`` seconds.
* ``error_midstream`` — a streamed answer sends ``after_chunks`` lines, then an ``{"error"}``
  line, and ends (never a ``done`` line).
* ``drop_midstream`` — a streamed answer sends ``after_chunks`` lines, then the TCP connection
  is closed without finishing the chunked body.

``count`` is how many matching requests get it (``None`` = until cleared). ``routes`` limits it
to paths (``"/api/chat"``, a route pattern like ``"/api/blobs/:digest"``, or a prefix ending
``*``); by default ``slow_tags`` hits its three routes and every other mode hits every route
(mid-stream modes only streamed answers; a stream shorter than ``after_chunks`` fails
before its final line). Control routes ``/_sim/*`` are never affected.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

BEFORE_BODY = ("error_500", "busy", "hang", "garbage")
MID_STREAM = ("error_midstream", "drop_midstream")
MODES = (*BEFORE_BODY, *MID_STREAM, "slow_tags")
SLOW_ROUTES = ("/api/tags", "/api/ps", "/api/version")

_ids = itertools.count(1)


@dataclass(eq=False)
class Fault:
    mode: str
    count: int | None = None
    routes: list[str] | None = None
    after_chunks: int = 0
    delay: float = 0.0
    message: str | None = None
    fired: int = 0
    id: int = 0

    def matches(self, route: str, path: str) -> bool:
        routes = self.routes
        if routes is None:
            return self.mode != "slow_tags" or route in SLOW_ROUTES
        for pattern in routes:
            if pattern in (route, path):
                return True
            if pattern.endswith("*") and path.startswith(pattern[:-1]):
                return True
        return False

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "mode": self.mode, "count": self.count, "routes": self.routes,
            "after_chunks": self.after_chunks, "delay": self.delay, "message": self.message,
            "fired": self.fired,
        }


def fault_from_dict(spec: dict[str, Any]) -> Fault:
    """Validate a fault spec; ValueError says what is wrong."""
    if not isinstance(spec, dict):
        raise ValueError("a fault must be an object")
    mode = spec.get("mode")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}")
    count = spec.get("count")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
        raise ValueError("count must be a positive integer or null")
    routes = spec.get("routes")
    if isinstance(routes, str):
        routes = [routes]
    if routes is not None and (not isinstance(routes, list) or not all(isinstance(r, str) for r in routes)):
        raise ValueError("routes must be a list of paths")
    after = spec.get("after_chunks", 0) or 0
    if isinstance(after, bool) or not isinstance(after, int) or after < 0:
        raise ValueError("after_chunks must be an integer >= 0")
    delay = spec.get("delay", 0.0) or 0.0
    if isinstance(delay, bool) or not isinstance(delay, int | float) or delay < 0:
        raise ValueError("delay must be a number >= 0")
    message = spec.get("message")
    if message is not None and not isinstance(message, str):
        raise ValueError("message must be a string")
    return Fault(mode, count, routes, after, float(delay), message, id=next(_ids))


def parse_fault_arg(text: str) -> dict[str, Any]:
    """CLI form ``MODE[:key=value,...]``, e.g. ``error_midstream:after_chunks=3,count=2`` or
    ``error_500:routes=/api/chat+/api/generate``. Routes are joined with ``+``."""
    mode, _, rest = text.partition(":")
    spec: dict[str, Any] = {"mode": mode.strip()}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"fault option {item!r} must be key=value")
        key = key.strip()
        if key == "routes":
            spec[key] = [r for r in value.split("+") if r]
        elif key in ("count", "after_chunks"):
            spec[key] = None if value in ("", "null", "none") else int(value)
        elif key == "delay":
            spec[key] = float(value)
        elif key == "message":
            spec[key] = value
        else:
            raise ValueError(f"unknown fault option {key!r}")
    fault_from_dict(spec)  # validate now, so a bad flag fails at start-up
    return spec


class FaultTable:
    """The node's active faults, consulted once per request (cheap when empty)."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self.fired = 0

    def add(self, spec: dict[str, Any]) -> Fault:
        fault = fault_from_dict(spec)
        self._faults.append(fault)
        return fault

    def clear(self) -> None:
        self._faults.clear()

    def active(self) -> list[dict[str, Any]]:
        return [f.as_dict() for f in self._faults]

    def __bool__(self) -> bool:
        return bool(self._faults)

    def take(self, modes: tuple[str, ...], route: str, path: str) -> Fault | None:
        """The first active fault of one of ``modes`` matching this request; consumes one use."""
        if not self._faults:
            return None
        for fault in self._faults:
            if fault.mode in modes and fault.matches(route, path):
                fault.fired += 1
                self.fired += 1
                if fault.count is not None:
                    fault.count -= 1
                    if fault.count <= 0:
                        self._faults.remove(fault)
                return fault
        return None
