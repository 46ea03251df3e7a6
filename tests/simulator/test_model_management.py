"""Pull, push, create, copy, delete and blobs."""

from __future__ import annotations

import hashlib
import json
import time

import ollama

from tests.simulator.helpers import eventually, open_stream, raw_request


async def test_pull_streams_progress_then_adds_the_model(nodes):
    node = await nodes.start(models=[], fast=False, pull_time=0.2, pull_step=0.05)
    client = ollama.AsyncClient(host=node.url)
    started = time.monotonic()
    parts = [p async for p in await client.pull("Qwen2.5:0.5b", stream=True)]
    assert time.monotonic() - started >= 0.15, "a non-fast pull takes pull_time"
    statuses = [p.status for p in parts]
    assert statuses[0] == "pulling manifest"
    assert statuses[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
    layers = [p for p in parts if p.status.startswith("pulling ") and p.digest]
    assert layers[0].total and layers[0].completed is None, "completed is omitted while 0"
    progress = [p.completed for p in layers if p.digest == layers[0].digest and p.completed]
    assert progress == sorted(progress) and len(progress) >= 3 and progress[-1] == layers[0].total
    assert all(p.digest.startswith("sha256:") and p.status == f"pulling {p.digest[7:19]}" for p in layers)
    assert [m.model for m in (await client.list()).models] == ["Qwen2.5:0.5b"]


async def test_pull_unknown_model_fails_like_ollama(nodes):
    node = await nodes.start(models=[])
    response = await raw_request(node, "POST", "/api/pull", {"model": "doesnotexist"})
    assert response.status == 200
    assert [json.loads(line) for line in response.lines()] == [
        {"status": "pulling manifest"}, {"error": "pull model manifest: file does not exist"}]
    single = await raw_request(node, "POST", "/api/pull", {"model": "doesnotexist", "stream": False})
    assert (single.status, single.json()) == (500, {"error": "pull model manifest: file does not exist"})
    try:
        async for _ in await ollama.AsyncClient(host=node.url).pull("doesnotexist", stream=True):
            pass
    except ollama.ResponseError as exc:
        assert "file does not exist" in exc.error
    else:
        raise AssertionError("pulling an unknown model must fail")
    assert (await raw_request(node, "GET", "/api/tags")).json() == {"models": []}


async def test_pullable_list_limits_the_registry(nodes):
    node = await nodes.start(models=[], pullable=["llama3.2"])
    ok = await raw_request(node, "POST", "/api/pull", {"name": "LLAMA3.2:latest", "stream": False})
    assert ok.json() == {"status": "success"}
    missing = await raw_request(node, "POST", "/api/pull", {"name": "phi3", "stream": False})
    assert missing.status == 500
    invalid = await raw_request(node, "POST", "/api/pull", {"model": "bad name!"})
    assert invalid.status == 400


async def test_pull_then_newest_first_in_tags(nodes):
    node = await nodes.start(models=["old"])
    await ollama.AsyncClient(host=node.url).pull("newer")
    models = (await raw_request(node, "GET", "/api/tags")).json()["models"]
    assert [m["name"] for m in models] == ["newer:latest", "old:latest"]


async def test_copy_and_delete(nodes):
    node = await nodes.start(models=["llama3.2"])
    client = ollama.AsyncClient(host=node.url)
    assert (await client.copy("llama3.2", "mine/llama:v1")).status == "success"
    copied = await raw_request(node, "POST", "/api/copy", {"source": "llama3.2", "destination": "again"})
    assert (copied.status, copied.body) == (200, b"")
    tags = {m.model: m.digest for m in (await client.list()).models}
    assert tags["mine/llama:v1"] == tags["llama3.2:latest"] == tags["again:latest"]
    unknown = await raw_request(node, "POST", "/api/copy", {"source": "nope", "destination": "x"})
    assert unknown.status == 404 and "error" in unknown.json()

    deleted = await raw_request(node, "DELETE", "/api/delete", {"model": "again"})
    assert (deleted.status, deleted.body) == (200, b"")
    assert (await client.delete("mine/llama:v1")).status == "success"
    missing = await raw_request(node, "DELETE", "/api/delete", {"name": "Again"})
    assert (missing.status, missing.json()) == (404, {"error": "model 'Again' not found"})
    try:
        await client.delete("again")
    except ollama.ResponseError as exc:
        assert exc.status_code == 404
    else:
        raise AssertionError("deleting a missing model must fail")
    assert [m.model for m in (await client.list()).models] == ["llama3.2:latest"]


async def test_delete_unloads_a_resident_model(nodes):
    node = await nodes.start(models=["llama3.2"])
    client = ollama.AsyncClient(host=node.url)
    await client.generate("llama3.2", "x")
    await client.delete("llama3.2")
    assert node.state.stats()["loaded_models"] == []


async def test_create_from_existing_model(nodes):
    node = await nodes.start(models=["llama3.2"])
    client = ollama.AsyncClient(host=node.url)
    parts = [p async for p in await client.create("mario", from_="llama3.2", system="You are Mario.",
                                                  parameters={"temperature": 0.7}, stream=True)]
    assert parts[0].status.startswith("using existing layer sha256:")
    assert parts[-2:][0].status == "writing manifest" and parts[-1].status == "success"
    shown = await client.show("mario")
    assert shown.details.parent_model == "llama3.2:latest"
    assert "temperature" in shown.parameters and 'SYSTEM """You are Mario."""' in shown.modelfile
    tags = {m.model: m.digest for m in (await client.list()).models}
    assert tags["mario:latest"] != tags["llama3.2:latest"]
    legacy = await raw_request(node, "POST", "/api/create",
                               {"name": "luigi", "modelfile": "FROM llama3.2\nSYSTEM hi", "stream": False})
    assert legacy.json() == {"status": "success"}
    missing = await raw_request(node, "POST", "/api/create", {"model": "x", "from": "nope"})
    assert missing.status == 404
    neither = await raw_request(node, "POST", "/api/create", {"model": "x"})
    assert neither.status == 400


async def test_push_streams_progress(nodes):
    node = await nodes.start(models=["me/llama3.2"])
    parts = [p async for p in await ollama.AsyncClient(host=node.url).push("me/llama3.2", stream=True)]
    assert parts[0].status == "retrieving manifest" and parts[-1].status == "success"
    assert any(p.status.startswith("pushing ") and p.completed == p.total for p in parts if p.total)
    missing = await raw_request(node, "POST", "/api/push", {"model": "me/nope"})
    assert missing.status == 404


async def test_blobs_head_post_and_create_from_files(nodes):
    node = await nodes.start(models=[])
    data = b"GGUF fake weights"
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    assert (await raw_request(node, "HEAD", f"/api/blobs/{digest}")).status == 404
    mismatch = await raw_request(node, "POST", f"/api/blobs/sha256:{'0' * 64}", data)
    assert mismatch.status == 400 and "digest mismatch" in mismatch.json()["error"]
    created = await raw_request(node, "POST", f"/api/blobs/{digest}", data)
    assert (created.status, created.body) == (201, b"")
    again = await raw_request(node, "POST", f"/api/blobs/{digest}", data)
    assert again.status == 200
    assert (await raw_request(node, "HEAD", f"/api/blobs/{digest}")).status == 200
    invalid = await raw_request(node, "HEAD", "/api/blobs/md5:abc")
    assert invalid.status == 400
    reply = await ollama.AsyncClient(host=node.url).create("fromfile", files={"model.gguf": digest})
    assert reply.status == "success"
    assert [m["name"] for m in (await raw_request(node, "GET", "/api/tags")).json()["models"]] == [
        "fromfile:latest"]


async def test_create_blob_with_the_client_uploads_chunked(nodes, tmp_path):
    node = await nodes.start(models=[])
    path = tmp_path / "weights.gguf"
    path.write_bytes(b"x" * 100_000)
    digest = await ollama.AsyncClient(host=node.url).create_blob(path)
    assert digest == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    assert node.state.catalog.blobs[digest] == 100_000


async def test_client_leaving_a_pull_cancels_it(nodes):
    node = await nodes.start(models=[], fast=False, pull_time=2.0)
    stream = await open_stream(node, "POST", "/api/pull", {"model": "phi3"})
    await stream.read_head()
    assert json.loads(await stream.read_line()) == {"status": "pulling manifest"}
    stream.close()
    await eventually(lambda: node.state.stats()["active"] == 0 and node.state.stats()["cancelled"] == 1)
    assert node.state.stats()["models"] == []


async def test_replacing_a_model_unloads_the_old_weights(nodes):
    node = await nodes.start(models=["base", "other"])
    client = ollama.AsyncClient(host=node.url)
    await client.copy("base", "mine")
    await client.generate("mine", "x")
    assert node.state.stats()["loaded_models"] == ["mine:latest"]
    await client.copy("base", "mine")  # same weights: stays loaded
    assert node.state.stats()["loaded_models"] == ["mine:latest"]
    await client.copy("other", "mine")  # other weights under the same name
    assert node.state.stats()["loaded_models"] == []
