"""Slow clients: a slow reader holds back the node instead of the proxy's memory, and one that
reads nothing for ``client_send_timeout`` is disconnected; so is a client that sends its headers or
body too slowly (``client_header_timeout``, ``client_body_timeout``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time

import pytest

from app.api.relaying import RelayHandler
from app.config import ConfigError, load_settings
from app.fleet.upstream import Exchange
from tests.api.mgmt import admin
from tests.reliability import helpers
from tests.reliability.helpers import PROBES, RawNode, until, waiting_handlers

GEN = {"model": "llama3", "prompt": "x"}
TOTAL = 48 * 1024 * 1024  # what the node would push if nobody held it back
BOUND = 24 * 1024 * 1024  # socket buffers on both sides of the proxy stay well under this


async def _slow_reader(port: int, body: dict, buffer: int = 1024 * 1024) -> tuple[asyncio.StreamReader,
                                                                                 asyncio.StreamWriter]:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)  # a client on a slow link
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=buffer)
    payload = json.dumps(body).encode()
    writer.write(b"POST /api/generate HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(payload), payload))
    await writer.drain()
    return reader, writer


async def test_a_client_that_reads_slowly_holds_the_node_back_not_the_proxys_memory(env, monkeypatch):
    node = await RawNode(helpers.firehose(TOTAL)).start()
    env.nodes.append(node)
    # idle_timeout 1 s: a node held back by our slow client is not "silent" and must not be cut.
    proxy = await env.proxy([node], config={"idle_timeout": 1})
    client_streams = []
    begin = RelayHandler.begin

    def recording_begin(self, status, headers, upstream_node):
        client_streams.append(self.request.connection.stream)
        return begin(self, status, headers, upstream_node)

    monkeypatch.setattr(RelayHandler, "begin", recording_begin)
    upstream_streams = []
    attempt = Exchange._attempt

    def recording_attempt(self, stream):
        upstream_streams.append(stream)
        return attempt(self, stream)

    monkeypatch.setattr(Exchange, "_attempt", recording_attempt)
    reader, writer = await _slow_reader(proxy.port, GEN)
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
    await reader.read(4096)
    # Now the client stops reading. The node can only push what the buffers on the way hold.
    largest_write_buffer = 0
    samples = []
    for _ in range(25):
        await asyncio.sleep(0.1)
        largest_write_buffer = max(largest_write_buffer, len(client_streams[0]._write_buffer))
        samples.append(node.bytes_sent)
    assert samples[-1] < BOUND, f"the node pushed {samples[-1]} bytes into a client that reads nothing"
    assert samples[-1] - samples[-10] <= 256 * 1024, f"the node is still being read: {samples}"
    assert largest_write_buffer <= 1024 * 1024, largest_write_buffer
    assert max(s._read_buffer_size for s in upstream_streams) <= 1024 * 1024
    assert proxy.in_flight() == 1
    # The client reads again, long after idle_timeout: the stream resumes and completes.
    received = 0
    last = b""
    while True:
        data = await asyncio.wait_for(reader.read(1024 * 1024), 10)
        if not data:
            break
        received += len(data)
        last = (last + data)[-300:]
        if last.endswith(b"0\r\n\r\n"):
            break
    assert received >= TOTAL and b'"done":true' in last
    writer.close()
    await until(lambda: proxy.in_flight() == 0)


async def test_a_client_that_reads_nothing_for_client_send_timeout_is_cut_off_and_its_node_freed(env):
    node = await RawNode(helpers.firehose(TOTAL)).start()
    env.nodes.append(node)
    proxy = await env.proxy([node], client_send_timeout=0.5)
    reader, writer = await _slow_reader(proxy.port, GEN)
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
    await until(lambda: node.bytes_sent > 1024 * 1024)
    assert proxy.in_flight() == 1  # held back, not yet given up
    # The client reads nothing more: within the timeout (and some slack) the proxy hangs up.
    await until(lambda: proxy.in_flight() == 0, timeout=5, what="the stalled client's slot is freed")
    await until(lambda: node.peer_closed.is_set(), what="the node's request is cancelled")
    assert node.bytes_sent < TOTAL
    record = proxy.services.usage.recent[-1]
    assert record["error"] == "client read nothing for 0.5 s" and record["tokens_out"] is None
    with contextlib.suppress(ConnectionError):
        while await asyncio.wait_for(reader.read(1024 * 1024), 5):
            pass  # what the buffers held, then the end: the connection is closed
    writer.close()


async def test_a_reader_that_pauses_but_keeps_up_is_never_cut_off_by_client_send_timeout(env):
    node = await RawNode(helpers.firehose(TOTAL)).start()
    env.nodes.append(node)
    proxy = await env.proxy([node], client_send_timeout=1.0)
    reader, writer = await _slow_reader(proxy.port, GEN, buffer=64 * 1024)
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
    # Three seconds of a client that is always behind (the buffers on the way stay full) and takes
    # a pause after every megabyte: a write waits at most for one pause, never for the timeout.
    for _ in range(15):
        await reader.readexactly(1024 * 1024)
        await asyncio.sleep(0.2)
    assert proxy.in_flight() == 1 and not node.peer_closed.is_set()
    writer.transport.abort()
    await until(lambda: proxy.in_flight() == 0)
    assert proxy.services.usage.recent[-1]["error"] == "client disconnected"


async def _closed_after(reader: asyncio.StreamReader, limit: float) -> float:
    """Seconds until the proxy closes the connection (fails after ``limit``)."""
    started = time.monotonic()
    data = await asyncio.wait_for(reader.read(), limit)
    assert data == b"", data  # nothing answered: the connection is just closed
    return time.monotonic() - started


async def test_a_client_that_sends_its_headers_too_slowly_is_disconnected(env):
    node = await env.node()
    proxy = await env.proxy([node], client_header_timeout=0.5)
    # Part of the headers, then nothing.
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"POST /api/generate HTTP/1.1\r\nHost: x\r\n")
    await _closed_after(reader, 5)
    # Trickling a byte at a time does not extend the deadline: it covers all the headers.
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    closed = asyncio.ensure_future(reader.read())
    started = time.monotonic()
    for byte in b"GET /api/tags HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200:
        if closed.done():
            break
        assert time.monotonic() - started < 4, "still connected after 4 s of trickling"
        try:
            writer.write(bytes([byte]))
            await writer.drain()
        except ConnectionError:
            break
        await asyncio.sleep(0.05)
    with contextlib.suppress(ConnectionError):
        assert await asyncio.wait_for(closed, 5) == b""
    # An idle keep-alive connection is closed after the same time.
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"GET /api/tags HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
    await reader.readuntil(b"]}")
    await _closed_after(reader, 5)
    assert sum(n for route, n in node.state.stats()["requests"].items() if route not in PROBES) == 0
    assert proxy.in_flight() == 0


@pytest.mark.parametrize("path", ["/api/generate", "/v1/chat/completions", "/api/users"])
async def test_a_client_that_sends_its_body_too_slowly_is_disconnected_and_nothing_is_forwarded(env, path):
    node = await env.node()
    proxy = await env.proxy([node], client_body_timeout=0.5)
    auth = (await admin(proxy))["Authorization"]  # management routes check the login before the body
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 f"Authorization: {auth}\r\nContent-Length: 1000\r\n\r\n".encode() + b'{"model": "llama3", ')
    await _closed_after(reader, 5)
    assert sum(n for route, n in node.state.stats()["requests"].items() if route not in PROBES) == 0
    assert proxy.in_flight() == 0 and proxy.fleet.total_queued() == 0


async def test_a_slow_reader_that_leaves_while_held_back_frees_everything_quietly(env, caplog):
    caplog.set_level(logging.INFO)
    node = await RawNode(helpers.firehose(TOTAL)).start()
    env.nodes.append(node)
    proxy = await env.proxy([node])
    reader, writer = await _slow_reader(proxy.port, GEN)
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
    await until(lambda: node.bytes_sent > 1024 * 1024)
    await asyncio.sleep(0.3)  # the proxy now waits for this client to read
    writer.transport.abort()
    await until(lambda: proxy.in_flight() == 0)
    await until(lambda: node.peer_closed.is_set(), what="the node's connection is closed")
    assert node.bytes_sent < TOTAL
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


async def test_handlers_of_clients_that_leave_during_the_body_do_not_linger(env):
    """A client that leaves (or is cut off) before its body is complete must not leave its handler
    waiting for the body forever: one per client would be a leak an attacker can pile up."""
    node = await env.node()
    proxy = await env.proxy([node], client_body_timeout=0.3)
    auth = (await admin(proxy))["Authorization"]
    baseline = waiting_handlers()
    paths = ["/api/generate", "/api/chat", "/v1/chat/completions", "/api/pull", "/api/proxy/pull",
             "/api/proxy/models/delete", "/api/proxy/nodes", "/api/users"]
    for path in paths:
        for cut_off in (False, True):
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            writer.write(f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n"
                         f"Content-Length: 1000\r\n\r\n{{\"model\": ".encode())
            await writer.drain()
            await asyncio.sleep(0.05)
            if cut_off:
                await _closed_after(reader, 5)  # the body timeout
            else:
                writer.transport.abort()  # the client leaves
    await until(lambda: waiting_handlers() == baseline, timeout=3,
                what=f"{waiting_handlers() - baseline} handler(s) still wait for a body that will never come")
    assert proxy.in_flight() == 0


def test_the_client_timeouts_are_settings_with_one_name_each():
    settings = load_settings({"client_body_timeout": "12.5", "client_send_timeout": "30"},
                             {"AIVONX_CLIENT_HEADER_TIMEOUT": "7"})
    assert settings.client_header_timeout == 7 and settings.client_body_timeout == 12.5
    assert settings.client_send_timeout == 30
    defaults = load_settings({}, {})
    assert defaults.client_header_timeout == 60 and defaults.client_body_timeout == 300
    assert defaults.client_send_timeout == 60
    with pytest.raises(ConfigError) as error:
        load_settings({}, {"AIVONX_CLIENT_BODY_TIMEOUT": "0"})
    assert "client_body_timeout" in error.value.errors
