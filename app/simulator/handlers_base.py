"""The request handler every simulated route shares.

It owns the parts that must be identical everywhere: JSON errors (Ollama or OpenAI shape),
plain-text 404/405 like Go's router, per-route counters, before-the-first-byte faults, and
client-disconnect handling — the work of a request runs in its own task, which
``on_connection_close`` cancels, so a slot or queue place is given back at once.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

import tornado.web
from tornado.iostream import StreamClosedError
from tornado.log import app_log

from app.simulator.faults import BEFORE_BODY, MID_STREAM, Fault
from app.simulator.scheduler import SchedulerBusy
from app.simulator.state import SimulatorState
from app.simulator.streaming import StreamAborted
from app.simulator.wire import ApiError, dumps

JSON = "application/json; charset=utf-8"
TEXT = "text/plain; charset=utf-8"
BUSY_MESSAGE = "server busy, please try again.  maximum pending requests exceeded"
SIMULATED_500 = "simulated internal server error"

_LOCAL_NAMES = {"", "localhost", socket.gethostname().lower()}


def host_allowed(host: str) -> bool:
    """Ollama's loopback rule: local names and loopback/private/unspecified addresses only."""
    host = host.strip("[]").lower()
    if host in _LOCAL_NAMES or host.endswith((".localhost", ".local", ".internal")):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_private or address.is_unspecified or address.is_link_local


class SimHandler(tornado.web.RequestHandler):
    """Base of all simulated routes; subclasses set ``route`` and implement verbs via :meth:`serve`."""

    route: ClassVar[str] = ""
    openai: ClassVar[bool] = False
    control: ClassVar[bool] = False
    # The Content-Type a garbage fault claims (what the route would normally send).
    garbage_type: ClassVar[str] = JSON

    def initialize(self, state: SimulatorState) -> None:
        self.state = state
        self._task: asyncio.Future[None] | None = None
        self._counted = False
        self._client_gone = False
        self._dropping = False
        self.sse_stream = False

    def set_default_headers(self) -> None:
        self.clear_header("Server")
        self.clear_header("Content-Type")

    def compute_etag(self) -> None:
        return None  # Ollama sends no ETag and never answers 304

    def prepare(self) -> None:
        if self.state.options.strict_host and not host_allowed(self.request.host_name):
            self.set_status(403)
            self.finish()
            return
        if not self.control:
            self.state.requests[self.route] += 1
            self.state.active += 1
            self._counted = True

    # -- lifecycle ---------------------------------------------------------------------

    def _end(self) -> None:
        if self._counted:
            self._counted = False
            self.state.active -= 1

    def on_finish(self) -> None:
        self._end()

    def on_connection_close(self) -> None:
        if self._dropping:
            return
        if not self._client_gone:
            self._client_gone = True
            self.state.cancelled += 1
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self._end()

    def drop_connection(self) -> None:
        """Close the TCP connection abruptly (a ``drop_midstream`` fault)."""
        self._dropping = True
        self._end()
        self.request.connection.stream.close()  # type: ignore[attr-defined]

    async def serve(self, work: Callable[[], Awaitable[None]]) -> None:
        """Run ``work`` in a cancellable task, mapping errors to responses."""
        self._task = asyncio.ensure_future(self._guarded(work))
        try:
            await self._task
        except asyncio.CancelledError:
            if not self._client_gone:
                raise

    async def _guarded(self, work: Callable[[], Awaitable[None]]) -> None:
        try:
            if self.state.faults and not self.control:
                await self._before_body_faults()
                if self._finished:
                    return
            await work()
        except ApiError as exc:
            await self._send_error_safely(exc.status, exc.message)
        except SchedulerBusy:
            await self._send_error_safely(503, BUSY_MESSAGE)
        except (StreamAborted, StreamClosedError):
            pass  # the answer is over (fault) or the client left (counted on close)
        except Exception:
            # A bug must still end the answer properly: JSON 500, or an error line mid-stream.
            app_log.exception("simulator: unexpected error in %s", self.request.path)
            await self._send_error_safely(500, "internal server error")

    async def _send_error_safely(self, status: int, message: str) -> None:
        if self._finished or self._client_gone:
            return
        if self._headers_written:
            # Status already sent: one error line, then end (never a silent truncation).
            if self.sse_stream:
                self.write(f"data: {dumps(self.error_body(status, message))}\n\n")
            else:
                self.write(dumps({"error": message}) + "\n")
            await self.finish()
            return
        await self.send_json_error(status, message)

    # -- responses ---------------------------------------------------------------------

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        if not self.openai:
            return {"error": message}
        kind = {400: "invalid_request_error", 404: "not_found_error"}.get(status, "api_error")
        return {"error": {"message": message, "type": kind, "param": None, "code": None}}

    def send_json_error(self, status: int, message: str) -> Awaitable[None]:
        return self.send_json(self.error_body(status, message), status)

    def send_json(self, body: Any, status: int = 200) -> Awaitable[None]:
        self.set_status(status)
        self.set_header("Content-Type", JSON)
        return self.finish(body if isinstance(body, bytes) else dumps(body).encode())

    def send_empty(self, status: int = 200) -> Awaitable[None]:
        self.set_status(status)
        return self.finish()

    def take_stream_fault(self) -> Fault | None:
        if not self.state.faults or self.control:
            return None
        return self.state.faults.take(MID_STREAM, self.route, self.request.path)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Tornado-raised errors (405, bad body, bugs) in Ollama's shapes; never a traceback."""
        if status_code in (404, 405):
            self.set_header("Content-Type", TEXT)
            self.finish("404 page not found" if status_code == 404 else "405 method not allowed")
            return
        self.set_header("Content-Type", JSON)
        message = "internal server error" if status_code >= 500 else self._reason.lower()
        self.finish(dumps(self.error_body(status_code, message)))

    async def _before_body_faults(self) -> None:
        faults, route, path = self.state.faults, self.route, self.request.path
        slow = faults.take(("slow_tags",), route, path)
        if slow is not None:
            await asyncio.sleep(slow.delay)
        fault = faults.take(BEFORE_BODY, route, path)
        if fault is None:
            return
        if fault.mode == "error_500":
            await self.send_json_error(500, fault.message or SIMULATED_500)
        elif fault.mode == "busy":
            await self.send_json_error(503, BUSY_MESSAGE)
        elif fault.mode == "hang":
            await asyncio.get_running_loop().create_future()  # until the client leaves
        elif fault.mode == "garbage":
            self.set_status(200)
            self.set_header("Content-Type", self.garbage_type)
            await self.finish(b'{"model":"garbage","respo')


class NotFoundHandler(SimHandler):
    """Any path the node does not know: Go's plain-text 404, whatever the method."""

    control = True

    def prepare(self) -> None:
        self.set_status(404)
        self.set_header("Content-Type", TEXT)
        self.finish("404 page not found")
