"""Live fleet state: ``/api/proxy/state``, ``/active-requests``, ``/events`` (SSE) and ``/health``.

All of it is read from memory (no store access), so the console and load
balancers may poll it freely. Numbers are finite JSON: ``null`` for unknown,
never ``NaN`` or ``Infinity`` (``allow_nan=False`` everywhere here).

``state`` and ``active-requests`` reveal internal addresses, so they need a
login unless ``public_state`` is on. ``health`` is always public.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from datetime import UTC, datetime
from typing import Any

from tornado import iostream

from app.api.base import ApiError, BaseHandler, ManagementHandler
from app.fleet import catalog
from app.fleet.node import ACTIVE
from app.fleet.pool import Fleet
from app.store import StoreError

MAX_CHANGES = 100

SCHEMAS: dict[str, dict[str, Any]] = {
    "FleetState": {
        "type": "object",
        "properties": {
            "strategy": {"type": "string"},
            "active": {"type": "array", "items": {"type": "string"}, "description": "ids of active nodes"},
            "standby": {"type": "array", "items": {"type": "string"}, "description": "ids of standby nodes"},
            "nodes": {"type": "array", "items": {"$ref": "#/components/schemas/Node"}},
            "totals": {
                "type": "object",
                "properties": {k: {"type": "integer"} for k in
                               ("nodes", "active", "standby", "routable", "in_flight", "queued", "models")},
            },
            "models": {
                "type": "array",
                "description": "every model and the nodes that have it; digest_drift: same tag, different weights",
                "items": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "key": {"type": "string"},
                        "digest_drift": {"type": "boolean"},
                        "nodes": {"type": "array", "items": {"type": "object"}},
                    },
                },
            },
            "generated_at": {"type": "string", "format": "date-time"},
        },
    },
    "ActiveRequests": {
        "type": "object",
        "properties": {
            "total": {"type": "integer"},
            "queued": {"type": "integer"},
            "nodes": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "string"}, "name": {"type": "string"}, "status": {"type": "string"},
                        "in_flight": {"type": "integer"}, "queued": {"type": "integer"},
                        "max_concurrency": {"type": "integer", "nullable": True},
                        "draining": {"type": "boolean"}, "idle": {"type": "boolean"},
                    },
                },
            },
        },
    },
}


def fleet_snapshot(fleet: Fleet) -> dict[str, Any]:
    """The whole fleet as ``/api/proxy/state`` and the events stream show it."""
    nodes = sorted(fleet.nodes.values(), key=lambda n: (n.name.lower(), n.id))
    models = catalog.model_matrix(nodes)
    active = [n.id for n in nodes if n.status == ACTIVE]
    standby = [n.id for n in nodes if n.status != ACTIVE]
    return {
        "strategy": fleet.config.strategy,
        "active": active,
        "standby": standby,
        "nodes": [n.public() for n in nodes],
        "totals": {
            "nodes": len(nodes),
            "active": len(active),
            "standby": len(standby),
            "routable": sum(1 for n in nodes if n.routable),
            "in_flight": fleet.total_in_flight(),
            "queued": fleet.total_queued(),
            "models": len(models),
        },
        "models": models,
        "generated_at": datetime.now(UTC).isoformat(),
    }


def _counts(fleet: Fleet) -> tuple[Any, ...]:
    # requests_total included: a run of short requests moves the console's requests/s chart.
    return (fleet.total_queued(),
            *sorted((n.id, n.in_flight, n.queued, n.requests_total) for n in fleet.nodes.values()))


class _PublicWhenConfigured(ManagementHandler):
    """Readable without a login when the operator turned ``public_state`` on."""

    def required_role(self) -> str | None:
        if self.request.method in ("GET", "HEAD") and self.services.config.public_state:
            return None
        return super().required_role()


class StateHandler(_PublicWhenConfigured):
    def get(self) -> None:
        """Pools, every node's state, totals, and the model matrix with digest drift.
        ---
        summary: Fleet state
        tags: [state]
        responses:
          "200":
            description: The fleet now. Public when the config sets public_state.
            content:
              application/json:
                schema: {$ref: "#/components/schemas/FleetState"}
          "401": {description: Not logged in (and public_state is off)}
        """
        self.send_json(fleet_snapshot(self.services.fleet))


class ActiveRequestsHandler(_PublicWhenConfigured):
    def get(self) -> None:
        """Requests in flight per node and in total.
        ---
        summary: Requests in flight
        tags: [state]
        parameters:
          - {name: node_id, in: query, required: false, schema: {type: string}, description: Only this node}
        responses:
          "200":
            description: In-flight counts. Public when the config sets public_state.
            content:
              application/json:
                schema: {$ref: "#/components/schemas/ActiveRequests"}
          "401": {description: Not logged in (and public_state is off)}
          "404": {description: No node with this id}
        """
        fleet = self.services.fleet
        node_id = self.get_query_argument("node_id", None)
        if node_id is not None:
            node = fleet.get(node_id)
            if node is None:
                raise ApiError(404, f"no node with id {node_id!r}")
            nodes = [node]
        else:
            nodes = sorted(fleet.nodes.values(), key=lambda n: (n.name.lower(), n.id))
        self.send_json({
            "total": sum(n.in_flight for n in nodes),
            "queued": fleet.total_queued() if node_id is None else nodes[0].queued,
            "nodes": [{"id": n.id, "name": n.name, "status": n.status, "in_flight": n.in_flight,
                       "queued": n.queued, "max_concurrency": n.max_concurrency, "draining": n.draining,
                       "idle": n.in_flight == 0} for n in nodes],
        })


class EventsHandler(ManagementHandler):
    """Server-sent events: a ``state`` event (the full snapshot plus what changed) at connect and
    after every change, coalesced to at most one per :attr:`COALESCE` seconds; ``: ping``
    comments keep idle connections open through proxies. The caller's credential is checked
    again every :attr:`REAUTH_INTERVAL` seconds: a stream ends once its session is logged out,
    its token expires or its user is deleted (the console's EventSource then reconnects, or not)."""

    COALESCE = 0.25
    PING_INTERVAL = 15.0
    REAUTH_INTERVAL = 5.0
    # Request counts change on every request without a fleet notification: sampled this often.
    COUNTS_POLL = 1.0

    async def get(self) -> None:
        """A stream of fleet state changes for the console (EventSource; session cookie or Bearer).
        ---
        summary: Fleet state events (SSE)
        tags: [state]
        responses:
          "200":
            description: >
              text/event-stream of `event: state` messages whose data is the fleet state (as
              GET /api/proxy/state) plus `changes` (what moved: kind node, status, models, config,
              node_removed, counts), at most four per second, and `: ping` comments every 15 s.
            content:
              text/event-stream:
                schema: {type: string}
          "401": {description: Not logged in}
        """
        fleet = self.services.fleet
        loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._closed = False
        self._changes: dict[tuple[str, str], dict[str, Any]] = {}
        unsubscribe = fleet.subscribe(self._on_change)
        try:
            self.set_header("Content-Type", "text/event-stream; charset=utf-8")
            self.set_header("X-Accel-Buffering", "no")
            self.write("retry: 3000\n\n")
            await self._emit(["connected"])
            last_emit = last_write = last_auth = loop.time()
            counts = _counts(fleet)
            while not self._closed:
                if loop.time() - last_auth >= self.REAUTH_INTERVAL:
                    if not await self._still_authorised():
                        break
                    last_auth = loop.time()
                wait = min(self.COUNTS_POLL, max(0.0, self.PING_INTERVAL - (loop.time() - last_write)))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)
                self._wake.clear()
                if self._closed:
                    break
                now_counts = _counts(fleet)
                if now_counts != counts:
                    self._changes.setdefault(("counts", ""), {"kind": "counts"})
                if self._changes:
                    pause = self.COALESCE - (loop.time() - last_emit)
                    if pause > 0:
                        await asyncio.sleep(pause)  # let a burst of changes become one message
                        if self._closed:
                            break
                    counts = _counts(fleet)
                    await self._emit()
                    last_emit = last_write = loop.time()
                elif loop.time() - last_write >= self.PING_INTERVAL:
                    self.write(": ping\n\n")
                    await self.flush()
                    last_write = loop.time()
        except iostream.StreamClosedError:
            pass
        finally:
            unsubscribe()
        if not self._finished:
            with contextlib.suppress(iostream.StreamClosedError):
                self.finish()

    async def _still_authorised(self) -> bool:
        try:
            principal = await self.services.auth.authenticate(self)
        except ApiError:
            return False
        except StoreError:
            return True  # an outage is not a logout: keep serving what the caller may already see
        return principal is not None and principal.user_id == self.principal.user_id

    def _on_change(self, kind: str, data: dict[str, Any]) -> None:
        key = (kind, str(data.get("id", "")))
        self._changes.pop(key, None)
        self._changes[key] = {"kind": kind, **data}
        while len(self._changes) > MAX_CHANGES:
            self._changes.pop(next(iter(self._changes)))
        self._wake.set()

    async def _emit(self, kinds: list[str] | None = None) -> None:
        changes = [{"kind": k} for k in kinds] if kinds else list(self._changes.values())
        self._changes = {}
        payload = {"changes": changes, **fleet_snapshot(self.services.fleet)}
        data = json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        self.write(f"event: state\ndata: {data}\n\n")
        await self.flush()

    def on_connection_close(self) -> None:
        self._closed = True
        wake = getattr(self, "_wake", None)
        if wake is not None:
            wake.set()


class HealthHandler(BaseHandler):
    """For load balancers: no login, nothing internal revealed."""

    def get(self) -> None:
        """Is the proxy able to serve? 200 while at least one node takes requests, else 503.
        ---
        summary: Proxy health
        tags: [state]
        security: []
        responses:
          "200":
            description: 'At least one node is active, enabled and not draining: {"status": "ok", "active": N}'
            content:
              application/json:
                schema:
                  type: object
                  properties:
                    status: {type: string, enum: [ok]}
                    active: {type: integer}
          "503":
            description: 'No node can serve: {"status": "unavailable", "active": 0, "error": "..."}'
        """
        active = len(self.services.fleet.routable())
        if active:
            self.send_json({"status": "ok", "active": active})
        else:
            self.set_header("Retry-After", "5")
            self.send_json({"status": "unavailable", "active": 0, "error": "no active node"}, status=503)

    head = get


ROUTES: list[tuple[str, type]] = [
    (r"/api/proxy/state", StateHandler),
    (r"/api/proxy/active-requests", ActiveRequestsHandler),
    (r"/api/proxy/events", EventsHandler),
    (r"/api/proxy/health", HealthHandler),
]
