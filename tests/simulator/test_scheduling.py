"""Slots, the pending queue, loads, eviction, keep_alive and client disconnects (real timing)."""

from __future__ import annotations

import asyncio
import json
import time

import ollama

from tests.simulator.helpers import eventually, open_stream, raw_request

BUSY = {"error": "server busy, please try again.  maximum pending requests exceeded"}
SLOW = {"fast": False, "load_time": 0.0, "tokens_per_second": 50.0, "default_tokens": 500}


def chat(model: str = "llama3.2") -> dict:
    return {"model": model, "messages": [{"role": "user", "content": "hello"}]}


async def test_queue_full_answers_503_and_disconnects_free_everything(nodes):
    node = await nodes.start(models=["llama3.2"], num_parallel=1, max_queue=1, **SLOW)
    stats = node.state.stats
    first = await open_stream(node, "POST", "/api/chat", chat())
    assert await first.read_head() == 200
    json.loads(await first.read_line())
    second = await open_stream(node, "POST", "/api/chat", chat())
    await eventually(lambda: stats()["queued"] == 1)
    busy = await raw_request(node, "POST", "/api/chat", chat())
    assert (busy.status, busy.json()) == (503, BUSY)
    assert stats()["busy_rejections"] == 1

    first.close()  # the queued request gets the slot at once
    assert await second.read_head() == 200
    assert json.loads(await second.read_line())["done"] is False
    await eventually(lambda: stats()["queued"] == 0 and stats()["cancelled"] == 1)
    second.close()
    await eventually(lambda: stats()["active"] == 0 and stats()["slots_in_use"] == 0)
    assert stats()["cancelled"] == 2
    reply = await raw_request(node, "POST", "/api/generate",
                              {"model": "llama3.2", "prompt": "x", "options": {"num_predict": 2}})
    assert reply.status == 200 and json.loads(reply.lines()[-1])["done_reason"] == "length"


async def test_disconnect_while_queued_gives_back_the_queue_place(nodes):
    node = await nodes.start(models=["llama3.2"], num_parallel=1, max_queue=5, **SLOW)
    stats = node.state.stats
    holder = await open_stream(node, "POST", "/api/chat", chat())
    await holder.read_head()
    waiters = [await open_stream(node, "POST", "/api/chat", chat()) for _ in range(3)]
    await eventually(lambda: stats()["queued"] == 3)
    for waiter in waiters:
        waiter.close()
    await eventually(lambda: stats()["queued"] == 0 and stats()["cancelled"] == 3)
    assert stats()["active"] == 1 and stats()["slots_in_use"] == 1
    holder.close()
    await eventually(lambda: stats()["active"] == 0 and stats()["slots_in_use"] == 0)


async def test_disconnect_while_loading_cancels_but_the_load_completes(nodes):
    node = await nodes.start(models=["llama3.2"], fast=False, load_time=0.3)
    stats = node.state.stats
    pending = await open_stream(node, "POST", "/api/generate", {"model": "llama3.2", "prompt": "x"})
    await eventually(lambda: stats()["loading_models"] == ["llama3.2:latest"])
    ps = (await raw_request(node, "GET", "/api/ps")).json()["models"]
    assert [m["name"] for m in ps] == ["llama3.2:latest"], "a loading model is listed by /api/ps"
    pending.close()
    await eventually(lambda: stats()["queued"] == 0 and stats()["active"] == 0 and stats()["cancelled"] == 1)
    await eventually(lambda: stats()["loaded_models"] == ["llama3.2:latest"])


async def test_cold_load_is_reported_in_load_duration(nodes):
    node = await nodes.start(models=["llama3.2"], fast=False, load_time=0.2, tokens_per_second=1000)
    client = ollama.AsyncClient(host=node.url)
    cold = await client.generate("llama3.2", "x", options={"num_predict": 2})
    warm = await client.generate("llama3.2", "x", options={"num_predict": 2})
    assert cold.load_duration >= 0.2e9 > warm.load_duration
    assert cold.total_duration >= cold.load_duration + cold.eval_duration


async def test_loads_happen_one_at_a_time(nodes):
    node = await nodes.start(models=["a", "b", "c"], fast=False, load_time=0.15, tokens_per_second=1000,
                             default_tokens=1)
    seen: list[int] = []
    done = False

    async def watch():
        while not done:
            seen.append(len(node.state.stats()["loading_models"]))
            await asyncio.sleep(0.01)

    watcher = asyncio.ensure_future(watch())
    client = ollama.AsyncClient(host=node.url)
    started = time.monotonic()
    replies = await asyncio.gather(*(client.generate(m, "x") for m in ("a", "b", "c")))
    done = True
    await watcher
    assert time.monotonic() - started >= 0.45
    assert max(seen) == 1
    assert sorted(r.load_duration for r in replies)[-1] >= 0.4e9


async def test_max_loaded_evicts_the_least_recently_used_idle_model(nodes):
    node = await nodes.start(models=["a", "b", "c"], max_loaded=2)
    client = ollama.AsyncClient(host=node.url)
    for model in ("a", "b", "a", "c"):
        await client.generate(model, "x")
    assert sorted(node.state.stats()["loaded_models"]) == ["a:latest", "c:latest"]
    assert node.state.stats()["unloads"] == 1


async def test_a_load_waits_for_a_busy_model_when_memory_is_full(nodes):
    node = await nodes.start(models=["a", "b"], max_loaded=1, **SLOW)
    stats = node.state.stats
    busy = await open_stream(node, "POST", "/api/chat", chat("a"))
    await busy.read_head()
    other = asyncio.ensure_future(raw_request(node, "POST", "/api/generate",
                                              {"model": "b", "prompt": "x", "options": {"num_predict": 1}}))
    await eventually(lambda: stats()["queued"] == 1)
    await asyncio.sleep(0.05)
    assert stats()["loaded_models"] == ["a:latest"] and not other.done()
    busy.close()
    reply = await other
    assert reply.status == 200
    assert stats()["loaded_models"] == ["b:latest"]


async def test_parallel_slots(nodes):
    node = await nodes.start(models=["llama3.2"], num_parallel=2, **SLOW)
    stats = node.state.stats
    streams = [await open_stream(node, "POST", "/api/chat", chat()) for _ in range(3)]
    await eventually(lambda: stats()["slots_in_use"] == 2 and stats()["queued"] == 1)
    for stream in streams:
        stream.close()
    await eventually(lambda: stats()["active"] == 0 and stats()["slots_in_use"] == 0 and stats()["queued"] == 0)


async def test_keep_alive_expiry_unloads(nodes):
    node = await nodes.start(models=["llama3.2"], keep_alive=0.3)
    client = ollama.AsyncClient(host=node.url)
    await client.generate("llama3.2", "x")
    assert node.state.stats()["loaded_models"] == ["llama3.2:latest"]
    await eventually(lambda: node.state.stats()["loaded_models"] == [], timeout=2)
    await client.generate("llama3.2", "x", keep_alive="400ms")
    await asyncio.sleep(0.05)
    assert node.state.stats()["loaded_models"] == ["llama3.2:latest"]
    await eventually(lambda: node.state.stats()["loaded_models"] == [], timeout=2)


async def test_negative_default_keep_alive_means_forever(nodes):
    node = await nodes.start(models=["llama3.2"], keep_alive=-1)
    await ollama.AsyncClient(host=node.url).generate("llama3.2", "x")
    assert node.state.stats()["loaded_models"] == ["llama3.2:latest"]
    assert (await raw_request(node, "GET", "/api/ps")).json()["models"][0]["expires_at"] > "2200"


async def test_tokens_are_paced(nodes):
    node = await nodes.start(models=["llama3.2"], fast=False, load_time=0, tokens_per_second=100,
                             default_tokens=10)
    started = time.monotonic()
    reply = await ollama.AsyncClient(host=node.url).generate("llama3.2", "x")
    elapsed = time.monotonic() - started
    assert 0.09 <= elapsed < 1.0
    assert 0.09e9 <= reply.eval_duration < 1e9


async def test_stop_closes_open_connections(nodes):
    node = await nodes.start(models=["llama3.2"], **SLOW)
    stream = await open_stream(node, "POST", "/api/chat", chat())
    await stream.read_head()
    await node.stop()
    assert await asyncio.wait_for(stream.reader.read(), 2) is not None
    assert node.state.stats()["active"] == 0
