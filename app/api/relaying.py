"""The handler side of a proxied request: a :class:`~app.fleet.relay.Downstream` on Tornado.

Subclasses parse their route's body into a :class:`ProxyRequest`; this class
runs it through the relay, turns failures into the route's error shape, and
writes the one ``logs/proxy.json`` line per request.
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

    def body_limit(self) -> int:
        return self.services.fleet.config.max_body_size

    def on_connection_close(self) -> None:
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
        final = outcome.final or {}
        fields = {
            "request_id": self.request_id(),
            "client": self.client_ip(),
            "method": self.request.method,
            "path": self.request.path,
            "model": req.model_label or None,
            "node": outcome.node.name if outcome.node else None,
            "status": outcome.status,
            "attempts": outcome.attempts,
            "retried_on": outcome.retried_nodes or None,
            "candidates": outcome.candidates,
            "loaded": outcome.loaded,
            "strategy": self.services.fleet.config.strategy,
            "queued_ms": round(outcome.queued_for * 1000, 2),
            "ttfb_ms": None if outcome.ttfb is None else round(outcome.ttfb * 1000, 2),
            "duration_ms": round((time.monotonic() - self._began) * 1000, 2),
            "tokens_in": final.get("prompt_eval_count"),
            "tokens_out": final.get("eval_count"),
            "error": outcome.error,
        }
        proxy_log().info("%s %s", self.request.method, self.request.path, extra={"fields": fields})
