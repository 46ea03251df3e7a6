"""The health monitor: concurrent probes, hysteresis, passive marking, quick return of a node."""

import asyncio
import time

from app.simulator import SimulatorOptions, start_simulator

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


async def test_health_interval_change_reschedules_the_monitor(env):
    node = await env.node()
    proxy = await env.proxy([node])
    monitor = proxy.services.monitor
    before = monitor.ticks
    await proxy.services.update_config({"health_interval": 1})
    await _until(lambda: monitor.ticks >= before + 1, timeout=3)
