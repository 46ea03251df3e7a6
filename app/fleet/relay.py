"""Forward one client request to the fleet: pick a node, relay, fail over.

The "committed" guard decides everything: until the first byte has been sent
to the client, any node failure (refused, reset, timeout, 5xx) is retried on the
next candidate, up to ``max_attempts``. After it, a stream gets one last error
line (NDJSON) or error event (SSE) and a clean end — never a silent truncation.

Streams are relayed line by line (events for SSE): complete lines are written
and flushed as they arrive, a partial line waits for its end, so an error line
always starts on a line of its own. Unstreamed answers are small single JSON
objects: they are held until complete, which lets even a failure mid-body be
retried elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, Protocol

from tornado import httputil

from app.fleet.node import NodeState
from app.fleet.pool import Fleet, Lease, NoCandidate
from app.fleet.upstream import Cancelled, ConnectFailed, Timeouts, UpstreamClient, UpstreamError, UpstreamTimeout

NDJSON = "ndjson"
SSE = "sse"
BUFFER = "buffer"

MAX_BUFFERED = 256 * 1024 * 1024
# Response headers of a node that reach the client; everything else is hop-by-hop or ours.
PASSED_HEADERS = ("Content-Type",)
# Answers with fewer generated tokens teach nothing about a node's speed.
MIN_SPEED_TOKENS = 8
_DONE_MARKERS = (b'"done":true', b'"done": true', b'"status":"success"', b'"status": "success"')


class Downstream(Protocol):
    """The client side, implemented by the handler."""

    gone: asyncio.Future[None]

    def begin(self, status: int, headers: dict[str, str], node: NodeState) -> None: ...

    def send(self, data: bytes) -> Awaitable[None]: ...

    def complete(self, data: bytes) -> Awaitable[None]: ...


@dataclass
class ProxyRequest:
    method: str
    path: str
    body: bytes
    key: str | None
    model_label: str
    framing: str
    # For streams that must end with a done line (generate, chat, pull): check and repair.
    expect_done: bool = False
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Outcome:
    """What happened, for logs, metrics and usage records."""

    node: NodeState | None = None
    status: int = 0
    attempts: int = 0
    retried_nodes: list[str] = field(default_factory=list)
    ttfb: float | None = None
    duration: float = 0.0
    error: str | None = None
    client_gone: bool = False
    candidates: int = 0
    loaded: bool = False
    queued_for: float = 0.0
    # The parsed final message: the last NDJSON line, the unstreamed JSON object, or the last
    # SSE data event before ``[DONE]`` (where /v1 puts ``usage`` with include_usage).
    final: dict[str, Any] | None = None
    bytes_out: int = 0


class RelayFailed(Exception):
    """Every attempt failed before anything reached the client."""

    def __init__(self, status: int, message: str, retry_after: int | None = None,
                 body: bytes | None = None, content_type: str | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
        self.body = body
        self.content_type = content_type


class _Sink:
    """Receives one node's answer and decides when it is committed to the client."""

    def __init__(self, req: ProxyRequest, down: Downstream, node: NodeState, started: float):
        self.req = req
        self.down = down
        self.node = node
        self.started = started
        self.committed = False
        self.retry_status: int | None = None
        self.status = 0
        self.headers: dict[str, str] = {}
        self.pending = b""
        self.parts: list[bytes] = []
        self.size = 0
        self.last_event = b""
        # SSE: the last two chunks relayed, to find the event before [DONE] at the end.
        self.last_chunk = b""
        self.prev_chunk = b""
        self.ttfb: float | None = None
        self.bytes_out = 0
        self.sep = b"\n\n" if req.framing == SSE else b"\n"

    def on_headers(self, status: int, reason: str, headers: httputil.HTTPHeaders) -> None:
        self.status = status
        self.ttfb = time.monotonic() - self.started
        self.headers = {name: headers[name] for name in PASSED_HEADERS if name in headers}
        if status >= 500:
            self.retry_status = status

    def on_data(self, chunk: bytes) -> Awaitable[None] | None:
        # Errors and unstreamed answers are small: buffer them whole.
        if self.status >= 400 or self.req.framing == BUFFER:
            self.size += len(chunk)
            if self.size <= MAX_BUFFERED:
                self.parts.append(chunk)
            return None
        data = self.pending + chunk if self.pending else chunk
        cut = data.rfind(self.sep)
        if cut < 0:
            self.pending = data
            return None
        end = cut + len(self.sep)
        self.pending = data[end:]
        complete = data[:end] if self.pending else data
        start = complete.rfind(self.sep, 0, len(complete) - len(self.sep))
        self.last_event = complete[start + len(self.sep):] if start >= 0 else complete
        if self.req.framing == SSE:
            self.prev_chunk, self.last_chunk = self.last_chunk, complete
        return self._send(complete)

    def _send(self, data: bytes) -> Awaitable[None]:
        if not self.committed:
            self.committed = True
            self.down.begin(self.status, self.headers, self.node)
        self.bytes_out += len(data)
        return self.down.send(data)

    def body(self) -> bytes:
        return b"".join(self.parts)


class Relay:
    """The failover loop around :class:`UpstreamClient` for one proxied request."""

    def __init__(self, fleet: Fleet, upstream: UpstreamClient):
        self.fleet = fleet
        self.upstream = upstream

    def timeouts(self) -> Timeouts:
        cfg = self.fleet.config
        return Timeouts(connect=cfg.connect_timeout, first_byte=cfg.first_byte_timeout, idle=cfg.idle_timeout)

    async def forward(self, req: ProxyRequest, down: Downstream, outcome: Outcome) -> None:
        """Serve ``req`` onto ``down``; fills ``outcome``. Raises :class:`RelayFailed` before commit."""
        started = time.monotonic()
        tried: list[str] = []
        last: RelayFailed | None = None
        try:
            for _ in range(self.fleet.config.max_attempts):
                try:
                    lease = await self.fleet.acquire(req.key, tried, model_label=req.model_label, abandon=down.gone)
                except NoCandidate as exc:
                    if last is not None:
                        raise last from None
                    status = 503 if exc.known else 404
                    raise RelayFailed(status, str(exc), retry_after=exc.retry_after if exc.known else None) from None
                outcome.attempts += 1
                outcome.candidates = max(outcome.candidates, lease.candidates)
                outcome.queued_for += lease.waited
                try:
                    done = await self._attempt(req, down, lease, outcome)
                finally:
                    lease.release()
                if done is None:
                    _learn_speed(lease.node, req.key, outcome.final)
                    return
                last = done
                tried.append(lease.node.id)
                outcome.retried_nodes.append(lease.node.name)
            assert last is not None
            raise last
        finally:
            outcome.duration = time.monotonic() - started

    async def _attempt(self, req: ProxyRequest, down: Downstream, lease: Lease,
                       outcome: Outcome) -> RelayFailed | None:
        """One try on one node: ``None`` when finished (served or client gone), else why to retry."""
        node = lease.node
        outcome.node = node
        outcome.loaded = lease.loaded
        headers = dict(req.headers)
        headers.update(node.headers)
        sink = _Sink(req, down, node, time.monotonic())
        exchange = self.upstream.exchange(node.url, req.method, req.path, body=req.body, headers=headers,
                                          timeouts=self.timeouts())
        def cancel(_: asyncio.Future[None]) -> None:
            exchange.cancel()

        down.gone.add_done_callback(cancel)
        try:
            await exchange.run(sink)
        except Cancelled:
            outcome.client_gone = True
            outcome.status = sink.status
            outcome.error = "client disconnected"
            return None
        except UpstreamError as exc:
            if down.gone.done():
                outcome.client_gone = True
                outcome.error = "client disconnected"
                return None
            hard = isinstance(exc, ConnectFailed)
            self.fleet.mark_failure(node, f"{req.path}: {exc}", hard=hard)
            if sink.committed:
                outcome.status = sink.status
                outcome.error = str(exc)
                await self._finish_with_error(sink, f"node {node.name} failed mid-response: {exc}")
                return None
            if hard:
                # The node is down (and now out of the pool): "unavailable, retry", like no node at all.
                return RelayFailed(503, f"node {node.name}: {exc}", retry_after=self.fleet.retry_after())
            status = 504 if isinstance(exc, UpstreamTimeout) else 502
            return RelayFailed(status, f"node {node.name}: {exc}")
        finally:
            down.gone.remove_done_callback(cancel)
            outcome.ttfb = sink.ttfb
            outcome.bytes_out = sink.bytes_out

        outcome.status = sink.status
        if sink.retry_status is not None:
            body = sink.body()
            message = _error_text(body) or f"node answered {sink.status}"
            busy = sink.status == 503
            if not busy:
                self.fleet.mark_failure(node, f"{req.path}: {sink.status} {message}")
            return RelayFailed(sink.status, message, retry_after=1 if busy else None, body=body,
                               content_type=sink.headers.get("Content-Type"))
        if req.framing == BUFFER or sink.status >= 400:
            body = sink.body()
            if sink.status < 400:
                outcome.final = _parse_json(body)
                if outcome.final is None:
                    # Nothing sent yet: a node answering garbage is failed over like a 5xx.
                    self.fleet.mark_failure(node, f"{req.path}: answer is not a JSON object")
                    return RelayFailed(502, f"node {node.name} sent an invalid answer")
            self._succeeded(node, sink, req)
            sink.committed = True
            down.begin(sink.status, sink.headers, node)
            sink.bytes_out += len(body)
            await down.complete(body)
            return None
        tail = _complete_tail(sink.pending, req.framing)
        if not sink.committed and tail is None:
            self.fleet.mark_failure(node, f"{req.path}: stream held no complete message")
            return RelayFailed(502, f"node {node.name} sent an invalid stream")
        self._succeeded(node, sink, req)
        if tail:
            sink.last_event = tail
            sink.prev_chunk, sink.last_chunk = sink.last_chunk, tail
            await sink._send(tail)
        outcome.final = _last_sse_data(sink) if req.framing == SSE else _parse_event(sink.last_event, req.framing)
        if req.expect_done and not any(m in sink.last_event for m in _DONE_MARKERS) \
                and b'"error"' not in sink.last_event:
            outcome.error = "stream ended without done"
            await self._finish_with_error(sink, f"node {node.name} ended the stream without a final message")
        return None

    def _succeeded(self, node: NodeState, sink: _Sink, req: ProxyRequest) -> None:
        self.fleet.mark_success(node)
        if sink.ttfb is not None:
            node.record_ttfb(sink.ttfb, req.key)

    async def _finish_with_error(self, sink: _Sink, message: str) -> None:
        """After the first byte: one last error line/event, then the handler closes."""
        if sink.req.framing == SSE:
            payload = {"error": {"message": message, "type": "api_error", "param": None, "code": None}}
            line = b"data: " + json.dumps(payload).encode() + b"\n\n"
        else:
            line = json.dumps({"error": message}).encode() + b"\n"
        if not sink.committed:
            sink.committed = True
            sink.down.begin(sink.status or 200, sink.headers, sink.node)
        # The client may be gone already; there is nothing more to tell it then.
        with contextlib.suppress(Exception):
            await sink.down.send(line)


def _learn_speed(node: NodeState, key: str | None, final: dict[str, Any] | None) -> None:
    """Feed the node's own timing of its answer (``eval_count`` over ``eval_duration``, in ns) to
    the speed estimate that ``least_active`` weighs nodes by. Short answers say more about
    overheads than about speed, and /v1 answers carry no timing: both teach nothing."""
    if not final:
        return
    count, duration = final.get("eval_count"), final.get("eval_duration")
    if type(count) is not int or type(duration) is not int or count < MIN_SPEED_TOKENS or duration <= 0:
        return
    try:
        speed = count / (duration / 1e9)
    except OverflowError:  # numbers no real node sends
        return
    if math.isfinite(speed):
        node.record_speed(speed, key)


def _complete_tail(pending: bytes, framing: str) -> bytes | None:
    """A stream's unterminated last piece, completed when it is a whole message.

    ``b""`` when there is none, ``None`` when it is a fragment (garbage).
    """
    text = pending.strip()
    if not text:
        return b""
    if framing == SSE:
        return text + b"\n\n" if text.startswith((b"data:", b":", b"event:")) else None
    return text + b"\n" if _parse_json(text) is not None else None


def _parse_json(body: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


def _last_sse_data(sink: _Sink) -> dict[str, Any] | None:
    """The last JSON data event of a relayed SSE stream (skipping ``[DONE]`` and comments)."""
    for chunk in (sink.last_chunk, sink.prev_chunk):
        for event in reversed(chunk.split(b"\n\n")):
            if event.strip():
                parsed = _parse_event(event, SSE)
                if parsed is not None:
                    return parsed
    return None


def _parse_event(event: bytes, framing: str) -> dict[str, Any] | None:
    text = event.strip()
    if framing == SSE:
        # ``[DONE]`` carries nothing: see _last_sse_data for the event before it.
        if text.startswith(b"data:"):
            text = text[5:].strip()
        if text == b"[DONE]":
            return None
    return _parse_json(text)


def _error_text(body: bytes) -> str | None:
    parsed = _parse_json(body)
    if parsed is None:
        return body[:300].decode("utf-8", "replace").strip() or None
    error = parsed.get("error")
    if isinstance(error, dict):
        error = error.get("message")
    return str(error) if error else None
