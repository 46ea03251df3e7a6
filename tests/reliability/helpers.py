"""Nodes that misbehave below HTTP, raw HTTP clients, and small polling helpers.

:class:`RawNode` is a plain asyncio TCP server on loopback that answers the health
probes like a healthy Ollama node (so the proxy routes to it) and does one scripted
bad thing to every other request: reset the connection, answer bytes that are not
HTTP, send half a line and fall silent, or stream forever without ``done``. It
records what it saw, so tests can assert that the proxy really tried it, and when
the proxy hung up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from typing import Any

MODEL = {"name": "llama3:latest", "model": "llama3:latest", "size": 1000, "modified_at": "2024-05-01T00:00:00Z",
         "digest": "a" * 64, "details": {"format": "gguf", "family": "llama"}}
PROBES = {
    "/api/version": {"version": "0.33.0"},
    "/api/tags": {"models": [MODEL]},
    "/api/ps": {"models": []},
}
LINE = b'{"model":"llama3","created_at":"2024-05-01T00:00:00Z","response":"tok","done":false}\n'

Behaviour = Callable[["RawNode", asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST (SO_LINGER 0) instead of a FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


STREAM_HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n")


class RawNode:
    """A loopback node that passes health probes and misbehaves on every other request."""

    def __init__(self, behaviour: Behaviour):
        self.behaviour = behaviour
        self.requests: list[str] = []  # request lines of the non-probe requests
        self.probes = 0
        self.peer_closed = asyncio.Event()  # the proxy hung up on a misbehaving request
        self.lines_sent = 0
        self.bytes_sent = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task] = set()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> RawNode:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                length = next((int(line.split(":", 1)[1]) for line in lines[1:]
                               if line.lower().startswith("content-length:")), 0)
                if length:
                    await reader.readexactly(length)
                if method == "GET" and path in PROBES:
                    self.probes += 1
                    body = json.dumps(PROBES[path]).encode()
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\n"
                                 b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
                    await writer.drain()
                    continue
                self.requests.append(f"{method} {path}")
                await self.behaviour(self, reader, writer)
                return
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            self._writers.discard(writer)
            self._tasks.discard(task)  # type: ignore[arg-type]
            with contextlib.suppress(Exception):
                writer.close()

    async def wait_for_hangup(self, reader: asyncio.StreamReader) -> None:
        """Block until the proxy closes the connection; record it."""
        with contextlib.suppress(Exception):
            while await reader.read(1024):
                pass
        self.peer_closed.set()


# -- behaviours -------------------------------------------------------------------------------------


async def reset_at_once(node: RawNode, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    reset(writer)


async def reset_mid_stream(node: RawNode, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(STREAM_HEAD + chunk(LINE) + chunk(LINE))
    await writer.drain()
    node.lines_sent += 2
    await asyncio.sleep(0.2)  # let the lines reach the client first
    reset(writer)


async def not_http(node: RawNode, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\x00\xff\xfe binary \x01\x02\r\n\r\n")
    await writer.drain()
    writer.close()


async def half_line_then_hang(node: RawNode, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(STREAM_HEAD + chunk(LINE[:30]))
    await writer.drain()
    await node.wait_for_hangup(reader)


async def lines_then_half_line_then_hang(node: RawNode, reader: asyncio.StreamReader,
                                         writer: asyncio.StreamWriter) -> None:
    writer.write(STREAM_HEAD + chunk(LINE) + chunk(LINE) + chunk(LINE[:30]))
    await writer.drain()
    node.lines_sent += 2
    await node.wait_for_hangup(reader)


async def endless(node: RawNode, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                  interval: float = 0.05) -> None:
    """A live stream that never ends: a line every ``interval`` seconds, never ``done``."""
    writer.write(STREAM_HEAD)
    hangup = asyncio.ensure_future(node.wait_for_hangup(reader))
    try:
        while not hangup.done():
            writer.write(chunk(LINE))
            node.lines_sent += 1
            await writer.drain()
            await asyncio.sleep(interval)
    except ConnectionError:
        pass
    await hangup


# -- clients and polling ----------------------------------------------------------------------------


async def raw_request(port: int, method: str, path: str, body: Any = None,
                      headers: dict[str, str] | None = None) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Send one request on a new connection; the caller reads the answer at its own pace."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    data = b"" if body is None else json.dumps(body).encode()
    head = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    head += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if data or method in ("POST", "PUT", "PATCH"):
        head += ["Content-Type: application/json", f"Content-Length: {len(data)}"]
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + data)
    await writer.drain()
    return reader, writer


async def until(predicate: Callable[[], Any], timeout: float = 5.0, step: float = 0.02, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"condition not reached within {timeout}s {what}".strip()
        await asyncio.sleep(step)


def waiting_handlers() -> int:
    """Handlers still running (Tornado runs each request's ``_execute`` as a task)."""
    return sum(1 for task in asyncio.all_tasks() if task.get_coro().__qualname__ == "RequestHandler._execute")


def state_of(proxy: Any, node: Any) -> Any:
    """The proxy's runtime state of ``node`` (matched by URL)."""
    return next(n for n in proxy.fleet.nodes.values() if n.url == node.url)


def firehose(total: int) -> Behaviour:
    """A stream that writes ``total`` bytes of lines as fast as the proxy reads them, then ``done``."""

    async def behaviour(node: RawNode, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        block = LINE * (65536 // len(LINE))
        writer.write(STREAM_HEAD)
        try:
            while node.bytes_sent < total:
                writer.write(chunk(block))
                node.bytes_sent += len(block)
                await writer.drain()
            writer.write(chunk(b'{"model":"llama3","response":"","done":true}\n') + b"0\r\n\r\n")
            await writer.drain()
        except ConnectionError:
            node.peer_closed.set()

    return behaviour
