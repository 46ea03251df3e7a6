"""The one place that talks HTTP to Ollama nodes.

Why not ``AsyncHTTPClient``: the simple client sends ``Connection: close`` (a new
TCP connection per request), applies a whole-request timeout, and cannot abort a
silent upstream; the curl client needs libcurl headers to build and hands body
bytes over before headers. Here Tornado's own ``HTTP1Connection`` runs on pooled
keep-alive streams, which gives us:

* keep-alive connections per node with ``TCP_NODELAY``;
* separate connect, first-byte and idle timeouts and no whole-request limit;
* back-pressure: the body is read only as fast as the sink accepts it;
* cancellation at any moment (the client left) by closing the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

from tornado import httputil, iostream
from tornado.http1connection import (
    HTTP1Connection,
    HTTP1ConnectionParameters,
    is_transfer_encoding_chunked,
    parse_hex_int,
)
from tornado.ioloop import IOLoop
from tornado.tcpclient import TCPClient

MAX_IDLE_PER_NODE = 64
MAX_BODY_SIZE = 1 << 40
_READ_SIZE = 64 * 1024
# Like Tornado's reader: let other work run after this many bytes that needed no wait.
_YIELD_EVERY = 256 * 1024
_PARAMS = HTTP1ConnectionParameters(
    no_keep_alive=False,
    chunk_size=64 * 1024,
    max_header_size=64 * 1024,
    max_body_size=MAX_BODY_SIZE,
    decompress=False,
)


class UpstreamError(Exception):
    """The node failed before or while answering. ``hard`` means it looks down."""

    hard = False


class ConnectFailed(UpstreamError):
    """Refused, unresolvable, or no TCP connection within the connect timeout."""

    hard = True


class UpstreamTimeout(UpstreamError):
    """No first byte, or no next byte, within its timeout."""


class ConnectionLost(UpstreamError):
    """The node closed or reset the connection mid-exchange."""


class BadResponse(UpstreamError):
    """The node's answer is not valid HTTP."""


class Cancelled(UpstreamError):
    """We aborted the exchange ourselves (the client went away)."""


@dataclass(frozen=True)
class Timeouts:
    connect: float = 5.0
    first_byte: float = 600.0
    idle: float = 300.0


class ResponseSink(Protocol):
    """Receives the response as it arrives; may return an awaitable to apply back-pressure."""

    def on_headers(self, status: int, reason: str, headers: httputil.HTTPHeaders) -> Awaitable[None] | None: ...

    def on_data(self, chunk: bytes) -> Awaitable[None] | None: ...


@dataclass(frozen=True)
class Endpoint:
    scheme: str
    host: str
    port: int

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return cls(parts.scheme, parts.hostname, port)

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


class UpstreamClient:
    """Pooled HTTP/1.1 client for nodes. One per process; call :meth:`close` at shutdown."""

    def __init__(self, max_idle_per_node: int = MAX_IDLE_PER_NODE):
        self._idle: dict[Endpoint, list[iostream.IOStream]] = {}
        self._max_idle = max_idle_per_node
        self._tcp = TCPClient()
        self._endpoints: dict[str, Endpoint] = {}
        self._closed = False

    def endpoint(self, base_url: str) -> Endpoint:
        ep = self._endpoints.get(base_url)
        if ep is None:
            ep = self._endpoints[base_url] = Endpoint.parse(base_url)
        return ep

    def exchange(
        self,
        base_url: str,
        method: str,
        path: str,
        *,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        timeouts: Timeouts = Timeouts(),
    ) -> Exchange:
        """Prepare one request; ``await exchange.run(sink)`` performs it."""
        return Exchange(self, self.endpoint(base_url), method, path, body, headers or {}, timeouts)

    async def fetch(
        self,
        base_url: str,
        method: str,
        path: str,
        *,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        timeouts: Timeouts = Timeouts(),
        max_size: int = 64 * 1024 * 1024,
    ) -> tuple[int, httputil.HTTPHeaders, bytes]:
        """Perform a request and buffer the whole (bounded) answer: for probes and small calls."""
        sink = _BufferSink(max_size)
        ex = self.exchange(base_url, method, path, body=body, headers=headers, timeouts=timeouts)
        sink.exchange = ex
        try:
            await ex.run(sink)
        except Cancelled:
            if sink.too_large:
                raise BadResponse(f"response larger than {max_size} bytes") from None
            raise
        return sink.status, sink.headers, b"".join(sink.parts)

    def close(self) -> None:
        self._closed = True
        for streams in self._idle.values():
            for stream in streams:
                stream.close()
        self._idle.clear()

    def idle_connections(self) -> int:
        return sum(len(s) for s in self._idle.values())

    # -- pool ---------------------------------------------------------------------------------

    def _take_idle(self, ep: Endpoint) -> iostream.IOStream | None:
        streams = self._idle.get(ep)
        while streams:
            stream = streams.pop()
            if not stream.closed():
                stream.set_close_callback(None)
                return stream
        return None

    def _put_idle(self, ep: Endpoint, stream: iostream.IOStream) -> None:
        streams = self._idle.setdefault(ep, [])
        if self._closed or stream.closed() or len(streams) >= self._max_idle:
            stream.close()
            return
        streams.append(stream)
        # A node that closes an idle connection: forget it at once.
        stream.set_close_callback(lambda: _discard(streams, stream))

    async def _connect(self, ep: Endpoint, timeout: float) -> iostream.IOStream:
        ssl_options = ssl.create_default_context() if ep.scheme == "https" else None
        try:
            stream = await self._tcp.connect(ep.host, ep.port, ssl_options=ssl_options, timeout=timeout)
        except TimeoutError:
            raise ConnectFailed(f"no connection to {ep.host}:{ep.port} within {timeout:g}s") from None
        except (OSError, iostream.StreamClosedError, ssl.SSLError) as exc:
            raise ConnectFailed(f"cannot connect to {ep.host}:{ep.port}: {_reason(exc)}") from None
        stream.set_nodelay(True)
        return stream


def _discard(streams: list[iostream.IOStream], stream: iostream.IOStream) -> None:
    with contextlib.suppress(ValueError):
        streams.remove(stream)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, iostream.StreamClosedError) and exc.real_error is not None:
        exc = exc.real_error
    if isinstance(exc, socket.gaierror):
        return "host not found"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


class Exchange(httputil.HTTPMessageDelegate):
    """One request/response with a node; cancellable, with first-byte and idle watchdogs."""

    def __init__(self, client: UpstreamClient, ep: Endpoint, method: str, path: str, body: bytes,
                 headers: dict[str, str], timeouts: Timeouts):
        self._client = client
        self._ep = ep
        self._method = method
        self._path = path
        self._body = body
        self._headers = headers
        self._timeouts = timeouts
        self._sink: ResponseSink | None = None
        self._stream: iostream.IOStream | None = None
        self._loop = IOLoop.current()
        self._phase = "connect"
        self._last_activity = 0.0
        self._paused = False
        self._watchdog: object | None = None
        self._failure: UpstreamError | None = None
        self._keep_alive = True
        self.status = 0
        self.response_started = False
        self.bytes_received = 0
        self._finished = False
        self._conn: HTTP1Connection | None = None
        self._detached = False

    def cancel(self) -> None:
        """Abort now (the client left): the node sees the connection close."""
        if self._finished:
            return
        if self._failure is None:
            self._failure = Cancelled("cancelled")
        if self._stream is not None:
            self._stream.close()

    async def run(self, sink: ResponseSink) -> None:
        self._sink = sink
        reused = self._client._take_idle(self._ep)
        try:
            if reused is not None:
                try:
                    await self._attempt(reused)
                    return
                except (ConnectionLost, BadResponse):
                    # The node closed the kept-alive connection while idle: nothing was
                    # processed, so the request is safe to send again on a new one.
                    if self.response_started or isinstance(self._failure, Cancelled):
                        raise
                    self._failure = None
            if isinstance(self._failure, Cancelled):
                raise self._failure
            self._phase = "connect"
            stream = await self._client._connect(self._ep, self._timeouts.connect)
            if isinstance(self._failure, Cancelled):
                stream.close()
                raise self._failure
            await self._attempt(stream)
        finally:
            self._finished = True
            self._stop_watchdog()

    async def _attempt(self, stream: iostream.IOStream) -> None:
        self._stream = stream
        self._keep_alive = True
        conn = self._conn = HTTP1Connection(stream, True, _PARAMS)
        self._detached = False
        headers = httputil.HTTPHeaders(self._headers)
        headers["Host"] = self._ep.host_header
        if self._body or self._method in ("POST", "PUT", "PATCH", "DELETE"):
            headers["Content-Length"] = str(len(self._body))
        self._phase = "first_byte"
        self._touch()
        self._arm(self._timeouts.first_byte)
        try:
            # Headers and body in one write: no Nagle stall between them.
            conn.write_headers(httputil.RequestStartLine(self._method, self._path, "HTTP/1.1"), headers,
                               self._body or None)
            conn.finish()
            open_after = await conn.read_response(self)
            if self._detached:
                open_after = await self._read_chunked(stream)
        except iostream.StreamClosedError as exc:
            open_after = False
            if self._failure is None:
                self._failure = ConnectionLost(f"connection to {self._ep.host}:{self._ep.port} lost: "
                                               f"{_reason(exc)}")
        except httputil.HTTPInputError as exc:
            open_after = False
            if self._failure is None:
                self._failure = BadResponse(f"invalid HTTP from node: {exc}")
        finally:
            self._stop_watchdog()
        if self._failure is not None:
            stream.close()
            raise self._failure
        if not self.response_started:
            stream.close()
            raise ConnectionLost(f"node {self._ep.host}:{self._ep.port} closed the connection without answering")
        if open_after and self._keep_alive and not stream.closed():
            self._client._put_idle(self._ep, stream)
        else:
            stream.close()

    # -- watchdog -------------------------------------------------------------------------------

    def _touch(self) -> None:
        self._last_activity = self._loop.time()

    def _arm(self, delay: float) -> None:
        self._stop_watchdog()
        self._watchdog = self._loop.call_later(max(delay, 0.001), self._check)

    def _stop_watchdog(self) -> None:
        if self._watchdog is not None:
            self._loop.remove_timeout(self._watchdog)
            self._watchdog = None

    def _check(self) -> None:
        self._watchdog = None
        limit = self._timeouts.first_byte if self._phase == "first_byte" else self._timeouts.idle
        if self._paused:
            self._arm(limit)
            return
        elapsed = self._loop.time() - self._last_activity
        if elapsed < limit:
            self._arm(limit - elapsed)
            return
        what = "first byte" if self._phase == "first_byte" else "data"
        self._failure = UpstreamTimeout(f"no {what} from node within {limit:g}s")
        if self._stream is not None:
            self._stream.close()

    # -- HTTPMessageDelegate ---------------------------------------------------------------------

    def headers_received(self, start_line, headers):  # type: ignore[no-untyped-def]
        assert isinstance(start_line, httputil.ResponseStartLine)
        if 100 <= start_line.code < 200:
            return None
        self.status = start_line.code
        self.response_started = True
        connection = headers.get("Connection", "").lower()
        if start_line.version == "HTTP/1.0" or "close" in connection:
            self._keep_alive = False
        self._phase = "body"
        self._touch()
        self._arm(self._timeouts.idle)
        if self._streams_chunks(start_line.code, headers):
            # A chunked body (every stream): read it ourselves, see _read_chunked.
            assert self._conn is not None
            self._conn.detach()
            self._detached = True
        assert self._sink is not None
        return self._guard(self._sink.on_headers(start_line.code, start_line.reason, headers))

    def _streams_chunks(self, code: int, headers: httputil.HTTPHeaders) -> bool:
        if self._method == "HEAD" or code in (204, 304):
            return False
        try:
            return is_transfer_encoding_chunked(headers)
        except httputil.HTTPInputError:
            return False  # Tornado's reader refuses such an answer, as before

    async def _read_chunked(self, stream: iostream.IOStream) -> bool:
        """Read a chunked body off the detached stream; True when the stream may be reused.

        Tornado's reader costs three reads (size line, data, CRLF), each a future, per chunk,
        and re-registers the socket with epoll twice per chunk: for a stream of one token per
        chunk that was most of the relay's CPU. Here one read takes whatever has arrived and
        every complete chunk in it is parsed at once. Same rules as Tornado's reader: strict hex
        sizes (no extensions), size lines of at most 64 bytes, CRLF after every chunk and after
        the last one (no trailers), the size limit; consecutive chunks are coalesced and handed
        over whenever the next read would have to wait. A framing error ends the exchange as a
        connection lost mid-response, as it did through Tornado.
        """
        buf = b""
        pending: list[bytes] = []
        total = 0
        remaining = 0  # bytes of chunk data still to come
        crlf = False  # a CRLF must come next (after a chunk's data, or after the last size line)
        last = False  # the zero-size chunk was seen
        work = 0
        try:
            while True:
                pos = 0
                while pos < len(buf):
                    if remaining:
                        take = min(remaining, len(buf) - pos)
                        pending.append(buf if take == len(buf) else buf[pos:pos + take])
                        pos += take
                        remaining -= take
                        crlf = remaining == 0
                    elif crlf:
                        if len(buf) - pos < 2:
                            break
                        if buf[pos:pos + 2] != b"\r\n":
                            raise httputil.HTTPInputError("improperly terminated chunk" if not last
                                                          else "improperly terminated chunked request")
                        pos += 2
                        crlf = False
                        if last:
                            if pending:
                                await self._deliver(b"".join(pending))
                            # Bytes after the end belong to no request of ours: do not reuse.
                            return pos == len(buf)
                    else:
                        eol = buf.find(b"\r\n", pos, pos + 64)
                        if eol < 0:
                            if len(buf) - pos >= 64:
                                raise httputil.HTTPInputError("invalid chunk size")
                            break
                        try:
                            size = parse_hex_int(buf[pos:eol].decode("latin1"))
                        except ValueError:
                            raise httputil.HTTPInputError("invalid chunk size") from None
                        pos = eol + 2
                        if size == 0:
                            last = crlf = True
                        else:
                            total += size
                            if total > MAX_BODY_SIZE:
                                raise httputil.HTTPInputError("chunked body too large")
                            remaining = size
                buf = buf[pos:] if pos else buf
                if pending:
                    data = pending[0] if len(pending) == 1 else b"".join(pending)
                    pending.clear()
                    await self._deliver(data)
                    work += len(data)
                    if work >= _YIELD_EVERY:
                        work = 0
                        await asyncio.sleep(0)
                more = await stream.read_bytes(_READ_SIZE, partial=True)
                buf = buf + more if buf else more
        except httputil.HTTPInputError as exc:
            logging.getLogger("tornado.general").info("Malformed HTTP message from %s: %s", self._ep.host, exc)
        except iostream.StreamClosedError:
            pass
        except Exception:
            # A failing sink: logged and ended as Tornado's reader did ("Uncaught exception").
            logging.getLogger("tornado.application").error("Uncaught exception", exc_info=True)
        if self._failure is None:
            self._failure = ConnectionLost(f"node {self._ep.host}:{self._ep.port} closed the connection mid-response")
        stream.close()
        return False

    async def _deliver(self, data: bytes) -> None:
        waiting = self.data_received(data)
        if waiting is not None:
            await waiting

    def data_received(self, chunk: bytes):  # type: ignore[no-untyped-def]
        self._touch()
        self.bytes_received += len(chunk)
        assert self._sink is not None
        return self._guard(self._sink.on_data(chunk))

    def _guard(self, result: Awaitable[None] | None) -> Awaitable[None] | None:
        if result is None:
            return None
        return self._paused_while(result)

    async def _paused_while(self, result: Awaitable[None]) -> None:
        # The sink is waiting for our client (back-pressure): not the node's silence.
        self._paused = True
        try:
            await result
        except iostream.StreamClosedError:
            # Our client left while we waited for it: end the exchange here. Raised on, it would
            # reach Tornado's HTTP1Connection, which logs it as an uncaught exception.
            self.cancel()
        finally:
            self._paused = False
            self._touch()

    def finish(self) -> None:
        pass

    def on_connection_close(self) -> None:
        if self._failure is None and not self.response_started:
            # Tornado calls this (and only logs the parse error) when the answer is not HTTP at all.
            self._failure = BadResponse(f"invalid HTTP from node {self._ep.host}:{self._ep.port}: "
                                        "no valid response start line")
        elif self._failure is None:
            self._failure = ConnectionLost(f"node {self._ep.host}:{self._ep.port} closed the connection mid-response")


class _BufferSink:
    def __init__(self, max_size: int):
        self.status = 0
        self.headers = httputil.HTTPHeaders()
        self.parts: list[bytes] = []
        self.size = 0
        self.max_size = max_size
        self.too_large = False
        self.exchange: Exchange | None = None

    def on_headers(self, status: int, reason: str, headers: httputil.HTTPHeaders) -> None:
        self.status = status
        self.headers = headers

    def on_data(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.max_size:
            self.too_large = True
            if self.exchange is not None:
                self.exchange.cancel()
            return
        self.parts.append(chunk)

