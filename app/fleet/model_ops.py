"""Model management on nodes: pull, delete and copy on one node or on many at once.

Shared by the management API (``/api/proxy/pull``, ``/api/proxy/models``) and the
gateway's fan-out of ``/api/pull``, ``/api/delete`` and ``/api/copy``: nothing here
knows a handler. Every node works concurrently and independently (one node's
failure never stops another), and each node's model list is refreshed the moment
that node finishes, so a freshly pulled model is routable before its result is
reported.

Two ways to consume a pull::

    ops = ModelOps(fleet, upstream, refresh=monitor.check)
    results = await ops.pull("llama3", nodes, on_progress=print, on_result=print)

    async for event in ops.iter_pull("llama3", nodes):   # PullProgress | NodeResult
        ...

Cancel through the ``cancel`` future (e.g. "the client left"): every exchange
still running is aborted and reported as an error. Do not cancel the awaiting
task instead — that would leave upstream connections open.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from app.fleet.names import display_name, model_key
from app.fleet.node import NodeState
from app.fleet.pool import Fleet
from app.fleet.upstream import Cancelled, ConnectFailed, Timeouts, UpstreamClient, UpstreamError
from app.logs import app_log

SUCCESS = "success"
ERROR = "error"
PARTIAL = "partial"
MAX_ERROR_BODY = 64 * 1024
# Progress fields passed on as the node sent them (besides "status").
_PROGRESS_FIELDS = ("digest", "total", "completed")

Refresh = Callable[[NodeState], Awaitable[Any]]


class TargetError(Exception):
    """No node to run the operation on; ``status`` is the HTTP status that fits (404, 409, 503)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class PullProgress:
    """One progress line a node sent while pulling (``line`` is the node's object as is)."""

    node: NodeState
    line: dict[str, Any]

    def public(self) -> dict[str, Any]:
        """``{"node", "node_id", "status", "digest"?, "completed"?, "total"?}``."""
        out: dict[str, Any] = {"node": self.node.name, "node_id": self.node.id,
                               "status": str(self.line.get("status", ""))}
        for name in _PROGRESS_FIELDS:
            if name in self.line:
                out[name] = self.line[name]
        return out


@dataclass
class NodeResult:
    """How one node's part of an operation ended."""

    node: NodeState
    status: str
    error: str | None = None
    # The node's HTTP status when it answered (None: no answer, e.g. connection refused).
    http_status: int | None = None
    # The node said the model does not exist (404).
    not_found: bool = False

    @property
    def ok(self) -> bool:
        return self.status == SUCCESS

    def public(self) -> dict[str, Any]:
        """``{"node", "node_id", "status", "error"?}``."""
        out: dict[str, Any] = {"node": self.node.name, "node_id": self.node.id, "status": self.status}
        if self.error is not None:
            out["error"] = self.error
        return out


def summary_status(results: Sequence[NodeResult]) -> str:
    """``success`` when every node succeeded, ``error`` when none did, else ``partial``."""
    good = sum(1 for r in results if r.ok)
    if results and good == len(results):
        return SUCCESS
    return ERROR if good == 0 else PARTIAL


def summary(results: Sequence[NodeResult]) -> dict[str, Any]:
    """The final object of an operation: ``{"status", "results": [...]}``."""
    return {"status": summary_status(results), "results": [r.public() for r in results]}


# -- choosing nodes ------------------------------------------------------------------------------


def _find(fleet: Fleet, ident: str) -> NodeState | None:
    return fleet.get(ident) or fleet.by_name(ident)


def pull_targets(fleet: Fleet, node_id: str | None = None) -> list[NodeState]:
    """Where a pull goes: ``node_id`` (an id or a name; any state — the operator asked for it),
    else the configured ``pull_target``; ``"all"`` means every enabled, active, non-draining node."""
    if node_id:
        node = _find(fleet, node_id)
        if node is None:
            raise TargetError(404, f"no node with id {node_id!r}")
        return [node]
    target = fleet.config.pull_target
    if target and target != "all":
        node = _find(fleet, target)
        if node is None:
            raise TargetError(409, f"the configured pull_target {target!r} is not a registered node")
        return [node]
    nodes = sorted(fleet.routable(), key=lambda n: n.name.lower())
    if not nodes:
        raise TargetError(503, "no enabled active node to pull to")
    return nodes


def delete_targets(fleet: Fleet, model: str, node_id: str | None = None) -> list[NodeState]:
    """Where a delete goes: ``node_id`` (id or name), else every node whose cached list has the model."""
    return _one_or_having(fleet, model, node_id)


def copy_targets(fleet: Fleet, source: str, node_id: str | None = None) -> list[NodeState]:
    """Where a copy runs: ``node_id`` (id or name), else every node whose cached list has ``source``."""
    return _one_or_having(fleet, source, node_id)


def _one_or_having(fleet: Fleet, model: str, node_id: str | None) -> list[NodeState]:
    if node_id:
        node = _find(fleet, node_id)
        if node is None:
            raise TargetError(404, f"no node with id {node_id!r}")
        return [node]
    key = model_key(model)
    nodes = sorted((n for n in fleet.nodes.values() if n.has_model(key)), key=lambda n: n.name.lower())
    if not nodes:
        raise TargetError(404, f"model '{model}' not found on any node")
    return nodes


# -- the operations ------------------------------------------------------------------------------


async def _call(callback: Callable[[Any], Any] | None, value: Any) -> None:
    """Run a user callback (sync or async); a failing callback is logged, never fatal to the pull."""
    if callback is None:
        return
    try:
        result = callback(value)
        if inspect.isawaitable(result):
            await result
    except Exception:
        app_log().exception("model operation callback failed")


def _error_text(body: bytes, status: int) -> str:
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        value = None
    if isinstance(value, dict) and value.get("error"):
        error = value["error"]
        return str(error.get("message") if isinstance(error, dict) else error)
    text = body[:300].decode("utf-8", "replace").strip()
    return f"node answered {status}" + (f": {text}" if text else "")


class _PullSink:
    """Reads one node's NDJSON pull progress line by line."""

    def __init__(self, node: NodeState, on_progress: Callable[[PullProgress], Any] | None):
        self.node = node
        self.on_progress = on_progress
        self.status = 0
        self.pending = b""
        self.error_body: list[bytes] = []
        self.error_size = 0
        self.error: str | None = None
        self.succeeded = False

    def on_headers(self, status: int, reason: str, headers: Any) -> None:
        self.status = status

    def on_data(self, chunk: bytes) -> Awaitable[None] | None:
        if self.status != 200:
            if self.error_size < MAX_ERROR_BODY:
                self.error_body.append(chunk)
                self.error_size += len(chunk)
            return None
        data = self.pending + chunk
        *lines, self.pending = data.split(b"\n")
        return self._lines(lines)

    def flush(self) -> Awaitable[None] | None:
        rest, self.pending = self.pending, b""
        return self._lines([rest]) if self.status == 200 and rest.strip() else None

    def _lines(self, lines: list[bytes]) -> Awaitable[None] | None:
        progress = []
        for raw in lines:
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
            except (ValueError, UnicodeDecodeError):
                line = None
            if not isinstance(line, dict):
                self.error = self.error or "node sent an invalid progress line"
                continue
            if line.get("error"):
                self.error = str(line["error"])
            elif line.get("status") == SUCCESS:
                self.succeeded = True  # reported as the node's result, after the refresh
            else:
                progress.append(PullProgress(self.node, line))
        if not progress or self.on_progress is None:
            return None
        return self._deliver(progress)

    async def _deliver(self, progress: list[PullProgress]) -> None:
        # Awaiting the consumer applies back-pressure to this node's download of progress.
        for item in progress:
            await _call(self.on_progress, item)

    def result(self) -> NodeResult:
        if self.status != 200:
            body = b"".join(self.error_body)
            return NodeResult(self.node, ERROR, _error_text(body, self.status), self.status,
                              not_found=self.status == 404)
        if self.error is not None:
            return NodeResult(self.node, ERROR, self.error, self.status)
        if self.succeeded:
            return NodeResult(self.node, SUCCESS, None, self.status)
        return NodeResult(self.node, ERROR, "the node ended the pull without reporting success", self.status)


@dataclass
class _Run:
    """One operation's shared cancel switch: every exchange registered here is aborted with it."""

    stop: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())

    def link(self, cancel: asyncio.Future[Any] | None) -> None:
        if cancel is None:
            return
        if cancel.done():
            self.trigger()
        else:
            cancel.add_done_callback(lambda _: self.trigger())

    def trigger(self) -> None:
        if not self.stop.done():
            self.stop.set_result(None)


class ModelOps:
    """Pull, delete and copy models on nodes through the one :class:`UpstreamClient`.

    ``refresh(node)`` re-reads a node's model list (the health monitor's ``check``);
    it runs as soon as that node finishes, before its result is reported.
    """

    def __init__(self, fleet: Fleet, upstream: UpstreamClient, refresh: Refresh | None = None):
        self.fleet = fleet
        self.upstream = upstream
        self.refresh = refresh

    def timeouts(self) -> Timeouts:
        cfg = self.fleet.config
        return Timeouts(connect=cfg.connect_timeout, first_byte=cfg.first_byte_timeout, idle=cfg.idle_timeout)

    # -- pull -----------------------------------------------------------------------------------

    async def pull(
        self,
        model: str,
        nodes: Sequence[NodeState],
        *,
        on_progress: Callable[[PullProgress], Awaitable[None] | None] | None = None,
        on_result: Callable[[NodeResult], Awaitable[None] | None] | None = None,
        insecure: bool = False,
        cancel: asyncio.Future[Any] | None = None,
    ) -> list[NodeResult]:
        """Pull ``model`` on every node at once; results in the order of ``nodes``.

        ``on_progress`` gets each progress line as a node sends it (awaited: a slow
        consumer slows that node's stream down, nothing else); ``on_result`` gets each
        node's result as soon as it is final (after its model list was refreshed).
        """
        run = _Run()
        run.link(cancel)
        body = {"model": model, "stream": True}
        if insecure:
            body["insecure"] = True
        payload = json.dumps(body).encode()

        async def one(node: NodeState) -> NodeResult:
            sink = _PullSink(node, on_progress)
            result = await self._exchange(node, "POST", "/api/pull", payload, sink, run)
            if result is None:
                pending = sink.flush()
                if pending is not None:
                    await pending
                result = sink.result()
            await self._after(node, model, result, present=True)
            await _call(on_result, result)
            return result

        return list(await asyncio.gather(*(one(node) for node in nodes)))

    async def iter_pull(
        self,
        model: str,
        nodes: Sequence[NodeState],
        *,
        insecure: bool = False,
        cancel: asyncio.Future[Any] | None = None,
        buffer: int = 256,
    ) -> AsyncIterator[PullProgress | NodeResult]:
        """:meth:`pull` as an async iterator of progress events and per-node results.

        Leaving the loop early aborts the nodes' pulls that are still running.
        """
        queue: asyncio.Queue[PullProgress | NodeResult | None] = asyncio.Queue(buffer)
        stop: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if cancel is not None:
            cancel.add_done_callback(lambda _: stop.done() or stop.set_result(None))

        async def produce() -> None:
            try:
                await self.pull(model, nodes, on_progress=queue.put, on_result=queue.put, insecure=insecure,
                                cancel=stop)
            finally:
                await queue.put(None)

        task = asyncio.ensure_future(produce())
        try:
            while (item := await queue.get()) is not None:
                yield item
        finally:
            if not stop.done():
                stop.set_result(None)
            # Drain so the producer is never stuck on a full queue, then let it end.
            while not task.done():
                with contextlib.suppress(asyncio.QueueEmpty):
                    while True:
                        queue.get_nowait()
                await asyncio.wait({task}, timeout=0.05)
            with contextlib.suppress(Exception):
                task.result()

    # -- delete and copy ------------------------------------------------------------------------

    async def delete(self, model: str, nodes: Sequence[NodeState], *,
                     cancel: asyncio.Future[Any] | None = None) -> list[NodeResult]:
        """Delete ``model`` on every node at once (Ollama's ``DELETE /api/delete``)."""
        payload = json.dumps({"model": model}).encode()
        return await self._simple("DELETE", "/api/delete", payload, nodes, model, False, cancel)

    async def copy(self, source: str, destination: str, nodes: Sequence[NodeState], *,
                   cancel: asyncio.Future[Any] | None = None) -> list[NodeResult]:
        """Copy ``source`` to ``destination`` on every node at once (``POST /api/copy``)."""
        payload = json.dumps({"source": source, "destination": destination}).encode()
        return await self._simple("POST", "/api/copy", payload, nodes, destination, True, cancel)

    async def _simple(self, method: str, path: str, payload: bytes, nodes: Sequence[NodeState], model: str,
                      present: bool, cancel: asyncio.Future[Any] | None) -> list[NodeResult]:
        run = _Run()
        run.link(cancel)

        async def one(node: NodeState) -> NodeResult:
            sink = _BufferedSink()
            result = await self._exchange(node, method, path, payload, sink, run)
            if result is None:
                if sink.status == 200:
                    result = NodeResult(node, SUCCESS, None, 200)
                else:
                    result = NodeResult(node, ERROR, _error_text(b"".join(sink.parts), sink.status), sink.status,
                                        not_found=sink.status == 404)
            await self._after(node, model, result, present=present)
            return result

        return list(await asyncio.gather(*(one(node) for node in nodes)))

    # -- shared ---------------------------------------------------------------------------------

    async def _exchange(self, node: NodeState, method: str, path: str, payload: bytes, sink: Any,
                        run: _Run) -> NodeResult | None:
        """Run one request; a :class:`NodeResult` when it failed without an answer, else None."""
        if run.stop.done():
            return NodeResult(node, ERROR, "cancelled")
        headers = {**node.headers, "Content-Type": "application/json", "Accept": "application/x-ndjson"}
        exchange = self.upstream.exchange(node.url, method, path, body=payload, headers=headers,
                                          timeouts=self.timeouts())

        def abort(_: asyncio.Future[None]) -> None:
            exchange.cancel()

        run.stop.add_done_callback(abort)
        try:
            await exchange.run(sink)
        except Cancelled:
            return NodeResult(node, ERROR, "cancelled", sink.status or None)
        except UpstreamError as exc:
            if isinstance(exc, ConnectFailed) and self.fleet.get(node.id) is node:
                self.fleet.mark_failure(node, f"{path}: {exc}", hard=True)
            return NodeResult(node, ERROR, str(exc), sink.status or None)
        finally:
            run.stop.remove_done_callback(abort)
        return None

    async def _after(self, node: NodeState, model: str, result: NodeResult, *, present: bool) -> None:
        """Re-read the node's models now, so routing sees the change before anyone is told."""
        name = _label(model)
        app_log().info("%s on node %s: %s%s", name, node.name, result.status,
                       f" ({result.error})" if result.error else "")
        if self.refresh is None or self.fleet.get(node.id) is not node or result.error == "cancelled":
            return
        key = _key(model)
        # A probe already running may have read the list before the change: then look once more.
        for _ in range(2):
            try:
                await self.refresh(node)
            except Exception:
                app_log().exception("refreshing node %s after a model change failed", node.name)
                return
            if not result.ok or key is None or node.has_model(key) == present:
                return


class _BufferedSink:
    def __init__(self) -> None:
        self.status = 0
        self.parts: list[bytes] = []
        self.size = 0

    def on_headers(self, status: int, reason: str, headers: Any) -> None:
        self.status = status

    def on_data(self, chunk: bytes) -> None:
        if self.size < MAX_ERROR_BODY:
            self.parts.append(chunk)
            self.size += len(chunk)


def _key(model: str) -> str | None:
    try:
        return model_key(model)
    except ValueError:
        return None


def _label(model: str) -> str:
    try:
        return display_name(model)
    except ValueError:
        return model


__all__ = [
    "ERROR",
    "PARTIAL",
    "SUCCESS",
    "ModelOps",
    "NodeResult",
    "PullProgress",
    "TargetError",
    "copy_targets",
    "delete_targets",
    "pull_targets",
    "summary",
    "summary_status",
]
