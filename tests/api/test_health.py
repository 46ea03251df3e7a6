"""The health monitor: concurrent probes, hysteresis, passive marking, quick return of a node."""

import asyncio
import json
import time

import pytest

from app.simulator import SimulatorOptions, start_simulator
from tests.api.mgmt import viewer

GEN = {"model": "llama3", "prompt": "x", "stream": False}


def _state(proxy, node):
    return next(n for n in proxy.fleet.nodes.values() if n.url == node.url)


async def _until(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def test_killed_node_leaves_on_the_first_failed_request_and_returns_after_restart(env):
    a, b = await env.node(), await env.node()
    proxy = await env.proxy([a, b])
    port = a.port
    await a.stop()
    response = await proxy.request("POST", "/api/generate", GEN)
    assert response.code == 200
    # Whichever node the request tried first, a is out of the pool after one request that met it.
    for _ in range(2):
        await proxy.request("POST", "/api/generate", GEN)
    assert _state(proxy, a).status == "standby"
    restarted = await start_simulator(SimulatorOptions(models=["llama3:latest"], fast=True), port=port)
    env.nodes.append(restarted)
    # No health tick is due for an hour: the standby re-probe with backoff brings it back.
    await _until(lambda: _state(proxy, a).status == "active", timeout=10)
    names = set()
    for _ in range(4):
        names.add((await proxy.request("POST", "/api/generate", GEN)).headers["X-Aivonx-Node"])
    assert _state(proxy, a).name in names


async def test_a_hung_node_does_not_delay_the_probes_of_others(env):
    fine, hung = await env.node(), await env.node()
    proxy = await env.proxy([fine, hung], config={"probe_timeout": 2, "fall": 1})
    hung.state.set_fault("hang", routes=["/api/version", "/api/tags", "/api/ps"])
    fine.state.add_model("phi3")
    tick = asyncio.ensure_future(proxy.refresh())
    started = time.monotonic()
    await _until(lambda: _state(proxy, fine).has_model("phi3:latest"), timeout=1.5)
    assert time.monotonic() - started < 1.0  # long before the hung node's 2 s timeout
    # Proxied requests are not held up by the hung probe either.
    before = time.monotonic()
    assert (await proxy.request("POST", "/api/generate", GEN)).code == 200
    assert time.monotonic() - before < 1.0
    await tick
    assert _state(proxy, hung).status == "standby" and "no first byte" in _state(proxy, hung).last_error


async def test_probe_hysteresis_fall_and_rise(env):
    node = await env.node()
    proxy = await env.proxy([node], config={"fall": 2, "rise": 2})
    state = _state(proxy, node)
    node.state.set_fault("error_500", routes=["/api/version"])
    await proxy.services.monitor.check(state)
    assert state.status == "active" and state.consecutive_failures == 1
    await proxy.services.monitor.check(state)
    assert state.status == "standby"
    node.state.clear_faults()
    await proxy.services.monitor.check(state)
    assert state.status == "standby"
    await proxy.services.monitor.check(state)
    assert state.status == "active"


async def test_probe_refreshes_models_loaded_models_and_version(env):
    node = await env.node(["llama3:latest"], version="0.30.1")
    proxy = await env.proxy([node])
    state = _state(proxy, node)
    assert state.version == "0.30.1" and state.probe_latency is not None and state.last_check is not None
    await proxy.request("POST", "/api/generate", GEN)
    node.state.add_model("phi3")
    await proxy.refresh()
    assert state.has_model("phi3:latest") and state.has_loaded("llama3:latest")


async def test_ttfb_moving_average_is_learnt_from_real_requests(env):
    node = await env.node()
    proxy = await env.proxy([node])
    state = _state(proxy, node)
    assert state.ttfb is None
    await proxy.request("POST", "/api/generate", GEN)
    assert state.ttfb is not None and state.ttfb_by_model["llama3:latest"] > 0


async def test_generation_speed_is_learnt_from_the_nodes_own_timing(env):
    node = await env.node(tokens_per_second=40.0)
    proxy = await env.proxy([node])
    state = _state(proxy, node)
    await proxy.request("POST", "/api/generate", {**GEN, "options": {"num_predict": 3}})
    assert state.speed is None  # three tokens say nothing about speed
    await proxy.request("POST", "/v1/chat/completions",
                        {"model": "llama3", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16})
    assert state.speed is None  # /v1 answers carry no timing
    response = await proxy.request("POST", "/api/generate", {"model": "llama3", "prompt": "x",
                                                              "options": {"num_predict": 16}})
    assert response.code == 200 and response.body.count(b"\n") == 17  # streamed: 16 tokens + done
    assert state.speed_by_model["llama3:latest"] == pytest.approx(40.0, rel=0.01)
    shown = json.loads((await proxy.request("GET", "/api/proxy/state", headers=await viewer(proxy))).body)
    assert shown["nodes"][0]["tokens_per_second"] == {"node": 40.0, "by_model": {"llama3:latest": 40.0}}


async def test_least_active_sends_more_work_to_the_faster_node(env):
    fast = await env.node(tokens_per_second=80.0)
    slow = await env.node(tokens_per_second=10.0)
    proxy = await env.proxy([fast, slow])
    body = {"model": "llama3", "prompt": "x", "stream": False, "options": {"num_predict": 16}}
    for _ in range(2):  # the first two requests rotate over the untimed nodes and time them both
        await proxy.request("POST", "/api/generate", body)
    assert _state(proxy, slow).speed == pytest.approx(10.0, rel=0.01)
    served = [(await proxy.request("POST", "/api/generate", body)).headers.get("X-Aivonx-Node") for _ in range(4)]
    assert served == [_state(proxy, fast).name] * 4


async def test_health_interval_change_reschedules_the_monitor(env):
    node = await env.node()
    proxy = await env.proxy([node])
    monitor = proxy.services.monitor
    before = monitor.ticks
    await proxy.services.update_config({"health_interval": 1})
    await _until(lambda: monitor.ticks >= before + 1, timeout=3)
