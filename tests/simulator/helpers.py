"""Raw HTTP helpers: what the wire carries, byte for byte, without a client library's help."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from app.simulator import SimulatedNode


@dataclass
class RawResponse:
    status: int
    reason: str
    headers: dict[str, str]
    body: bytes
    chunks: list[bytes] = field(default_factory=list)
    complete: bool = True  # False: connection closed before the body ended

    @property
    def text(self) -> str:
        return self.body.decode()

    def json(self) -> Any:
        return json.loads(self.body)

    def lines(self) -> list[str]:
        """NDJSON lines; asserts the framing (every line ends with a newline)."""
        text = self.text
        assert text.endswith("\n"), f"stream does not end with a newline: {text[-80:]!r}"
        return text[:-1].split("\n")


def _request_bytes(method: str, path: str, body: Any, headers: dict[str, str] | None, port: int) -> bytes:
    data = b""
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
    head = {"Host": f"127.0.0.1:{port}", "Connection": "close", "Content-Length": str(len(data))}
    if body is not None and not isinstance(body, bytes):
        head["Content-Type"] = "application/json"
    head.update(headers or {})
    lines = [f"{method} {path} HTTP/1.1", *(f"{k}: {v}" for k, v in head.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + data


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, str, dict[str, str]]:
    raw = await reader.readuntil(b"\r\n\r\n")
    first, *rest = raw.decode("latin1").split("\r\n")
    _, status, *reason = first.split(" ", 2)
    headers = {}
    for line in rest:
        if line:
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
    return int(status), (reason[0] if reason else ""), headers


async def raw_request(
    node: SimulatedNode, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
) -> RawResponse:
    """One request on its own connection; the body is read to EOF and de-chunked by hand."""
    reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
    try:
        writer.write(_request_bytes(method, path, body, headers, node.port))
        await writer.drain()
        status, reason, head = await _read_head(reader)
        rest = await reader.read()
    finally:
        writer.close()
    if method == "HEAD":
        return RawResponse(status, reason, head, b"")
    if head.get("transfer-encoding") != "chunked":
        return RawResponse(status, reason, head, rest)
    chunks, pos, complete = [], 0, False
    while True:
        end = rest.find(b"\r\n", pos)
        if end < 0:
            break
        size = int(rest[pos:end], 16)
        if size == 0:
            complete = True
            break
        chunk = rest[end + 2:end + 2 + size]
        if len(chunk) < size:
            chunks.append(chunk)
            break
        chunks.append(chunk)
        pos = end + 2 + size + 2
    return RawResponse(status, reason, head, b"".join(chunks), chunks, complete)


class OpenStream:
    """A request whose answer is read line by line and which the test can abandon."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.status = 0
        self.headers: dict[str, str] = {}

    async def read_head(self) -> int:
        self.status, _, self.headers = await _read_head(self.reader)
        return self.status

    async def read_line(self) -> str:
        """The next NDJSON line of a chunked body (assumes one line per chunk: non-fast nodes)."""
        size_line = await self.reader.readuntil(b"\r\n")
        size = int(size_line, 16)
        data = await self.reader.readexactly(size + 2)
        return data[:-2].decode()

    def close(self) -> None:
        self.writer.close()


async def open_stream(node: SimulatedNode, method: str, path: str, body: Any = None) -> OpenStream:
    reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
    writer.write(_request_bytes(method, path, body, None, node.port))
    await writer.drain()
    return OpenStream(reader, writer)


async def eventually(check: Callable[[], bool], timeout: float = 5.0, message: str = "") -> None:
    """Poll ``check`` until it is true (state changes after a disconnect are asynchronous)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(message or "condition not reached in time")
        await asyncio.sleep(0.01)
