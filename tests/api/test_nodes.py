"""``/api/proxy/nodes``: registering, editing, checking and removing nodes, as an operator sees it."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from app.logs import setup_logging, stop_logging
from app.store import StoreUnavailable
from tests.api.mgmt import admin, eventually, viewer

SECRET = "s3cr3t-node-token-7f1c9e"


async def _generate(proxy, model="llama3", **kwargs):
    return await proxy.request("POST", "/api/generate", {"model": model, "prompt": "hi", "stream": False}, **kwargs)


async def _slow_node(env, models=("slow:latest", "llama3:latest")):
    """A node whose generations take about half a second: long enough to be seen in flight."""
    return await env.node(list(models), fast=False, load_time=0.0, tokens_per_second=40.0, default_tokens=20)


def _name_of(proxy, node):
    return next(n.name for n in proxy.fleet.nodes.values() if n.url.endswith(f":{node.port}"))


# -- create, read, update, delete ------------------------------------------------------------------


async def test_node_lifecycle_create_get_patch_put_delete(env):
    a = await env.node(["llama3:latest"])
    b = await env.node(["mistral:7b"])
    proxy = await env.proxy([a])
    h = await admin(proxy)

    status, node = await proxy.json("POST", "/api/proxy/nodes", {
        "name": "gpu-b", "address": "127.0.0.1", "port": b.port, "labels": {"rack": "r1"}, "max_concurrency": 4,
    }, headers=h)
    assert status == 201, node
    assert node["id"] and node["name"] == "gpu-b" and node["url"] == f"http://127.0.0.1:{b.port}"
    assert node["labels"] == {"rack": "r1"} and node["max_concurrency"] == 4
    assert node["enabled"] is True and node["draining"] is False
    # Probed before the answer: a healthy node is active at once, with its models.
    assert node["status"] == "active" and [m["name"] for m in node["models"]] == ["mistral:7b"]
    node_id = node["id"]

    status, listed = await proxy.json("GET", "/api/proxy/nodes", headers=h)
    assert status == 200
    assert sorted(n["name"] for n in listed["nodes"]) == sorted(["gpu-b", _name_of(proxy, a)])
    status, one = await proxy.json("GET", f"/api/proxy/nodes/{node_id}", headers=h)
    assert status == 200 and one["name"] == "gpu-b" and one["created_at"] and one["updated_at"]

    status, patched = await proxy.json("PATCH", f"/api/proxy/nodes/{node_id}", {"name": "gpu-b2"}, headers=h)
    assert status == 200 and patched["name"] == "gpu-b2" and patched["labels"] == {"rack": "r1"}
    assert proxy.fleet.get(node_id).name == "gpu-b2"

    # PUT replaces: what is left out returns to its default.
    status, replaced = await proxy.json("PUT", f"/api/proxy/nodes/{node_id}", {"name": "gpu-b3", "url": b.url},
                                        headers=h)
    assert status == 200, replaced
    assert replaced["name"] == "gpu-b3" and replaced["labels"] == {} and replaced["max_concurrency"] is None
    assert proxy.fleet.get(node_id).max_concurrency is None

    status, _ = await proxy.json("DELETE", f"/api/proxy/nodes/{node_id}", headers=h)
    assert status == 204
    assert (await proxy.json("GET", f"/api/proxy/nodes/{node_id}", headers=h))[0] == 404
    assert proxy.fleet.get(node_id) is None
    assert await proxy.services.store.nodes.get(node_id) is None


async def test_create_by_url_gets_a_name_from_the_address(env):
    b = await env.node()
    proxy = await env.proxy()
    status, node = await proxy.json("POST", "/api/proxy/nodes", {"url": b.url}, headers=await admin(proxy))
    assert status == 201 and node["name"] == f"127.0.0.1-{b.port}" and node["status"] == "active"


async def test_a_node_sent_back_as_read_is_accepted_by_put(env):
    a = await env.node()
    proxy = await env.proxy([a])
    h = await admin(proxy)
    (node,) = (await proxy.json("GET", "/api/proxy/nodes", headers=h))[1]["nodes"]
    node["labels"] = {"zone": "b"}
    status, body = await proxy.json("PUT", f"/api/proxy/nodes/{node['id']}", node, headers=h)
    assert status == 200, body
    assert body["labels"] == {"zone": "b"} and body["status"] == "active"


# -- validation --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "field"), [
    ({"name": "x", "url": "ftp://gpu-1:11434"}, "url"),
    ({"name": "x", "address": "gpu-1", "scheme": "gopher"}, "scheme"),
    ({"name": "x", "address": "gpu-1", "port": 0}, "port"),
    ({"name": "x", "address": "gpu-1", "port": 70000}, "port"),
    ({"name": "x", "address": "gpu-1", "port": -1}, "port"),
    ({"name": "x", "address": "gpu-1", "port": "eleven"}, "port"),
    ({"name": "x", "port": 11434}, "address"),
    ({"name": "x", "address": "  "}, "address"),
    ({"name": "x", "address": "bad host!"}, "address"),
    ({"name": "x", "url": "http://gpu-1:0"}, "url"),
    ({"name": "x", "url": "http://user:pw@gpu-1:11434"}, "url"),
    ({"name": "", "address": "gpu-1"}, "name"),
    ({"name": "x" * 101, "address": "gpu-1"}, "name"),
    ({"name": "x", "address": "gpu-1", "max_concurrency": 0}, "max_concurrency"),
    ({"name": "x", "address": "gpu-1", "enabled": "yes"}, "enabled"),
    ({"name": "x", "address": "gpu-1", "headers": {"Host": "evil"}}, "headers"),
    ({"name": "x", "address": "gpu-1", "headers": {"X-A": "a\r\nInjected: 1"}}, "headers"),
    ({"name": "x", "address": "gpu-1", "labels": ["a"]}, "labels"),
    ({"name": "x", "address": "gpu-1", "colour": "red"}, "colour"),
])
async def test_invalid_node_is_refused_naming_the_field(env, body, field):
    proxy = await env.proxy()
    status, answer = await proxy.json("POST", "/api/proxy/nodes", body, headers=await admin(proxy))
    assert status == 400, answer
    assert answer["error"] == "invalid node" and field in answer["fields"], answer
    assert proxy.fleet.nodes == {}


async def test_every_bad_field_is_named_at_once_and_non_objects_are_refused(env):
    proxy = await env.proxy()
    h = await admin(proxy)
    status, answer = await proxy.json("POST", "/api/proxy/nodes", {"name": "", "address": "h", "port": 0}, headers=h)
    assert status == 400 and set(answer["fields"]) == {"name", "port"}
    for raw in (b"[1, 2]", b"not json", b""):
        response = await proxy.request("POST", "/api/proxy/nodes", raw=raw, headers=h)
        assert response.code == 400, raw


async def test_invalid_edits_are_refused_and_change_nothing(env):
    a = await env.node()
    proxy = await env.proxy([a])
    h = await admin(proxy)
    node_id = next(iter(proxy.fleet.nodes))
    before = await proxy.services.store.nodes.get(node_id)
    status, answer = await proxy.json("PATCH", f"/api/proxy/nodes/{node_id}", {"port": 0}, headers=h)
    assert status == 400 and "port" in answer["fields"]
    status, answer = await proxy.json("PUT", f"/api/proxy/nodes/{node_id}", {"name": "x", "url": "gopher://h"},
                                      headers=h)
    assert status == 400 and "url" in answer["fields"]
    assert await proxy.services.store.nodes.get(node_id) == before
    assert proxy.fleet.get(node_id).url == a.url


async def test_duplicate_name_or_address_is_a_conflict_naming_the_field(env):
    a = await env.node()
    b = await env.node()
    proxy = await env.proxy()
    h = await admin(proxy)
    status, _ = await proxy.json("POST", "/api/proxy/nodes", {"name": "gpu-1", "url": a.url}, headers=h)
    assert status == 201
    status, answer = await proxy.json("POST", "/api/proxy/nodes", {"name": "GPU-1", "url": b.url}, headers=h)
    assert (status, answer["field"]) == (409, "name")
    status, answer = await proxy.json("POST", "/api/proxy/nodes",
                                      {"name": "gpu-2", "address": "127.0.0.1", "port": a.port}, headers=h)
    assert (status, answer["field"]) == (409, "address")
    status, answer = await proxy.json("POST", "/api/proxy/nodes", {"name": "gpu-2", "url": a.url + "/"}, headers=h)
    assert (status, answer["field"]) == (409, "url")
    status, second = await proxy.json("POST", "/api/proxy/nodes", {"name": "gpu-2", "url": b.url}, headers=h)
    assert status == 201
    status, answer = await proxy.json("PATCH", f"/api/proxy/nodes/{second['id']}", {"name": "gpu-1"}, headers=h)
    assert (status, answer["field"]) == (409, "name")
    status, answer = await proxy.json("PATCH", f"/api/proxy/nodes/{second['id']}", {"port": a.port}, headers=h)
    assert (status, answer["field"]) == (409, "address")
    assert proxy.fleet.get(second["id"]).name == "gpu-2" and proxy.fleet.get(second["id"]).url == b.url
    assert len(proxy.fleet.nodes) == 2


async def test_unknown_node_id_is_404_on_every_route(env):
    proxy = await env.proxy()
    h = await admin(proxy)
    for method, path, body in [
        ("GET", "/api/proxy/nodes/nope", None),
        ("PUT", "/api/proxy/nodes/nope", {"name": "x", "address": "h"}),
        ("PATCH", "/api/proxy/nodes/nope", {"enabled": False}),
        ("DELETE", "/api/proxy/nodes/nope", None),
        ("POST", "/api/proxy/nodes/nope/check", None),
    ]:
        status, answer = await proxy.json(method, path, body, headers=h)
        assert status == 404 and "nope" in answer["error"], (method, path, answer)


async def test_login_and_roles(env):
    proxy = await env.proxy()
    assert (await proxy.json("GET", "/api/proxy/nodes"))[0] == 401
    assert (await proxy.json("POST", "/api/proxy/nodes", {"url": "http://h:1"}))[0] == 401
    v = await viewer(proxy)
    assert (await proxy.json("GET", "/api/proxy/nodes", headers=v))[0] == 200
    assert (await proxy.json("POST", "/api/proxy/nodes", {"url": "http://h:1"}, headers=v))[0] == 403
    assert proxy.fleet.nodes == {}


# -- the store comes first ---------------------------------------------------------------------------


async def test_a_failed_store_write_leaves_the_fleet_unchanged(env, monkeypatch):
    a = await env.node()
    b = await env.node()
    proxy = await env.proxy([a])
    h = await admin(proxy)
    node_id = next(iter(proxy.fleet.nodes))
    repo = proxy.services.store.nodes

    async def down(*args, **kwargs):
        raise StoreUnavailable("the database is unavailable (test)")

    for name in ("create", "update", "delete"):
        monkeypatch.setattr(repo, name, down)
    status, answer = await proxy.json("POST", "/api/proxy/nodes", {"url": b.url}, headers=h)
    assert status == 503 and "error" in answer
    status, _ = await proxy.json("PATCH", f"/api/proxy/nodes/{node_id}", {"enabled": False}, headers=h)
    assert status == 503
    status, _ = await proxy.json("DELETE", f"/api/proxy/nodes/{node_id}", headers=h)
    assert status == 503
    assert list(proxy.fleet.nodes) == [node_id]
    assert proxy.fleet.get(node_id).enabled is True and proxy.fleet.get(node_id).routable


# -- secrets -----------------------------------------------------------------------------------------


async def test_header_values_are_never_returned_nor_logged(env):
    a = await env.node()
    proxy = await env.proxy()
    log_dir = Path(proxy.services.settings.log_dir)
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    setup_logging(log_dir, "DEBUG", console=False)
    try:
        h = await admin(proxy)
        status, node = await proxy.json("POST", "/api/proxy/nodes",
                                        {"name": "secret-node", "url": a.url, "headers": {"X-Node-Token": SECRET}},
                                        headers=h)
        assert status == 201 and node["header_names"] == ["X-Node-Token"]
        assert proxy.fleet.get(node["id"]).headers == {"X-Node-Token": SECRET}  # kept, and sent to the node
        bodies = [
            (await proxy.request("GET", "/api/proxy/nodes", headers=h)).body,
            (await proxy.request("GET", f"/api/proxy/nodes/{node['id']}", headers=h)).body,
            (await proxy.request("PATCH", f"/api/proxy/nodes/{node['id']}", {"labels": {"a": "b"}}, headers=h)).body,
            (await proxy.request("POST", f"/api/proxy/nodes/{node['id']}/check", headers=h)).body,
            (await proxy.request("GET", "/api/proxy/state", headers=h)).body,
            (await _generate(proxy)).body,
        ]
        # PUT without headers keeps them (write-only values cannot be sent back); {} removes them.
        response = await proxy.request("PUT", f"/api/proxy/nodes/{node['id']}",
                                       {"name": "secret-node", "url": a.url}, headers=h)
        bodies.append(response.body)
        assert proxy.fleet.get(node["id"]).headers == {"X-Node-Token": SECRET}
        # A failing node writes errors to the logs: still no secret.
        await a.stop()
        bodies.append((await proxy.request("POST", f"/api/proxy/nodes/{node['id']}/check", headers=h)).body)
        bodies.append((await _generate(proxy)).body)
        status, cleared = await proxy.json("PATCH", f"/api/proxy/nodes/{node['id']}", {"headers": {}}, headers=h)
        assert status == 200 and cleared["header_names"] == []
    finally:
        stop_logging()
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    for body in bodies:
        assert SECRET.encode() not in body
    files = [p for p in log_dir.rglob("*") if p.is_file()]
    assert files and any(p.stat().st_size for p in files)
    for path in files:
        assert SECRET not in path.read_text(errors="replace"), path


# -- effects on routing -------------------------------------------------------------------------------


async def test_a_node_added_through_the_api_serves_without_restart(env):
    a = await env.node(["llama3:latest"])
    b = await env.node(["mistral:7b"])
    proxy = await env.proxy([a])
    assert (await _generate(proxy, "mistral:7b")).code == 404
    status, node = await proxy.json("POST", "/api/proxy/nodes", {"name": "gpu-b", "url": b.url},
                                    headers=await admin(proxy))
    assert status == 201 and node["status"] == "active"
    response = await _generate(proxy, "mistral:7b")
    assert response.code == 200 and response.headers["X-Aivonx-Node"] == "gpu-b"


async def test_a_disabled_node_gets_no_traffic_while_healthy(env):
    a = await env.node(["llama3:latest"])
    b = await env.node(["llama3:latest"])
    proxy = await env.proxy([a, b])
    h = await admin(proxy)
    name_a, name_b = _name_of(proxy, a), _name_of(proxy, b)
    id_a = proxy.fleet.by_name(name_a).id
    served = {(await _generate(proxy)).headers["X-Aivonx-Node"] for _ in range(4)}
    assert served == {name_a, name_b}

    status, node = await proxy.json("PATCH", f"/api/proxy/nodes/{id_a}", {"enabled": False}, headers=h)
    assert status == 200 and node["enabled"] is False and node["status"] == "active"
    for _ in range(6):
        response = await _generate(proxy)
        assert response.code == 200 and response.headers["X-Aivonx-Node"] == name_b
    # A health check does not turn it back on: enabled is the operator's switch.
    await proxy.refresh()
    assert proxy.fleet.get(id_a).enabled is False and proxy.fleet.get(id_a).status == "active"
    assert a.state.stats()["requests"].get("/api/generate", 0) == 2

    await proxy.json("PATCH", f"/api/proxy/nodes/{id_a}", {"enabled": True}, headers=h)
    served = {(await _generate(proxy)).headers["X-Aivonx-Node"] for _ in range(4)}
    assert served == {name_a, name_b}


async def test_draining_takes_no_new_requests_and_shows_when_idle(env):
    a = await _slow_node(env)
    b = await env.node(["llama3:latest"])
    proxy = await env.proxy([a, b])
    h = await admin(proxy)
    id_a = proxy.fleet.by_name(_name_of(proxy, a)).id
    running = asyncio.ensure_future(_generate(proxy, "slow"))
    await eventually(lambda: proxy.in_flight() == 1)

    status, node = await proxy.json("PATCH", f"/api/proxy/nodes/{id_a}", {"draining": True}, headers=h)
    assert status == 200 and node["draining"] is True and node["idle"] is False and node["in_flight"] == 1
    # No new request goes there: other models elsewhere, its own model nowhere.
    for _ in range(3):
        assert (await _generate(proxy)).headers["X-Aivonx-Node"] == _name_of(proxy, b)
    assert (await _generate(proxy, "slow")).code == 503

    assert (await running).code == 200  # the one in flight finishes normally
    status, state = await proxy.json("GET", "/api/proxy/state", headers=h)
    (shown,) = [n for n in state["nodes"] if n["id"] == id_a]
    assert shown["draining"] is True and shown["idle"] is True and shown["in_flight"] == 0


async def test_delete_with_requests_in_flight_needs_force(env):
    a = await _slow_node(env)
    b = await env.node(["llama3:latest"])
    proxy = await env.proxy([a, b])
    h = await admin(proxy)
    id_a = proxy.fleet.by_name(_name_of(proxy, a)).id
    running = asyncio.ensure_future(_generate(proxy, "slow"))
    await eventually(lambda: proxy.in_flight() == 1)

    status, answer = await proxy.json("DELETE", f"/api/proxy/nodes/{id_a}", headers=h)
    assert status == 409 and answer["in_flight"] == 1 and "force" in answer["error"]
    assert proxy.fleet.get(id_a) is not None and await proxy.services.store.nodes.get(id_a) is not None

    status, _ = await proxy.json("DELETE", f"/api/proxy/nodes/{id_a}?force=true", headers=h)
    assert status == 204
    assert proxy.fleet.get(id_a) is None and await proxy.services.store.nodes.get(id_a) is None
    assert (await _generate(proxy, "slow")).code == 404  # gone for new requests at once
    response = await running  # its request still finishes, on the node it started on
    assert response.code == 200 and response.headers["X-Aivonx-Node"] == f"127.0.0.1-{a.port}"
    assert proxy.in_flight() == 0


async def test_check_probes_now(env):
    a = await env.node(["llama3:latest"])
    proxy = await env.proxy([a], config={"fall": 1})
    h = await admin(proxy)
    node_id = next(iter(proxy.fleet.nodes))
    a.state.add_model("phi3")
    status, node = await proxy.json("POST", f"/api/proxy/nodes/{node_id}/check", headers=h)
    assert status == 200 and node["status"] == "active" and node["last_check"]
    assert "phi3:latest" in [m["name"] for m in node["models"]]
    await a.stop()
    status, node = await proxy.json("POST", f"/api/proxy/nodes/{node_id}/check", headers=h)
    assert status == 200 and node["status"] == "standby" and node["last_error"]
    assert node["consecutive_failures"] == 1


async def test_moving_a_node_to_another_address_reprobes_it(env):
    a = await env.node(["llama3:latest"])
    b = await env.node(["mistral:7b"])
    proxy = await env.proxy([a])
    node_id = next(iter(proxy.fleet.nodes))
    status, node = await proxy.json("PATCH", f"/api/proxy/nodes/{node_id}", {"port": b.port},
                                    headers=await admin(proxy))
    assert status == 200 and node["url"] == b.url
    assert node["status"] == "active" and [m["name"] for m in node["models"]] == ["mistral:7b"]
    assert (await _generate(proxy, "mistral:7b")).code == 200
