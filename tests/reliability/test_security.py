"""Security sweeps over the whole route table, adding to tests/api/test_auth.py (single routes):

* every management route and method: anonymous → 401, a viewer on an admin operation → 403,
  a cookie session without (or with a forged) XSRF token on an unsafe method → 403, and
  forged tokens (expired, alg none, wrong secret, tampered) → 401 — everywhere, not on /me only;
* passwords are stored only as bcrypt hashes, API keys only as hashes (also on disk);
* nothing secret leaks: after exercising many routes (successes and failures, a node with an
  outbound header, a node going down), no response and no line of any log file holds a password,
  a hash, a token, a key, the JWT secret or the node's header value;
* node addresses: no request parameter (model names, node ids, digests, Host games, absolute
  request targets) makes the proxy contact anything but its registered nodes, nor a path
  outside Ollama's API on them.

Not here: the client's Authorization/Cookie/Host never reaching a node (tests/api/test_gateway.py),
login throttling (test_auth.py), CORS (test_cors.py), stored XSS (the console's browser tests).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import time
from pathlib import Path

import bcrypt
import jwt

from app.api import docs
from app.api.base import ManagementHandler
from app.api.users import AdminOnly as UsersAdminOnly
from app.fleet.upstream import UpstreamClient
from app.logs import setup_logging, stop_logging
from app.server import build_application
from tests.api.mgmt import VIEWER_PASSWORD, admin, viewer
from tests.conftest import ADMIN_PASSWORD, JWT_SECRET

UNSAFE = ("POST", "PUT", "PATCH", "DELETE")


def _management_operations(proxy) -> list[tuple[str, str, type]]:
    """(method, concrete path, handler) for every management route and method."""
    operations = []
    for matcher, handler in docs.handler_rules(build_application(proxy.services)):
        if not issubclass(handler, ManagementHandler):
            continue
        path = matcher.reverse(*(["x"] * matcher.regex.groups))
        for method in docs.implemented_methods(handler):
            if method.upper() not in ("OPTIONS", "HEAD"):
                operations.append((method.upper(), path, handler))
    return operations


def _admin_only(method: str, handler: type) -> bool:
    if handler.__name__ == "PasswordHandler":
        return False  # everyone may change their own password
    return method in UNSAFE or any(cls.__name__ == "AdminOnly" for cls in handler.__mro__) \
        or issubclass(handler, UsersAdminOnly)


async def _session(proxy, username="admin", password=ADMIN_PASSWORD) -> tuple[dict[str, str], str]:
    response = await proxy.request("POST", "/api/auth/login",
                                   {"username": username, "password": password, "session": True})
    assert response.code == 200
    cookies = {line.split("=", 1)[0]: line.split("=", 1)[1].split(";", 1)[0]
               for line in response.headers.get_list("Set-Cookie")}
    header = {"Cookie": f"aivonx_session={cookies['aivonx_session']}; aivonx_xsrf={cookies['aivonx_xsrf']}"}
    return header, cookies["aivonx_xsrf"]


async def test_every_management_operation_refuses_missing_weak_and_forged_credentials(env):
    proxy = await env.proxy()
    h = await admin(proxy)
    v = await viewer(proxy)
    cookie, xsrf = await _session(proxy)
    user_id = (await proxy.json("GET", "/api/auth/me", headers=h))[1]["id"]
    now = int(time.time())
    claims = {"iss": "aivonx-proxy", "sub": user_id, "typ": "access", "jti": "forged", "iat": now,
              "exp": now + 600, "gen": 0}
    head, payload, signature = h["Authorization"].removeprefix("Bearer ").split(".")
    forged = {
        "expired": jwt.encode({**claims, "iat": now - 7200, "exp": now - 3600}, JWT_SECRET, algorithm="HS256"),
        "alg none": jwt.encode(claims, None, algorithm="none"),
        "wrong secret": jwt.encode(claims, "another-secret-that-is-long-enough-for-hs256-x", algorithm="HS256"),
        "tampered": f"{head}.{payload}.{signature[::-1]}",
    }
    operations = _management_operations(proxy)
    assert len(operations) >= 25
    failures = []

    async def expect(method, path, headers, wanted, why):
        body = {} if method in ("POST", "PUT", "PATCH") else None
        response = await proxy.request(method, path, body, headers=headers)
        text = response.body.decode(errors="replace")
        ok = response.code in wanted and text.startswith("{") and '"error"' in text
        if not ok:
            failures.append(f"{why}: {method} {path} → {response.code} {text[:120]}")

    for method, path, handler in operations:
        await expect(method, path, {}, {401}, "anonymous")
        for name, token in forged.items():
            await expect(method, path, {"Authorization": f"Bearer {token}"}, {401}, name)
        if _admin_only(method, handler):
            await expect(method, path, v, {403}, "viewer")
        if method in UNSAFE:
            await expect(method, path, cookie, {403}, "cookie session without XSRF")
            await expect(method, path, {**cookie, "X-XSRFToken": xsrf[::-1]}, {403}, "forged XSRF")
    assert not failures, "\n".join(failures)
    # The same credentials do work (so the refusals above are about the credentials).
    assert (await proxy.json("GET", "/api/proxy/config", headers=v))[0] == 200
    assert (await proxy.json("PATCH", "/api/proxy/config", {"fall": 4}, headers={**cookie, "X-XSRFToken": xsrf}))[0] \
        == 200


async def test_refresh_tokens_that_must_not_work(env):
    proxy = await env.proxy()
    tokens = (await proxy.json("POST", "/api/auth/login", {"username": "admin", "password": ADMIN_PASSWORD}))[1]
    claims = jwt.decode(tokens["refresh"], JWT_SECRET, algorithms=["HS256"])
    now = int(time.time())
    cases = {
        "expired": jwt.encode({**claims, "iat": now - 30 * 86400, "exp": now - 86400}, JWT_SECRET, algorithm="HS256"),
        "alg none": jwt.encode(claims, None, algorithm="none"),
        "wrong secret": jwt.encode(claims, "another-secret-that-is-long-enough-for-hs256-x", algorithm="HS256"),
        "an access token": tokens["access"],
        "tampered": tokens["refresh"][:-3] + ("AAA" if not tokens["refresh"].endswith("AAA") else "BBB"),
    }
    for name, token in cases.items():
        status, body = await proxy.json("POST", "/api/auth/refresh", {"refresh": token})
        assert status == 401 and body["error"], (name, status, body)
    assert (await proxy.json("POST", "/api/auth/refresh", {"refresh": tokens["refresh"]}))[0] == 200
    status, _ = await proxy.json("POST", "/api/auth/refresh", {"refresh": tokens["refresh"]})
    assert status == 401  # revoked by its rotation


async def test_passwords_and_keys_are_stored_only_as_hashes_also_on_disk(env):
    proxy = await env.proxy()
    h = await admin(proxy)
    await viewer(proxy)
    status, key = await proxy.json("POST", "/api/proxy/keys", {"name": "ci", "kind": "gateway"}, headers=h)
    assert status == 201
    secret = key["secret"]
    store = proxy.services.store
    users = await store.users._col.find({}).to_list(None)
    assert {u["username"] for u in users} == {"admin", "viewer"}
    for user, password in zip(sorted(users, key=lambda u: u["username"]), (ADMIN_PASSWORD, VIEWER_PASSWORD),
                              strict=True):
        assert user["password_hash"].startswith("$2b$")
        assert bcrypt.checkpw(password.encode(), user["password_hash"].encode())
        assert password not in json.dumps(user, default=str)
    tokens = await store.tokens._col.find({}).to_list(None)
    assert [t["token_hash"] for t in tokens] == [hashlib.sha256(secret.encode()).hexdigest()]
    await store.close()  # flushes the embedded store to disk
    on_disk = (Path(proxy.services.settings.data_dir) / "store.json").read_text()
    for plain in (ADMIN_PASSWORD, VIEWER_PASSWORD, secret):
        assert plain not in on_disk
    assert "$2b$" in on_disk  # the hashes are what is kept


async def test_nothing_secret_leaks_into_responses_or_log_files(env):
    node_secret = "node-outbound-secret-5c1e"
    wrong_password = "Wrong-Secret-Password-77"
    lena_password = "Lenas-Password-Secret-99"
    node = await env.node(["llama3:latest"])
    proxy = await env.proxy()
    log_dir = Path(proxy.services.settings.log_dir)
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    setup_logging(log_dir, "DEBUG", console=False)
    # (what, headers + body, the secrets this answer may carry: a login's tokens, returned by design)
    responses: list[tuple[str, bytes, set[str]]] = []

    async def call(method, path, body=None, headers=None):
        response = await proxy.request(method, path, body, headers=headers or {})
        responses.append((f"{method} {path} {response.code}",
                          str(response.headers).encode() + b"\n" + (response.body or b""), set()))
        return response

    try:
        login = await call("POST", "/api/auth/login", {"username": "admin", "password": ADMIN_PASSWORD})
        tokens = json.loads(login.body)
        responses[-1][2].update((tokens["access"], tokens["refresh"]))
        h = {"Authorization": f"Bearer {tokens['access']}"}
        session = await call("POST", "/api/auth/login", {"username": "admin", "password": ADMIN_PASSWORD,
                                                          "session": True})
        cookie_value = next(line.split("=", 1)[1].split(";", 1)[0] for line in session.headers.get_list("Set-Cookie")
                            if line.startswith("aivonx_session="))
        responses[-1][2].add(cookie_value)
        await call("POST", "/api/auth/login", {"username": "admin", "password": wrong_password})
        await call("POST", "/api/auth/login", {"username": wrong_password, "password": wrong_password})
        await call("POST", "/api/users", {"username": "lena", "password": lena_password, "role": "viewer"}, h)
        await call("POST", "/api/users", {"username": "bad name", "password": lena_password}, h)
        status, created = await proxy.json("POST", "/api/proxy/keys", {"name": "gw", "kind": "gateway"}, headers=h)
        gateway_key = created["secret"]
        status, created = await proxy.json("POST", "/api/proxy/keys", {"name": "api", "kind": "api"}, headers=h)
        api_key = created["secret"]
        status, added = await proxy.json("POST", "/api/proxy/nodes",
                                         {"url": node.url, "headers": {"X-Node-Token": node_secret}}, headers=h)
        assert status == 201
        await call("PATCH", "/api/proxy/config", {"require_api_key": True}, h)
        gw = {"Authorization": f"Bearer {gateway_key}"}
        await call("POST", "/api/generate", {"model": "llama3", "prompt": "x"}, gw)
        await call("POST", "/api/chat", {"model": "llama3", "messages": [], "stream": False}, gw)
        await call("POST", "/v1/chat/completions", {"model": "llama3", "messages": [{"role": "user",
                                                                                     "content": "x"}]}, gw)
        await call("GET", "/api/tags", None, {"Authorization": "Bearer avx_gw_" + "S" * 43})
        await call("GET", "/api/tags", None, {"Authorization": f"Bearer {api_key}"})  # wrong kind of key
        await call("GET", "/api/tags", None, {"Authorization": f"Bearer {tokens['access']}"})
        for path in ("/api/proxy/nodes", f"/api/proxy/nodes/{added['id']}", "/api/proxy/state",
                     "/api/proxy/active-requests", "/api/proxy/config", "/api/users", "/api/proxy/keys",
                     "/api/auth/me", "/api/proxy/health", "/api/openapi.json"):
            await call("GET", path, None, {"Authorization": f"Bearer {api_key}"})
        await call("POST", "/api/auth/refresh", {"refresh": tokens["refresh"]})
        await call("POST", "/api/auth/refresh", {"refresh": tokens["refresh"]})  # revoked now: 401
        await call("POST", "/api/auth/password", {"current_password": wrong_password, "new_password": lena_password},
                   h)
        await call("GET", "/api/auth/me", None, {"Authorization": "Bearer " + tokens["access"][:-4] + "AAAA"})
        await node.stop()  # a node failing: errors in responses and logs
        await call("POST", f"/api/proxy/nodes/{added['id']}/check", None, h)
        await call("POST", "/api/generate", {"model": "llama3", "prompt": "x"}, gw)
        await asyncio.sleep(0.2)
    finally:
        stop_logging()
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    store = proxy.services.store
    hashes = [u["password_hash"] for u in await store.users._col.find({}).to_list(None)]
    hashes += [t["token_hash"] for t in await store.tokens._col.find({}).to_list(None)]
    secrets = {ADMIN_PASSWORD, wrong_password, lena_password, JWT_SECRET, gateway_key, api_key, node_secret,
               tokens["access"], tokens["refresh"], cookie_value, *hashes}
    leaks = []
    for what, data, may_carry in responses:
        text = data.decode(errors="replace")
        for secret in secrets - may_carry:
            if secret in text:
                leaks.append(f"response {what} holds {secret[:12]}…")
        if re.search(r"\$2b\$\d\d\$", text):
            leaks.append(f"response {what} holds a bcrypt hash")
    files = [p for p in log_dir.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"app.json", "proxy.json"}
    for path in files:
        text = path.read_text(errors="replace")
        for secret in secrets:
            if secret in text:
                leaks.append(f"log {path.name} holds {secret[:12]}…")
        if re.search(r"\$2b\$\d\d\$", text):
            leaks.append(f"log {path.name} holds a bcrypt hash")
    assert not leaks, "\n".join(leaks)


class _Canary:
    """A listener no request should ever reach."""

    def __init__(self) -> None:
        self.connections = 0

    async def start(self) -> _Canary:
        async def accept(reader, writer):
            self.connections += 1
            writer.close()

        self.server = await asyncio.start_server(accept, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        self.server.close()
        await self.server.wait_closed()


OLLAMA_PATHS = {"/api/generate", "/api/chat", "/api/show", "/api/embed", "/api/embeddings", "/api/pull",
                "/api/delete", "/api/copy", "/api/push", "/api/tags", "/api/ps", "/api/version",
                "/v1/chat/completions", "/v1/completions", "/v1/embeddings"}
BLOB = re.compile(r"^/api/blobs/sha256[:-][0-9a-f]{64}$")


async def test_no_request_parameter_makes_the_proxy_contact_anything_but_its_nodes(env, monkeypatch):
    canary = await _Canary().start()
    node = await env.node(["llama3:latest"])
    proxy = await env.proxy([node])
    h = await admin(proxy)
    contacted: list[tuple[str, str, str]] = []
    exchange = UpstreamClient.exchange

    def recording(self, base_url, method, path, **kwargs):
        contacted.append((base_url, method, path))
        return exchange(self, base_url, method, path, **kwargs)

    monkeypatch.setattr(UpstreamClient, "exchange", recording)
    evil = f"127.0.0.1:{canary.port}"
    url = f"http://{evil}"
    digest = "sha256:" + "a" * 64
    try:
        calls = [
            ("POST", "/api/generate", {"model": f"{url}/x", "prompt": "x"}, {}),
            ("POST", "/api/generate", {"model": f"{evil}/library/llama3", "prompt": "x"}, {}),
            ("POST", "/api/generate", {"model": "../../../_sim/faults", "prompt": "x"}, {}),
            ("POST", "/api/generate", {"model": "llama3", "prompt": url, "images": [f"{url}/a.png"]},
             {"Host": evil, "X-Forwarded-Host": evil, "X-Forwarded-Proto": "http", "Forwarded": f"host={evil}"}),
            ("POST", "/api/chat", {"model": "llama3", "messages": [], "format": url, "stream": False}, {"Host": evil}),
            ("POST", "/api/show", {"model": "llama3", "name": url}, {}),
            ("POST", "/api/embed", {"model": url, "input": "x"}, {}),
            ("POST", "/api/pull", {"model": f"{evil}/library/llama3", "insecure": True, "stream": False}, {}),
            ("POST", "/api/pull", {"model": f"{url}/library/llama3", "insecure": True}, {}),
            ("POST", "/api/push", {"model": f"{evil}/library/llama3", "insecure": True}, {}),
            ("POST", "/api/copy", {"source": "llama3", "destination": f"{evil}/ns/copy"}, {}),
            ("DELETE", "/api/delete", {"model": f"{evil}/ns/copy"}, {}),
            ("HEAD", f"/api/blobs/{digest}", None, {"Host": evil}),
            ("HEAD", "/api/blobs/sha256:..%2F..%2F_sim%2Ffaults", None, {}),
            ("HEAD", f"/api/blobs/{digest}%3Fx={url}", None, {}),
            ("GET", f"/v1/models/{url}/x", None, {}),
            ("POST", "/v1/chat/completions", {"model": url, "messages": []}, {}),
            ("POST", "/api/proxy/pull", {"model": "llama3", "node_id": url}, h),
            ("POST", "/api/proxy/pull", {"model": f"{evil}/library/x", "insecure": True, "stream": False}, h),
            ("POST", f"/api/proxy/nodes/{url}/check", None, h),
            ("POST", "/api/proxy/nodes/..%2F..%2Fx/check", None, h),
            ("PATCH", "/api/proxy/config", {"pull_target": url}, h),
            ("GET", f"/api/proxy/active-requests?node_id={url}", None, h),
        ]
        for method, path, body, headers in calls:
            response = await proxy.request(method, path, body, headers=headers)
            assert response.code < 500 or response.code in (502, 503), (method, path, response.code, response.body)
        # An absolute-form request target naming another host is not followed either.
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(f"GET {url}/api/tags HTTP/1.1\r\nHost: {evil}\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.split(b" ")[1] in (b"400", b"404"), head
        writer.close()
        await asyncio.sleep(0.3)  # anything started in the background has had its chance
    finally:
        await canary.stop()
    assert canary.connections == 0
    assert contacted and {base for base, _, _ in contacted} == {node.url}
    odd = [(m, p) for _, m, p in contacted if p not in OLLAMA_PATHS and not BLOB.match(p)]
    assert not odd, odd
