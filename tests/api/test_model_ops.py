"""``/api/proxy/pull`` and ``/api/proxy/models``: managing models on the nodes, per node, concurrently."""

from __future__ import annotations

import asyncio

from app.fleet.model_ops import ModelOps, NodeResult, PullProgress
from tests.api.mgmt import admin, viewer
from tests.conftest import ndjson


async def _fleet(env, n=2, models=("llama3:latest",), **options):
    nodes = [await env.node(list(models), **options) for _ in range(n)]
    proxy = await env.proxy(nodes)
    return nodes, proxy


def _name(node) -> str:
    return f"127.0.0.1-{node.port}"


async def _pull(proxy, headers, **body):
    return await proxy.request("POST", "/api/proxy/pull", {"model": "phi3", **body}, headers=headers)


# -- pull ----------------------------------------------------------------------------------------------


async def test_pull_to_every_node_streams_per_node_progress_and_the_model_routes_at_once(env):
    (a, b), proxy = await _fleet(env)
    h = await admin(proxy)
    response = await _pull(proxy, h)
    assert response.code == 200 and response.headers["Content-Type"] == "application/x-ndjson"
    lines = ndjson(response.body)
    names = {_name(a), _name(b)}
    ids = {n.name: n.id for n in proxy.fleet.nodes.values()}
    progress = lines[:-1]
    assert {line["node"] for line in progress} == names
    for line in progress:
        assert line["node_id"] == ids[line["node"]] and isinstance(line["status"], str)
    for name in names:
        mine = [line for line in progress if line["node"] == name]
        assert mine[0]["status"] == "pulling manifest"
        layers = [line for line in mine if "total" in line]
        assert layers and all(isinstance(x["total"], int) for x in layers)
        assert any(x.get("completed") == x["total"] for x in layers)
        assert mine[-1] == {"node": name, "node_id": ids[name], "status": "success"}
    assert lines[-1] == {"status": "success", "results": [
        {"node": n, "node_id": ids[n], "status": "success"} for n in sorted(names)]}
    # Each node's model list was refreshed as it finished: routable on both, no health tick needed.
    for node in proxy.fleet.nodes.values():
        assert node.has_model("phi3:latest")
    served = set()
    for _ in range(4):
        reply = await proxy.request("POST", "/api/generate", {"model": "phi3", "prompt": "x", "stream": False})
        assert reply.code == 200
        served.add(reply.headers["X-Aivonx-Node"])
    assert served == names


async def test_pull_without_streaming_answers_the_summary_only(env):
    (a, b), proxy = await _fleet(env)
    status, body = await proxy.json("POST", "/api/proxy/pull", {"model": "phi3", "stream": False},
                                    headers=await admin(proxy))
    assert status == 200 and body["status"] == "success"
    assert sorted(r["node"] for r in body["results"]) == sorted([_name(a), _name(b)])
    assert all(r["status"] == "success" for r in body["results"])


async def test_one_node_failing_mid_pull_is_partial_and_does_not_stop_the_other(env):
    (a, b), proxy = await _fleet(env)
    h = await admin(proxy)
    b.state.set_fault("error_midstream", count=1, after_chunks=2, routes=["/api/pull"], message="disk full")
    lines = ndjson((await _pull(proxy, h)).body)
    summary = lines[-1]
    assert summary["status"] == "partial"
    results = {r["node"]: r for r in summary["results"]}
    assert results[_name(a)]["status"] == "success"
    assert results[_name(b)]["status"] == "error" and "disk full" in results[_name(b)]["error"]
    assert {"node": _name(b), "node_id": results[_name(b)]["node_id"], "status": "error",
            "error": results[_name(b)]["error"]} in lines
    assert proxy.fleet.by_name(_name(a)).has_model("phi3:latest")
    assert not proxy.fleet.by_name(_name(b)).has_model("phi3:latest")

    b.state.set_fault("error_500", count=1, routes=["/api/pull"])
    status, body = await proxy.json("POST", "/api/proxy/pull", {"model": "qwen2.5", "stream": False}, headers=h)
    assert status == 207 and body["status"] == "partial"


async def test_a_node_that_is_down_fails_alone_and_leaves_the_pool(env):
    (a, b), proxy = await _fleet(env)
    await b.stop()  # still "active": no probe has seen it die yet
    status, body = await proxy.json("POST", "/api/proxy/pull", {"model": "phi3", "stream": False},
                                    headers=await admin(proxy))
    assert status == 207 and body["status"] == "partial"
    failed = next(r for r in body["results"] if r["node"] == _name(b))
    assert failed["status"] == "error" and "refused" in failed["error"]
    assert proxy.fleet.by_name(_name(b)).status == "standby"  # a refused connection is a hard failure
    assert proxy.fleet.by_name(_name(a)).has_model("phi3:latest")


async def test_every_node_failing_is_an_error(env):
    _, proxy = await _fleet(env)
    status, body = await proxy.json("POST", "/api/proxy/pull", {"model": "doesnotexist", "stream": False},
                                    headers=await admin(proxy))
    assert status == 502 and body["status"] == "error"
    assert all("file does not exist" in r["error"] for r in body["results"])
    lines = ndjson((await _pull(proxy, await admin(proxy), model="doesnotexist")).body)
    assert lines[-1]["status"] == "error" and len(lines[-1]["results"]) == 2


async def test_pull_to_one_node_by_id_or_name(env):
    (a, b), proxy = await _fleet(env)
    h = await admin(proxy)
    id_b = proxy.fleet.by_name(_name(b)).id
    lines = ndjson((await _pull(proxy, h, node_id=id_b)).body)
    assert {line["node"] for line in lines[:-1]} == {_name(b)}
    assert [r["node_id"] for r in lines[-1]["results"]] == [id_b]
    assert b.state.catalog.find("phi3") is not None and a.state.catalog.find("phi3") is None
    status, body = await proxy.json("POST", "/api/proxy/pull",
                                    {"model": "qwen2.5", "node_id": _name(a), "stream": False}, headers=h)
    assert status == 200 and [r["node"] for r in body["results"]] == [_name(a)]


async def test_pull_skips_disabled_and_draining_nodes(env):
    (a, b, c), proxy = await _fleet(env, n=3)
    h = await admin(proxy)
    await proxy.json("PATCH", f"/api/proxy/nodes/{proxy.fleet.by_name(_name(b)).id}", {"enabled": False}, headers=h)
    await proxy.json("PATCH", f"/api/proxy/nodes/{proxy.fleet.by_name(_name(c)).id}", {"draining": True}, headers=h)
    status, body = await proxy.json("POST", "/api/proxy/pull", {"model": "phi3", "stream": False}, headers=h)
    assert status == 200 and [r["node"] for r in body["results"]] == [_name(a)]


async def test_pull_refusals(env):
    _, proxy = await _fleet(env, n=1)
    h = await admin(proxy)
    for body, status in [
        ({}, 400), ({"model": ""}, 400), ({"model": 7}, 400), ({"model": "bad name!"}, 400),
        ({"model": "phi3", "stream": "yes"}, 400), ({"model": "phi3", "node_id": 3}, 400),
        ({"model": "phi3", "node_id": "nope"}, 404),
    ]:
        got, answer = await proxy.json("POST", "/api/proxy/pull", body, headers=h)
        assert got == status and "error" in answer, (body, got, answer)
    assert (await proxy.json("POST", "/api/proxy/pull", {"model": "phi3"}, headers=await viewer(proxy)))[0] == 403
    assert (await proxy.json("POST", "/api/proxy/pull", {"model": "phi3"}))[0] == 401


async def test_pull_with_no_active_node_is_503(env):
    proxy = await env.proxy()
    status, body = await proxy.json("POST", "/api/proxy/pull", {"model": "phi3"}, headers=await admin(proxy))
    assert status == 503 and "no enabled active node" in body["error"]


# -- delete --------------------------------------------------------------------------------------------


async def test_delete_from_every_node_that_has_it(env):
    a = await env.node(["llama3:latest", "phi3:latest"])
    b = await env.node(["llama3:latest", "phi3:latest"])
    c = await env.node(["llama3:latest"])
    proxy = await env.proxy([a, b, c])
    h = await admin(proxy)
    status, body = await proxy.json("DELETE", "/api/proxy/models", {"model": "Phi3"}, headers=h)
    assert status == 200 and body["status"] == "success"
    assert sorted(r["node"] for r in body["results"]) == sorted([_name(a), _name(b)])  # c never had it
    for node in proxy.fleet.nodes.values():
        assert not node.has_model("phi3:latest")  # refreshed at once
    reply = await proxy.request("POST", "/api/generate", {"model": "phi3", "prompt": "x", "stream": False})
    assert reply.code == 404
    status, body = await proxy.json("DELETE", "/api/proxy/models", {"model": "phi3"}, headers=h)
    assert status == 404 and "not found" in body["error"]


async def test_delete_on_one_node_and_the_post_form(env):
    (a, b), proxy = await _fleet(env)
    h = await admin(proxy)
    id_a = proxy.fleet.by_name(_name(a)).id
    status, body = await proxy.json("POST", "/api/proxy/models/delete", {"model": "llama3", "node_id": id_a},
                                    headers=h)
    assert status == 200 and [r["node_id"] for r in body["results"]] == [id_a]
    assert not proxy.fleet.get(id_a).has_model("llama3:latest")
    assert proxy.fleet.by_name(_name(b)).has_model("llama3:latest")
    # That node no longer has it: the node's own 404 makes ours.
    status, body = await proxy.json("DELETE", "/api/proxy/models", {"model": "llama3", "node_id": id_a}, headers=h)
    assert status == 404 and body["results"][0]["status"] == "error"
    assert (await proxy.json("DELETE", "/api/proxy/models", {"model": "llama3", "node_id": "nope"},
                             headers=h))[0] == 404
    assert (await proxy.json("DELETE", "/api/proxy/models", {}, headers=h))[0] == 400
    assert (await proxy.json("DELETE", "/api/proxy/models", {"model": "llama3"}, headers=await viewer(proxy)))[0] \
        == 403


async def test_delete_with_a_node_down_is_partial(env):
    (a, b), proxy = await _fleet(env)
    await b.stop()
    status, body = await proxy.json("DELETE", "/api/proxy/models", {"model": "llama3"}, headers=await admin(proxy))
    assert status == 207 and body["status"] == "partial"
    assert {r["node"]: r["status"] for r in body["results"]} == {_name(a): "success", _name(b): "error"}


# -- the domain API, as the gateway uses it -----------------------------------------------------------


async def test_iter_pull_yields_progress_then_each_result_and_stops_cleanly(env):
    (a, b), proxy = await _fleet(env, pull_time=0.3, pull_step=0.03, fast=False)
    ops: ModelOps = proxy.services.model_ops
    nodes = list(proxy.fleet.nodes.values())
    events = [e async for e in ops.iter_pull("phi3", nodes)]
    assert isinstance(events[0], PullProgress) and isinstance(events[-1], NodeResult)
    assert sorted(e.node.name for e in events if isinstance(e, NodeResult)) == sorted([_name(a), _name(b)])

    # Leaving the loop early aborts the pulls still running (the nodes see the client go).
    async for event in ops.iter_pull("qwen2.5", nodes):
        if isinstance(event, PullProgress) and event.line.get("completed"):
            break
    await asyncio.sleep(0.4)
    assert a.state.catalog.find("qwen2.5") is None and b.state.catalog.find("qwen2.5") is None


async def test_copy_on_nodes_refreshes_their_lists(env):
    _, proxy = await _fleet(env)
    nodes = list(proxy.fleet.nodes.values())
    results = await proxy.services.model_ops.copy("llama3", "llama3-backup", nodes)
    assert [r.ok for r in results] == [True, True]
    assert all(n.has_model("llama3-backup:latest") for n in nodes)
