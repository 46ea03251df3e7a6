"""Model management through the gateway fans out over the fleet."""

import hashlib

from tests.conftest import ndjson


async def _two(env, **options):
    a = await env.node(["llama3:latest"], **options)
    b = await env.node(["llama3:latest", "mistral:7b"], **options)
    return a, b, await env.proxy([a, b])


async def test_pull_goes_to_every_active_node_with_one_merged_stream(env):
    a, b, proxy = await _two(env)
    response = await proxy.request("POST", "/api/pull", {"model": "phi3"})
    assert response.code == 200 and response.headers["Content-Type"] == "application/x-ndjson"
    lines = ndjson(response.body)
    assert lines[0] == {"status": "pulling manifest"}
    assert lines[-1] == {"status": "success"} and [x for x in lines if x.get("status") == "success"] == [lines[-1]]
    assert not any("error" in line for line in lines)
    layer = [x for x in lines if "digest" in x]
    assert layer and max(x["total"] for x in layer) > 0
    # Routable at once, on both nodes, without waiting for a health tick.
    for node in (a, b):
        assert "phi3:latest" in node.state.stats()["models"]
    status, tags = await proxy.json("GET", "/api/tags")
    assert "phi3:latest" in [m["name"] for m in tags["models"]]
    ok = await proxy.request("POST", "/api/generate", {"model": "phi3", "prompt": "x", "stream": False})
    assert ok.code == 200


async def test_pull_unstreamed_and_unknown_model(env):
    _, _, proxy = await _two(env)
    assert await proxy.json("POST", "/api/pull", {"model": "phi3", "stream": False}) == (200, {"status": "success"})
    status, body = await proxy.json("POST", "/api/pull", {"model": "doesnotexist", "stream": False})
    assert status == 500 and "file does not exist" in body["error"]
    lines = ndjson((await proxy.request("POST", "/api/pull", {"model": "doesnotexist"})).body)
    assert "error" in lines[-1] and not any(x.get("status") == "success" for x in lines)


async def test_pull_with_one_node_down_ends_with_one_error(env):
    a, b, proxy = await _two(env)
    await a.stop()
    lines = ndjson((await proxy.request("POST", "/api/pull", {"model": "phi3"})).body)
    assert "error" in lines[-1] and "1 of 2" in lines[-1]["error"]
    assert "phi3:latest" in b.state.stats()["models"]


async def test_pull_target_config_pulls_to_one_node(env):
    a, b, proxy = await _two(env)
    target = next(n for n in proxy.fleet.nodes.values() if n.url == b.url)
    await proxy.services.update_config({"pull_target": target.id})
    lines = ndjson((await proxy.request("POST", "/api/pull", {"model": "phi3"})).body)
    assert lines[-1] == {"status": "success"}
    assert "phi3:latest" in b.state.stats()["models"] and "phi3:latest" not in a.state.stats()["models"]


async def test_delete_removes_from_every_node_that_has_it(env):
    a, b, proxy = await _two(env)
    response = await proxy.request("DELETE", "/api/delete", {"model": "llama3"})
    assert response.code == 200 and response.body == b""
    assert "llama3:latest" not in a.state.stats()["models"] + b.state.stats()["models"]
    missing = (404, {"error": "model 'llama3' not found"})
    assert await proxy.json("DELETE", "/api/delete", {"model": "llama3"}) == missing
    status, _ = await proxy.json("POST", "/api/generate", {"model": "llama3", "prompt": "x"})
    assert status == 404


async def test_copy_on_every_node_that_has_the_source(env):
    a, b, proxy = await _two(env)
    response = await proxy.request("POST", "/api/copy", {"source": "llama3", "destination": "my-llama"})
    assert response.code == 200
    for node in (a, b):
        assert "my-llama:latest" in node.state.stats()["models"]
    assert (await proxy.json("POST", "/api/copy", {"source": "nope", "destination": "x"}))[0] == 404
    assert (await proxy.json("POST", "/api/copy", {"source": "llama3"}))[0] == 400


async def test_push_goes_to_one_node_that_has_the_model(env):
    a, b, proxy = await _two(env)
    lines = ndjson((await proxy.request("POST", "/api/push", {"model": "mistral:7b"})).body)
    assert lines[-1] == {"status": "success"}
    assert (await proxy.json("POST", "/api/push", {"model": "nope"}))[0] == 404


async def test_create_and_blob_upload_are_501_and_blob_head_checks_every_node(env):
    a, b, proxy = await _two(env)
    status, body = await proxy.json("POST", "/api/create", {"model": "x", "from": "llama3"})
    assert status == 501 and "not supported" in body["error"]
    data = b"blob-bytes"
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    assert (await proxy.request("HEAD", f"/api/blobs/{digest}")).code == 404
    assert (await proxy.json("POST", f"/api/blobs/{digest}", raw=data))[0] == 501
    # Present on one node only: still 404 for the fleet; on both: 200.
    await proxy.services.upstream.fetch(a.url, "POST", f"/api/blobs/{digest}", body=data)
    assert (await proxy.request("HEAD", f"/api/blobs/{digest}")).code == 404
    await proxy.services.upstream.fetch(b.url, "POST", f"/api/blobs/{digest}", body=data)
    assert (await proxy.request("HEAD", f"/api/blobs/{digest}")).code == 200
    assert (await proxy.json("HEAD", "/api/blobs/not-a-digest"))[0] == 400
