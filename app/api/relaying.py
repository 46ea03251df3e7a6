"""The handler side of a proxied request: a :class:`~app.fleet.relay.Downstream` on Tornado.

Subclasses parse their route's body into a :class:`ProxyRequest`; this class
runs it through the relay, turns failures into the route's error shape, and
accounts the request once it is over: its one ``logs/proxy.json`` line, its usage
record (same request id, same fields), its metrics and its gateway key's tokens —
all in memory; the usage record reaches the store later, in a batch.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Any

from tornado import iostream

from app.api.base import ApiError, BaseHandler
from app.fleet.node import NodeState
from app.fleet.relay import Outcome, ProxyRequest, RelayFailed
from app.fleet.usage import tokens_of
from app.logs import proxy_log

# Request headers a node may see. Host is the node's own; Authorization and
# Cookie belong to the proxy's clients, never to nodes.
FORWARDED_REQUEST_HEADERS = ("Content-Type", "Accept", "User-Agent")


class RelayHandler(BaseHandler):
    """Base of every route that forwards to a node."""

    route = ""

    def initialize(self, services: Any) -> None:
        super().initialize(services)
        self.gone: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._began = time.monotonic()
        self._began_at = time.time()

    def body_limit(self) -> int:
        return self.services.fleet.config.max_body_size

    def on_connection_close(self) -> None:
        super().on_connection_close()  # a body still being read must fail, or the handler waits forever
        if not self.gone.done():
            self.gone.set_result(None)

    def on_finish(self) -> None:
        # Done with this request: nothing may wait on the client any more.
        if not self.gone.done():
            self.gone.cancel()

    # -- Downstream --------------------------------------------------------------------------------

    def begin(self, status: int, headers: dict[str, str], node: NodeState) -> None:
        self.set_status(status)
        for name, value in headers.items():
            self.set_header(name, value)
        self.set_header("X-Aivonx-Node", node.name)

    def send(self, data: bytes) -> Awaitable[None]:
        self.write(data)
        return self.flush()

    def complete(self, data: bytes) -> Awaitable[None]:
        return self.finish(data)

    # -- running ------------------------------------------------------------------------------------

    def forward_headers(self) -> dict[str, str]:
        headers = {name: self.request.headers[name] for name in FORWARDED_REQUEST_HEADERS
                   if name in self.request.headers}
        headers["X-Request-Id"] = self.request_id()
        return headers

    async def proxy(self, req: ProxyRequest) -> Outcome:
        """Serve ``req`` through the fleet; errors become this route's error response."""
        self.request_id()
        req.headers = self.forward_headers()
        outcome = Outcome()
        try:
            await self.services.relay.forward(req, self, outcome)
        except RelayFailed as exc:
            outcome.status = exc.status
            outcome.error = str(exc)
            self.fail(exc)
        except asyncio.CancelledError:
            # The client left while the request was queued.
            outcome.client_gone = True
            outcome.error = "client disconnected while queued"
        except iostream.StreamClosedError:
            outcome.client_gone = True
            outcome.error = "client disconnected"
        finally:
            if self.send_stalled:
                outcome.error = f"client read nothing for {self.services.settings.client_send_timeout:g} s"
            self.log_outcome(req, outcome)
        if not self._finished and not outcome.client_gone:
            self.finish()
        return outcome

    def fail(self, exc: RelayFailed) -> None:
        """Answer a request that no node could serve."""
        if self._headers_written:
            return
        if exc.body is not None and exc.status >= 500 and exc.content_type:
            # A node's own error answer (after retries elsewhere): pass it through as is.
            self.set_status(exc.status)
            self.set_header("Content-Type", exc.content_type)
            if exc.retry_after is not None:
                self.set_header("Retry-After", str(exc.retry_after))
            self.finish(exc.body)
            return
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else None
        raise ApiError(exc.status, self.not_found_text() if exc.status == 404 else str(exc), headers=headers)

    def not_found_text(self) -> str:
        return "model not found"

    def log_outcome(self, req: ProxyRequest, outcome: Outcome) -> None:
        """Account the finished request: log line, usage record, metrics, the key's tokens."""
        services = self.services
        duration = time.monotonic() - self._began
        tokens_in, tokens_out = tokens_of(outcome.final)
        node = outcome.node.name if outcome.node else None
        principal = getattr(self, "principal", None)
        key_id = principal.token_id if principal is not None and principal.via == "gateway_key" else None
        route = self.route or self.request.path
        fields = {
            "request_id": self.request_id(),
            "client": self.client_ip(),
            "method": self.request.method,
            "path": self.request.path,
            "route": route,
            "model": req.key or req.model_label or None,
            "node": node,
            "status": outcome.status,
            "attempts": outcome.attempts,
            "retried": bool(outcome.retried_nodes),
            "retried_on": outcome.retried_nodes or None,
            "candidates": outcome.candidates,
            "loaded": outcome.loaded,
            "strategy": services.fleet.config.strategy,
            "queued_ms": round(outcome.queued_for * 1000, 2),
            "ttfb_ms": None if outcome.ttfb is None else round(outcome.ttfb * 1000, 2),
            "duration_ms": round(duration * 1000, 2),
            "tokens_in": tokens_in,
            "tokens_out": tokens_out,
            "error": outcome.error,
            "user_id": principal.user_id if principal is not None else None,
            "username": principal.username if principal is not None else None,
            "key_id": key_id,
            "key_name": getattr(principal, "key_name", None) if key_id is not None else None,
        }
        proxy_log().info("%s %s", self.request.method, self.request.path, extra={"fields": fields})
        if services.usage is not None:
            services.usage.record(fields, at=self._began_at)
        if services.metrics is not None:
            services.metrics.observe(route=route, model=req.key, node=node, status=outcome.status, ttfb=outcome.ttfb,
                                     duration=duration, tokens_in=tokens_in, tokens_out=tokens_out,
                                     retried_on=outcome.retried_nodes, client_gone=outcome.client_gone)
        if key_id is not None and services.limits is not None and (tokens_in or tokens_out):
            services.limits.add_tokens(key_id, (tokens_in or 0) + (tokens_out or 0))
