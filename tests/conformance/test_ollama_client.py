"""The real `ollama` Python client, pointed at the proxy, works as against one Ollama server."""

import ollama
import pytest

MESSAGES = [{"role": "user", "content": "Why is the sky blue?"}]


@pytest.fixture
def no_api_key(monkeypatch):
    # ollama-python sends OLLAMA_API_KEY to any host when set; tests must not depend on the machine's.
    monkeypatch.delenv("OLLAMA_API_KEY", raising=False)


async def _fleet(env, **config):
    a = await env.node(["llama3.2:latest", "nomic-embed-text:latest"])
    b = await env.node(["llama3.2:latest", "qwen2.5:7b"])
    proxy = await env.proxy([a, b], config=config or None)
    return proxy, ollama.AsyncClient(host=proxy.url)


async def test_list_show_ps(env, no_api_key):
    proxy, client = await _fleet(env)
    listed = await client.list()
    assert sorted(m.model for m in listed.models) == ["llama3.2:latest", "nomic-embed-text:latest", "qwen2.5:7b"]
    shown = await client.show("llama3.2")
    assert shown.details.family and shown.details.format == "gguf"
    await client.generate(model="llama3.2", prompt="warm up")
    await proxy.refresh()
    running = await client.ps()
    assert [m.model for m in running.models] == ["llama3.2:latest"]
    assert running.models[0].expires_at is not None


async def test_chat_streamed_and_not(env, no_api_key):
    _, client = await _fleet(env)
    whole = await client.chat(model="llama3.2", messages=MESSAGES)
    assert whole.done and whole.message.role == "assistant" and whole.message.content
    assert whole.eval_count and whole.prompt_eval_count is not None
    parts = [part async for part in await client.chat(model="llama3.2", messages=MESSAGES, stream=True)]
    assert len(parts) > 2 and parts[-1].done and not any(p.done for p in parts[:-1])
    assert "".join(p.message.content for p in parts) == whole.message.content  # deterministic node


async def test_generate_streamed_and_not(env, no_api_key):
    _, client = await _fleet(env)
    whole = await client.generate(model="llama3.2:latest", prompt="Hello")
    assert whole.done and whole.response and whole.done_reason == "stop"
    parts = [part async for part in await client.generate(model="Llama3.2", prompt="Hello", stream=True)]
    assert parts[-1].done and "".join(p.response for p in parts) == whole.response


async def test_embed_and_legacy_embeddings(env, no_api_key):
    _, client = await _fleet(env)
    embedded = await client.embed(model="nomic-embed-text", input=["a", "b", "c"])
    assert len(embedded.embeddings) == 3 and len(embedded.embeddings[0]) > 0
    legacy = await client.embeddings(model="nomic-embed-text", prompt="a")
    assert len(legacy.embedding) == len(embedded.embeddings[0])


async def test_unknown_models_raise_response_error_with_status(env, no_api_key):
    _, client = await _fleet(env)
    with pytest.raises(ollama.ResponseError) as info:
        await client.chat(model="does-not-exist", messages=MESSAGES)
    assert info.value.status_code == 404 and "not found" in info.value.error
    with pytest.raises(ollama.ResponseError) as info:
        await client.show("does-not-exist")
    assert info.value.status_code == 404
    with pytest.raises(ollama.ResponseError) as info:
        await client.embed(model="does-not-exist", input="x")
    assert info.value.status_code == 404
    with pytest.raises(ollama.ResponseError) as info:
        async for _ in await client.generate(model="does-not-exist", prompt="x", stream=True):
            pass
    assert info.value.status_code == 404


async def test_mid_stream_failure_surfaces_as_response_error(env, no_api_key):
    a = await env.node(["llama3.2:latest"], fast=False, load_time=0, tokens_per_second=200)
    proxy = await env.proxy([a])
    a.state.set_fault("drop_midstream", count=1, after_chunks=3)
    client = ollama.AsyncClient(host=proxy.url)
    with pytest.raises(ollama.ResponseError) as info:
        async for _ in await client.chat(model="llama3.2", messages=MESSAGES, stream=True):
            pass
    assert "failed mid-response" in info.value.error


async def test_pull_delete_copy(env, no_api_key):
    proxy, client = await _fleet(env)
    statuses = [p.status async for p in await client.pull("phi3", stream=True)]
    assert statuses[0] == "pulling manifest" and statuses[-1] == "success"
    assert (await client.pull("phi3")).status == "success"
    assert "phi3:latest" in [m.model for m in (await client.list()).models]
    assert (await client.chat(model="phi3", messages=MESSAGES)).done
    assert (await client.copy("phi3", "phi3-copy")).status == "success"
    assert "phi3-copy:latest" in [m.model for m in (await client.list()).models]
    assert (await client.delete("phi3-copy")).status == "success"
    assert "phi3-copy:latest" not in [m.model for m in (await client.list()).models]
    with pytest.raises(ollama.ResponseError) as info:
        await client.delete("phi3-copy")
    assert info.value.status_code == 404
    with pytest.raises(ollama.ResponseError):
        await client.pull("doesnotexist")
