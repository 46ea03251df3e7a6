"""Fault injection through the control endpoint, the Python API and start-up options."""

from __future__ import annotations

import asyncio
import json
import time

import ollama
import pytest

from app.simulator.faults import parse_fault_arg
from tests.simulator.helpers import eventually, open_stream, raw_request

CHAT = {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]}


async def test_control_endpoint_sets_lists_and_clears_faults(nodes):
    node = await nodes.start(models=["llama3.2"])
    added = await raw_request(node, "POST", "/_sim/faults", {"mode": "error_500", "count": 2})
    assert added.status == 200 and added.json()["faults"][0]["mode"] == "error_500"
    assert (await raw_request(node, "GET", "/_sim/faults")).json()["faults"][0]["count"] == 2
    for _ in range(2):
        failed = await raw_request(node, "POST", "/api/chat", CHAT)
        assert (failed.status, set(failed.json())) == (500, {"error"})
    assert (await raw_request(node, "POST", "/api/chat", CHAT)).status == 200, "count is used up"
    await raw_request(node, "POST", "/_sim/faults", [{"mode": "busy"}, {"mode": "garbage"}])
    cleared = await raw_request(node, "DELETE", "/_sim/faults")
    assert cleared.json() == {"faults": []}
    assert (await raw_request(node, "POST", "/api/chat", CHAT)).status == 200
    bad = await raw_request(node, "POST", "/_sim/faults", {"mode": "explode"})
    assert bad.status == 400 and "mode" in bad.json()["error"]


async def test_faults_respect_routes(nodes):
    node = await nodes.start(models=["llama3.2"])
    node.state.set_fault("busy", routes=["/api/generate"])
    assert (await raw_request(node, "POST", "/api/chat", CHAT)).status == 200
    busy = await raw_request(node, "POST", "/api/generate", {"model": "llama3.2", "prompt": "x"})
    assert busy.status == 503
    assert busy.json() == {"error": "server busy, please try again.  maximum pending requests exceeded"}
    node.state.clear_faults()
    node.state.set_fault("error_500", routes=["/api/blobs/:digest"], count=1)
    assert (await raw_request(node, "HEAD", f"/api/blobs/sha256:{'a' * 64}")).status == 500


async def test_openai_routes_get_openai_shaped_fault_errors(nodes):
    node = await nodes.start(models=["llama3.2"])
    node.state.set_fault("error_500", count=1)
    failed = await raw_request(node, "POST", "/v1/chat/completions", CHAT)
    assert failed.status == 500 and failed.json()["error"]["type"] == "api_error"


async def test_error_midstream_sends_an_error_line_after_k_chunks(nodes):
    node = await nodes.start(models=["llama3.2"], default_tokens=10)
    node.state.set_fault("error_midstream", after_chunks=3, count=1)
    response = await raw_request(node, "POST", "/api/chat", CHAT)
    assert response.status == 200 and response.complete
    lines = [json.loads(line) for line in response.lines()]
    assert len(lines) == 4 and "error" in lines[-1] and not any(p.get("done") for p in lines[:-1])
    try:
        async for _ in await ollama.AsyncClient(host=node.url).chat("llama3.2", messages=CHAT["messages"],
                                                                     stream=True):
            pass
    except ollama.ResponseError:
        raise AssertionError("count=1 was used up") from None
    node.state.set_fault("error_midstream", after_chunks=100, count=1)
    short = await raw_request(node, "POST", "/api/chat", CHAT)
    assert "error" in json.loads(short.lines()[-1]), "fires before the final line of a short stream"


async def test_error_midstream_on_sse(nodes):
    node = await nodes.start(models=["llama3.2"])
    node.state.set_fault("error_midstream", after_chunks=1)
    response = await raw_request(node, "POST", "/v1/chat/completions", {**CHAT, "stream": True})
    events = response.text.strip().split("\n\n")
    assert len(events) == 2 and "[DONE]" not in response.text
    assert json.loads(events[1][len("data: "):])["error"]["message"]


async def test_drop_midstream_closes_without_finishing(nodes):
    node = await nodes.start(models=["llama3.2"], default_tokens=10)
    node.state.set_fault("drop_midstream", after_chunks=2)
    response = await raw_request(node, "POST", "/api/generate", {"model": "llama3.2", "prompt": "x"})
    assert response.status == 200 and not response.complete
    lines = response.text.strip().split("\n")
    assert len(lines) == 2 and all(not json.loads(line)["done"] for line in lines)
    await eventually(lambda: node.state.stats()["active"] == 0)
    assert node.state.stats()["cancelled"] == 0, "a drop by the node is not a client disconnect"
    assert node.state.stats()["slots_in_use"] == 0


async def test_mid_stream_faults_skip_non_streamed_answers(nodes):
    node = await nodes.start(models=["llama3.2"])
    node.state.set_fault("drop_midstream", count=1)
    whole = await raw_request(node, "POST", "/api/chat", {**CHAT, "stream": False})
    assert whole.status == 200 and whole.json()["done"] is True
    assert node.state.stats()["faults"][0]["count"] == 1


async def test_hang_sends_nothing_until_the_client_leaves(nodes):
    node = await nodes.start(models=["llama3.2"])
    node.state.set_fault("hang", routes=["/api/tags"])
    stream = await open_stream(node, "GET", "/api/tags")
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(stream.reader.read(1), 0.2)
    stream.close()
    await eventually(lambda: node.state.stats()["active"] == 0 and node.state.stats()["cancelled"] == 1)


async def test_slow_tags_delays_the_informational_routes(nodes):
    node = await nodes.start(models=["llama3.2"])
    await raw_request(node, "POST", "/_sim/faults", {"mode": "slow_tags", "delay": 0.2})
    for path in ("/api/tags", "/api/ps", "/api/version"):
        started = time.monotonic()
        assert (await raw_request(node, "GET", path)).status == 200
        assert time.monotonic() - started >= 0.2, path
    started = time.monotonic()
    await raw_request(node, "GET", "/")
    assert time.monotonic() - started < 0.2


async def test_garbage_is_not_json(nodes):
    node = await nodes.start(models=["llama3.2"])
    node.state.set_fault("garbage", count=2)
    response = await raw_request(node, "GET", "/api/tags")
    assert response.status == 200
    with pytest.raises(ValueError):
        json.loads(response.body)
    with pytest.raises(ValueError):
        await ollama.AsyncClient(host=node.url).list()


async def test_faults_given_at_start_and_stats_endpoint(nodes):
    node = await nodes.start(models=["llama3.2"], faults=[parse_fault_arg("busy:count=1,routes=/api/chat")])
    assert (await raw_request(node, "POST", "/api/chat", CHAT)).status == 503
    assert (await raw_request(node, "POST", "/api/chat", CHAT)).status == 200
    stats = (await raw_request(node, "GET", "/_sim/stats")).json()
    assert stats["requests"]["/api/chat"] == 2 and stats["faults_fired"] == 1
    assert stats["active"] == 0 and stats["faults"] == []
    assert "/_sim/stats" not in stats["requests"], "control routes are not counted"
    reset = await raw_request(node, "DELETE", "/_sim/stats")
    assert reset.json()["requests"] == {}


async def test_models_control_endpoint(nodes):
    node = await nodes.start(models=["llama3.2"])
    changed = await raw_request(node, "POST", "/_sim/models", {"add": ["phi3"], "remove": ["llama3.2"]})
    assert changed.json() == {"models": ["phi3:latest"]}
    bad = await raw_request(node, "POST", "/_sim/models", {"add": ["bad name!"]})
    assert bad.status == 400


def test_parse_fault_arg():
    assert parse_fault_arg("error_midstream:after_chunks=3,count=2") == {
        "mode": "error_midstream", "after_chunks": 3, "count": 2}
    assert parse_fault_arg("slow_tags:delay=1.5")["delay"] == 1.5
    assert parse_fault_arg("error_500:routes=/api/chat+/api/generate")["routes"] == ["/api/chat", "/api/generate"]
    for bad in ("nope", "busy:count=0", "busy:colour=red", "busy:count"):
        with pytest.raises(ValueError):
            parse_fault_arg(bad)
