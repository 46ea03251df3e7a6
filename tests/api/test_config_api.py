"""``/api/proxy/config``: routing settings validated field by field, saved, and applied without a restart."""

from __future__ import annotations

from app.config import RoutingConfig
from tests.api.mgmt import admin, eventually, viewer

DEFAULTS = RoutingConfig().to_json()


async def test_viewer_reads_the_settings_in_effect(env):
    proxy = await env.proxy()
    assert (await proxy.json("GET", "/api/proxy/config"))[0] == 401
    status, config = await proxy.json("GET", "/api/proxy/config", headers=await viewer(proxy))
    assert status == 200 and config == DEFAULTS


async def test_only_an_admin_changes_them(env):
    proxy = await env.proxy()
    v = await viewer(proxy)
    assert (await proxy.json("PATCH", "/api/proxy/config", {"strategy": "random"}, headers=v))[0] == 403
    assert (await proxy.json("PUT", "/api/proxy/config", {"strategy": "random"}, headers=v))[0] == 403
    assert (await proxy.json("PATCH", "/api/proxy/config", {"strategy": "random"}))[0] == 401
    assert proxy.services.config.strategy == "least_active"


async def test_every_bad_field_is_named_and_nothing_changes(env):
    proxy = await env.proxy()
    h = await admin(proxy)
    status, answer = await proxy.json("PATCH", "/api/proxy/config", {
        "strategy": "fastest", "fall": 0, "health_interval": "often", "probe_timeout": 1e309,
        "cors_origins": ["ftp://x"], "pull_target": "no-such-node", "colour": "red", "max_attempts": 2,
    }, headers=h)
    assert status == 400 and answer["error"] == "invalid config"
    assert set(answer["fields"]) == {"strategy", "fall", "health_interval", "probe_timeout", "cors_origins",
                                     "pull_target", "colour"}
    assert proxy.services.config == RoutingConfig()
    assert await proxy.services.store.config.load() == {}
    for raw in (b"[]", b"{", b""):
        assert (await proxy.request("PATCH", "/api/proxy/config", raw=raw, headers=h)).code == 400


async def test_patch_changes_some_and_put_resets_the_rest(env):
    a = await env.node()
    proxy = await env.proxy([a])
    h = await admin(proxy)
    node_id = next(iter(proxy.fleet.nodes))
    status, config = await proxy.json("PATCH", "/api/proxy/config",
                                      {"fall": 5, "queue_timeout": 2.5, "pull_target": node_id}, headers=h)
    assert status == 200 and config["fall"] == 5 and config["queue_timeout"] == 2.5 and config["pull_target"] == node_id
    assert config["strategy"] == "least_active"
    stored = await proxy.services.store.config.load()
    assert stored["fall"] == 5 and stored["pull_target"] == node_id

    status, config = await proxy.json("PUT", "/api/proxy/config", {"strategy": "round_robin"}, headers=h)
    assert status == 200 and config == {**DEFAULTS, "strategy": "round_robin"}
    assert proxy.services.config == RoutingConfig(strategy="round_robin")
    assert (await proxy.services.store.config.load())["fall"] == 3


async def test_strategy_change_applies_live(env):
    a = await env.node()
    proxy = await env.proxy([a])
    h = await admin(proxy)
    assert (await proxy.json("GET", "/api/proxy/state", headers=h))[1]["strategy"] == "least_active"
    status, _ = await proxy.json("PATCH", "/api/proxy/config", {"strategy": "round_robin"}, headers=h)
    assert status == 200
    assert (await proxy.json("GET", "/api/proxy/state", headers=h))[1]["strategy"] == "round_robin"
    response = await proxy.request("POST", "/api/generate", {"model": "llama3", "prompt": "x", "stream": False})
    assert response.code == 200


async def test_health_interval_change_reschedules_the_monitor(env):
    a = await env.node()
    proxy = await env.proxy([a])
    monitor = proxy.services.monitor
    assert monitor._periodic.callback_time == proxy.services.config.health_interval * 1000 >= 60_000
    status, config = await proxy.json("PATCH", "/api/proxy/config", {"health_interval": 1}, headers=await admin(proxy))
    assert status == 200 and config["health_interval"] == 1.0
    assert monitor._periodic.callback_time == 1000 and monitor._periodic.is_running()
    ticks = monitor.ticks
    await eventually(lambda: monitor.ticks > ticks, timeout=3)  # within the new interval, not a minute


async def test_public_state_switch_applies_at_once(env):
    proxy = await env.proxy()
    assert (await proxy.json("GET", "/api/proxy/state"))[0] == 401
    await proxy.json("PATCH", "/api/proxy/config", {"public_state": True}, headers=await admin(proxy))
    assert (await proxy.json("GET", "/api/proxy/state"))[0] == 200
