"""Node faults below HTTP that tests/api/test_failover.py does not cover.

A reset, bytes that are not HTTP, half a line then silence, a stream that never ends,
mixes of 500 and 503, and the whole fleet down then back. Each time: a retry on another
node or a clean error (a status before the first byte, an ``error`` line after it), the
node is marked, no count leaks, and the proxy keeps serving.
"""

from __future__ import annotations

import asyncio
import json

from app.simulator import SimulatorOptions, start_simulator
from tests.conftest import ndjson
from tests.reliability import helpers
from tests.reliability.helpers import RawNode, state_of, until

GEN = {"model": "llama3", "prompt": "tell me a story"}


async def _raw(env, behaviour) -> RawNode:
    node = await RawNode(behaviour).start()
    env.nodes.append(node)  # stopped with the others
    return node


async def _served_elsewhere(proxy, bad: RawNode, good, bodies=(GEN, {**GEN, "stream": False})) -> None:
    """Every request succeeds on ``good``; ``bad`` was really tried along the way."""
    good_name = state_of(proxy, good).name
    for body in bodies:
        for _ in range(3):
            response = await proxy.request("POST", "/api/generate", body)
            assert response.code == 200, response.body
            assert response.headers["X-Aivonx-Node"] == good_name
            if body.get("stream", True):
                assert ndjson(response.body)[-1]["done"] is True
    assert bad.requests, "the misbehaving node was never tried"
    assert proxy.in_flight() == 0 and proxy.fleet.total_queued() == 0


async def test_a_node_that_resets_the_connection_is_retried_marked_and_alone_is_a_502(env):
    bad, good = await _raw(env, helpers.reset_at_once), await env.node()
    proxy = await env.proxy([bad, good], config={"strategy": "round_robin"})
    assert state_of(proxy, bad).status == "active"
    await _served_elsewhere(proxy, bad, good)
    bad_state = state_of(proxy, bad)
    assert bad_state.failures_total >= 1 and "reset" in bad_state.last_error
    alone = await env.proxy([bad], config={"max_attempts": 1})
    status, body = await alone.json("POST", "/api/generate", GEN)
    assert status == 502 and "reset" in body["error"]
    assert alone.in_flight() == 0


async def test_a_reset_mid_stream_ends_with_an_error_line_and_unstreamed_answers_are_retried(env):
    bad, good = await _raw(env, helpers.reset_mid_stream), await env.node()
    proxy = await env.proxy([bad], config={"fall": 1})
    response = await proxy.request("POST", "/api/generate", GEN)
    assert response.code == 200
    lines = ndjson(response.body)  # every line whole: the error starts on a line of its own
    assert len(lines) == 3 and lines[0]["response"] == "tok" and "error" in lines[-1]
    assert not any(line.get("done") for line in lines)
    assert state_of(proxy, bad).status == "standby"
    assert proxy.in_flight() == 0
    # Unstreamed: nothing is sent before the answer is whole, so the same reset is retried elsewhere.
    both = await env.proxy([bad, good], config={"strategy": "round_robin"})
    await _served_elsewhere(both, bad, good, bodies=({**GEN, "stream": False},))


async def test_bytes_that_are_not_http_are_failed_over_and_alone_are_a_502(env):
    bad, good = await _raw(env, helpers.not_http), await env.node()
    proxy = await env.proxy([bad, good], config={"strategy": "round_robin"})
    await _served_elsewhere(proxy, bad, good)
    assert "invalid HTTP" in state_of(proxy, bad).last_error
    alone = await env.proxy([bad], config={"max_attempts": 1})
    status, body = await alone.json("POST", "/api/chat", {"model": "llama3", "messages": []})
    assert status == 502 and "invalid HTTP" in body["error"]


async def test_half_a_line_then_silence_before_anything_was_sent_is_retried_after_the_idle_timeout(env):
    bad, good = await _raw(env, helpers.half_line_then_hang), await env.node()
    proxy = await env.proxy([bad, good], config={"idle_timeout": 1, "strategy": "round_robin"})
    await _served_elsewhere(proxy, bad, good, bodies=(GEN,))
    assert "no data from node within 1s" in state_of(proxy, bad).last_error
    await until(lambda: bad.peer_closed.is_set(), what="the proxy hangs up on the silent node")
    alone = await env.proxy([bad], config={"idle_timeout": 1, "max_attempts": 1})
    status, body = await alone.json("POST", "/api/generate", GEN)
    assert status == 504 and "no data" in body["error"]
    assert alone.in_flight() == 0


async def test_half_a_line_then_silence_after_the_first_lines_ends_with_an_error_line(env):
    bad = await _raw(env, helpers.lines_then_half_line_then_hang)
    proxy = await env.proxy([bad], config={"idle_timeout": 1})
    response = await proxy.request("POST", "/api/generate", GEN)
    assert response.code == 200
    lines = ndjson(response.body)  # the half line is never relayed
    assert [line.get("response") for line in lines[:2]] == ["tok", "tok"]
    assert len(lines) == 3 and "no data from node within 1s" in lines[-1]["error"]
    assert proxy.in_flight() == 0


async def test_a_stream_that_never_ends_is_not_cut_while_alive_and_a_client_that_leaves_cancels_it(env):
    """There is no limit on a stream's total duration (a long generation is legitimate); only
    silence longer than ``idle_timeout`` ends it. A client that leaves frees everything at once."""
    forever = await _raw(env, helpers.endless)
    proxy = await env.proxy([forever], config={"idle_timeout": 1})
    reader, writer = await helpers.raw_request(proxy.port, "POST", "/api/generate", GEN)
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    received = b""
    loop = asyncio.get_running_loop()
    until_time = loop.time() + 2.5  # well past idle_timeout
    while loop.time() < until_time:
        received += await asyncio.wait_for(reader.read(65536), 1)
    assert received.count(b'"done":false') >= 20 and b'"error"' not in received
    assert proxy.in_flight() == 1
    writer.close()
    await until(lambda: forever.peer_closed.is_set(), timeout=3, what="the node sees the client leave")
    await until(lambda: proxy.in_flight() == 0)
    assert state_of(proxy, forever).status == "active"  # a client leaving is not the node's fault


async def test_mixed_500_and_503_answers_are_retried_and_the_last_one_is_passed_through(env):
    sick, busy, good = await env.node(), await env.node(), await env.node()
    sick.state.set_fault("error_500", routes=["/api/generate"], message="CUDA error")
    busy.state.set_fault("busy", routes=["/api/generate"])
    proxy = await env.proxy([sick, busy, good], config={"max_attempts": 3, "fall": 100})
    good_name = state_of(proxy, good).name
    for body in (GEN, {**GEN, "stream": False}):
        for _ in range(3):
            response = await proxy.request("POST", "/api/generate", body)
            assert response.code == 200 and response.headers["X-Aivonx-Node"] == good_name
    assert state_of(proxy, busy).consecutive_failures == 0  # busy is not a failure
    assert state_of(proxy, sick).consecutive_failures >= 1
    good.state.set_fault("error_500", routes=["/api/generate"], message="out of memory")
    for _ in range(4):
        response = await proxy.request("POST", "/api/generate", GEN)
        assert response.code in (500, 503), response.code
        error = json.loads(response.body)["error"]
        assert error in ("CUDA error", "out of memory") or "server busy" in error
        if response.code == 503:
            assert int(response.headers["Retry-After"]) >= 1
    assert proxy.in_flight() == 0 and all(n.in_flight == 0 for n in proxy.fleet.nodes.values())


async def test_every_node_down_at_once_is_503_with_retry_after_then_full_service_without_a_restart(env):
    a, b = await env.node(), await env.node()
    proxy = await env.proxy([a, b], config={"rise": 1})
    ports = [a.port, b.port]
    await a.stop()
    await b.stop()
    first = await proxy.request("POST", "/api/generate", GEN)
    assert first.code in (502, 503) and "error" in json.loads(first.body)  # the request that finds out
    await until(lambda: not proxy.fleet.routable(), what="both nodes leave the pool")
    for path, body in (("/api/generate", GEN), ("/api/chat", {"model": "llama3", "messages": []}),
                       ("/v1/chat/completions", {"model": "llama3", "messages": []})):
        response = await proxy.request("POST", path, body)
        assert response.code == 503, (path, response.code)
        assert int(response.headers["Retry-After"]) >= 1
        assert json.loads(response.body)["error"]
    health = await proxy.request("GET", "/api/proxy/health")
    assert health.code == 503 and "Retry-After" in health.headers
    for port in ports:  # the same nodes come back on their addresses
        env.nodes.append(await start_simulator(SimulatorOptions(models=["llama3:latest"], fast=True), port=port))
    # No health tick is due (interval 1 h): the standby re-probes alone bring them back.
    await until(lambda: len(proxy.fleet.routable()) == 2, timeout=10, what="both nodes return")
    names = set()
    for _ in range(4):
        response = await proxy.request("POST", "/api/generate", GEN)
        assert response.code == 200 and ndjson(response.body)[-1]["done"] is True
        names.add(response.headers["X-Aivonx-Node"])
    assert len(names) == 2
    assert proxy.in_flight() == 0
