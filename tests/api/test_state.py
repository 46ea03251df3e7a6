"""Live fleet state: ``/api/proxy/state``, ``/active-requests``, ``/events`` and ``/health``."""

from __future__ import annotations

import asyncio
import json
import math

import pytest
from tornado.iostream import IOStream
from tornado.tcpclient import TCPClient

from app.api.state import EventsHandler
from app.store import StoreUnavailable
from tests.api.mgmt import admin, eventually, strict_json, viewer
from tests.conftest import ADMIN_PASSWORD


def _finite_everywhere(value) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite_everywhere(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite_everywhere(v) for v in value)
    return True


class EventStream:
    """A raw HTTP/1.1 client for one SSE response: reads events as they come, and can hang up."""

    def __init__(self, stream: IOStream):
        self.stream = stream
        self.status = 0
        self.headers: dict[str, str] = {}
        self.messages: asyncio.Queue[str] = asyncio.Queue()
        self.reader: asyncio.Future | None = None

    @classmethod
    async def open(cls, proxy, headers: dict[str, str]) -> EventStream:
        stream = await TCPClient().connect("127.0.0.1", proxy.port)
        lines = ["GET /api/proxy/events HTTP/1.1", f"Host: 127.0.0.1:{proxy.port}", "Accept: text/event-stream"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        await stream.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        client = cls(stream)
        head = (await asyncio.wait_for(stream.read_until(b"\r\n\r\n"), 5)).decode()
        first, *rest = head.strip().split("\r\n")
        client.status = int(first.split()[1])
        client.headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in rest)}
        if client.status == 200:
            client.reader = asyncio.ensure_future(client._read())
        return client

    async def _read(self) -> None:
        """Undo the chunked framing and queue each message (event or comment block)."""
        buffer = b""
        while True:
            size = int((await self.stream.read_until(b"\r\n")).strip(), 16)
            if size == 0:
                return
            buffer += (await self.stream.read_bytes(size + 2))[:-2]
            while b"\n\n" in buffer:
                raw, buffer = buffer.split(b"\n\n", 1)
                await self.messages.put(raw.decode())

    async def next(self, timeout: float = 5.0) -> str:
        """The next message as text."""
        return await asyncio.wait_for(self.messages.get(), timeout)

    async def state(self, timeout: float = 5.0) -> dict:
        """The next ``state`` event's data (skipping pings and the retry hint)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            message = await self.next(max(0.01, deadline - loop.time()))
            if message.startswith("event: state\n"):
                return strict_json(message.split("\ndata: ", 1)[1])

    def close(self) -> None:
        self.stream.close()
        if self.reader is not None:
            self.reader.cancel()


# -- /api/proxy/state --------------------------------------------------------------------------------


async def test_state_shows_pools_nodes_totals_and_models(env):
    a = await env.node(["llama3:latest", "qwen2.5:7b"])
    b = await env.node(["llama3:latest"], digest_salt="other-build")
    c = await env.node(["llama3:latest"])
    proxy = await env.proxy([a, b, c], config={"fall": 1})
    await c.stop()
    await proxy.refresh()
    await proxy.request("POST", "/api/generate", {"model": "qwen2.5:7b", "prompt": "x", "stream": False})

    response = await proxy.request("GET", "/api/proxy/state", headers=await viewer(proxy))
    assert response.code == 200 and response.headers["Content-Type"].startswith("application/json")
    state = strict_json(response.body)  # refuses NaN / Infinity
    assert _finite_everywhere(state)
    ids = {n["name"]: n["id"] for n in state["nodes"]}
    name_c = f"127.0.0.1-{c.port}"
    assert sorted(state["active"]) == sorted(i for name, i in ids.items() if name != name_c)
    assert state["standby"] == [ids[name_c]]
    assert state["strategy"] == "least_active"
    assert state["totals"] == {"nodes": 3, "active": 2, "standby": 1, "routable": 2, "in_flight": 0, "queued": 0,
                               "models": 2}
    down = next(n for n in state["nodes"] if n["name"] == name_c)
    assert down["status"] == "standby" and down["last_error"] and down["consecutive_failures"] == 1
    up = next(n for n in state["nodes"] if n["name"] == f"127.0.0.1-{a.port}")
    assert up["version"] == "0.33.0" and up["last_check"] and up["latency_ms"]["probe"] is not None
    assert up["requests_total"] == 1 and up["latency_ms"]["ttfb"] is not None
    assert "headers" not in up and up["header_names"] == []
    models = {m["name"]: m for m in state["models"]}
    # Same tag, different weights on two nodes: flagged.
    assert models["llama3:latest"]["digest_drift"] is True
    assert models["qwen2.5:7b"]["digest_drift"] is False and len(models["qwen2.5:7b"]["nodes"]) == 1
    assert state["generated_at"]


async def test_state_numbers_stay_finite_whatever_the_node_reported(env):
    a = await env.node()
    proxy = await env.proxy([a])
    node = next(iter(proxy.fleet.nodes.values()))
    node.probe_latency = float("nan")
    node.ttfb = float("inf")
    node.ttfb_by_model["llama3:latest"] = float("-inf")
    node.speed = float("nan")
    node.speed_by_model["llama3:latest"] = float("inf")
    response = await proxy.request("GET", "/api/proxy/state", headers=await admin(proxy))
    assert response.code == 200
    shown = strict_json(response.body)["nodes"][0]
    assert shown["latency_ms"] == {"probe": None, "ttfb": None, "ttfb_by_model": {"llama3:latest": None}}
    assert shown["tokens_per_second"] == {"node": None, "by_model": {"llama3:latest": None}}


async def test_state_and_active_requests_are_public_only_when_configured(env):
    proxy = await env.proxy()
    for path in ("/api/proxy/state", "/api/proxy/active-requests"):
        assert (await proxy.json("GET", path))[0] == 401
    await proxy.services.update_config({"public_state": True})
    for path in ("/api/proxy/state", "/api/proxy/active-requests"):
        assert (await proxy.json("GET", path))[0] == 200
    assert (await proxy.json("GET", "/api/proxy/nodes"))[0] == 401  # the rest stays private


# -- /api/proxy/active-requests ----------------------------------------------------------------------


async def test_active_requests_per_node_and_total(env):
    slow = await env.node(["slow:latest"], fast=False, load_time=0.0, tokens_per_second=40.0, default_tokens=20,
                          num_parallel=2)
    other = await env.node(["llama3:latest"])
    proxy = await env.proxy([slow, other])
    h = await viewer(proxy)
    slow_id = proxy.fleet.by_name(f"127.0.0.1-{slow.port}").id
    running = [asyncio.ensure_future(proxy.request("POST", "/api/generate",
                                                   {"model": "slow", "prompt": "x", "stream": False}))
               for _ in range(2)]
    await eventually(lambda: proxy.in_flight() == 2)
    status, body = await proxy.json("GET", "/api/proxy/active-requests", headers=h)
    assert status == 200 and body["total"] == 2 and body["queued"] == 0
    counts = {n["id"]: n["in_flight"] for n in body["nodes"]}
    assert counts[slow_id] == 2 and sum(counts.values()) == 2
    status, one = await proxy.json("GET", f"/api/proxy/active-requests?node_id={slow_id}", headers=h)
    assert status == 200 and one["total"] == 2 and [n["id"] for n in one["nodes"]] == [slow_id]
    assert one["nodes"][0]["idle"] is False
    for response in await asyncio.gather(*running):
        assert response.code == 200
    status, body = await proxy.json("GET", "/api/proxy/active-requests", headers=h)
    assert body["total"] == 0


async def test_active_requests_for_an_unknown_node_is_404(env):
    proxy = await env.proxy()
    status, body = await proxy.json("GET", "/api/proxy/active-requests?node_id=nope", headers=await viewer(proxy))
    assert status == 404 and "nope" in body["error"]


# -- /api/proxy/health -------------------------------------------------------------------------------


async def test_health_is_public_and_follows_the_active_pool(env):
    proxy = await env.proxy()
    status, body = await proxy.json("GET", "/api/proxy/health")
    assert status == 503 and body["status"] == "unavailable" and body["active"] == 0
    a = await env.node()
    await proxy.json("POST", "/api/proxy/nodes", {"url": a.url}, headers=await admin(proxy))
    assert await proxy.json("GET", "/api/proxy/health") == (200, {"status": "ok", "active": 1})
    head = await proxy.request("HEAD", "/api/proxy/health")
    assert head.code == 200 and head.body == b""
    await proxy.services.update_config({"fall": 1})
    await a.stop()
    await proxy.refresh()
    assert (await proxy.json("GET", "/api/proxy/health"))[0] == 503


# -- /api/proxy/events -------------------------------------------------------------------------------


async def test_events_need_a_login(env):
    proxy = await env.proxy()
    events = await EventStream.open(proxy, {})
    try:
        assert events.status == 401
    finally:
        events.close()


async def test_events_deliver_a_node_going_down_then_unsubscribe(env):
    a = await env.node()
    b = await env.node()
    proxy = await env.proxy([a, b], config={"fall": 1})
    listeners = len(proxy.fleet._listeners)
    events = await EventStream.open(proxy, await viewer(proxy))
    try:
        assert events.status == 200 and events.headers["content-type"].startswith("text/event-stream")
        first = await events.state()
        assert first["changes"] == [{"kind": "connected"}] and first["totals"]["active"] == 2
        assert len(proxy.fleet._listeners) == listeners + 1

        await b.stop()
        down_id = proxy.fleet.by_name(f"127.0.0.1-{b.port}").id
        await proxy.services.monitor.check(proxy.fleet.get(down_id))
        update = await events.state()
        assert {"kind": "status", "id": down_id, "name": f"127.0.0.1-{b.port}", "status": "standby"} \
            in update["changes"]
        assert update["standby"] == [down_id] and update["totals"]["active"] == 1
        assert next(n for n in update["nodes"] if n["id"] == down_id)["status"] == "standby"
    finally:
        events.close()
    await eventually(lambda: len(proxy.fleet._listeners) == listeners)  # no leaked listener


async def test_events_coalesce_bursts_and_report_request_counts(env, monkeypatch):
    monkeypatch.setattr(EventsHandler, "COUNTS_POLL", 0.05)
    slow = await env.node(["slow:latest"], fast=False, load_time=0.0, tokens_per_second=40.0, default_tokens=20)
    proxy = await env.proxy([slow])
    events = await EventStream.open(proxy, await admin(proxy))
    try:
        await events.state()
        node = next(iter(proxy.fleet.nodes.values()))
        loop = asyncio.get_running_loop()
        started = loop.time()
        for _ in range(200):
            proxy.fleet.models_changed(node)
        burst = await events.state()
        assert [c["kind"] for c in burst["changes"]] == ["models"]  # 200 notifications, one message
        with pytest.raises(asyncio.TimeoutError):
            await events.state(timeout=0.3)  # and nothing more for them
        assert loop.time() - started < 1.5

        running = asyncio.ensure_future(proxy.request("POST", "/api/generate",
                                                      {"model": "slow", "prompt": "x", "stream": False}))
        counted = await events.state()
        assert {"kind": "counts"} in counted["changes"] and counted["totals"]["in_flight"] == 1
        assert (await running).code == 200
        done = await events.state()
        assert done["totals"]["in_flight"] == 0
    finally:
        events.close()


async def test_events_keep_idle_connections_alive_with_pings(env, monkeypatch):
    monkeypatch.setattr(EventsHandler, "PING_INTERVAL", 0.1)
    proxy = await env.proxy()
    events = await EventStream.open(proxy, await admin(proxy))
    try:
        await events.state()
        assert await events.next(timeout=2) == ": ping"
    finally:
        events.close()


async def test_events_end_when_the_session_is_logged_out_or_the_user_deleted(env, monkeypatch):
    monkeypatch.setattr(EventsHandler, "REAUTH_INTERVAL", 0.1)
    proxy = await env.proxy()
    response = await proxy.request("POST", "/api/auth/login",
                                   {"username": "admin", "password": ADMIN_PASSWORD, "session": True})
    xsrf = json.loads(response.body)["xsrf_token"]
    cookie = "; ".join(line.split(";", 1)[0] for line in response.headers.get_list("Set-Cookie"))
    events = await EventStream.open(proxy, {"Cookie": cookie})
    kept = await EventStream.open(proxy, await admin(proxy))  # another login of the same user
    try:
        await events.state()
        await asyncio.sleep(0.3)
        assert not events.reader.done()  # re-checked, still valid: the stream goes on
        logout = await proxy.request("POST", "/api/auth/logout", headers={"Cookie": cookie, "X-XSRFToken": xsrf})
        assert logout.code == 200
        await asyncio.wait_for(events.reader, 3)  # the chunked stream ended cleanly
        await asyncio.sleep(0.3)
        assert not kept.reader.done()
    finally:
        events.close()
        kept.close()

    headers = await admin(proxy)
    status, user = await proxy.json("POST", "/api/users", {"username": "watcher", "password": "watcher-pass-1",
                                                           "role": "viewer"}, headers=headers)
    assert status == 201
    status, tokens = await proxy.json("POST", "/api/auth/login", {"username": "watcher", "password": "watcher-pass-1"})
    assert status == 200
    events = await EventStream.open(proxy, {"Authorization": f"Bearer {tokens['access']}"})
    try:
        await events.state()
        assert (await proxy.request("DELETE", f"/api/users/{user['id']}", headers=headers)).code == 200
        await asyncio.wait_for(events.reader, 3)
    finally:
        events.close()


async def test_events_survive_a_store_outage_during_the_credential_check(env, monkeypatch):
    monkeypatch.setattr(EventsHandler, "REAUTH_INTERVAL", 0.1)
    proxy = await env.proxy()
    events = await EventStream.open(proxy, await admin(proxy))
    try:
        await events.state()

        async def store_down(handler):
            raise StoreUnavailable("the store is down")

        monkeypatch.setattr(proxy.services.auth, "authenticate", store_down)
        await asyncio.sleep(0.5)
        assert not events.reader.done()
    finally:
        events.close()


async def test_events_data_is_strict_json(env):
    a = await env.node()
    proxy = await env.proxy([a])
    next(iter(proxy.fleet.nodes.values())).probe_latency = float("nan")
    events = await EventStream.open(proxy, await admin(proxy))
    try:
        state = await events.state()
        assert _finite_everywhere(state) and json.dumps(state, allow_nan=False)
    finally:
        events.close()
