"""Managing models on the nodes: ``POST /api/proxy/pull`` and ``DELETE /api/proxy/models``.

Thin handlers over :mod:`app.fleet.model_ops`. Status codes of an answer that is
not streamed: 200 when every node succeeded, 207 when some did (``"partial"``),
502 when none did (``"error"``); a delete that no node could find is 404. A
streamed pull has started with 200, so its last line's ``status`` tells the outcome.

If the client goes away, the nodes' operations still running are cancelled, as
Ollama cancels a pull whose client left.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Sequence
from typing import Any

from tornado import iostream

from app.api.base import ApiError, ManagementHandler
from app.fleet.model_ops import (
    ModelOps,
    NodeResult,
    PullProgress,
    TargetError,
    delete_targets,
    pull_targets,
    summary,
    summary_status,
)
from app.fleet.names import InvalidModelName, model_key
from app.logs import app_log

_CODES = {"success": 200, "partial": 207, "error": 502}

SCHEMAS: dict[str, dict[str, Any]] = {
    "ModelOpSummary": {
        "type": "object",
        "properties": {
            "status": {"type": "string", "enum": ["success", "partial", "error"]},
            "results": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "node": {"type": "string"},
                        "node_id": {"type": "string"},
                        "status": {"type": "string", "enum": ["success", "error"]},
                        "error": {"type": "string"},
                    },
                },
            },
        },
    },
}


def _string(body: dict[str, Any], name: str, *, required: bool) -> str | None:
    value = body.get(name)
    if value in (None, ""):
        if required:
            raise ApiError(400, f"{name} is required")
        return None
    if not isinstance(value, str):
        raise ApiError(400, f"{name} must be a string")
    return value.strip()


def _flag(body: dict[str, Any], name: str, default: bool) -> bool:
    value = body.get(name, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ApiError(400, f"{name} must be true or false")
    return value


def _model(body: dict[str, Any]) -> str:
    model = _string(body, "model", required=False) or _string(body, "name", required=False)
    if model is None:
        raise ApiError(400, "model is required")
    try:
        model_key(model)
    except InvalidModelName as exc:
        raise ApiError(400, str(exc)) from None
    return model


def _status(results: Sequence[NodeResult]) -> int:
    return _CODES[summary_status(results)]


class _ModelOpHandler(ManagementHandler):
    def initialize(self, services: Any) -> None:
        super().initialize(services)
        self.gone: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_connection_close(self) -> None:
        super().on_connection_close()  # a body still being read must fail, or the handler waits forever
        if not self.gone.done():
            self.gone.set_result(None)

    def on_finish(self) -> None:
        if not self.gone.done():
            self.gone.cancel()

    def ops(self) -> ModelOps:
        return self.services.model_ops

    def who(self) -> str:
        return str(getattr(self.principal, "username", None) or "?")


class PullHandler(_ModelOpHandler):
    async def post(self) -> None:
        """Pull a model on one node or on every enabled active node, concurrently.
        ---
        summary: Pull a model on nodes
        tags: [models]
        requestBody:
          required: true
          content:
            application/json:
              schema:
                type: object
                required: [model]
                properties:
                  model: {type: string, example: "llama3.2"}
                  node_id: {type: string, description: 'One node (id or name); default: the config pull_target'}
                  stream: {type: boolean, default: true}
                  insecure: {type: boolean, default: false}
        responses:
          "200":
            description: >
              Streamed (application/x-ndjson): progress lines {"node", "node_id", "status", "digest"?,
              "completed"?, "total"?} as each node reports, a line {"node", "node_id", "status":
              "success"|"error", "error"?} when a node is done (its model list already refreshed),
              and a last summary line {"status": "success"|"partial"|"error", "results": [...]}.
              Not streamed: the summary alone, every node succeeded.
            content:
              application/x-ndjson:
                schema: {type: string}
              application/json:
                schema: {$ref: "#/components/schemas/ModelOpSummary"}
          "207":
            description: Not streamed, some nodes failed (summary status "partial").
            content:
              application/json:
                schema: {$ref: "#/components/schemas/ModelOpSummary"}
          "400": {description: "Missing or invalid model, node_id or stream"}
          "401": {description: Not logged in}
          "403": {description: Not an admin}
          "404": {description: No node with this node_id}
          "409": {description: The configured pull_target is not a registered node}
          "502":
            description: Not streamed, every node failed (summary status "error").
            content:
              application/json:
                schema: {$ref: "#/components/schemas/ModelOpSummary"}
          "503": {description: No enabled active node to pull to}
        """
        body = self.json_body()
        model = _model(body)
        node_id = _string(body, "node_id", required=False)
        stream = _flag(body, "stream", True)
        insecure = _flag(body, "insecure", False)
        try:
            nodes = pull_targets(self.services.fleet, node_id)
        except TargetError as exc:
            raise ApiError(exc.status, str(exc)) from None
        app_log().info("pull of %s on %s requested by %s", model, ", ".join(n.name for n in nodes), self.who())
        ops = self.ops()
        if not stream:
            results = await ops.pull(model, nodes, insecure=insecure, cancel=self.gone)
            if not self.gone.done():
                self.send_json(summary(results), status=_status(results))
            return
        self.set_header("Content-Type", "application/x-ndjson")
        results = await ops.pull(model, nodes, insecure=insecure, cancel=self.gone,
                                 on_progress=self._progress, on_result=self._result)
        await self._line(summary(results))
        if not self._finished and not self.gone.done():
            with contextlib.suppress(iostream.StreamClosedError):
                self.finish()

    async def _progress(self, event: PullProgress) -> None:
        await self._line(event.public())

    async def _result(self, result: NodeResult) -> None:
        await self._line(result.public())

    async def _line(self, value: dict[str, Any]) -> None:
        if self.gone.done():
            return
        self.write(json.dumps(value, separators=(",", ":"), allow_nan=False) + "\n")
        try:
            await self.flush()
        except iostream.StreamClosedError:
            self.on_connection_close()


class _DeleteHandler(_ModelOpHandler):
    async def remove(self) -> None:
        body = self.json_body()
        model = _model(body)
        node_id = _string(body, "node_id", required=False) or self.get_query_argument("node_id", None)
        try:
            nodes = delete_targets(self.services.fleet, model, node_id)
        except TargetError as exc:
            raise ApiError(exc.status, str(exc)) from None
        app_log().info("delete of %s on %s requested by %s", model, ", ".join(n.name for n in nodes), self.who())
        results = await self.ops().delete(model, nodes, cancel=self.gone)
        if self.gone.done():
            return
        if all(r.not_found for r in results):
            raise ApiError(404, f"model '{model}' not found on any node", results=summary(results)["results"])
        self.send_json(summary(results), status=_status(results))


class ModelsHandler(_DeleteHandler):
    async def delete(self) -> None:
        """Delete a model from one node, or from every node that has it.
        ---
        summary: Delete a model on nodes
        tags: [models]
        requestBody:
          required: true
          content:
            application/json:
              schema:
                type: object
                required: [model]
                properties:
                  model: {type: string, example: "llama3.2"}
                  node_id: {type: string, description: 'One node (id or name); default: every node that has it'}
        responses:
          "200":
            description: Deleted on every targeted node.
            content:
              application/json:
                schema: {$ref: "#/components/schemas/ModelOpSummary"}
          "207":
            description: Deleted on some nodes only (status "partial").
            content:
              application/json:
                schema: {$ref: "#/components/schemas/ModelOpSummary"}
          "400": {description: Missing or invalid model or node_id}
          "401": {description: Not logged in}
          "403": {description: Not an admin}
          "404": {description: No node had the model (or no node with this node_id)}
          "502":
            description: Every targeted node failed (status "error").
            content:
              application/json:
                schema: {$ref: "#/components/schemas/ModelOpSummary"}
        """
        await self.remove()


class ModelDeleteHandler(_DeleteHandler):
    async def post(self) -> None:
        """Delete a model from one node, or from every node that has it (for clients that cannot
        send a body with DELETE).
        ---
        summary: Delete a model on nodes (POST form)
        tags: [models]
        requestBody:
          required: true
          content:
            application/json:
              schema:
                type: object
                required: [model]
                properties:
                  model: {type: string}
                  node_id: {type: string}
        responses:
          "200":
            description: Deleted on every targeted node.
            content:
              application/json:
                schema: {$ref: "#/components/schemas/ModelOpSummary"}
          "207": {description: Deleted on some nodes only}
          "400": {description: Missing or invalid model or node_id}
          "401": {description: Not logged in}
          "403": {description: Not an admin}
          "404": {description: No node had the model}
          "502": {description: Every targeted node failed}
        """
        await self.remove()


ROUTES: list[tuple[str, type]] = [
    (r"/api/proxy/pull", PullHandler),
    (r"/api/proxy/models", ModelsHandler),
    (r"/api/proxy/models/delete", ModelDeleteHandler),
]
