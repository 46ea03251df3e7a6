"""What every handler shares: bounded bodies, JSON in and out, JSON errors.

Bodies are streamed in (``stream_request_body``) so that an oversized request is
refused with 413 from its headers, before a byte of it is buffered. Every error,
expected or not, leaves as ``{"error": "..."}`` with the right status; a
traceback goes to ``logs/error.log`` and never to the client.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from tornado import httputil, web

from app.logs import app_log
from app.store import StoreUnavailable

if TYPE_CHECKING:
    from app.services import Services

MANAGEMENT_BODY_LIMIT = 1024 * 1024
MAX_JSON_DEPTH = 64
# CORS: what an allowed origin's browser may send and read. Nothing is allowed by default.
CORS_ALLOW_HEADERS = ("Authorization", "Content-Type", "X-XSRFToken", "X-Request-Id")
CORS_EXPOSE_HEADERS = "Retry-After, X-Request-Id, X-Aivonx-Node"
CORS_MAX_AGE = "600"
_HEADER_NAME = re.compile(r"^[A-Za-z0-9-]{1,64}$")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


class ApiError(Exception):
    """An expected failure with its status, message and optional extra JSON fields."""

    def __init__(self, status: int, message: str, *, headers: dict[str, str] | None = None, **extra: Any):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
        self.extra = extra


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of a parsed JSON value, stopping once past ``limit``."""
    stack = [(value, 1)]
    deepest = 0
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if deepest > limit:
            return deepest
        if isinstance(item, dict):
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, level + 1) for v in item)
    return deepest


@web.stream_request_body
class BaseHandler(web.RequestHandler):
    """JSON API handler with a bounded, streamed-in body."""

    services: Services

    def initialize(self, services: Services) -> None:
        self.services = services
        self._chunks: list[bytes] = []
        self._size = 0
        self._too_large = False
        self.send_stalled = False
        self.cors_headers()

    # -- sending ----------------------------------------------------------------------------------

    def flush(self, include_footers: bool = False) -> asyncio.Future[None]:
        """Tornado's flush, with a deadline when the client does not take the bytes at once.

        Back-pressure makes a client that reads nothing hold its node slot (and the node) for as
        long as it keeps the connection open; after ``client_send_timeout`` without a completed
        write the connection is closed, which cancels the node's request like any disconnect.
        """
        flushed = super().flush(include_footers)
        if not flushed.done():
            deadline = asyncio.get_running_loop().call_later(self.services.settings.client_send_timeout,
                                                             self._send_stalled)
            flushed.add_done_callback(lambda _: deadline.cancel())
        return flushed

    def _send_stalled(self) -> None:
        self.send_stalled = True
        app_log().info("closing a connection whose client read nothing for %g s",
                     self.services.settings.client_send_timeout,
                     extra={"fields": {"request_id": self.request_id(), "path": self.request.path}})
        # The socket, not HTTP1Connection.close(): that one drops the pending write's future and
        # the close callback, so the writer would wait forever and the handler never hear of it.
        self.request.connection.stream.close()  # type: ignore[union-attr]

    # -- body -------------------------------------------------------------------------------------

    def body_limit(self) -> int:
        return MANAGEMENT_BODY_LIMIT

    def prepare(self) -> Any:
        limit = self.body_limit()
        length = self.request.headers.get("Content-Length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                raise ApiError(400, "invalid Content-Length") from None
            if declared > limit:
                raise ApiError(413, f"request body is larger than the limit of {limit} bytes")
            # Let Tornado accept up to our limit (its own default is lower for some paths).
            self.request.connection.set_max_body_size(limit + 1)  # type: ignore[union-attr]
        # A chunked body (no Content-Length) is counted in data_received, which answers 413 as
        # soon as it passes the limit; Tornado's own cut would be a bare 400 without JSON.
        return None

    def data_received(self, chunk: bytes) -> None:
        if self._too_large:
            return
        self._size += len(chunk)
        if self._size > self.body_limit():
            self._too_large = True
            self._chunks.clear()
            if not self._finished:
                # Answer now: Tornado then drops the rest of the body and closes the connection.
                error = ApiError(413, f"request body is larger than the limit of {self.body_limit()} bytes")
                self.send_error(413, exc_info=(ApiError, error, None))
            return
        self._chunks.append(chunk)

    @property
    def body(self) -> bytes:
        if self._too_large:
            raise ApiError(413, f"request body is larger than the limit of {self.body_limit()} bytes")
        if len(self._chunks) != 1:
            self._chunks = [b"".join(self._chunks)]
        return self._chunks[0]

    def json_body(self, *, required: bool = True) -> dict[str, Any]:
        """The body as a JSON object; 400 with a clear message for anything else."""
        raw = self.body
        if not raw.strip():
            if required:
                raise ApiError(400, "request body is empty; send a JSON object")
            return {}
        try:
            value = json.loads(raw)
        except UnicodeDecodeError:
            raise ApiError(400, "request body is not UTF-8") from None
        except RecursionError:
            raise ApiError(400, "request body is nested too deeply") from None
        except ValueError as exc:
            raise ApiError(400, f"invalid JSON: {exc}") from None
        if not isinstance(value, dict):
            raise ApiError(400, "request body must be a JSON object")
        if _depth(value, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
            raise ApiError(400, "request body is nested too deeply")
        return value

    # -- responses ----------------------------------------------------------------------------------

    def set_default_headers(self) -> None:
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Cache-Control", "no-store")
        if hasattr(self, "services"):  # again after an error's clear(); initialize() does the first time
            self.cors_headers()

    # -- CORS ---------------------------------------------------------------------------------------

    def allowed_origin(self) -> str | None:
        """The request's ``Origin`` when the config allows it (``cors_origins``), else ``None``."""
        origin = self.request.headers.get("Origin")
        if not origin:
            return None
        allowed = self.services.fleet.config.cors_origins
        if "*" in allowed or origin.rstrip("/").lower() in (o.lower() for o in allowed):
            return origin
        return None

    def cors_headers(self) -> None:
        if self.services.fleet.config.cors_origins:
            self.set_header("Vary", "Origin")
        origin = self.allowed_origin()
        if origin is not None:
            # No Allow-Credentials: cookie sessions stay same-origin; cross-origin callers use Bearer.
            self.set_header("Access-Control-Allow-Origin", origin)
            self.set_header("Access-Control-Expose-Headers", CORS_EXPOSE_HEADERS)

    def allowed_methods(self) -> str:
        """The methods this route implements, for ``Allow`` (405 answers, preflights)."""
        return ", ".join(m for m in self.SUPPORTED_METHODS
                         if getattr(type(self), m.lower(), None) is not getattr(web.RequestHandler, m.lower()))

    def options(self, *args: Any, **kwargs: Any) -> None:
        """CORS preflight: 204 for an allowed origin, 403 JSON for any other."""
        methods = self.allowed_methods()
        if not self.request.headers.get("Origin"):
            self.set_header("Allow", methods)
            self.set_status(204)
            self.finish()
            return
        if self.allowed_origin() is None:
            raise ApiError(403, "this origin is not allowed (see the cors_origins setting)")
        asked = self.request.headers.get("Access-Control-Request-Headers", "")
        headers = list(CORS_ALLOW_HEADERS)
        for name in (h.strip() for h in asked.split(",")):
            if _HEADER_NAME.match(name) and name.lower() not in (h.lower() for h in headers) and len(headers) < 32:
                headers.append(name)
        self.set_header("Access-Control-Allow-Methods", methods)
        self.set_header("Access-Control-Allow-Headers", ", ".join(headers))
        self.set_header("Access-Control-Max-Age", CORS_MAX_AGE)
        self.set_status(204)
        self.finish()

    def send_json(self, value: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False))

    def error_payload(self, status: int, message: str, extra: dict[str, Any]) -> dict[str, Any]:
        return {"error": message, **extra}

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        extra: dict[str, Any] = {}
        if isinstance(exc, ApiError):
            message = exc.message
            extra = exc.extra
            for name, value in exc.headers.items():
                self.set_header(name, value)
        elif isinstance(exc, StoreUnavailable):
            status_code = 503
            self.set_status(503)
            self.set_header("Retry-After", "5")
            message = "the database is unavailable; try again shortly"
        elif isinstance(exc, web.HTTPError):
            message = exc.log_message % exc.args if exc.log_message and exc.args else (
                exc.log_message or exc.reason or _reason(status_code))
        else:
            message = "internal server error"
        if status_code == 405:
            message = "405 method not allowed"
            self.set_header("Allow", self.allowed_methods())  # RFC 9110: a 405 lists what is allowed
        self.clear_header("Content-Disposition")
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps(self.error_payload(status_code, message, extra)))

    def _handle_request_exception(self, e: BaseException) -> None:
        if isinstance(e, ApiError | StoreUnavailable):
            if self._finished:
                return
            if self._headers_written:
                self.finish()
                return
            status = e.status if isinstance(e, ApiError) else 503
            self.send_error(status, exc_info=(type(e), e, e.__traceback__))
            return
        super()._handle_request_exception(e)

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, ApiError):
            return
        if isinstance(value, web.HTTPError) and value.status_code < 500:
            return
        if isinstance(value, StoreUnavailable):
            app_log().warning("database unavailable during %s %s: %s", self.request.method, self.request.path, value)
            return
        app_log().error("unhandled error in %s %s", self.request.method, self.request.path,
                        exc_info=(typ, value, tb))

    # -- helpers --------------------------------------------------------------------------------------

    def request_id(self) -> str:
        """The client's ``X-Request-Id`` when sane, else a fresh one; echoed in the response."""
        rid = getattr(self, "_request_id", None)
        if rid is None:
            sent = self.request.headers.get("X-Request-Id", "")
            rid = sent if _REQUEST_ID.match(sent) else uuid.uuid4().hex
            self._request_id = rid
            self.set_header("X-Request-Id", rid)
        return rid

    def client_ip(self) -> str:
        return self.request.remote_ip or ""


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return httputil.responses.get(status, "error")


class NotFoundHandler(BaseHandler):
    """Unknown path: Ollama's text, but as JSON like every other error here."""

    def prepare(self) -> None:
        raise ApiError(404, "404 page not found")


class GatewayKeyMixin:
    """A gateway route (Ollama API, ``/v1``): with ``require_api_key`` on, an active
    gateway key is needed (``Authorization: Bearer avx_gw_…``), else 401 in the
    route's error shape. The key's owner is kept in ``self.principal`` (usage accounting).
    A key over its ``rpm`` or ``tpd`` limit gets 429 with ``Retry-After`` (checked in
    memory, per process: :mod:`app.fleet.limits`).
    Put it before the handler class: ``class X(GatewayKeyMixin, BaseHandler)``.
    """

    principal: Any = None

    async def prepare(self) -> None:
        result = super().prepare()  # type: ignore[misc]
        if result is not None:
            await result
        if self.request.method == "OPTIONS":  # type: ignore[attr-defined]
            return
        services = self.services  # type: ignore[attr-defined]
        if services.fleet.config.require_api_key:
            principal = self.principal = await services.auth.check_gateway_key(self)
            limited = getattr(principal, "rpm", None) is not None or getattr(principal, "tpd", None) is not None
            if limited and services.limits is not None:
                refusal = services.limits.check(principal.token_id, principal.rpm, principal.tpd)
                if refusal is not None:
                    if services.metrics is not None:
                        services.metrics.refused(refusal.limit)
                    raise ApiError(429, refusal.message, headers={"Retry-After": str(refusal.retry_after)},
                                   limit=refusal.limit, retry_after=refusal.retry_after)


class ManagementHandler(BaseHandler):
    """A route of the management API: a login is required, and a role.

    Safe methods (GET/HEAD) need ``viewer``, every other method ``admin``;
    subclasses change that through :meth:`required_role` (``None`` = public).
    ``services.auth.authenticate(handler)`` resolves the caller (Bearer JWT,
    API token or session cookie) to a principal with ``.role``, or ``None``; it
    raises :class:`ApiError` (401) for a bad or expired credential.
    """

    principal: Any = None

    def required_role(self) -> str | None:
        return "viewer" if self.request.method in ("GET", "HEAD") else "admin"

    async def prepare(self) -> None:  # type: ignore[override]
        super().prepare()
        if self.request.method == "OPTIONS":
            return
        auth = getattr(self.services, "auth", None)
        self.principal = await auth.authenticate(self) if auth is not None else None
        role = self.required_role()
        if role is None:
            return
        if self.principal is None:
            raise ApiError(401, "authentication required", headers={"WWW-Authenticate": "Bearer"})
        if role == "admin" and self.principal.role != "admin":
            raise ApiError(403, "this needs the admin role")
