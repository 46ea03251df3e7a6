"""The database becomes unreachable while the proxy runs, then comes back.

The outage is made at the driver boundary: every collection the repositories use raises
pymongo's ``ServerSelectionTimeoutError`` (what Motor raises when MongoDB is unreachable),
so the store's own translation to ``StoreUnavailable`` is exercised too.

What each route does meanwhile (decided per route):

* gateway (Ollama API, ``/v1``, pulls): served from memory, as if nothing happened; with
  ``require_api_key``, a gateway key already seen is accepted from memory, an unknown one is 503;
* management reads held in memory answer 200: ``/api/proxy/config``, ``/state``,
  ``/active-requests``, ``/health``, ``/api/auth/me`` (the caller's cached record);
* management reads of stored records (``/api/proxy/nodes``, ``/api/users``, ``/api/proxy/keys``)
  and every write (nodes, config, users, keys, login, refresh, logout, password) answer
  503 JSON with ``Retry-After``, never 500 and never a traceback, and change nothing — in
  the store or in memory;
* afterwards, with no restart: writes succeed again, the sync watcher logs the outage once and
  follows the store again, and everything stored before is still there (also on disk).
"""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from pymongo.errors import ServerSelectionTimeoutError

from app.server import stop_services
from tests.api.mgmt import admin
from tests.conftest import ADMIN_PASSWORD, ndjson
from tests.reliability.helpers import until

GEN = {"model": "llama3", "prompt": "hi"}


class _DownCollection:
    """Stands in for a Motor collection while MongoDB is unreachable."""

    def __init__(self, name: str):
        self.name = name
        self.calls = 0

    def __getattr__(self, attribute: str):
        def fail(*args, **kwargs):
            self.calls += 1
            raise ServerSelectionTimeoutError("127.0.0.1:27017: [Errno 111] Connection refused")

        return fail


class Outage:
    """Take every repository's collections away and give them back."""

    def __init__(self, store):
        self.store = store
        self.saved: list[tuple[object, str, object]] = []
        self.stand_ins: list[_DownCollection] = []

    def begin(self) -> None:
        for repo in self.store._repos():
            for attribute in ("_col", "_revoked"):
                if hasattr(repo, attribute):
                    self.saved.append((repo, attribute, getattr(repo, attribute)))
                    stand_in = _DownCollection(f"{type(repo).__name__}.{attribute}")
                    self.stand_ins.append(stand_in)
                    setattr(repo, attribute, stand_in)

    def end(self) -> None:
        for repo, attribute, value in self.saved:
            setattr(repo, attribute, value)
        self.saved.clear()

    @property
    def calls(self) -> int:
        return sum(s.calls for s in self.stand_ins)


@pytest.fixture
def outages():
    started: list[Outage] = []

    def make(store) -> Outage:
        outage = Outage(store)
        started.append(outage)
        return outage

    yield make
    for outage in started:
        outage.end()


def _is_503_json(status: int, body, response=None) -> bool:
    return status == 503 and isinstance(body, dict) and "database" in body.get("error", "") \
        and "Traceback" not in json.dumps(body)


async def _snapshot(proxy, headers):
    nodes = (await proxy.json("GET", "/api/proxy/nodes", headers=headers))[1]["nodes"]
    users = (await proxy.json("GET", "/api/users", headers=headers))[1]
    keys = (await proxy.json("GET", "/api/proxy/keys", headers=headers))[1]
    config = (await proxy.json("GET", "/api/proxy/config", headers=headers))[1]
    return {
        "nodes": sorted((n["id"], n["name"], n["url"], n["enabled"], tuple(n["header_names"])) for n in nodes),
        "users": sorted((u["id"], u["username"], u["role"]) for u in users["users"]),
        "keys": sorted((k["id"], k["name"], k["revoked"]) for k in keys["keys"]),
        "config": config,
    }


async def test_proxying_goes_on_writes_are_503_and_everything_recovers_with_nothing_lost(env, outages, caplog):
    caplog.set_level(logging.INFO, logger="aivonx")
    node, other = await env.node(), await env.node(["mistral:latest"])
    proxy = await env.proxy([node], config={"strategy": "round_robin", "require_api_key": True})
    h = await admin(proxy)
    # Things stored before the outage: a second node with a secret header, a user, keys, settings.
    status, second = await proxy.json("POST", "/api/proxy/nodes", {"url": other.url, "headers": {"X-Token": "s"}},
                                      headers=h)
    assert status == 201
    assert (await proxy.json("POST", "/api/users", {"username": "lena", "password": "lenas-password-1",
                                                    "role": "viewer"}, headers=h))[0] == 201
    status, key = await proxy.json("POST", "/api/proxy/keys", {"name": "ci", "kind": "gateway"}, headers=h)
    assert status == 201
    gateway = {"Authorization": f"Bearer {key['secret']}"}
    status, unseen = await proxy.json("POST", "/api/proxy/keys", {"name": "unseen", "kind": "gateway"}, headers=h)
    assert status == 201
    assert (await proxy.request("GET", "/api/tags", headers=gateway)).code == 200  # this key is now known
    tokens = (await proxy.json("POST", "/api/auth/login", {"username": "admin", "password": ADMIN_PASSWORD}))[1]
    before = await _snapshot(proxy, h)
    sync = proxy.services.extras["sync"]
    sync.set_interval(0.05)

    outage = outages(proxy.services.store)
    outage.begin()

    # -- the gateway serves from memory ------------------------------------------------------------
    for path, body in (("/api/generate", GEN), ("/api/generate", {**GEN, "stream": False}),
                       ("/api/chat", {"model": "mistral", "messages": []}),
                       ("/v1/chat/completions", {"model": "llama3", "messages": [{"role": "user", "content": "x"}]}),
                       ("/api/embed", {"model": "llama3", "input": "x"})):
        response = await proxy.request("POST", path, body, headers=gateway)
        assert response.code == 200, (path, response.code, response.body)
        if path == "/api/generate" and body.get("stream", True):
            assert ndjson(response.body)[-1]["done"] is True
    for path in ("/api/tags", "/api/ps", "/api/version", "/v1/models"):
        assert (await proxy.request("GET", path, headers=gateway)).code == 200, path
    # A key never seen before cannot be checked: 503, not a wrong 401.
    status, body = await proxy.json("GET", "/api/tags", headers={"Authorization": f"Bearer {unseen['secret']}"})
    assert _is_503_json(status, body), (status, body)

    # -- management reads held in memory -----------------------------------------------------------
    for path in ("/api/proxy/config", "/api/proxy/state", "/api/proxy/active-requests", "/api/proxy/health",
                 "/api/auth/me"):
        status, body = await proxy.json("GET", path, headers=h)
        assert status == 200, (path, status, body)

    # -- stored records and every write: 503 JSON with Retry-After ---------------------------------
    node_id = next(iter(proxy.fleet.nodes))
    calls = [
        ("GET", "/api/proxy/nodes", None),
        ("GET", f"/api/proxy/nodes/{node_id}", None),
        ("GET", "/api/users", None),
        ("GET", "/api/proxy/keys", None),
        ("POST", "/api/proxy/nodes", {"url": "http://127.0.0.1:9"}),
        ("PATCH", f"/api/proxy/nodes/{node_id}", {"enabled": False}),
        ("PUT", f"/api/proxy/nodes/{node_id}", {"url": "http://127.0.0.1:10"}),
        ("DELETE", f"/api/proxy/nodes/{second['id']}", None),
        ("PATCH", "/api/proxy/config", {"strategy": "random"}),
        ("PUT", "/api/proxy/config", {}),
        ("POST", "/api/users", {"username": "max", "password": "max-password-1"}),
        ("POST", "/api/proxy/keys", {"name": "new", "kind": "api"}),
        ("DELETE", f"/api/proxy/keys/{key['key']['id']}", None),
        ("POST", "/api/auth/login", {"username": "admin", "password": ADMIN_PASSWORD}),
        ("POST", "/api/auth/refresh", {"refresh": tokens["refresh"]}),
        ("POST", "/api/auth/logout", {"refresh": tokens["refresh"]}),
        ("POST", "/api/auth/password", {"current_password": ADMIN_PASSWORD, "new_password": "another-password-1"}),
    ]
    for method, path, body in calls:
        response = await proxy.request(method, path, body, headers=h)
        parsed = json.loads(response.body) if response.body else None
        assert _is_503_json(response.code, parsed), (method, path, response.code, response.body)
        assert response.headers.get("Retry-After"), (method, path)
    assert outage.calls > 0
    # Nothing changed in memory either.
    assert proxy.fleet.config.strategy == "round_robin" and len(proxy.fleet.nodes) == 2
    assert all(n.enabled for n in proxy.fleet.nodes.values())
    await until(lambda: sync._outage, what="the sync watcher notices the outage")
    polls_during_outage = outage.calls
    await until(lambda: outage.calls > polls_during_outage + 5, what="the watcher keeps retrying")

    outage.end()

    # -- back, with no restart ---------------------------------------------------------------------
    await until(lambda: not sync._outage, what="the sync watcher follows the store again")
    assert await _snapshot(proxy, h) == before  # nothing stored was lost
    status, body = await proxy.json("PATCH", "/api/proxy/config", {"strategy": "random"}, headers=h)
    assert status == 200 and body["strategy"] == "random"
    assert (await proxy.json("POST", "/api/users", {"username": "max", "password": "max-password-1"},
                             headers=h))[0] == 201
    assert (await proxy.json("POST", "/api/auth/refresh", {"refresh": tokens["refresh"]}))[0] == 200
    assert (await proxy.request("GET", "/api/tags",
                                headers={"Authorization": f"Bearer {unseen['secret']}"})).code == 200
    messages = [r.getMessage() for r in caplog.records if r.name == "aivonx"]
    assert sum("cannot follow changes in the store" in m for m in messages) == 1
    assert sum("following changes in the store again" in m for m in messages) == 1
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR and r.name.startswith("aivonx")]

    # -- and on disk: a new process on the same data directory sees all of it ----------------------
    after = await _snapshot(proxy, h)
    data_dir = proxy.services.settings.data_dir
    proxy.server.stop()
    await proxy.server.close_all_connections()
    await stop_services(proxy.services)
    env.proxies.remove(proxy)
    again = await env.proxy(data_dir=data_dir)
    assert await _snapshot(again, await admin(again)) == after


async def test_an_outage_during_a_stream_does_not_touch_it(env, outages):
    node = await env.node(fast=False, load_time=0, tokens_per_second=50, default_tokens=25)
    proxy = await env.proxy([node])
    outage = outages(proxy.services.store)
    request = asyncio.ensure_future(proxy.request("POST", "/api/generate", GEN))
    await until(lambda: proxy.in_flight() == 1)
    outage.begin()
    response = await request
    assert response.code == 200 and ndjson(response.body)[-1]["done"] is True
    assert proxy.in_flight() == 0
