"""The /v1 routes: JSON answers, SSE streams, OpenAI-shaped errors, model objects."""

from __future__ import annotations

import base64
import json
import struct

import openai

from tests.simulator.helpers import raw_request


def sse_events(text: str) -> list[str]:
    assert text.endswith("\n\n")
    events = text[:-2].split("\n\n")
    assert all(e.startswith("data: ") for e in events)
    return [e[len("data: "):] for e in events]


def client_for(node) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{node.url}/v1", api_key="unused", max_retries=0)


async def test_chat_completion_json(nodes):
    node = await nodes.start(models=["llama3.2"], default_tokens=6)
    async with client_for(node) as client:
        reply = await client.chat.completions.create(
            model="Llama3.2", messages=[{"role": "user", "content": "hi"}])
    assert reply.id.startswith("chatcmpl-") and reply.object == "chat.completion"
    assert reply.model == "Llama3.2"
    assert reply.choices[0].message.role == "assistant" and reply.choices[0].finish_reason == "stop"
    assert reply.usage.completion_tokens == 6
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + 6


async def test_chat_completion_stream_format(nodes):
    node = await nodes.start(models=["llama3.2"], default_tokens=4)
    body = {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], "stream": True,
            "stream_options": {"include_usage": True}}
    response = await raw_request(node, "POST", "/v1/chat/completions", body)
    assert response.headers["content-type"] == "text/event-stream"
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert len({c["id"] for c in chunks}) == 1 and len({c["created"] for c in chunks}) == 1
    content, usage = chunks[:-1], chunks[-1]
    assert len(content) == 4
    assert content[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all("role" not in c["choices"][0]["delta"] for c in content[1:])
    assert [c["choices"][0]["finish_reason"] for c in content] == [None, None, None, "stop"]
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 4
    plain = await raw_request(node, "POST", "/v1/chat/completions", {**body, "stream_options": None})
    assert "usage" not in plain.text


async def test_openai_client_streams_and_caps_tokens(nodes):
    node = await nodes.start(models=["llama3.2"])
    async with client_for(node) as client:
        stream = await client.chat.completions.create(
            model="llama3.2", messages=[{"role": "user", "content": "hi"}], stream=True, max_tokens=3)
        async with stream:
            chunks = [c async for c in stream]
    assert chunks[-1].choices[0].finish_reason == "length"
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) == 3


async def test_completions_json_and_stream(nodes):
    node = await nodes.start(models=["llama3.2"], default_tokens=3)
    async with client_for(node) as client:
        reply = await client.completions.create(model="llama3.2", prompt="Once upon")
        assert reply.object == "text_completion" and reply.choices[0].text
        stream = await client.completions.create(model="llama3.2", prompt="Once upon", stream=True)
        async with stream:
            pieces = [c async for c in stream]
    assert "".join(p.choices[0].text for p in pieces) == reply.choices[0].text
    assert pieces[-1].choices[0].finish_reason == "stop"


async def test_openai_errors_have_openai_shape(nodes):
    node = await nodes.start(models=["llama3.2"])
    missing = await raw_request(node, "POST", "/v1/chat/completions",
                                {"model": "nope", "messages": [{"role": "user", "content": "x"}]})
    assert missing.status == 404
    assert missing.json() == {"error": {"message": "model 'nope' not found", "type": "not_found_error",
                                        "param": None, "code": None}}
    bad = await raw_request(node, "POST", "/v1/chat/completions", b"{oops")
    assert bad.status == 400 and bad.json()["error"]["type"] == "invalid_request_error"
    async with client_for(node) as client:
        try:
            await client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
        except openai.NotFoundError as exc:
            assert exc.status_code == 404
        else:
            raise AssertionError("an unknown model must raise NotFoundError")


async def test_embeddings_list_format(nodes):
    node = await nodes.start(models=["nomic-embed-text"], embedding_dim=8)
    async with client_for(node) as client:
        reply = await client.embeddings.create(model="nomic-embed-text", input=["a", "b"])
    assert reply.object == "list" and [d.index for d in reply.data] == [0, 1]
    assert len(reply.data[0].embedding) == 8 and reply.usage.prompt_tokens >= 2
    raw = await raw_request(node, "POST", "/v1/embeddings",
                            {"model": "nomic-embed-text", "input": "a", "encoding_format": "base64"})
    packed = base64.b64decode(raw.json()["data"][0]["embedding"])
    assert len(struct.unpack("<8f", packed)) == 8
    missing = await raw_request(node, "POST", "/v1/embeddings", {"model": "x", "input": "a"})
    assert missing.json()["error"]["message"] == 'model "x" not found, try pulling it first'


async def test_models_list_and_single(nodes):
    node = await nodes.start(models=["llama3.2", "mattw/pygmalion"])
    async with client_for(node) as client:
        listed = await client.models.list()
        assert {m.id for m in listed.data} == {"llama3.2:latest", "mattw/pygmalion:latest"}
        single = await client.models.retrieve("mattw/pygmalion")
    assert (single.id, single.object, single.owned_by) == ("mattw/pygmalion", "model", "mattw")
    missing = await raw_request(node, "GET", "/v1/models/nope")
    assert missing.status == 404 and missing.json()["error"]["type"] == "not_found_error"
