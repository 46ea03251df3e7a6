"""``/api/proxy/nodes``: register, edit, check and remove Ollama nodes.

Every write goes to the store first and to the in-memory fleet only once the
store accepted it: a failed write (503) leaves the fleet as it was. Outbound
header values (e.g. a node's bearer token) are write-only: responses carry only
their names (``header_names``), and nothing here logs them.

A new node, or a node whose address changed, is probed at once. The response
waits for that probe at most :data:`PROBE_WAIT` seconds, so a healthy node is
usually shown ``active`` already, while a slow or dead one never holds the
client up (its probe goes on in the background).
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime
from typing import Any

from app.api.base import ApiError, ManagementHandler
from app.fleet.node import NodeState
from app.fleet.node_spec import NodeInvalid, parse_node
from app.logs import app_log
from app.store import DuplicateKey

# Longest a create/edit response waits for the new address's first probe.
PROBE_WAIT = 2.0
# Keys a node's view shows that are not writable: tolerated (ignored) in PUT/PATCH bodies,
# so a client can send back a document it read.
_WRITABLE = frozenset({"name", "address", "host", "port", "scheme", "url", "enabled", "draining",
                       "max_concurrency", "labels", "headers"})
_VIEW_ONLY = (frozenset(NodeState(id="", name="", url="").public())
              | {"id", "created_at", "updated_at", "header_names"}) - _WRITABLE
_background: set[asyncio.Future[Any]] = set()

# OpenAPI component schemas referenced by the handlers' docstrings (collected by the docs builder).
SCHEMAS: dict[str, dict[str, Any]] = {
    "NodeInput": {
        "type": "object",
        "description": "Give name + address (+ port, scheme) or a full url. Unknown fields are refused.",
        "properties": {
            "name": {"type": "string", "maxLength": 100, "example": "gpu-1"},
            "address": {"type": "string", "description": "host name or IP address", "example": "10.0.0.5"},
            "port": {"type": "integer", "minimum": 1, "maximum": 65535, "default": 11434},
            "scheme": {"type": "string", "enum": ["http", "https"], "default": "http"},
            "url": {"type": "string", "example": "http://10.0.0.5:11434"},
            "enabled": {"type": "boolean", "default": True},
            "draining": {"type": "boolean", "default": False},
            "max_concurrency": {"type": "integer", "minimum": 1, "maximum": 10000, "nullable": True},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "headers": {"type": "object", "additionalProperties": {"type": "string"},
                        "description": "Sent to the node with every request; write-only (never returned)."},
        },
    },
    "Node": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "url": {"type": "string"},
            "status": {"type": "string", "enum": ["active", "standby", "unknown"]},
            "enabled": {"type": "boolean"},
            "draining": {"type": "boolean"},
            "idle": {"type": "boolean"},
            "max_concurrency": {"type": "integer", "nullable": True},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "header_names": {"type": "array", "items": {"type": "string"}},
            "in_flight": {"type": "integer"},
            "queued": {"type": "integer"},
            "version": {"type": "string", "nullable": True},
            "latency_ms": {"type": "object", "description": "probe round trip and time to first byte "
                           "(moving average, per node and per model)"},
            "tokens_per_second": {"type": "object", "description": "generation speed from the node's own "
                                  "timing of its answers (moving average, per node and per model); "
                                  "least_active weighs nodes by it"},
            "models": {"type": "array", "items": {"type": "object"}},
            "loaded_models": {"type": "array", "items": {"type": "object"}},
            "last_check": {"type": "string", "format": "date-time", "nullable": True},
            "last_error": {"type": "string", "nullable": True},
            "recent_errors": {"type": "array", "items": {"type": "object"}},
            "consecutive_failures": {"type": "integer"},
            "requests_total": {"type": "integer"},
            "failures_total": {"type": "integer"},
            "created_at": {"type": "string", "format": "date-time"},
            "updated_at": {"type": "string", "format": "date-time"},
        },
    },
}


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def node_view(record: dict[str, Any], state: NodeState | None) -> dict[str, Any]:
    """A node as the API shows it: its stored record and its runtime state, no header values."""
    view: dict[str, Any] = state.public() if state is not None else {"status": "unknown"}
    view.update({
        "id": record["id"],
        "name": record["name"],
        "url": record["url"],
        "enabled": bool(record.get("enabled", True)),
        "draining": bool(record.get("draining", False)),
        "max_concurrency": record.get("max_concurrency"),
        "labels": dict(record.get("labels") or {}),
        "header_names": sorted(record.get("headers") or {}),
        "created_at": _iso(record.get("created_at")),
        "updated_at": _iso(record.get("updated_at")),
    })
    view.pop("headers", None)
    return view


def _finished(future: asyncio.Future[Any]) -> None:
    _background.discard(future)
    if not future.cancelled() and future.exception() is not None:
        app_log().error("probing a node failed", exc_info=future.exception())


async def probe_now(handler: ManagementHandler, node: NodeState, wait: float = PROBE_WAIT) -> None:
    """Probe ``node`` now; wait for the result up to ``wait`` seconds, then let it finish alone."""
    monitor = handler.services.monitor
    if monitor is None:
        return
    task = asyncio.ensure_future(monitor.check(node))
    _background.add(task)
    task.add_done_callback(_finished)
    with contextlib.suppress(Exception):  # a timeout, or a failure _finished logs
        await asyncio.wait_for(asyncio.shield(task), wait)


def _who(handler: ManagementHandler) -> str:
    principal = handler.principal
    return str(getattr(principal, "username", None) or getattr(principal, "name", None) or "?")


class _NodeHandler(ManagementHandler):
    def fields(self, data: dict[str, Any], *, partial: bool, current: dict[str, Any] | None = None) -> dict[str, Any]:
        """Validated fields to store; 400 ``{"error": "invalid node", "fields": {...}}``."""
        if current is not None:
            data = {k: v for k, v in data.items() if k not in _VIEW_ONLY}
        try:
            return parse_node(data, partial=partial, current=current)
        except NodeInvalid as exc:
            raise ApiError(400, "invalid node", fields=exc.errors) from None

    def duplicate(self, exc: DuplicateKey, data: dict[str, Any]) -> ApiError:
        field = exc.field
        if field == "url" and "url" not in data:
            field = "address"
        what = "name" if field == "name" else "address"
        return ApiError(409, f"another node already has this {what}", field=field)

    async def record(self, node_id: str) -> dict[str, Any]:
        record = await self.services.store.nodes.get(node_id)
        if record is None:
            raise ApiError(404, f"no node with id {node_id!r}")
        return record

    def view(self, record: dict[str, Any]) -> dict[str, Any]:
        return node_view(record, self.services.fleet.get(record["id"]))


class NodesHandler(_NodeHandler):
    async def get(self) -> None:
        """List the registered nodes with their runtime state.
        ---
        summary: List nodes
        tags: [nodes]
        responses:
          "200":
            description: Every registered node (stored record and runtime state; header names only).
            content:
              application/json:
                schema:
                  type: object
                  properties:
                    nodes: {type: array, items: {$ref: "#/components/schemas/Node"}}
          "401": {description: Not logged in}
        """
        records = await self.services.store.nodes.list()
        self.send_json({"nodes": [self.view(r) for r in records]})

    async def post(self) -> None:
        """Register a node; it is probed at once and serves as soon as it is healthy.
        ---
        summary: Add a node
        tags: [nodes]
        requestBody:
          required: true
          content:
            application/json:
              schema: {$ref: "#/components/schemas/NodeInput"}
              example: {name: gpu-1, address: 10.0.0.5, port: 11434, headers: {Authorization: Bearer xyz}}
        responses:
          "201":
            description: The node as stored, with its id and the state after its first probe (waited for at most 2 s).
            content:
              application/json:
                schema: {$ref: "#/components/schemas/Node"}
          "400": {description: 'Invalid fields: {"error": "invalid node", "fields": {field: message}}'}
          "401": {description: Not logged in}
          "403": {description: Not an admin}
          "409": {description: 'Another node has this name or address: {"error", "field"}'}
          "503": {description: The store is unavailable; nothing was changed}
        """
        data = self.json_body()
        fields = self.fields(data, partial=False)
        try:
            record = await self.services.store.nodes.create(fields)
        except DuplicateKey as exc:
            raise self.duplicate(exc, data) from None
        node = self.services.fleet.upsert(record)
        app_log().info("node %s (%s) added by %s", record["name"], record["url"], _who(self))
        await probe_now(self, node)
        self.set_header("Location", f"/api/proxy/nodes/{record['id']}")
        self.send_json(self.view(record), status=201)


class NodeHandler(_NodeHandler):
    async def get(self, node_id: str) -> None:
        """One node with its runtime state.
        ---
        summary: Get a node
        tags: [nodes]
        parameters:
          - {name: node_id, in: path, required: true, schema: {type: string}}
        responses:
          "200":
            description: The node.
            content:
              application/json:
                schema: {$ref: "#/components/schemas/Node"}
          "401": {description: Not logged in}
          "404": {description: No node with this id}
        """
        self.send_json(self.view(await self.record(node_id)))

    async def put(self, node_id: str) -> None:
        """Replace a node's registration: fields left out get their defaults.
        Exception: ``headers`` left out keep their stored values (they are write-only and
        cannot be read back); send ``"headers": {}`` to remove them.
        ---
        summary: Replace a node
        tags: [nodes]
        parameters:
          - {name: node_id, in: path, required: true, schema: {type: string}}
        requestBody:
          required: true
          content:
            application/json:
              schema: {$ref: "#/components/schemas/NodeInput"}
        responses:
          "200":
            description: The node after the change.
            content:
              application/json:
                schema: {$ref: "#/components/schemas/Node"}
          "400": {description: Invalid fields}
          "401": {description: Not logged in}
          "403": {description: Not an admin}
          "404": {description: No node with this id}
          "409": {description: Another node has this name or address}
          "503": {description: The store is unavailable; nothing was changed}
        """
        current = await self.record(node_id)
        data = self.json_body()
        fields = self.fields(data, partial=False, current=current)
        if "headers" not in data:
            fields.pop("headers", None)
        await self.write_node(current, data, fields)

    async def patch(self, node_id: str) -> None:
        """Change some fields of a node: enable/disable, drain, rename, move, limits, labels, headers.
        ---
        summary: Update a node
        tags: [nodes]
        parameters:
          - {name: node_id, in: path, required: true, schema: {type: string}}
        requestBody:
          required: true
          content:
            application/json:
              schema: {$ref: "#/components/schemas/NodeInput"}
              example: {draining: true}
        responses:
          "200":
            description: The node after the change (re-probed when its address changed).
            content:
              application/json:
                schema: {$ref: "#/components/schemas/Node"}
          "400": {description: Invalid fields}
          "401": {description: Not logged in}
          "403": {description: Not an admin}
          "404": {description: No node with this id}
          "409": {description: Another node has this name or address}
          "503": {description: The store is unavailable; nothing was changed}
        """
        current = await self.record(node_id)
        data = self.json_body()
        fields = self.fields(data, partial=True, current=current)
        await self.write_node(current, data, fields)

    async def write_node(self, current: dict[str, Any], data: dict[str, Any], fields: dict[str, Any]) -> None:
        if not fields:
            self.send_json(self.view(current))
            return
        try:
            record = await self.services.store.nodes.update(current["id"], fields)
        except DuplicateKey as exc:
            raise self.duplicate(exc, data) from None
        if record is None:
            raise ApiError(404, f"no node with id {current['id']!r}")
        node = self.services.fleet.upsert(record)
        changed = sorted(k for k in fields if k != "headers" and current.get(k) != record.get(k))
        if "headers" in fields:
            changed.append("headers")
        app_log().info("node %s changed by %s: %s", record["name"], _who(self), ", ".join(changed) or "nothing")
        if record["url"] != current["url"]:
            await probe_now(self, node)
        self.send_json(self.view(record))

    async def delete(self, node_id: str) -> None:
        """Remove a node. With requests in flight this answers 409 unless ``force=true``; then the
        node is drained and removed at once, and its running requests finish on their own.
        ---
        summary: Remove a node
        tags: [nodes]
        parameters:
          - {name: node_id, in: path, required: true, schema: {type: string}}
          - {name: force, in: query, required: false, schema: {type: boolean, default: false},
             description: Remove even with requests in flight}
        responses:
          "204": {description: Removed}
          "401": {description: Not logged in}
          "403": {description: Not an admin}
          "404": {description: No node with this id}
          "409": {description: 'Requests in flight: {"error", "in_flight"}; drain first or use force=true'}
          "503": {description: The store is unavailable; nothing was changed}
        """
        force = self.get_query_argument("force", "false").lower() in ("1", "true", "yes")
        node = self.services.fleet.get(node_id)
        busy = node.in_flight if node is not None else 0
        if busy and not force:
            raise ApiError(409, f"node has {busy} request(s) in flight; set draining and wait until it is "
                                "idle, or delete with ?force=true", in_flight=busy)
        deleted = await self.services.store.nodes.delete(node_id)
        if node is not None:
            node.draining = True  # its running requests still hold it; no new one can start
            self.services.fleet.remove(node_id)
        if not deleted:
            raise ApiError(404, f"no node with id {node_id!r}")
        app_log().info("node %s removed by %s%s", node.name if node else node_id, _who(self),
                       f" with {busy} request(s) in flight" if busy else "")
        self.set_status(204)
        self.finish()


class NodeCheckHandler(_NodeHandler):
    async def post(self, node_id: str) -> None:
        """Probe a node now (version, models, loaded models) and return its state.
        ---
        summary: Check a node now
        tags: [nodes]
        parameters:
          - {name: node_id, in: path, required: true, schema: {type: string}}
        responses:
          "200":
            description: The node after the probe.
            content:
              application/json:
                schema: {$ref: "#/components/schemas/Node"}
          "401": {description: Not logged in}
          "403": {description: Not an admin}
          "404": {description: No node with this id}
        """
        node = self.services.fleet.get(node_id)
        if node is None:
            raise ApiError(404, f"no node with id {node_id!r}")
        if self.services.monitor is not None:
            await self.services.monitor.check(node)
        self.send_json(self.view(await self.record(node_id)))


ROUTES: list[tuple[str, type]] = [
    (r"/api/proxy/nodes", NodesHandler),
    (r"/api/proxy/nodes/(?P<node_id>[^/]+)/check", NodeCheckHandler),
    (r"/api/proxy/nodes/(?P<node_id>[^/]+)", NodeHandler),
]
