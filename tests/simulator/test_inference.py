"""Generate, chat and embeddings: framing, metrics, determinism, load/unload, error texts."""

from __future__ import annotations

import json

import ollama

from tests.simulator.helpers import raw_request

METRICS = ("total_duration", "load_duration", "prompt_eval_count", "prompt_eval_duration",
           "eval_count", "eval_duration")


def assert_ndjson(lines: list[str]) -> list[dict]:
    assert lines and all(lines), "no blank lines in an NDJSON stream"
    parts = [json.loads(line) for line in lines]
    assert all(p["done"] is False for p in parts[:-1])
    assert parts[-1]["done"] is True
    return parts


async def test_generate_stream_is_ndjson_with_metrics(nodes):
    node = await nodes.start(models=["llama3.2"], default_tokens=7)
    response = await raw_request(node, "POST", "/api/generate", {"model": "Llama3.2", "prompt": "why?"})
    assert response.status == 200 and response.complete
    assert response.headers["content-type"] == "application/x-ndjson"
    assert response.headers["transfer-encoding"] == "chunked" and "content-length" not in response.headers
    parts = assert_ndjson(response.lines())
    assert len(parts) == 8
    assert all(p["model"] == "Llama3.2" for p in parts), "the model string is echoed verbatim"
    assert all(p["created_at"].endswith("Z") for p in parts)
    final = parts[-1]
    assert final["response"] == "" and final["done_reason"] == "stop"
    assert all(isinstance(final[k], int) and final[k] > 0 for k in METRICS)
    assert final["eval_count"] == 7
    assert isinstance(final["context"], list) and final["context"]


async def test_generate_non_stream_is_one_object(nodes):
    node = await nodes.start(models=["llama3.2"])
    streamed = await raw_request(node, "POST", "/api/generate", {"model": "llama3.2", "prompt": "hi"})
    text = "".join(json.loads(line)["response"] for line in streamed.lines())
    single = await raw_request(node, "POST", "/api/generate",
                               {"model": "llama3.2", "prompt": "hi", "stream": False, "unknown": 1})
    assert single.headers["content-type"] == "application/json; charset=utf-8"
    body = single.json()
    assert body["done"] is True and body["response"] == text
    client = await ollama.AsyncClient(host=node.url).generate("llama3.2", "hi")
    assert client.response == text and client.eval_count == 20


async def test_output_is_deterministic_by_seed(nodes):
    node = await nodes.start(models=["llama3.2"])
    twin = await nodes.start(models=["llama3.2"])
    other_seed = await nodes.start(models=["llama3.2"], seed=99)
    answers = []
    for target in (node, node, twin, other_seed):
        reply = await ollama.AsyncClient(host=target.url).generate("llama3.2", "tell me")
        answers.append(reply.response)
    assert answers[0] == answers[1] == answers[2] != answers[3]
    client = ollama.AsyncClient(host=node.url)
    seeded = [(await client.generate("llama3.2", "tell me", options={"seed": s})).response for s in (1, 1, 2)]
    assert seeded[0] == seeded[1] != seeded[2]
    assert (await client.generate("llama3.2", "something else")).response != answers[0]


async def test_num_predict_caps_output_with_length(nodes):
    node = await nodes.start(models=["llama3.2"], default_tokens=10)
    reply = await ollama.AsyncClient(host=node.url).generate("llama3.2", "x", options={"num_predict": 3})
    assert (reply.eval_count, reply.done_reason) == (3, "length")
    full = await ollama.AsyncClient(host=node.url).generate("llama3.2", "x", options={"num_predict": 50})
    assert (full.eval_count, full.done_reason) == (10, "stop")


async def test_chat_stream_and_final_chunk(nodes):
    node = await nodes.start(models=["llama3.2"], default_tokens=5)
    client = ollama.AsyncClient(host=node.url)
    messages = [{"role": "user", "content": "why is the sky blue?"}]
    parts = [p async for p in await client.chat("llama3.2", messages=messages, stream=True)]
    assert len(parts) == 6
    assert all(p.message.role == "assistant" for p in parts)
    assert parts[-1].done and parts[-1].message.content == "" and parts[-1].done_reason == "stop"
    assert parts[-1].eval_count == 5 and parts[-1].prompt_eval_count > 0
    whole = await client.chat("llama3.2", messages=messages)
    assert whole.message.content == "".join(p.message.content for p in parts)
    raw = await raw_request(node, "POST", "/api/chat", {"model": "llama3.2", "messages": messages})
    assert_ndjson(raw.lines())
    assert "context" not in json.loads(raw.lines()[-1])


async def test_format_json_yields_json_text(nodes):
    node = await nodes.start(models=["llama3.2"])
    reply = await ollama.AsyncClient(host=node.url).generate("llama3.2", "as json", format="json")
    assert isinstance(json.loads(reply.response), dict)


async def test_model_not_found_texts(nodes):
    node = await nodes.start(models=["llama3.2"])
    cases = [
        ("/api/generate", {"model": "Nope", "prompt": "x"}, 404, "model 'Nope' not found"),
        ("/api/chat", {"model": "Nope", "messages": []}, 404, "model 'Nope' not found"),
        ("/api/chat", {"model": "", "messages": []}, 400, "model is required"),
        ("/api/embed", {"model": "Nope", "input": "x"}, 404, 'model "Nope" not found, try pulling it first'),
        ("/api/embeddings", {"model": "Nope", "prompt": "x"}, 404,
         'model "Nope" not found, try pulling it first'),
    ]
    for path, body, status, text in cases:
        response = await raw_request(node, "POST", path, body)
        assert (response.status, response.json()) == (status, {"error": text}), path
        assert response.headers["content-type"] == "application/json; charset=utf-8"
    try:
        await ollama.AsyncClient(host=node.url).chat("nope", messages=[{"role": "user", "content": "x"}])
    except ollama.ResponseError as exc:
        assert (exc.status_code, exc.error) == (404, "model 'nope' not found")
    else:
        raise AssertionError("chat with an unknown model must fail")


async def test_bad_input_is_a_json_400(nodes):
    node = await nodes.start(models=["llama3.2"])
    bodies = [b"", b"{", b"[1]", {"model": "llama3.2", "prompt": 3}, {"model": "llama3.2", "stream": "yes"},
              {"model": "llama3.2", "prompt": "x", "options": 5}, {"model": "llama3.2", "keep_alive": "5 min"},
              {"model": "llama3.2", "prompt": "x", "format": 3}]
    for body in bodies:
        response = await raw_request(node, "POST", "/api/generate", body)
        assert response.status == 400, body
        assert set(response.json()) == {"error"}, body
    messages = await raw_request(node, "POST", "/api/chat", {"model": "llama3.2", "messages": [1]})
    assert messages.status == 400


async def test_empty_prompt_loads_and_keep_alive_zero_unloads(nodes):
    node = await nodes.start(models=["llama3.2"])
    load = await raw_request(node, "POST", "/api/generate", {"model": "llama3.2"})
    assert load.headers["content-type"] == "application/json; charset=utf-8"
    body = load.json()
    assert (body["done"], body["done_reason"], body["response"]) == (True, "load", "")
    assert node.state.stats()["loaded_models"] == ["llama3.2:latest"]
    chat_load = await raw_request(node, "POST", "/api/chat", {"model": "llama3.2", "messages": []})
    assert chat_load.json()["message"] == {"role": "assistant", "content": ""}
    unload = await raw_request(node, "POST", "/api/generate", {"model": "llama3.2", "keep_alive": 0})
    assert unload.json()["done_reason"] == "unload"
    assert node.state.stats()["loaded_models"] == []
    assert (await ollama.AsyncClient(host=node.url).ps()).models == []


async def test_keep_alive_zero_on_a_request_unloads_after_it(nodes):
    node = await nodes.start(models=["llama3.2"])
    client = ollama.AsyncClient(host=node.url)
    await client.generate("llama3.2", "x", keep_alive="0")
    assert node.state.stats()["loaded_models"] == []
    await client.generate("llama3.2", "x", keep_alive=-1)
    await client.generate("llama3.2", "x")  # no keep_alive: the runner keeps "forever"
    ps = (await raw_request(node, "GET", "/api/ps")).json()["models"]
    assert ps[0]["expires_at"] > "2200"


async def test_ps_lists_loaded_model_with_expiry(nodes):
    node = await nodes.start(models=["llama3.2", "phi3"], keep_alive=300)
    client = ollama.AsyncClient(host=node.url)
    await client.generate("llama3.2", "x", options={"num_ctx": 8192})
    ps = await client.ps()
    assert [m.model for m in ps.models] == ["llama3.2:latest"]
    entry = ps.models[0]
    assert entry.context_length == 8192 and entry.size_vram == entry.size
    assert entry.expires_at is not None and entry.expires_at.utcoffset() is not None
    raw = (await raw_request(node, "GET", "/api/ps")).json()["models"][0]
    assert set(raw) >= {"name", "model", "size", "digest", "details", "expires_at", "size_vram", "context_length"}


async def test_embed_and_legacy_embeddings(nodes):
    node = await nodes.start(models=["nomic-embed-text"], embedding_dim=16)
    client = ollama.AsyncClient(host=node.url)
    embedded = await client.embed("nomic-embed-text", ["a", "b", "a"])
    vectors = embedded.embeddings
    assert len(vectors) == 3 and len(vectors[0]) == 16
    assert vectors[0] == vectors[2] != vectors[1]
    assert abs(sum(v * v for v in vectors[0]) - 1) < 1e-4
    raw = (await raw_request(node, "POST", "/api/embed", {"model": "nomic-embed-text", "input": "a"})).json()
    assert raw["model"] == "nomic-embed-text" and raw["prompt_eval_count"] >= 1
    assert raw["total_duration"] > 0 and "load_duration" in raw
    legacy = await client.embeddings("nomic-embed-text", "a")
    assert len(legacy.embedding) == 16
    empty = await raw_request(node, "POST", "/api/embed", {"model": "nomic-embed-text", "input": []})
    assert empty.json() == {"model": "nomic-embed-text", "embeddings": []}
    bad = await raw_request(node, "POST", "/api/embed", {"model": "nomic-embed-text", "input": [1]})
    assert (bad.status, bad.json()) == (400, {"error": "invalid input type"})
    short = await raw_request(node, "POST", "/api/embed",
                              {"model": "nomic-embed-text", "input": "a", "dimensions": 4})
    assert len(short.json()["embeddings"][0]) == 4


async def test_an_internal_error_is_json_or_an_error_line(nodes, monkeypatch):
    import app.simulator.handlers_ollama as handlers
    from app.simulator.inference import Run

    node = await nodes.start(models=["llama3.2"])

    def broken(*args, **kwargs):
        raise RuntimeError("bug")

    monkeypatch.setattr(handlers, "plan_answer", broken)
    before = await raw_request(node, "POST", "/api/generate", {"model": "llama3.2", "prompt": "x"})
    assert (before.status, before.json()) == (500, {"error": "internal server error"})
    monkeypatch.undo()
    monkeypatch.setattr(Run, "metrics", broken)
    during = await raw_request(node, "POST", "/api/generate", {"model": "llama3.2", "prompt": "x"})
    assert during.status == 200 and during.complete
    assert json.loads(during.lines()[-1]) == {"error": "internal server error"}
    assert node.state.stats()["slots_in_use"] == 0
