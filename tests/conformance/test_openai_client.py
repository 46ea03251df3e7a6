"""The real `openai` SDK against the proxy's `/v1` routes."""

import openai
import pytest

MESSAGES = [{"role": "user", "content": "Say hello"}]


async def _client(env):
    a = await env.node(["llama3.2:latest", "nomic-embed-text:latest"])
    b = await env.node(["llama3.2:latest"])
    proxy = await env.proxy([a, b])
    return proxy, openai.AsyncOpenAI(base_url=proxy.url + "/v1", api_key="unused", max_retries=0)


async def test_chat_completion_and_stream(env):
    _, client = await _client(env)
    completion = await client.chat.completions.create(model="llama3.2", messages=MESSAGES)
    assert completion.choices[0].message.content and completion.usage.completion_tokens > 0
    stream = await client.chat.completions.create(
        model="llama3.2", messages=MESSAGES, stream=True, stream_options={"include_usage": True})
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == completion.choices[0].message.content
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    await client.close()


async def test_completions_and_embeddings(env):
    _, client = await _client(env)
    completion = await client.completions.create(model="llama3.2", prompt="Once upon a time")
    assert completion.choices[0].text
    embeddings = await client.embeddings.create(model="nomic-embed-text", input=["a", "b"])
    assert len(embeddings.data) == 2 and embeddings.data[0].embedding
    await client.close()


async def test_models(env):
    _, client = await _client(env)
    models = [m.id async for m in client.models.list()]
    assert sorted(models) == ["llama3.2:latest", "nomic-embed-text:latest"]
    assert (await client.models.retrieve("llama3.2")).id == "llama3.2:latest"
    with pytest.raises(openai.NotFoundError):
        await client.models.retrieve("nope")
    await client.close()


async def test_errors_map_to_sdk_exceptions(env):
    _, client = await _client(env)
    with pytest.raises(openai.NotFoundError):
        await client.chat.completions.create(model="nope", messages=MESSAGES)
    with pytest.raises(openai.BadRequestError):
        await client.chat.completions.create(model="", messages=MESSAGES)
    await client.close()
