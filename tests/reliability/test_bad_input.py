"""Bad input on every kind of route: always a clear 4xx JSON error, never a 500 or a traceback.

One table per surface (the Ollama gateway, ``/v1``, management); every row is checked and all
failures are reported together. Unknown fields are ignored on the gateway (Ollama ignores them,
and clients send fields newer than the proxy) and refused on management writes (a typo must not
be silently dropped from a setting), as the documented schemas say.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from app.api import docs
from app.server import build_application
from tests.api.mgmt import admin
from tests.reliability.helpers import until, waiting_handlers

DEEP = 200  # deeper than MAX_JSON_DEPTH (64)
NESTED = ('{"model": "llama3", "prompt": "x", "options": ' + '{"a": ' * DEEP + "1" + "}" * DEEP + "}").encode()
VERY_DEEP = ('{"model": "llama3", "x": ' + "[" * 100_000 + "]" * 100_000 + "}").encode()  # RecursionError depth

Row = tuple[str, str, Any, int]  # method, path, body (dict/list → JSON, bytes → raw, None → none), status


def _error_text(body: Any) -> str | None:
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):  # OpenAI's shape
            error = error.get("message")
        return error if isinstance(error, str) and error else None
    return None


async def _check(proxy, rows: list[Row], headers: dict[str, str] | None = None, *,
                 openai: bool = False) -> None:
    failures = []
    for method, path, body, expected in rows:
        raw = body if isinstance(body, bytes) else None
        response = await proxy.request(method, path, None if raw is not None else body, raw=raw,
                                       headers=dict(headers or {}))
        text = response.body.decode("utf-8", "replace") if response.body else ""
        try:
            parsed = json.loads(text) if text else None
        except ValueError:
            parsed = None
        problems = []
        if response.code != expected:
            problems.append(f"status {response.code} (expected {expected})")
        if expected == 405 and not response.headers.get("Allow"):
            problems.append("405 without Allow")
        if expected >= 400 and method != "HEAD":
            if not response.headers.get("Content-Type", "").startswith("application/json"):
                problems.append(f"content type {response.headers.get('Content-Type')}")
            if _error_text(parsed) is None:
                problems.append("no error message")
            if openai and not isinstance((parsed or {}).get("error"), dict):
                problems.append("not in OpenAI's error shape")
            if "Traceback" in text or 'File "' in text:
                problems.append("a traceback")
        if problems:
            shown = body[:60] if isinstance(body, bytes) else json.dumps(body)[:60]
            failures.append(f"{method} {path} {shown}: {', '.join(problems)}: {text[:160]}")
    assert not failures, "\n".join(failures)
    assert proxy.in_flight() == 0 and proxy.fleet.total_queued() == 0


async def test_gateway_bad_input(env):
    node = await env.node(["llama3:latest"])
    proxy = await env.proxy([node])
    gen = "/api/generate"
    rows: list[Row] = [
        ("POST", gen, b"{not json", 400),
        ("POST", gen, b"", 400),
        ("POST", gen, b"[1, 2]", 400),
        ("POST", gen, b'"llama3"', 400),
        ("POST", gen, b"null", 400),
        ("POST", gen, b'\xff\xfe{"model": "llama3"}', 400),
        ("POST", gen, b'{"model": "llama3", "prompt": "x"', 400),
        ("POST", gen, {"prompt": "x"}, 400),
        ("POST", gen, {"model": None, "prompt": "x"}, 400),
        ("POST", gen, {"model": 5}, 400),
        ("POST", gen, {"model": ["llama3"]}, 400),
        ("POST", gen, {"model": {"name": "llama3"}}, 400),
        ("POST", gen, {"model": "http://evil.example/x"}, 400),
        ("POST", gen, {"model": "../../etc/passwd"}, 400),
        ("POST", gen, {"model": "llama3:../../x"}, 400),
        ("POST", gen, {"model": "llama3\r\nX-Injected: 1"}, 400),
        ("POST", gen, {"model": "a" * 5000}, 400),
        ("POST", gen, {"model": "llama3", "stream": "yes"}, 400),
        ("POST", gen, {"model": "llama3", "stream": 1}, 400),
        ("POST", gen, NESTED, 400),
        ("POST", gen, VERY_DEEP, 400),
        ("POST", gen, {"model": "nope:latest", "prompt": "x"}, 404),
        ("POST", gen, {"model": "llama3", "prompt": "x", "stream": False, "unknown_field": [1, {"a": 2}]}, 200),
        ("POST", "/api/chat", {"messages": []}, 400),
        ("POST", "/api/chat", {"model": "llama3", "messages": [], "stream": "no"}, 400),
        ("POST", "/api/show", {}, 400),
        ("POST", "/api/show", {"name": 12}, 400),
        ("POST", "/api/embed", b"{", 400),
        ("POST", "/api/embed", {"input": "x"}, 400),
        ("POST", "/api/embeddings", {"model": "http://x/y", "prompt": "x"}, 400),
        ("POST", "/api/pull", {}, 400),
        ("POST", "/api/pull", {"model": "http://evil.example/x"}, 400),
        ("POST", "/api/pull", {"model": "llama3", "stream": "x"}, 400),
        ("POST", "/api/push", {}, 400),
        ("DELETE", "/api/delete", {}, 400),
        ("DELETE", "/api/delete", {"model": 5}, 400),
        ("POST", "/api/copy", {"source": "llama3"}, 400),
        ("POST", "/api/copy", {"source": "llama3", "destination": "../x"}, 400),
        ("POST", "/api/copy", b"]", 400),
        ("HEAD", "/api/blobs/not-a-digest", None, 400),
        ("HEAD", "/api/blobs/sha256:..%2F..%2Fapi%2Ftags", None, 400),
        # Wrong methods on gateway routes.
        ("GET", gen, None, 405),
        ("PUT", "/api/chat", {"model": "llama3"}, 405),
        ("DELETE", "/api/tags", None, 405),
        ("POST", "/api/version", {}, 405),
        ("GET", "/api/pull", None, 405),
        ("POST", "/api/delete", {"model": "llama3"}, 405),
        # Unknown paths and query parameters.
        ("GET", "/api/nope", None, 404),
        ("GET", "/api/tags?limit=-1&x=%00", None, 200),
    ]
    await _check(proxy, rows)


async def test_gateway_bodies_over_the_limit_are_413_before_they_are_read(env):
    node = await env.node(["llama3:latest"])
    proxy = await env.proxy([node], config={"max_body_size": 4096})
    big = {"model": "llama3", "prompt": "x" * 10_000}
    await _check(proxy, [("POST", "/api/generate", big, 413), ("POST", "/api/chat", big, 413)])
    await _check(proxy, [("POST", "/v1/chat/completions", big, 413)], openai=True)
    # Without a Content-Length (chunked), the limit holds as the body streams in.
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"POST /api/generate HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    payload = json.dumps(big).encode()
    for i in range(0, len(payload), 1000):
        piece = payload[i:i + 1000]
        writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
    writer.write(b"0\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), head
    assert b"application/json" in head and b"limit" in await reader.read()
    writer.close()
    assert node.state.stats()["requests"].get("/api/generate", 0) == 0
    await until(lambda: waiting_handlers() == 0, what="the refused request's handler is done")


async def test_openai_bad_input_answers_in_openais_error_shape(env):
    node = await env.node(["llama3:latest"])
    proxy = await env.proxy([node])
    chat = "/v1/chat/completions"
    rows: list[Row] = [
        ("POST", chat, b"{not json", 400),
        ("POST", chat, b"[]", 400),
        ("POST", chat, {}, 400),
        ("POST", chat, {"model": 5, "messages": []}, 400),
        ("POST", chat, {"model": "http://evil/x", "messages": []}, 400),
        ("POST", chat, {"model": "llama3", "messages": [], "stream": "true"}, 400),
        ("POST", chat, NESTED, 400),
        ("POST", chat, {"model": "nope", "messages": []}, 404),
        ("POST", "/v1/completions", {"prompt": "x"}, 400),
        ("POST", "/v1/embeddings", {"model": ["x"], "input": "x"}, 400),
        ("GET", "/v1/models/nope", None, 404),
        ("GET", "/v1/models/..%2F..%2Fapi%2Ftags", None, 404),
        ("GET", chat, None, 405),
        ("DELETE", "/v1/models", None, 405),
    ]
    await _check(proxy, rows, openai=True)
    ok = await proxy.request("POST", chat, {"model": "llama3", "messages": [{"role": "user", "content": "hi"}],
                                            "unknown_field": {"x": 1}})
    assert ok.code == 200


async def test_management_bad_input(env):
    node = await env.node(["llama3:latest"])
    proxy = await env.proxy([node])
    h = await admin(proxy)
    node_id = next(iter(proxy.fleet.nodes))
    one = f"/api/proxy/nodes/{node_id}"
    nodes = "/api/proxy/nodes"
    rows: list[Row] = [
        # nodes: bodies, addresses, ports, unknown fields
        ("POST", nodes, b"{not json", 400),
        ("POST", nodes, b"[]", 400),
        ("POST", nodes, {}, 400),
        ("POST", nodes, {"url": 5}, 400),
        ("POST", nodes, {"url": "ftp://10.0.0.5:21"}, 400),
        ("POST", nodes, {"url": "http://user:secret@10.0.0.5"}, 400),
        ("POST", nodes, {"url": "http://10.0.0.5:11434/api"}, 400),
        ("POST", nodes, {"url": "http://10.0.0.5:0"}, 400),
        ("POST", nodes, {"url": "http://10.0.0.5:65536"}, 400),
        ("POST", nodes, {"url": "http://10.0.0.5:-1"}, 400),
        ("POST", nodes, {"url": "http://evil host/"}, 400),
        ("POST", nodes, {"url": "http://[::1"}, 400),
        ("POST", nodes, {"url": "x" * 1000}, 400),
        ("POST", nodes, {"address": "10.0.0.5", "port": -1}, 400),
        ("POST", nodes, {"address": "10.0.0.5", "port": 0}, 400),
        ("POST", nodes, {"address": "10.0.0.5", "port": 65536}, 400),
        ("POST", nodes, {"address": "10.0.0.5", "port": 10**30}, 400),
        ("POST", nodes, {"address": "10.0.0.5", "port": 1e300}, 400),
        ("POST", nodes, {"address": "10.0.0.5", "port": 11434.5}, 400),
        ("POST", nodes, {"address": "10.0.0.5", "port": True}, 400),
        ("POST", nodes, {"address": "10.0.0.5", "port": "80; rm -rf"}, 400),
        ("POST", nodes, {"address": "../../etc", "port": 80}, 400),
        ("POST", nodes, {"address": "a" * 300}, 400),
        ("POST", nodes, {"address": "10.0.0.5", "scheme": "file"}, 400),
        ("POST", nodes, {"url": "http://10.0.0.5", "name": "<script>alert(1)</script>"}, 400),
        ("POST", nodes, {"url": "http://10.0.0.5", "max_concurrency": 0}, 400),
        ("POST", nodes, {"url": "http://10.0.0.5", "max_concurrency": "many"}, 400),
        ("POST", nodes, {"url": "http://10.0.0.5", "headers": {"Host": "evil"}}, 400),
        ("POST", nodes, {"url": "http://10.0.0.5", "headers": {"X-Key": 5}}, 400),
        ("POST", nodes, {"url": "http://10.0.0.5", "headers": {"Bad Name": "x"}}, 400),
        ("POST", nodes, {"url": "http://10.0.0.5", "headers": {"X-Key": "a\r\nInjected: 1"}}, 400),
        ("POST", nodes, {"url": "http://10.0.0.5", "labels": ["gpu"]}, 400),
        ("POST", nodes, {"url": "http://10.0.0.5", "enabled": "yes"}, 400),
        ("POST", nodes, {"url": "http://10.0.0.5", "unknown_field": 1}, 400),
        ("PATCH", one, {"port": -5}, 400),
        ("PATCH", one, {"url": "gopher://x"}, 400),
        ("PATCH", one, b"nope", 400),
        ("PUT", one, {"unknown_field": 1, "url": "http://10.0.0.6"}, 400),
        ("GET", "/api/proxy/nodes/does-not-exist", None, 404),
        ("DELETE", "/api/proxy/nodes/does-not-exist?force=maybe", None, 404),
        ("POST", "/api/proxy/nodes/does-not-exist/check", None, 404),
        # config: types, ranges, non-finite numbers, unknown settings
        ("PATCH", "/api/proxy/config", {"fall": "x"}, 400),
        ("PATCH", "/api/proxy/config", {"fall": 2.5}, 400),
        ("PATCH", "/api/proxy/config", {"health_interval": -1}, 400),
        ("PATCH", "/api/proxy/config", b'{"health_interval": NaN}', 400),
        ("PATCH", "/api/proxy/config", b'{"idle_timeout": Infinity}', 400),
        ("PATCH", "/api/proxy/config", {"max_body_size": 10**20}, 400),
        ("PATCH", "/api/proxy/config", {"strategy": "fastest"}, 400),
        ("PATCH", "/api/proxy/config", {"cors_origins": "*"}, 400),
        ("PATCH", "/api/proxy/config", {"cors_origins": ["javascript:alert(1)"]}, 400),
        ("PATCH", "/api/proxy/config", {"pull_target": "no-such-node"}, 400),
        ("PATCH", "/api/proxy/config", {"unknown_setting": 1}, 400),
        ("PUT", "/api/proxy/config", [], 400),
        # users and keys
        ("POST", "/api/users", {"username": 5, "password": "long-enough-pass"}, 400),
        ("POST", "/api/users", {"username": "x y", "password": "long-enough-pass"}, 400),
        ("POST", "/api/users", {"username": "bob", "password": "short"}, 400),
        ("POST", "/api/users", {"username": "bob", "password": "p" * 100}, 400),
        ("POST", "/api/users", {"username": "bob", "password": "long-enough-pass", "role": "root"}, 400),
        ("POST", "/api/users", {"username": "bob", "password": "long-enough-pass", "unknown_field": 1}, 400),
        ("PATCH", "/api/users/does-not-exist", {"role": "admin"}, 404),
        ("POST", "/api/proxy/keys", {"name": ""}, 400),
        ("POST", "/api/proxy/keys", {"name": "ci", "kind": "root"}, 400),
        ("POST", "/api/proxy/keys", {"name": "ci", "user_id": "nobody"}, 400),
        ("GET", "/api/proxy/keys?kind=bogus", None, 400),
        ("DELETE", "/api/proxy/keys/does-not-exist", None, 404),
        # auth
        ("POST", "/api/auth/login", {"username": "admin"}, 400),
        ("POST", "/api/auth/login", {"username": ["admin"], "password": "x"}, 400),
        ("POST", "/api/auth/refresh", {"refresh": 5}, 400),
        ("POST", "/api/auth/refresh", {"refresh": "not.a.jwt"}, 401),
        ("POST", "/api/auth/logout", {"refresh": "x", "unknown_field": 1}, 400),
        ("POST", "/api/auth/password", {"new_password": "x"}, 400),
        # model operations
        ("POST", "/api/proxy/pull", {}, 400),
        ("POST", "/api/proxy/pull", {"model": "llama3", "node_id": "nowhere"}, 404),
        ("POST", "/api/proxy/pull", {"model": "../../x"}, 400),
        ("POST", "/api/proxy/models/delete", {"model": 7}, 400),
        # state: bad query parameters
        ("GET", "/api/proxy/active-requests?node_id=nowhere", None, 404),
        ("GET", "/api/proxy/active-requests?node_id=", None, 404),
        # sizes
        ("POST", nodes, {"url": "http://10.0.0.5", "labels": {"x": "y" * (2 * 1024 * 1024)}}, 413),
        ("PATCH", "/api/proxy/config", b'{"fall": ' + b"[" * 10_000 + b"]" * 10_000 + b"}", 400),
    ]
    config = proxy.fleet.config
    await _check(proxy, rows, h)
    assert set(proxy.fleet.nodes) == {node_id} and proxy.fleet.config == config


async def test_every_route_answers_a_method_it_lacks_with_405_json(env):
    proxy = await env.proxy()
    h = await admin(proxy)
    app = build_application(proxy.services)
    rows: list[Row] = []
    for matcher, handler in docs.handler_rules(app):
        implemented = {m.upper() for m in docs.implemented_methods(handler)}
        path = matcher.reverse(*(["x"] * matcher.regex.groups)).replace("/docs-assets/x/", "/docs-assets/redoc/")
        if path.startswith("/ui"):
            continue  # the console's pages: see test_console_errors below
        for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
            if method not in implemented:
                rows.append((method, path, {} if method in ("POST", "PUT", "PATCH") else None, 405))
    assert len(rows) > 50
    await _check(proxy, [r for r in rows if not r[1].startswith("/v1/")], h)
    await _check(proxy, [r for r in rows if r[1].startswith("/v1/")], h, openai=True)


async def test_every_route_answers_a_cors_preflight_without_a_500(env):
    """Found by schemathesis: OPTIONS on a route with named path groups (``/api/proxy/nodes/{node_id}``)
    was a 500, because the preflight handler took no keyword arguments."""
    proxy = await env.proxy(config={"cors_origins": ["https://console.example"]})
    failures = []
    for matcher, _handler in docs.handler_rules(build_application(proxy.services)):
        path = matcher.reverse(*(["x"] * matcher.regex.groups)).replace("/docs-assets/x/", "/docs-assets/redoc/")
        if path.startswith("/ui"):
            continue
        for origin, expected in ((None, 204), ("https://console.example", 204), ("https://evil.example", 403)):
            headers = {"Access-Control-Request-Method": "GET"}
            if origin:
                headers["Origin"] = origin
            response = await proxy.request("OPTIONS", path, headers=headers)
            if response.code != expected or (expected == 403 and b'"error"' not in response.body):
                failures.append(f"OPTIONS {path} from {origin}: {response.code} {response.body[:100]!r}")
    assert not failures, "\n".join(failures)
