"""API tokens (scripts on the management API) and gateway keys (clients of the Ollama and /v1 routes)."""

from __future__ import annotations

import asyncio
import json

import pytest

from app.auth import service
from app.store import backend, connect
from tests.conftest import ADMIN_PASSWORD


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def admin_headers(proxy) -> dict[str, str]:
    status, body = await proxy.json("POST", "/api/auth/login", {"username": "admin", "password": ADMIN_PASSWORD})
    assert status == 200
    return bearer(body["access"])


async def new_key(proxy, headers, name="script", kind="api", **extra):
    status, body = await proxy.json("POST", "/api/proxy/keys", {"name": name, "kind": kind, **extra}, headers=headers)
    assert status == 201, body
    return body["secret"], body["key"]


KEY_FIELDS = {"id", "name", "kind", "prefix", "user_id", "username", "created_at", "last_used_at", "revoked",
              "revoked_at", "rpm", "tpd"}


# ------------------------------------------------------------------ API tokens


async def test_api_token_is_shown_once_and_works_as_bearer(env):
    proxy = await env.proxy()
    headers = await admin_headers(proxy)
    status, body = await proxy.json("POST", "/api/proxy/keys", {"name": "backup script"}, headers=headers)
    assert status == 201
    secret, record = body["secret"], body["key"]
    assert secret.startswith("avx_") and len(secret) > 40
    assert set(record) == KEY_FIELDS
    assert record["kind"] == "api" and record["name"] == "backup script" and record["username"] == "admin"
    assert secret.startswith(record["prefix"]) and len(record["prefix"]) < 16
    assert record["revoked"] is False and record["last_used_at"] is None

    # Listing never shows it again.
    status, listing = await proxy.json("GET", "/api/proxy/keys", headers=headers)
    assert status == 200 and [k["id"] for k in listing["keys"]] == [record["id"]]
    assert secret not in json.dumps(listing) and "hash" not in json.dumps(listing)
    status, one = await proxy.json("GET", f"/api/proxy/keys/{record['id']}", headers=headers)
    assert status == 200 and set(one) == KEY_FIELDS and secret not in json.dumps(one)

    # Accepted as Bearer with the owner's role, on read and write routes.
    status, me = await proxy.json("GET", "/api/auth/me", headers=bearer(secret))
    assert status == 200 and me["via"] == "api_token" and me["role"] == "admin"
    status, _ = await proxy.json("POST", "/api/users", {"username": "scripted", "password": "password-123"},
                                 headers=bearer(secret))
    assert status == 201

    # Revoked: refused at once.
    status, revoked = await proxy.json("DELETE", f"/api/proxy/keys/{record['id']}", headers=headers)
    assert status == 200 and revoked["revoked"] is True and revoked["revoked_at"]
    status, body = await proxy.json("GET", "/api/auth/me", headers=bearer(secret))
    assert status == 401 and "error" in body
    # Revoking twice is fine; an unknown id is 404.
    assert (await proxy.json("DELETE", f"/api/proxy/keys/{record['id']}", headers=headers))[0] == 200
    assert (await proxy.json("DELETE", "/api/proxy/keys/nope", headers=headers))[0] == 404
    assert (await proxy.json("GET", "/api/proxy/keys/nope", headers=headers))[0] == 404


async def test_a_viewers_token_has_the_viewer_role(env):
    proxy = await env.proxy()
    headers = await admin_headers(proxy)
    _, viewer = await proxy.json("POST", "/api/users", {"username": "watcher", "password": "password-123"},
                                 headers=headers)
    secret, record = await new_key(proxy, headers, "dashboard", user_id=viewer["id"])
    assert record["user_id"] == viewer["id"] and record["username"] == "watcher"
    status, me = await proxy.json("GET", "/api/auth/me", headers=bearer(secret))
    assert status == 200 and me["role"] == "viewer"
    assert (await proxy.json("GET", "/api/users", headers=bearer(secret)))[0] == 403


async def test_list_filters_by_user_and_kind(env):
    proxy = await env.proxy()
    headers = await admin_headers(proxy)
    await new_key(proxy, headers, "a", "api")
    await new_key(proxy, headers, "g", "gateway")
    _, body = await proxy.json("GET", "/api/proxy/keys?kind=gateway", headers=headers)
    assert [k["name"] for k in body["keys"]] == ["g"]
    _, body = await proxy.json("GET", "/api/proxy/keys?user_id=someone-else", headers=headers)
    assert body["keys"] == []
    status, body = await proxy.json("GET", "/api/proxy/keys?kind=bogus", headers=headers)
    assert status == 400


@pytest.mark.parametrize("payload,field", [
    ({}, "name"), ({"name": "  "}, "name"), ({"name": "x" * 101}, "name"), ({"name": 5}, "name"),
    ({"name": "k", "kind": "root"}, "kind"), ({"name": "k", "user_id": "no-such-user"}, "user_id"),
    ({"name": "k", "user_id": 7}, "user_id"), ({"name": "k", "secret": "mine"}, "secret"),
])
async def test_invalid_key_request_is_400(env, payload, field):
    proxy = await env.proxy()
    headers = await admin_headers(proxy)
    status, body = await proxy.json("POST", "/api/proxy/keys", payload, headers=headers)
    assert status == 400 and field in body["fields"], body


async def test_keys_are_admin_only(env):
    proxy = await env.proxy()
    headers = await admin_headers(proxy)
    await proxy.json("POST", "/api/users", {"username": "vic", "password": "password-123"}, headers=headers)
    _, tokens = await proxy.json("POST", "/api/auth/login", {"username": "vic", "password": "password-123"})
    _, record = await new_key(proxy, headers)
    for method, path, body in [("GET", "/api/proxy/keys", None), ("POST", "/api/proxy/keys", {"name": "x"}),
                               ("GET", f"/api/proxy/keys/{record['id']}", None),
                               ("DELETE", f"/api/proxy/keys/{record['id']}", None)]:
        assert (await proxy.json(method, path, body, headers=bearer(tokens["access"])))[0] == 403, (method, path)
        assert (await proxy.json(method, path, body))[0] == 401, (method, path)


async def test_last_used_is_recorded_but_not_on_every_request(env, monkeypatch):
    proxy = await env.proxy()
    headers = await admin_headers(proxy)
    secret, record = await new_key(proxy, headers)
    auth = proxy.services.auth
    tokens = proxy.services.store.tokens
    touches = []
    real_touch = tokens.touch

    async def counting_touch(token_id, when):
        touches.append(token_id)
        await real_touch(token_id, when)

    monkeypatch.setattr(tokens, "touch", counting_touch)
    for _ in range(5):
        assert (await proxy.json("GET", "/api/auth/me", headers=bearer(secret)))[0] == 200
    await auth.close()  # wait for the background write
    assert touches == [record["id"]]
    _, listing = await proxy.json("GET", "/api/proxy/keys", headers=headers)
    assert listing["keys"][0]["last_used_at"] is not None

    # A minute later, the next use is recorded again.
    now = auth.monotonic()
    auth.monotonic = lambda: now + service.TOUCH_INTERVAL + 1
    await proxy.json("GET", "/api/auth/me", headers=bearer(secret))
    await auth.close()
    assert touches == [record["id"], record["id"]]


async def test_known_keys_are_answered_from_memory(env, monkeypatch):
    proxy = await env.proxy()
    headers = await admin_headers(proxy)
    secret, _ = await new_key(proxy, headers, kind="gateway")
    await proxy.services.update_config({"require_api_key": True})
    lookups = []
    tokens = proxy.services.store.tokens
    real = tokens.find_by_hash

    async def counting(digest):
        lookups.append(digest)
        return await real(digest)

    monkeypatch.setattr(tokens, "find_by_hash", counting)
    assert (await proxy.request("GET", "/api/tags", headers=bearer(secret))).code == 200
    await proxy.services.auth.close()  # background work (first change-counter poll) done
    assert lookups
    lookups.clear()
    for _ in range(5):
        assert (await proxy.request("GET", "/api/tags", headers=bearer(secret))).code == 200
    assert lookups == []


async def test_revocation_by_another_instance_is_noticed(env):
    """Another proxy on the same MongoDB revokes a key: this one notices through the change counter."""
    proxy = await env.proxy()
    headers = await admin_headers(proxy)
    secret, record = await new_key(proxy, headers, kind="gateway")
    await proxy.services.update_config({"require_api_key": True})
    auth = proxy.services.auth
    assert (await proxy.request("GET", "/api/tags", headers=bearer(secret))).code == 200
    await auth.close()

    await proxy.services.store.tokens.revoke(record["id"])  # behind this process's back
    assert (await proxy.request("GET", "/api/tags", headers=bearer(secret))).code == 200  # still cached
    now = auth.monotonic()
    auth.monotonic = lambda: now + service.CHANGE_POLL_INTERVAL + 1
    await proxy.request("GET", "/api/tags", headers=bearer(secret))  # starts the poll in the background
    await auth.close()
    assert (await proxy.request("GET", "/api/tags", headers=bearer(secret))).code == 401


# ------------------------------------------------------------------ gateway keys


async def test_gateway_is_open_by_default(env):
    proxy = await env.proxy()
    assert proxy.services.config.require_api_key is False
    assert (await proxy.request("GET", "/api/tags")).code == 200
    assert (await proxy.request("GET", "/v1/models")).code == 200


async def test_gateway_keys_when_required(env):
    node = await env.node(["llama3:latest"])
    proxy = await env.proxy([node])
    headers = await admin_headers(proxy)
    gateway, record = await new_key(proxy, headers, "open-webui", kind="gateway")
    assert gateway.startswith("avx_gw_")
    api_token, _ = await new_key(proxy, headers, "script", kind="api")
    _, tokens = await proxy.json("POST", "/api/auth/login", {"username": "admin", "password": ADMIN_PASSWORD})
    await proxy.services.update_config({"require_api_key": True})

    # Ollama routes: 401 JSON without a valid gateway key.
    response = await proxy.request("GET", "/api/tags")
    assert response.code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    body = json.loads(response.body)
    assert set(body) == {"error"} and "key" in body["error"]
    for wrong in ("avx_gw_not-a-real-key", api_token, tokens["access"], "nonsense"):
        status, body = await proxy.json("GET", "/api/tags", headers=bearer(wrong))
        assert status == 401 and set(body) == {"error"}, wrong
    status, body = await proxy.json("POST", "/api/chat", {"model": "llama3", "messages": []})
    assert status == 401 and set(body) == {"error"}
    status, body = await proxy.json("POST", "/api/pull", {"model": "llama3"})
    assert status == 401

    # /v1 routes: 401 in OpenAI's error shape.
    status, body = await proxy.json("GET", "/v1/models")
    assert status == 401
    assert body["error"]["type"] == "authentication_error" and body["error"]["message"]
    status, body = await proxy.json("POST", "/v1/chat/completions", {"model": "llama3", "messages": []},
                                    headers=bearer("avx_gw_wrong"))
    assert status == 401 and body["error"]["type"] == "authentication_error"

    # The heartbeat stays open (clients probe it before anything else).
    response = await proxy.request("GET", "/")
    assert response.code == 200 and response.body == b"Ollama is running"

    # With the key: served.
    key = bearer(gateway)
    status, body = await proxy.json("GET", "/api/tags", headers=key)
    assert status == 200 and body["models"]
    status, body = await proxy.json("GET", "/v1/models", headers=key)
    assert status == 200 and body["data"]
    status, body = await proxy.json("POST", "/api/chat", {"model": "llama3", "stream": False,
                                                          "messages": [{"role": "user", "content": "hi"}]},
                                    headers=key)
    assert status == 200 and body["done"] is True

    # Revoked: refused at once; turned off again: open again.
    await proxy.json("DELETE", f"/api/proxy/keys/{record['id']}", headers=headers)
    assert (await proxy.request("GET", "/api/tags", headers=key)).code == 401
    await proxy.services.update_config({"require_api_key": False})
    assert (await proxy.request("GET", "/api/tags")).code == 200


async def test_gateway_key_owner_is_known_to_the_handler(env, monkeypatch):
    """The principal is kept on the handler, for usage accounting."""
    from app.api.ollama import TagsHandler

    proxy = await env.proxy()
    headers = await admin_headers(proxy)
    gateway, record = await new_key(proxy, headers, kind="gateway")
    await proxy.services.update_config({"require_api_key": True})
    seen = []
    real_get = TagsHandler.get

    def spy(self):
        seen.append(self.principal)
        return real_get(self)

    monkeypatch.setattr(TagsHandler, "get", spy)
    assert (await proxy.request("GET", "/api/tags", headers=bearer(gateway))).code == 200
    assert len(seen) == 1
    assert seen[0].user_id == record["user_id"] and seen[0].username == "admin"
    assert seen[0].via == "gateway_key" and seen[0].token_id == record["id"]


# ------------------------------------------------------------------ several instances on one database


@pytest.fixture
def shared_store(io_loop, monkeypatch, tmp_path):
    monkeypatch.setattr(backend, "new_mongo_client", lambda url, timeout_ms: backend.new_embedded_client())
    store = io_loop.run_sync(lambda: connect("mongodb://db.example:27017/aivonx", "aivonx", tmp_path / "unused",
                                             connect_timeout=1))
    yield store
    io_loop.run_sync(store.close)


async def _eventually(check, timeout=3.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        if await check():
            return
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_instances_on_one_store_share_keys_logins_and_revocations(env, shared_store, monkeypatch):
    monkeypatch.setattr(service, "CHANGE_POLL_INTERVAL", 0.05)
    monkeypatch.setattr(service, "USER_CACHE_TTL", 0.05)
    one = await env.proxy(store=shared_store)
    two = await env.proxy(store=shared_store)
    headers = await admin_headers(one)
    await one.services.update_config({"require_api_key": True})
    await two.services.update_config({"require_api_key": True})

    # A login and a key made on one work on two.
    gateway, record = await new_key(one, headers, kind="gateway")
    assert (await two.request("GET", "/api/tags", headers=bearer(gateway))).code == 200
    assert (await two.json("GET", "/api/auth/me", headers=headers))[0] == 200
    _, tokens = await one.json("POST", "/api/auth/login", {"username": "admin", "password": ADMIN_PASSWORD})

    # Revoked through one: two stops accepting it within moments (change-counter poll, off the request path).
    await one.json("DELETE", f"/api/proxy/keys/{record['id']}", headers=headers)

    async def refused():
        return (await two.request("GET", "/api/tags", headers=bearer(gateway))).code == 401

    await _eventually(refused)

    # A refresh token revoked by logging out on one is refused on two.
    assert (await one.json("POST", "/api/auth/logout", {"refresh": tokens["refresh"]}))[0] == 200
    assert (await two.json("POST", "/api/auth/refresh", {"refresh": tokens["refresh"]}))[0] == 401

    # A password reset on one ends the user's tokens on two as well.
    _, me = await one.json("GET", "/api/auth/me", headers=headers)
    await one.json("POST", "/api/users", {"username": "second", "password": "password-123", "role": "admin"},
                   headers=headers)
    _, second = await one.json("POST", "/api/auth/login", {"username": "second", "password": "password-123"})
    await one.json("PATCH", f"/api/users/{me['id']}", {"password": "new-admin-password"},
                   headers=bearer(second["access"]))

    async def logged_out():
        return (await two.json("GET", "/api/auth/me", headers=headers))[0] == 401

    await _eventually(logged_out)
