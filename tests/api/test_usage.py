"""Usage accounting through real HTTP: token counts on every kind of call, per key, user, model,
node and day; the Requests list; who may see what; retention; restart and store outages."""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime

import pytest

from app.fleet.usage import UsageRecorder
from app.server import stop_services
from app.store import StoreUnavailable
from tests.api.mgmt import admin, eventually, viewer
from tests.conftest import ndjson, sse

REQUEST_FIELDS = {"time", "request_id", "client", "method", "path", "model", "node", "status", "ttfb_ms",
                  "duration_ms", "tokens_in", "tokens_out", "error", "user", "key"}
MESSAGES = [{"role": "user", "content": "why is the sky blue"}]


def bearer(secret: str, request_id: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {secret}"}
    if request_id:
        headers["X-Request-Id"] = request_id
    return headers


async def gateway_key(proxy, headers, name, **fields) -> tuple[str, dict]:
    status, body = await proxy.json("POST", "/api/proxy/keys", {"name": name, "kind": "gateway", **fields},
                                    headers=headers)
    assert status == 201, body
    return body["secret"], body["key"]


async def fleet_with_keys(env):
    """Two nodes with one model each, require_api_key on, a key for admin and one for bob."""
    llama, qwen = await env.node(["llama3:latest"]), await env.node(["qwen2.5:7b"])
    proxy = await env.proxy([llama, qwen], config={"require_api_key": True})
    headers = await admin(proxy)
    status, bob = await proxy.json("POST", "/api/users", {"username": "bob", "password": "bobs-password-1"},
                                   headers=headers)
    assert status == 201, bob
    admin_key, admin_record = await gateway_key(proxy, headers, "admin-laptop")
    bob_key, bob_record = await gateway_key(proxy, headers, "bob-ci", user_id=bob["id"])
    return proxy, headers, (admin_key, admin_record), (bob_key, bob_record, bob)


def ollama_counts(response) -> tuple[int, int]:
    body = json.loads(response.body)
    return body["prompt_eval_count"], body["eval_count"]


def ollama_stream_counts(response) -> tuple[int, int]:
    last = ndjson(response.body)[-1]
    assert last["done"] is True
    return last["prompt_eval_count"], last["eval_count"]


def openai_counts(response) -> tuple[int, int | None]:
    usage = json.loads(response.body)["usage"]
    return usage["prompt_tokens"], usage.get("completion_tokens")


def openai_stream_counts(response) -> tuple[int, int]:
    events = sse(response.body)
    assert events[-1] == "[DONE]"
    usage = json.loads(events[-2])["usage"]
    return usage["prompt_tokens"], usage["completion_tokens"]


async def test_tokens_are_counted_on_every_kind_of_call_per_key_user_model_node_and_day(env):
    proxy, headers, (admin_key, admin_record), (bob_key, bob_record, bob) = await fleet_with_keys(env)
    calls = [
        # (request id, key, path, body, how to read the node's own counts from the answer)
        ("gen-once", admin_key, "/api/generate", {"model": "llama3", "prompt": "hi", "stream": False}, ollama_counts),
        ("gen-stream", admin_key, "/api/generate", {"model": "llama3", "prompt": "hello you"}, ollama_stream_counts),
        ("chat-once", bob_key, "/api/chat", {"model": "qwen2.5:7b", "messages": MESSAGES, "stream": False},
         ollama_counts),
        ("chat-stream", bob_key, "/api/chat", {"model": "qwen2.5:7b", "messages": MESSAGES}, ollama_stream_counts),
        ("v1-once", admin_key, "/v1/chat/completions", {"model": "llama3", "messages": MESSAGES}, openai_counts),
        ("v1-usage", bob_key, "/v1/chat/completions",
         {"model": "qwen2.5:7b", "messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True}},
         openai_stream_counts),
        ("v1-no-usage", bob_key, "/v1/chat/completions",
         {"model": "qwen2.5:7b", "messages": MESSAGES, "stream": True}, None),
        ("v1-text", admin_key, "/v1/completions", {"model": "llama3", "prompt": "once upon"}, openai_counts),
        ("v1-embed", admin_key, "/v1/embeddings", {"model": "llama3", "input": ["a b c", "d"]}, openai_counts),
    ]
    expected: dict[str, tuple[int | None, int | None]] = {}
    nodes: dict[str, str] = {}
    for request_id, key, path, body, read in calls:
        response = await proxy.request("POST", path, body, headers=bearer(key, request_id))
        assert response.code == 200, (request_id, response.body)
        assert response.headers["X-Request-Id"] == request_id
        nodes[request_id] = response.headers["X-Aivonx-Node"]
        expected[request_id] = read(response) if read else (None, None)
    assert expected["v1-no-usage"] == (None, None)
    assert all(v[0] and v[0] > 0 for k, v in expected.items() if k != "v1-no-usage")
    assert expected["v1-embed"][1] is None  # embeddings generate nothing

    # The Requests list: newest first, exactly the console's fields, the node's own counts.
    status, body = await proxy.json("GET", "/api/proxy/requests?limit=50", headers=headers)
    assert status == 200
    listed = body["requests"]
    assert [r["request_id"] for r in listed] == [c[0] for c in reversed(calls)]
    for record in listed:
        assert set(record) == REQUEST_FIELDS
        assert (record["tokens_in"], record["tokens_out"]) == expected[record["request_id"]], record
        assert record["node"] == nodes[record["request_id"]] and record["status"] == 200
        assert record["method"] == "POST" and record["client"] == "127.0.0.1" and record["error"] is None
        assert record["ttfb_ms"] >= 0 and record["duration_ms"] >= record["ttfb_ms"]
        assert datetime.fromisoformat(record["time"]).tzinfo is not None
    by_id = {r["request_id"]: r for r in listed}
    assert by_id["gen-once"]["user"] == "admin" and by_id["gen-once"]["key"] == "admin-laptop"
    assert by_id["chat-once"]["user"] == "bob" and by_id["chat-once"]["key"] == "bob-ci"
    assert by_id["gen-once"]["model"] == "llama3:latest" and by_id["chat-once"]["model"] == "qwen2.5:7b"

    def total(ids, index):
        return sum(expected[i][index] or 0 for i in ids)

    admin_ids = [c[0] for c in calls if c[1] == admin_key]
    bob_ids = [c[0] for c in calls if c[1] == bob_key]

    # Totals (no grouping) and each grouping.
    status, usage = await proxy.json("GET", "/api/proxy/usage", headers=headers)
    assert status == 200, usage
    assert usage["totals"] == {"requests": len(calls), "tokens_in": total(expected, 0),
                               "tokens_out": total(expected, 1), "errors": 0}
    assert usage["group_by"] is None and usage["groups"] == []

    async def groups(by: str) -> dict:
        status, answer = await proxy.json("GET", f"/api/proxy/usage?group_by={by}", headers=headers)
        assert status == 200, answer
        assert answer["totals"] == usage["totals"]
        return {g["id"]: g for g in answer["groups"]}

    by_key = await groups("key")
    assert set(by_key) == {admin_record["id"], bob_record["id"]}
    assert by_key[admin_record["id"]]["name"] == "admin-laptop"
    assert (by_key[admin_record["id"]]["requests"], by_key[admin_record["id"]]["tokens_in"],
            by_key[admin_record["id"]]["tokens_out"]) == (len(admin_ids), total(admin_ids, 0), total(admin_ids, 1))
    assert (by_key[bob_record["id"]]["requests"], by_key[bob_record["id"]]["tokens_in"],
            by_key[bob_record["id"]]["tokens_out"]) == (len(bob_ids), total(bob_ids, 0), total(bob_ids, 1))

    by_user = await groups("user")
    assert by_user[bob["id"]]["name"] == "bob" and by_user[bob["id"]]["tokens_out"] == total(bob_ids, 1)
    assert by_user[admin_record["user_id"]]["name"] == "admin"

    # Each model lives on one node here, so the model and node groupings agree.
    llama_ids = [c[0] for c in calls if c[3]["model"] == "llama3"]
    by_model = await groups("model")
    assert set(by_model) == {"llama3:latest", "qwen2.5:7b"}
    assert by_model["llama3:latest"]["tokens_in"] == total(llama_ids, 0)
    assert by_model["llama3:latest"]["tokens_out"] == total(llama_ids, 1)
    by_node = await groups("node")
    assert by_node[nodes["gen-once"]]["tokens_in"] == total(llama_ids, 0)
    assert by_node[nodes["chat-once"]]["requests"] == len(calls) - len(llama_ids)

    today = datetime.now(UTC).strftime("%Y-%m-%d")
    by_day = await groups("day")
    assert list(by_day) == [today] and by_day[today]["requests"] == len(calls)

    # Filters of the Requests list.
    status, body = await proxy.json("GET", "/api/proxy/requests?model=llama3&limit=2", headers=headers)
    assert [r["request_id"] for r in body["requests"]] == ["v1-embed", "v1-text"]
    status, body = await proxy.json("GET", f"/api/proxy/requests?node={nodes['chat-once'].upper()}",
                                    headers=headers)
    assert {r["request_id"] for r in body["requests"]} == set(bob_ids)
    status, body = await proxy.json("GET", "/api/proxy/requests?status=2xx&limit=1", headers=headers)
    assert [r["request_id"] for r in body["requests"]] == ["v1-embed"]
    status, body = await proxy.json("GET", "/api/proxy/requests?status=404", headers=headers)
    assert status == 200 and body == {"requests": []}


async def test_failures_count_as_errors_and_anonymous_traffic_has_no_user(env):
    node = await env.node()
    proxy = await env.proxy([node])
    headers = await admin(proxy)
    assert (await proxy.request("POST", "/api/generate", {"model": "llama3", "prompt": "x", "stream": False})).code \
        == 200
    missing = await proxy.request("POST", "/api/generate", {"model": "nope", "prompt": "x"})
    assert missing.code == 404
    status, usage = await proxy.json("GET", "/api/proxy/usage?group_by=user", headers=headers)
    assert usage["totals"]["requests"] == 2 and usage["totals"]["errors"] == 1
    assert [(g["id"], g["name"], g["requests"]) for g in usage["groups"]] == [(None, None, 2)]
    status, body = await proxy.json("GET", "/api/proxy/requests", headers=headers)
    failed = body["requests"][0]
    assert failed["status"] == 404 and failed["node"] is None and failed["model"] == "nope:latest"
    assert "not found" in failed["error"] and failed["user"] is None and failed["key"] is None


async def test_a_viewer_sees_totals_and_requests_but_no_groups(env):
    node = await env.node()
    proxy = await env.proxy([node])
    assert (await proxy.request("POST", "/api/generate", {"model": "llama3", "prompt": "x", "stream": False})).code \
        == 200
    headers = await viewer(proxy)
    status, usage = await proxy.json("GET", "/api/proxy/usage", headers=headers)
    assert status == 200 and usage["totals"]["requests"] == 1 and usage["groups"] == []
    for by in ("user", "key", "model", "node", "day"):
        status, body = await proxy.json("GET", f"/api/proxy/usage?group_by={by}", headers=headers)
        assert status == 403 and "admin" in body["error"], (by, body)
    status, body = await proxy.json("GET", "/api/proxy/requests", headers=headers)
    assert status == 200 and len(body["requests"]) == 1
    # Nobody logged in: nothing.
    assert (await proxy.json("GET", "/api/proxy/usage"))[0] == 401
    assert (await proxy.json("GET", "/api/proxy/requests"))[0] == 401


@pytest.mark.parametrize(("query", "parameter"), [
    ("from=yesterday", "from"),
    ("to=2025-13-01", "to"),
    ("from=nan", "from"),
    ("to=-5", "to"),
    ("from=2025-01-02&to=2025-01-01", "from"),
    ("from=1700000000&to=1700000000", "from"),
    ("group_by=team", "group_by"),
])
async def test_bad_usage_parameters_are_400_naming_the_parameter(env, query, parameter):
    proxy = await env.proxy()
    status, body = await proxy.json("GET", f"/api/proxy/usage?{query}", headers=await admin(proxy))
    assert status == 400 and parameter in body["error"] and parameter in body["fields"], body


@pytest.mark.parametrize(("query", "parameter"), [
    ("limit=0", "limit"), ("limit=1001", "limit"), ("limit=ten", "limit"), ("limit=-1", "limit"),
    ("status=99", "status"), ("status=600", "status"), ("status=ok", "status"), ("model=a:b:c", "model"),
])
async def test_bad_requests_parameters_are_400_naming_the_parameter(env, query, parameter):
    proxy = await env.proxy()
    status, body = await proxy.json("GET", f"/api/proxy/requests?{query}", headers=await admin(proxy))
    assert status == 400 and parameter in body["error"] and parameter in body["fields"], body


async def test_the_window_takes_iso_8601_or_epoch_seconds_and_defaults_to_the_last_day(env):
    proxy = await env.proxy()
    headers = await admin(proxy)
    now = time.time()
    await proxy.services.store.usage.insert_many([
        {"id": "old", "time": now - 3 * 86400, "tokens_in": 1, "tokens_out": 1, "failed": False},
        {"id": "recent", "time": now - 3600, "tokens_in": 2, "tokens_out": 3, "failed": False},
        {"id": "jan", "time": datetime(2025, 1, 15, 12, tzinfo=UTC).timestamp(), "tokens_in": 7, "tokens_out": 0,
         "failed": True},
    ])
    status, body = await proxy.json("GET", "/api/proxy/usage", headers=headers)
    assert body["totals"] == {"requests": 1, "tokens_in": 2, "tokens_out": 3, "errors": 0}
    assert datetime.fromisoformat(body["to"]).timestamp() - datetime.fromisoformat(body["from"]).timestamp() \
        == pytest.approx(86400)
    status, body = await proxy.json("GET", f"/api/proxy/usage?from={int(now - 4 * 86400)}", headers=headers)
    assert body["totals"]["requests"] == 2
    for window in ("from=2025-01-15&to=2025-01-16", "from=2025-01-15T00:00:00Z&to=2025-01-16T00:00:00Z",
                   "from=2025-01-15T01:00:00+01:00&to=1736985600", "from=2025-01-15T12:00:00.000%2B00:00&to=2025-02"
                   "-01"):
        status, body = await proxy.json("GET", f"/api/proxy/usage?{window}", headers=headers)
        assert status == 200 and body["totals"] == {"requests": 1, "tokens_in": 7, "tokens_out": 0, "errors": 1}, \
            (window, body)
    # The end is exclusive.
    status, body = await proxy.json("GET", "/api/proxy/usage?from=2025-01-01&to=2025-01-15T12:00:00Z",
                                    headers=headers)
    assert body["totals"]["requests"] == 0


async def test_the_request_id_links_the_response_the_log_line_and_the_usage_record_with_the_routing_why(
        env, caplog):
    sick, healthy = await env.node(), await env.node()
    proxy = await env.proxy([sick, healthy])
    sick.state.set_fault("error_500", routes=["/api/generate"])
    caplog.set_level(logging.INFO, logger="aivonx.proxy")
    retried = None
    for n in range(4):  # ties rotate: one of these tries the sick node first
        response = await proxy.request("POST", "/api/generate", {"model": "llama3", "prompt": "x", "stream": False},
                                       headers={"X-Request-Id": f"trace-{n}"})
        assert response.code == 200 and response.headers["X-Request-Id"] == f"trace-{n}"
        line = next(r for r in caplog.records if r.name == "aivonx.proxy" and r.fields["request_id"] == f"trace-{n}")
        record = next(r for r in proxy.services.usage.recent if r["request_id"] == f"trace-{n}")
        for name in ("node", "status", "model", "strategy", "candidates", "loaded", "attempts", "retried",
                     "retried_on", "tokens_in", "tokens_out", "ttfb_ms", "duration_ms"):
            assert line.fields[name] == record[name], name
        assert record["node"] == response.headers["X-Aivonx-Node"]
        assert record["strategy"] == "least_active" and record["candidates"] in (1, 2)  # the sick one leaves
        if record["retried"]:
            retried = record
    assert retried is not None and retried["attempts"] == 2 and retried["status"] == 200
    assert retried["candidates"] == 2
    sick_name = next(n.name for n in proxy.fleet.nodes.values() if n.url == sick.url)
    assert retried["retried_on"] == [sick_name]
    # The same record reaches the store.
    await proxy.services.usage.flush()
    stored = {r["request_id"]: r for r in await proxy.services.store.usage.latest(10)}
    assert stored[retried["request_id"]]["retried_on"] == [sick_name]
    assert stored[retried["request_id"]]["attempts"] == 2


# ------------------------------------------------------------------ per-key limits


async def test_a_key_over_its_requests_per_minute_gets_429_with_retry_after(env):
    node = await env.node()
    proxy = await env.proxy([node], config={"require_api_key": True})
    headers = await admin(proxy)
    limited, record = await gateway_key(proxy, headers, "tight", rpm=2)
    free, _ = await gateway_key(proxy, headers, "free")
    assert record["rpm"] == 2 and record["tpd"] is None
    for _ in range(2):
        assert (await proxy.request("GET", "/api/tags", headers=bearer(limited))).code == 200
    response = await proxy.request("POST", "/api/generate", {"model": "llama3", "prompt": "x"},
                                   headers=bearer(limited))
    assert response.code == 429
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    body = json.loads(response.body)
    assert "2 requests per minute" in body["error"] and body["limit"] == "rpm"
    # OpenAI's shape on /v1, so the SDKs raise RateLimitError.
    response = await proxy.request("GET", "/v1/models", headers=bearer(limited))
    assert response.code == 429 and "Retry-After" in response.headers
    assert json.loads(response.body)["error"]["type"] == "rate_limit_error"
    # Other keys are not affected.
    assert (await proxy.request("GET", "/api/tags", headers=bearer(free))).code == 200
    # Lifting the limit applies at once.
    status, changed = await proxy.json("PATCH", f"/api/proxy/keys/{record['id']}", {"rpm": None}, headers=headers)
    assert status == 200 and changed["rpm"] is None
    assert (await proxy.request("GET", "/api/tags", headers=bearer(limited))).code == 200


async def test_a_key_over_its_tokens_per_day_gets_429_until_midnight_utc(env):
    node = await env.node()
    proxy = await env.proxy([node], config={"require_api_key": True})
    headers = await admin(proxy)
    secret, record = await gateway_key(proxy, headers, "metered", tpd=10)
    first = await proxy.request("POST", "/api/generate", {"model": "llama3", "prompt": "hello", "stream": False},
                                headers=bearer(secret))
    assert first.code == 200
    used = sum(ollama_counts(first))
    assert used > 10  # the request that crosses the limit finishes
    response = await proxy.request("POST", "/v1/chat/completions", {"model": "llama3", "messages": MESSAGES},
                                   headers=bearer(secret))
    assert response.code == 429
    now = time.time()
    assert abs(int(response.headers["Retry-After"]) - (86400 - now % 86400)) <= 2
    error = json.loads(response.body)["error"]
    assert error["type"] == "rate_limit_error" and f"used {used} of its 10 tokens per day" in error["message"]
    status, changed = await proxy.json("PATCH", f"/api/proxy/keys/{record['id']}", {"tpd": used + 1000},
                                       headers=headers)
    assert status == 200 and changed["tpd"] == used + 1000
    response = await proxy.request("POST", "/api/generate", {"model": "llama3", "prompt": "x", "stream": False},
                                   headers=bearer(secret))
    assert response.code == 200


async def test_the_tokens_per_day_count_survives_a_restart(env, tmp_path):
    node = await env.node()
    data_dir = tmp_path / "shared-data"
    proxy = await env.proxy([node], config={"require_api_key": True}, data_dir=data_dir)
    headers = await admin(proxy)
    secret, record = await gateway_key(proxy, headers, "metered", tpd=10)
    assert (await proxy.request("POST", "/api/generate", {"model": "llama3", "prompt": "hi", "stream": False},
                                headers=bearer(secret))).code == 200
    await _restart(env, proxy)
    again = await env.proxy([node], data_dir=data_dir)
    assert again.services.limits.tokens_today(record["id"]) > 10
    assert (await again.request("GET", "/api/tags", headers=bearer(secret))).code == 429


@pytest.mark.parametrize(("body", "field"), [
    ({"kind": "gateway", "rpm": 0}, "rpm"),
    ({"kind": "gateway", "rpm": 1.5}, "rpm"),
    ({"kind": "gateway", "rpm": "60"}, "rpm"),
    ({"kind": "gateway", "rpm": True}, "rpm"),
    ({"kind": "gateway", "tpd": -1}, "tpd"),
    ({"kind": "gateway", "tpd": 10**13}, "tpd"),
    ({"kind": "api", "rpm": 10}, "rpm"),
])
async def test_invalid_key_limits_are_400(env, body, field):
    proxy = await env.proxy()
    status, answer = await proxy.json("POST", "/api/proxy/keys", {"name": "k", **body}, headers=await admin(proxy))
    assert status == 400 and field in answer["fields"], answer


async def test_patching_a_key(env):
    proxy = await env.proxy()
    headers = await admin(proxy)
    _, record = await gateway_key(proxy, headers, "k", rpm=5, tpd=1000)
    key_url = f"/api/proxy/keys/{record['id']}"
    status, body = await proxy.json("PATCH", key_url, {"name": " renamed ", "tpd": None}, headers=headers)
    assert status == 200 and (body["name"], body["rpm"], body["tpd"]) == ("renamed", 5, None)
    for bad in ({"kind": "api"}, {"rpm": 0}, {"name": ""}, {"secret": "x"}):
        status, body = await proxy.json("PATCH", key_url, bad, headers=headers)
        assert status == 400, (bad, body)
    assert (await proxy.json("PATCH", "/api/proxy/keys/nope", {"rpm": 1}, headers=headers))[0] == 404
    assert (await proxy.json("PATCH", key_url, {"rpm": 1}, headers=await viewer(proxy)))[0] == 403
    _, api_record = await gateway_key(proxy, headers, "script", kind="api")
    status, body = await proxy.json("PATCH", f"/api/proxy/keys/{api_record['id']}", {"rpm": 3}, headers=headers)
    assert status == 400 and "gateway" in body["fields"]["rpm"]


# ------------------------------------------------------------------ retention, restart, outages


async def test_old_records_are_pruned_by_the_configured_retention(env):
    proxy = await env.proxy(config={"usage_retention_days": 30})
    headers = await admin(proxy)
    now = time.time()
    await proxy.services.store.usage.insert_many([
        {"id": "ancient", "time": now - 40 * 86400, "tokens_in": 1, "failed": False},
        {"id": "recent", "time": now - 20 * 86400, "tokens_in": 1, "failed": False},
    ])
    window = f"from={int(now - 50 * 86400)}"
    assert (await proxy.json("GET", f"/api/proxy/usage?{window}", headers=headers))[1]["totals"]["requests"] == 2
    assert await proxy.services.usage.prune() == 1
    assert (await proxy.json("GET", f"/api/proxy/usage?{window}", headers=headers))[1]["totals"]["requests"] == 1
    # A shorter retention applies at once, through the running pruner.
    status, _ = await proxy.json("PATCH", "/api/proxy/config", {"usage_retention_days": 10}, headers=headers)
    assert status == 200

    async def gone() -> bool:
        status, body = await proxy.json("GET", f"/api/proxy/usage?{window}", headers=headers)
        return body["totals"]["requests"] == 0

    await eventually(gone)
    for bad in (0, 3651, "30", None):
        status, body = await proxy.json("PATCH", "/api/proxy/config", {"usage_retention_days": bad}, headers=headers)
        assert status == 400 and "usage_retention_days" in body["fields"]


async def _restart(env, proxy) -> None:
    proxy.server.stop()
    await proxy.server.close_all_connections()
    await stop_services(proxy.services)
    env.proxies.remove(proxy)


async def test_usage_survives_a_restart_of_the_embedded_store(env, tmp_path):
    node = await env.node()
    data_dir = tmp_path / "kept"
    proxy = await env.proxy([node], data_dir=data_dir)
    for n in range(3):
        response = await proxy.request("POST", "/api/generate", {"model": "llama3", "prompt": "x", "stream": False},
                                       headers={"X-Request-Id": f"before-{n}"})
        assert response.code == 200
    await _restart(env, proxy)  # the pending records are written at shutdown

    again = await env.proxy([node], data_dir=data_dir)
    headers = await admin(again)
    status, usage = await again.json("GET", "/api/proxy/usage", headers=headers)
    assert usage["totals"]["requests"] == 3 and usage["totals"]["tokens_out"] > 0
    # The Requests list starts from the stored records.
    status, body = await again.json("GET", "/api/proxy/requests", headers=headers)
    assert [r["request_id"] for r in body["requests"]] == ["before-2", "before-1", "before-0"]
    assert (data_dir / "usage.jsonl").exists() and "before-0" not in (data_dir / "store.json").read_text()


async def test_a_store_outage_during_flush_loses_nothing(env, monkeypatch):
    monkeypatch.setattr(UsageRecorder, "INTERVAL", 0.02)
    monkeypatch.setattr(UsageRecorder, "MAX_BACKOFF", 0.05)
    node = await env.node()
    proxy = await env.proxy([node])
    recorder, repo = proxy.services.usage, proxy.services.store.usage
    real_insert = repo.insert_many
    attempts = 0

    async def down(records):
        nonlocal attempts
        attempts += 1
        raise StoreUnavailable("the database is unavailable (ServerSelectionTimeoutError)")

    monkeypatch.setattr(repo, "insert_many", down)
    ids = [f"during-{n}" for n in range(5)]
    for request_id in ids:  # the clients never wait for the store
        response = await proxy.request("POST", "/api/generate", {"model": "llama3", "prompt": "x", "stream": False},
                                       headers={"X-Request-Id": request_id})
        assert response.code == 200
    await eventually(lambda: attempts >= 3)
    assert len(recorder.pending) == 5 and recorder.flush_failures >= 3 and recorder.dropped == 0

    monkeypatch.setattr(repo, "insert_many", real_insert)
    await eventually(lambda: recorder.written == 5)  # retried on its own, with backoff
    assert not recorder.pending and recorder.dropped == 0
    stored = [r["request_id"] for r in await repo.latest(10)]
    assert sorted(stored) == sorted(ids)


async def test_a_full_buffer_drops_the_oldest_and_counts_them(env, monkeypatch):
    monkeypatch.setattr(UsageRecorder, "CAPACITY", 3)
    node = await env.node()
    proxy = await env.proxy([node])
    recorder, repo = proxy.services.usage, proxy.services.store.usage

    async def down(records):
        raise StoreUnavailable("down")

    real_insert = repo.insert_many
    monkeypatch.setattr(repo, "insert_many", down)
    for n in range(5):
        await proxy.request("POST", "/api/generate", {"model": "llama3", "prompt": "x", "stream": False},
                            headers={"X-Request-Id": f"r{n}"})
    assert recorder.dropped == 2 and [r["request_id"] for r in recorder.pending] == ["r2", "r3", "r4"]
    monkeypatch.setattr(repo, "insert_many", real_insert)
    await recorder.flush()
    assert sorted(r["request_id"] for r in await repo.latest(10)) == ["r2", "r3", "r4"]
    # The Requests list (memory) still shows all five.
    assert [r["request_id"] for r in recorder.latest(10)] == ["r4", "r3", "r2", "r1", "r0"]
