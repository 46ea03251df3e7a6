"""The gateway speaks the Ollama and OpenAI APIs of the whole fleet, over real HTTP."""

import json

from tests.conftest import ndjson, sse

CHAT = {"messages": [{"role": "user", "content": "why is the sky blue?"}]}


async def test_heartbeat_and_browser_redirect(env):
    proxy = await env.proxy()
    head = await proxy.request("HEAD", "/")
    assert head.code == 200 and head.headers["Content-Type"].startswith("text/plain")
    get = await proxy.request("GET", "/")
    assert get.body == b"Ollama is running"
    browser = await proxy.request("GET", "/", headers={"Accept": "text/html,application/xhtml+xml"})
    assert browser.code in (301, 302) and browser.headers["Location"] == "/ui/"


async def test_version_is_the_lowest_among_active_nodes(env):
    old = await env.node(version="0.9.2")
    new = await env.node(version="0.33.0")
    proxy = await env.proxy([old, new], config={"fall": 1})
    assert await proxy.json("GET", "/api/version") == (200, {"version": "0.9.2"})
    await old.stop()
    await proxy.refresh()
    assert await proxy.json("GET", "/api/version") == (200, {"version": "0.33.0"})


async def test_tags_merge_one_entry_per_model_newest_first(env):
    a = await env.node(["llama3:latest", "mistral:7b"])
    b = await env.node(["Llama3", "qwen2.5:7b"])
    proxy = await env.proxy([a, b])
    status, body = await proxy.json("GET", "/api/tags")
    names = [m["name"].lower() for m in body["models"]]
    assert status == 200 and sorted(names) == ["llama3:latest", "mistral:7b", "qwen2.5:7b"]
    stamps = [m["modified_at"] for m in body["models"]]
    assert stamps == sorted(stamps, reverse=True)
    for entry in body["models"]:
        assert {"name", "model", "modified_at", "size", "digest", "details"} <= set(entry)


async def test_tags_is_an_empty_list_without_nodes(env):
    proxy = await env.proxy()
    assert await proxy.json("GET", "/api/tags") == (200, {"models": []})
    assert await proxy.json("GET", "/api/ps") == (200, {"models": []})


async def test_ps_lists_loaded_models_of_the_fleet(env):
    node = await env.node(["llama3:latest", "mistral:7b"])
    proxy = await env.proxy([node])
    await proxy.request("POST", "/api/generate", {"model": "llama3", "prompt": "hi", "stream": False})
    await proxy.refresh()
    status, body = await proxy.json("GET", "/api/ps")
    assert status == 200 and [m["name"] for m in body["models"]] == ["llama3:latest"]
    assert "expires_at" in body["models"][0]


async def test_generate_streams_ndjson_line_by_line(env):
    node = await env.node()
    proxy = await env.proxy([node])
    response = await proxy.request("POST", "/api/generate", {"model": "llama3", "prompt": "hello"})
    assert response.code == 200
    assert response.headers["Content-Type"] == "application/x-ndjson"
    assert response.headers["X-Aivonx-Node"] == proxy.fleet.nodes[next(iter(proxy.fleet.nodes))].name
    lines = ndjson(response.body)
    assert len(lines) > 2 and all(line["model"] == "llama3" for line in lines)
    assert lines[-1]["done"] is True and "eval_count" in lines[-1]
    assert not any(line["done"] for line in lines[:-1])


async def test_chat_unstreamed_is_one_object_and_echoes_the_model_as_sent(env):
    node = await env.node()
    proxy = await env.proxy([node])
    status, body = await proxy.json("POST", "/api/chat", {"model": "LLAMA3:Latest", "stream": False, **CHAT})
    assert status == 200 and body["done"] is True and body["model"] == "LLAMA3:Latest"
    assert body["message"]["role"] == "assistant" and body["message"]["content"]


async def test_requests_are_routed_to_a_node_that_has_the_model(env):
    a = await env.node(["llama3:latest"])
    b = await env.node(["mistral:7b"])
    proxy = await env.proxy([a, b])
    name_b = next(n.name for n in proxy.fleet.nodes.values() if n.url == b.url)
    for _ in range(4):
        response = await proxy.request("POST", "/api/generate", {"model": "mistral:7b", "prompt": "x",
                                                                 "stream": False})
        assert response.code == 200 and response.headers["X-Aivonx-Node"] == name_b


async def test_sequential_requests_spread_over_equal_nodes(env):
    nodes = [await env.node() for _ in range(3)]
    proxy = await env.proxy(nodes)
    seen = set()
    for _ in range(6):
        response = await proxy.request("POST", "/api/generate", {"model": "llama3", "prompt": "x", "stream": False})
        seen.add(response.headers["X-Aivonx-Node"])
    assert len(seen) == 3


async def test_not_found_texts_match_ollama(env):
    node = await env.node()
    proxy = await env.proxy([node])
    cases = [
        ("/api/generate", {"model": "nope", "prompt": "x"}, "model 'nope' not found"),
        ("/api/chat", {"model": "nope", **CHAT}, "model 'nope' not found"),
        ("/api/show", {"model": "nope"}, "model 'nope:latest' not found"),
        ("/api/show", {"name": "nope"}, "model 'nope:latest' not found"),
        ("/api/embed", {"model": "nope", "input": "x"}, 'model "nope" not found, try pulling it first'),
        ("/api/embeddings", {"model": "nope", "prompt": "x"}, 'model "nope" not found, try pulling it first'),
    ]
    for path, body, text in cases:
        assert await proxy.json("POST", path, body) == (404, {"error": text}), path


async def test_missing_model_and_bad_input_are_400_json(env):
    proxy = await env.proxy([await env.node()])
    assert await proxy.json("POST", "/api/chat", {"model": "", **CHAT}) == (400, {"error": "model is required"})
    assert (await proxy.json("POST", "/api/generate", {"prompt": "x"}))[0] == 400
    status, body = await proxy.json("POST", "/api/generate", raw=b"{not json")
    assert status == 400 and body["error"].startswith("invalid JSON")
    status, body = await proxy.json("POST", "/api/generate", raw=b"[1, 2]")
    assert status == 400 and "object" in body["error"]
    status, body = await proxy.json("POST", "/api/generate", {"model": 42})
    assert status == 400 and "string" in body["error"]
    status, body = await proxy.json("POST", "/api/generate", {"model": "a b c"})
    assert status == 400
    status, body = await proxy.json("POST", "/api/generate", {"model": "llama3", "stream": "yes"})
    assert status == 400 and "stream" in body["error"]
    nested = b"[" * 10000 + b"]" * 10000
    status, body = await proxy.json("POST", "/api/generate", raw=b'{"model": "llama3", "x": ' + nested + b"}")
    assert status == 400 and "nested" in body["error"]


async def test_unknown_path_and_wrong_method_answer_json(env):
    proxy = await env.proxy()
    assert await proxy.json("GET", "/api/nothing") == (404, {"error": "404 page not found"})
    assert await proxy.json("GET", "/api/generate") == (405, {"error": "405 method not allowed"})


async def test_oversized_body_is_413_json(env):
    proxy = await env.proxy([await env.node()], config={"max_body_size": 4096})
    status, body = await proxy.json("POST", "/api/generate", {"model": "llama3", "prompt": "x" * 10000})
    assert status == 413 and "larger than the limit" in body["error"]
    assert proxy.in_flight() == 0
    ok = await proxy.request("POST", "/api/generate", {"model": "llama3", "prompt": "x", "stream": False})
    assert ok.code == 200


async def test_show_embed_and_embeddings(env):
    proxy = await env.proxy([await env.node()])
    status, body = await proxy.json("POST", "/api/show", {"model": "llama3"})
    assert status == 200 and "model_info" in body and "details" in body
    status, body = await proxy.json("POST", "/api/embed", {"model": "llama3", "input": ["a", "b"]})
    assert status == 200 and len(body["embeddings"]) == 2
    status, body = await proxy.json("POST", "/api/embeddings", {"model": "llama3", "prompt": "a"})
    assert status == 200 and isinstance(body["embedding"], list)


async def test_client_credentials_and_host_never_reach_the_node(env):
    node = await env.node()
    seen = []
    node.server.request_callback.settings["log_function"] = lambda handler: seen.append(handler.request.headers)
    proxy = await env.proxy([node])
    response = await proxy.request("POST", "/api/generate", {"model": "llama3", "prompt": "x", "stream": False},
                                   headers={"Authorization": "Bearer client-secret", "Cookie": "session=abc",
                                            "Host": "proxy.example.com", "X-Request-Id": "req-42"})
    assert response.code == 200 and response.headers["X-Request-Id"] == "req-42"
    generate = [h for h in seen if h.get("Content-Type")][-1]
    assert "Authorization" not in generate and "Cookie" not in generate
    assert generate["Host"] == f"127.0.0.1:{node.port}"
    assert generate["X-Request-Id"] == "req-42"


async def test_node_outbound_headers_are_sent(env):
    node = await env.node()
    seen = []
    node.server.request_callback.settings["log_function"] = lambda handler: seen.append(handler.request.headers)
    proxy = await env.proxy()
    record = await proxy.services.store.nodes.create(
        {"name": "secured", "url": node.url, "headers": {"Authorization": "Bearer node-token"}})
    proxy.fleet.upsert(record)
    await proxy.refresh()
    await proxy.request("POST", "/api/generate", {"model": "llama3", "prompt": "x", "stream": False},
                        headers={"Authorization": "Bearer client-secret"})
    assert seen and all(h.get("Authorization") == "Bearer node-token" for h in seen)


async def test_openai_chat_completions_streamed_and_not(env):
    proxy = await env.proxy([await env.node()])
    status, body = await proxy.json("POST", "/v1/chat/completions", {"model": "llama3", **CHAT})
    assert status == 200 and body["object"] == "chat.completion" and body["choices"][0]["message"]["content"]
    response = await proxy.request("POST", "/v1/chat/completions", {"model": "llama3", "stream": True, **CHAT})
    assert response.code == 200 and response.headers["Content-Type"].startswith("text/event-stream")
    events = sse(response.body)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert len({c["id"] for c in chunks}) == 1


async def test_openai_models_and_errors(env):
    proxy = await env.proxy([await env.node(["llama3:latest", "mistral:7b"])])
    status, body = await proxy.json("GET", "/v1/models")
    assert status == 200 and body["object"] == "list"
    assert sorted(m["id"] for m in body["data"]) == ["llama3:latest", "mistral:7b"]
    status, body = await proxy.json("GET", "/v1/models/llama3")
    assert status == 200 and body["id"] == "llama3:latest" and body["object"] == "model"
    status, body = await proxy.json("GET", "/v1/models/nope")
    assert status == 404 and body["error"]["type"] == "not_found_error"
    status, body = await proxy.json("POST", "/v1/chat/completions", {"model": "nope", **CHAT})
    assert status == 404 and body["error"]["type"] == "not_found_error"
    status, body = await proxy.json("POST", "/v1/chat/completions", raw=b"{")
    assert status == 400 and body["error"]["type"] == "invalid_request_error"
