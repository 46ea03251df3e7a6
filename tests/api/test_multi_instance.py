"""Several proxy processes on one database converge: a change made through one is in effect on all.

Two proxies cannot share an embedded data directory (it is locked), so both run on one
"mongodb"-kind Store built on mongomock-motor, as the store tests do.
"""

from __future__ import annotations

import logging

import pytest

from app.config import RoutingConfig
from app.fleet.pool import Fleet
from app.fleet.sync import SyncWatcher
from app.store import StoreUnavailable, backend, connect
from tests.api.mgmt import admin, eventually

FAKE_URL = "mongodb://db.example:27017/aivonx"


@pytest.fixture
def shared_store(io_loop, monkeypatch, tmp_path):
    monkeypatch.setattr(backend, "new_mongo_client", lambda url, timeout_ms: backend.new_embedded_client())
    store = io_loop.run_sync(lambda: connect(FAKE_URL, "aivonx", tmp_path / "unused", connect_timeout=1))
    yield store
    io_loop.run_sync(store.close)  # each proxy closed it already: closing again is harmless


async def _pair(env, store, nodes=()):
    one = await env.proxy(nodes, store=store)
    two = await env.proxy(store=store)
    for proxy in (one, two):
        proxy.services.extras["sync"].set_interval(0.05)
    return one, two


async def test_two_instances_on_one_store_converge(env, shared_store):
    a = await env.node(["llama3:latest"])
    b = await env.node(["mistral:7b"])
    one, two = await _pair(env, shared_store, [a])
    h1, h2 = await admin(one), await admin(two)
    await eventually(lambda: len(two.fleet.nodes) == 1)
    assert two.services.store is one.services.store

    # A node added through one instance serves through the other within moments, probed at once.
    status, node = await one.json("POST", "/api/proxy/nodes", {"name": "gpu-b", "url": b.url}, headers=h1)
    assert status == 201
    await eventually(lambda: (n := two.fleet.get(node["id"])) is not None and n.routable, timeout=3)
    reply = await two.request("POST", "/api/generate", {"model": "mistral:7b", "prompt": "x", "stream": False})
    assert reply.code == 200 and reply.headers["X-Aivonx-Node"] == "gpu-b"

    # An edit (disable) through the second is in effect on the first.
    status, _ = await two.json("PATCH", f"/api/proxy/nodes/{node['id']}", {"enabled": False}, headers=h2)
    assert status == 200
    await eventually(lambda: one.fleet.get(node["id"]).enabled is False, timeout=3)
    reply = await one.request("POST", "/api/generate", {"model": "mistral:7b", "prompt": "x", "stream": False})
    assert reply.code == 503

    # Routing settings too, applied live (the monitor rescheduled).
    status, _ = await one.json("PATCH", "/api/proxy/config", {"strategy": "round_robin", "health_interval": 30},
                               headers=h1)
    assert status == 200
    await eventually(lambda: two.services.config.strategy == "round_robin", timeout=3)
    assert two.services.monitor._periodic.callback_time == 30_000
    assert (await two.json("GET", "/api/proxy/state", headers=h2))[1]["strategy"] == "round_robin"

    # And removal.
    status, _ = await two.json("DELETE", f"/api/proxy/nodes/{node['id']}", headers=h2)
    assert status == 204
    await eventually(lambda: one.fleet.get(node["id"]) is None, timeout=3)
    assert len(one.fleet.nodes) == len(two.fleet.nodes) == 1


async def test_the_default_pace_converges_within_seconds(env, shared_store):
    one = await env.proxy(store=shared_store)
    two = await env.proxy(store=shared_store)
    assert two.services.extras["sync"].interval == 2.0 and two.services.extras["sync"].running
    await one.json("PATCH", "/api/proxy/config", {"fall": 7}, headers=await admin(one))
    await eventually(lambda: two.services.config.fall == 7, timeout=4.5)


# -- the watcher on its own ---------------------------------------------------------------------------


class _Changes:
    def __init__(self, store):
        self.store = store

    async def current(self):
        return await self.store.marker()


class _Repo:
    def __init__(self, load):
        self._load = load

    async def list(self):
        return self._load()

    async def load(self):
        return self._load()


class FlakyStore:
    """A store whose change marker fails ``failures`` times, and that can be changed in between reads."""

    def __init__(self, failures=0):
        self.failures = failures
        self.value = 1
        self.records = [{"id": "n1", "name": "gpu-1", "url": "http://127.0.0.1:9"}]
        self.settings = {"strategy": "random"}
        self.during_load = None  # called while the nodes are read: a write racing the reload
        self.changes = _Changes(self)
        self.nodes = _Repo(self._records)
        self.config = _Repo(lambda: dict(self.settings))

    async def marker(self):
        if self.failures:
            self.failures -= 1
            raise StoreUnavailable("the database is unavailable (test)")
        return self.value

    def _records(self):
        records = [dict(r) for r in self.records]
        if self.during_load is not None:
            self.during_load()
            self.during_load = None
        return records


def _watcher(store):
    fleet = Fleet(RoutingConfig())
    return SyncWatcher(store, fleet, fleet.set_config, interval=0.01), fleet


async def test_a_store_outage_is_logged_once_and_retried(caplog):
    store = FlakyStore(failures=5)
    watcher, fleet = _watcher(store)
    caplog.set_level(logging.INFO, logger="aivonx")
    for _ in range(5):
        assert await watcher.poll_once() is False
    assert fleet.nodes == {}
    assert await watcher.poll_once() is True  # the store is back: everything reloaded
    assert list(fleet.nodes) == ["n1"] and fleet.config.strategy == "random"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "retrying" in warnings[0].getMessage()
    assert any("again" in r.getMessage() for r in caplog.records if r.levelno == logging.INFO)
    assert await watcher.poll_once() is False  # nothing moved since


async def test_the_polling_task_survives_errors_and_stops_cleanly():
    store = FlakyStore(failures=3)
    watcher, fleet = _watcher(store)
    watcher.start()
    await eventually(lambda: "n1" in fleet.nodes, timeout=2)
    store.records.append({"id": "n2", "name": "gpu-2", "url": "http://127.0.0.1:10"})
    store.value += 1
    await eventually(lambda: "n2" in fleet.nodes, timeout=2)
    await watcher.stop()
    assert not watcher.running


async def test_a_write_racing_a_reload_is_not_undone():
    """The reload read the store before this process wrote (store, then memory): it must not
    put the older data over the newer in memory, but read again."""
    store = FlakyStore()
    watcher, fleet = _watcher(store)
    assert await watcher.poll_once() is True
    new = {"id": "n2", "name": "gpu-2", "url": "http://127.0.0.1:10"}

    def local_write():  # what a handler does: store write (bumps the marker), then the fleet
        store.records.append(new)
        store.value += 1
        fleet.upsert(new)

    store.during_load = local_write
    store.value += 1  # some other change, so the watcher reloads
    await watcher.poll_once()
    assert "n2" in fleet.nodes  # the stale list (without n2) was not applied
    assert watcher._seen == store.value
