"""Model management through the gateway: what `/api/pull`, `/api/delete` … mean for a fleet.

The fleet answers as one Ollama server would, so that `ollama pull` and Open
WebUI's model screens work unchanged:

* ``/api/pull`` pulls to every enabled active node (or the one configured in
  ``pull_target``) at once; the progress lines are merged (a layer's ``total``
  and ``completed`` summed over the nodes) and the stream ends with exactly one
  ``{"status": "success"}`` — when every node succeeded — or one ``{"error"}``.
* ``/api/delete`` deletes on every node that has the model: 200 when any had
  it, 404 when none did.
* ``/api/copy`` copies on every node that has the source.
* ``/api/push`` goes to one node that has the model (the weights are the same).
* ``HEAD /api/blobs/:digest`` is 200 only when every enabled active node has the
  blob. Uploading blobs (``POST``) and ``/api/create`` answer 501: a model built
  from local files would exist on one node only; create it on a node directly
  and pull or copy it across the fleet.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from app.api.base import ApiError, BaseHandler, GatewayKeyMixin
from app.api.ollama import required_model, wants_stream
from app.api.relaying import RelayHandler
from app.fleet.model_ops import NodeResult, PullProgress, TargetError, copy_targets, delete_targets, pull_targets
from app.fleet.relay import BUFFER, NDJSON, ProxyRequest
from app.fleet.upstream import UpstreamError

_DIGEST = re.compile(r"^sha256[:-][0-9a-f]{64}$")


def _target_error(exc: TargetError, missing_text: str | None = None) -> ApiError:
    if exc.status == 404 and missing_text is not None:
        return ApiError(404, missing_text)
    headers = {"Retry-After": "5"} if exc.status == 503 else None
    return ApiError(exc.status, str(exc), headers=headers)


def _failure_text(results: list[NodeResult]) -> str:
    failed = [r for r in results if not r.ok]
    detail = "; ".join(f"{r.node.name}: {r.error}" for r in failed)
    if len(failed) == 1 and len(results) == 1:
        return failed[0].error or "failed"
    return f"failed on {len(failed)} of {len(results)} nodes ({detail})"


class PullHandler(GatewayKeyMixin, BaseHandler):
    """Pull to the fleet, as one merged Ollama progress stream."""

    def initialize(self, services: Any) -> None:
        super().initialize(services)
        self.gone = None

    def on_connection_close(self) -> None:
        super().on_connection_close()  # a body still being read must fail, or the handler waits forever
        if self.gone is not None and not self.gone.done():
            self.gone.set_result(None)

    async def post(self) -> None:
        """Pull a model to every enabled active node (or the pull_target node), concurrently.
        ---
        summary: Pull a model to the fleet
        tags: [gateway]
        requestBody:
          required: true
          content:
            application/json:
              schema: {$ref: "#/components/schemas/PullRequest"}
              example: {model: llama3.2}
        responses:
          "200":
            description: >
              Streamed by default: NDJSON PullProgress lines merged over the nodes (a layer's total and completed
              summed), ending with exactly one `{"status": "success"}` when every node succeeded, else one
              `{"error": "..."}` line. With `stream: false`: `{"status": "success"}`.
            content:
              application/x-ndjson:
                schema: {$ref: "#/components/schemas/PullProgress"}
              application/json:
                schema: {$ref: "#/components/schemas/Status"}
          "400": {description: Missing or invalid model or stream}
          "401": {description: A gateway key is required (require_api_key is on) and was missing or invalid}
          "409": {description: The configured pull_target is not a registered node}
          "500": {description: "Not streamed, and the pull failed on some node (the error names them)"}
          "503": {description: No enabled active node to pull to}
        """
        body = self.json_body()
        model, _ = required_model(body, "model", "name")
        stream = wants_stream(body, True)
        insecure = bool(body.get("insecure", False))
        try:
            nodes = pull_targets(self.services.fleet)
        except TargetError as exc:
            raise _target_error(exc) from None
        self.gone = asyncio.get_running_loop().create_future()
        merger = _ProgressMerger()
        results: list[NodeResult] = []
        if stream:
            self.set_header("Content-Type", "application/x-ndjson")
        async for event in self.services.model_ops.iter_pull(model, nodes, insecure=insecure, cancel=self.gone):
            if isinstance(event, NodeResult):
                results.append(event)
            elif stream:
                line = merger.merge(event)
                if line is not None:
                    self.write(json.dumps(line) + "\n")
                    await self.flush()
        if self.gone.done():
            return
        ok = bool(results) and all(r.ok for r in results)
        if stream:
            final = {"status": "success"} if ok else {"error": _failure_text(results)}
            self.finish(json.dumps(final) + "\n")
        elif ok:
            self.send_json({"status": "success"})
        else:
            raise ApiError(500, _failure_text(results))


class _ProgressMerger:
    """One Ollama-shaped progress stream from several nodes' streams."""

    def __init__(self) -> None:
        self.statuses: set[str] = set()
        self.layers: dict[tuple[str, str], tuple[int, int]] = {}

    def merge(self, event: PullProgress) -> dict[str, Any] | None:
        line = event.line
        status = str(line.get("status", ""))
        digest = line.get("digest")
        if isinstance(digest, str) and isinstance(line.get("total"), int):
            completed = line.get("completed", 0)
            self.layers[(event.node.id, digest)] = (line["total"], completed if isinstance(completed, int) else 0)
            total = sum(t for (_, d), (t, _) in self.layers.items() if d == digest)
            done = sum(c for (_, d), (_, c) in self.layers.items() if d == digest)
            out: dict[str, Any] = {"status": status, "digest": digest, "total": total}
            if done:
                out["completed"] = done
            return out
        if status in self.statuses:
            return None
        self.statuses.add(status)
        return {"status": status}


class DeleteHandler(GatewayKeyMixin, BaseHandler):
    """Delete a model on every node that has it (Ollama takes the name in a DELETE body)."""

    async def delete(self) -> None:
        """Delete a model on every node that has it (the name goes in a JSON body, as with Ollama).
        ---
        summary: Delete a model from the fleet
        tags: [gateway]
        requestBody:
          required: true
          content:
            application/json:
              schema: {$ref: "#/components/schemas/ModelNameRequest"}
              example: {model: llama3.2}
        responses:
          "200": {description: Deleted on at least one node; empty body.}
          "400": {description: Missing or invalid model}
          "401": {description: A gateway key is required (require_api_key is on) and was missing or invalid}
          "404": {description: No node has this model}
          "502": {description: Every node that has it failed (the error names them)}
        """
        body = self.json_body()
        model, _ = required_model(body, "model", "name")
        missing = f"model '{model}' not found"
        try:
            nodes = delete_targets(self.services.fleet, model)
        except TargetError as exc:
            raise _target_error(exc, missing) from None
        results = await self.services.model_ops.delete(model, nodes)
        if any(r.ok for r in results):
            self.finish()
        elif all(r.not_found for r in results):
            raise ApiError(404, missing)
        else:
            raise ApiError(502, _failure_text(results))


class CopyHandler(GatewayKeyMixin, BaseHandler):
    async def post(self) -> None:
        """Copy a model under a new name on every node that has the source.
        ---
        summary: Copy a model in the fleet
        tags: [gateway]
        requestBody:
          required: true
          content:
            application/json:
              schema: {$ref: "#/components/schemas/CopyRequest"}
        responses:
          "200": {description: Copied on every node that has the source; empty body.}
          "400": {description: Missing or invalid source or destination}
          "401": {description: A gateway key is required (require_api_key is on) and was missing or invalid}
          "404": {description: No node has the source model}
          "502": {description: The copy failed on some node (the error names them)}
        """
        body = self.json_body()
        source, _ = required_model(body, "source", missing="source is required")
        destination, _ = required_model(body, "destination", missing="destination is required")
        missing = f"model \"{source}\" not found"
        try:
            nodes = copy_targets(self.services.fleet, source)
        except TargetError as exc:
            raise _target_error(exc, missing) from None
        results = await self.services.model_ops.copy(source, destination, nodes)
        if all(r.ok for r in results):
            self.finish()
        elif all(r.not_found for r in results):
            raise ApiError(404, missing)
        else:
            raise ApiError(502, _failure_text(results))


class PushHandler(GatewayKeyMixin, RelayHandler):
    """Push from one node that has the model (its weights are the fleet's)."""

    async def post(self) -> None:
        """Push a model to its registry from one node that has it.
        ---
        summary: Push a model
        tags: [gateway]
        requestBody:
          required: true
          content:
            application/json:
              schema: {$ref: "#/components/schemas/PullRequest"}
              example: {model: myuser/mymodel:latest}
        responses:
          "200":
            description: >
              Streamed by default: the node's NDJSON progress (PullProgress lines) ending with
              `{"status": "success"}` or an error line. With `stream: false`: `{"status": "success"}`.
            content:
              application/x-ndjson:
                schema: {$ref: "#/components/schemas/PullProgress"}
              application/json:
                schema: {$ref: "#/components/schemas/Status"}
          "400": {description: Missing or invalid model or stream}
          "401": {description: A gateway key is required (require_api_key is on) and was missing or invalid}
          "404": {description: No node that takes requests has this model}
          "502": {description: Every node tried failed}
          "503": {description: "Every node with the model is busy, down or draining; see Retry-After"}
        """
        body = self.json_body()
        self.model, key = required_model(body, "model", "name")
        stream = wants_stream(body, True)
        await self.proxy(ProxyRequest(method="POST", path=self.request.path, body=self.body, key=key,
                                      model_label=self.model, framing=NDJSON if stream else BUFFER,
                                      expect_done=stream))

    def not_found_text(self) -> str:
        return f"model '{self.model}' not found"


class CreateHandler(GatewayKeyMixin, BaseHandler):
    async def post(self) -> None:
        """Not supported through the fleet: a model created from local files would exist on one node only.
        ---
        summary: Create a model (not supported)
        tags: [gateway]
        requestBody:
          required: false
          content:
            application/json:
              schema: {type: object}
        responses:
          "401": {description: A gateway key is required (require_api_key is on) and was missing or invalid}
          "501": {description: "Always; create the model on one node, then copy or pull it across the fleet."}
        """
        raise ApiError(501, "creating models through the fleet proxy is not supported: create the model on one "
                            "node, then copy or pull it to the others through /api/copy or /api/pull")


class BlobHandler(GatewayKeyMixin, BaseHandler):
    """A blob exists for the fleet only when every node that takes requests has it."""

    async def head(self, digest: str) -> None:
        """Whether every node that takes requests has this blob.
        ---
        summary: Check a blob
        tags: [gateway]
        parameters:
          - name: digest
            in: path
            required: true
            schema: {type: string, pattern: "^sha256[:-][0-9a-f]{64}$"}
        responses:
          "200": {description: Every enabled active node has the blob.}
          "400": {description: Invalid digest}
          "401": {description: A gateway key is required (require_api_key is on) and was missing or invalid}
          "404": {description: Some node lacks the blob}
          "502": {description: A node could not be asked}
          "503": {description: No active node}
        """
        if not _DIGEST.match(digest):
            raise ApiError(400, "invalid digest format")
        nodes = self.services.fleet.routable()
        if not nodes:
            raise ApiError(503, "no active node", headers={"Retry-After": "5"})
        for node in nodes:
            try:
                status, _, _ = await self.services.upstream.fetch(
                    node.url, "HEAD", f"/api/blobs/{digest}", headers=dict(node.headers),
                    timeouts=self.services.relay.timeouts())
            except UpstreamError as exc:
                raise ApiError(502, f"node {node.name}: {exc}") from None
            if status != 200:
                self.set_status(404)
                self.finish()
                return
        self.finish()

    async def post(self, digest: str) -> None:
        """Not supported through the fleet: upload blobs to a node directly.
        ---
        summary: Upload a blob (not supported)
        tags: [gateway]
        parameters:
          - {name: digest, in: path, required: true, schema: {type: string}}
        requestBody:
          required: false
          content:
            application/octet-stream:
              schema: {type: string, format: binary}
        responses:
          "401": {description: A gateway key is required (require_api_key is on) and was missing or invalid}
          "501": {description: Always.}
        """
        raise ApiError(501, "uploading blobs through the fleet proxy is not supported: upload to a node directly")


ROUTES: list[tuple[str, type]] = [
    (r"/api/pull", PullHandler),
    (r"/api/delete", DeleteHandler),
    (r"/api/copy", CopyHandler),
    (r"/api/push", PushHandler),
    (r"/api/create", CreateHandler),
    (r"/api/blobs/([^/]+)", BlobHandler),
]
