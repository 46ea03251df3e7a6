"""``/api/users``: admins manage people; passwords go in and never come out; one admin always stays."""

from __future__ import annotations

import json

import pytest

from tests.conftest import ADMIN_PASSWORD


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def admin_headers(proxy) -> dict[str, str]:
    status, body = await proxy.json("POST", "/api/auth/login", {"username": "admin", "password": ADMIN_PASSWORD})
    assert status == 200
    return bearer(body["access"])


async def create(proxy, headers, username, password="password-123", role="viewer"):
    return await proxy.json("POST", "/api/users", {"username": username, "password": password, "role": role},
                            headers=headers)


def assert_public(user: dict) -> None:
    assert set(user) == {"id", "username", "role", "created_at", "updated_at"}


async def test_list_create_get(env):
    proxy = await env.proxy()
    headers = await admin_headers(proxy)
    status, body = await proxy.json("GET", "/api/users", headers=headers)
    assert status == 200
    assert [u["username"] for u in body["users"]] == ["admin"]
    assert_public(body["users"][0])

    status, bob = await create(proxy, headers, "bob")
    assert status == 201
    assert_public(bob)
    assert bob["username"] == "bob" and bob["role"] == "viewer"
    status, fetched = await proxy.json("GET", f"/api/users/{bob['id']}", headers=headers)
    assert (status, fetched) == (200, bob)
    status, body = await proxy.json("GET", "/api/users", headers=headers)
    assert [u["username"] for u in body["users"]] == ["admin", "bob"]
    assert "password" not in json.dumps(body)

    status, _ = await proxy.json("POST", "/api/auth/login", {"username": "bob", "password": "password-123"})
    assert status == 200


async def test_role_defaults_to_viewer(env):
    proxy = await env.proxy()
    headers = await admin_headers(proxy)
    status, body = await proxy.json("POST", "/api/users", {"username": "quiet", "password": "password-123"},
                                    headers=headers)
    assert status == 201 and body["role"] == "viewer"


async def test_duplicate_username_ignoring_case_is_409(env):
    proxy = await env.proxy()
    headers = await admin_headers(proxy)
    assert (await create(proxy, headers, "carol"))[0] == 201
    status, body = await create(proxy, headers, "Carol")
    assert status == 409 and "already exists" in body["error"]
    status, body = await create(proxy, headers, "ADMIN")
    assert status == 409


@pytest.mark.parametrize("payload,field", [
    ({"username": "dan", "password": "x" * 73}, "password"),
    ({"username": "dan", "password": "€" * 25}, "password"),  # 25 characters but 75 bytes
    ({"username": "dan", "password": "short"}, "password"),
    ({"username": "dan"}, "password"),
    ({"username": "dan", "password": 12345678}, "password"),
    ({"username": "", "password": "password-123"}, "username"),
    ({"username": "has space", "password": "password-123"}, "username"),
    ({"username": "<script>", "password": "password-123"}, "username"),
    ({"username": "x" * 65, "password": "password-123"}, "username"),
    ({"username": "dan", "password": "password-123", "role": "root"}, "role"),
    ({"username": "dan", "password": "password-123", "password_hash": "$2b$..."}, "password_hash"),
])
async def test_invalid_user_is_400_with_field_errors(env, payload, field):
    proxy = await env.proxy()
    headers = await admin_headers(proxy)
    status, body = await proxy.json("POST", "/api/users", payload, headers=headers)
    assert status == 400, body
    assert body["error"] == "invalid user"
    assert field in body["fields"]
    if field == "password" and isinstance(payload.get("password"), str) and len(payload["password"]) > 20:
        assert "72 bytes" in body["fields"]["password"]


async def test_72_bytes_is_the_limit_exactly(env):
    proxy = await env.proxy()
    headers = await admin_headers(proxy)
    assert (await create(proxy, headers, "ascii72", "a" * 72))[0] == 201
    assert (await create(proxy, headers, "euro72", "€" * 24))[0] == 201
    status, _ = await proxy.json("POST", "/api/auth/login", {"username": "euro72", "password": "€" * 24})
    assert status == 200


async def test_empty_or_non_object_body_is_400(env):
    proxy = await env.proxy()
    headers = await admin_headers(proxy)
    for raw in (b"", b"[]", b"{bad json"):
        response = await proxy.request("POST", "/api/users", raw=raw, headers=headers)
        assert response.code == 400, raw
        assert "error" in json.loads(response.body)


async def test_change_role_and_reset_password(env):
    proxy = await env.proxy()
    headers = await admin_headers(proxy)
    _, erin = await create(proxy, headers, "erin")
    _, tokens = await proxy.json("POST", "/api/auth/login", {"username": "erin", "password": "password-123"})

    status, body = await proxy.json("PATCH", f"/api/users/{erin['id']}", {"role": "admin"}, headers=headers)
    assert status == 200 and body["role"] == "admin"
    # The role change applies to her existing token at once (no new login needed).
    status, me = await proxy.json("GET", "/api/auth/me", headers=bearer(tokens["access"]))
    assert me["role"] == "admin"

    status, body = await proxy.json("PATCH", f"/api/users/{erin['id']}", {"password": "reset-by-admin"},
                                    headers=headers)
    assert status == 200
    assert_public(body)
    # A reset ends her sessions; the new password works, the old one does not.
    assert (await proxy.json("GET", "/api/auth/me", headers=bearer(tokens["access"])))[0] == 401
    assert (await proxy.json("POST", "/api/auth/login",
                             {"username": "erin", "password": "password-123"}))[0] == 401
    assert (await proxy.json("POST", "/api/auth/login",
                             {"username": "erin", "password": "reset-by-admin"}))[0] == 200


@pytest.mark.parametrize("payload,field", [({"role": "owner"}, "role"), ({"password": "y" * 80}, "password"),
                                           ({"username": "bad name"}, "username"), ({"token_gen": 5}, "token_gen")])
async def test_invalid_patch_is_400(env, payload, field):
    proxy = await env.proxy()
    headers = await admin_headers(proxy)
    _, user = await create(proxy, headers, "frank")
    status, body = await proxy.json("PATCH", f"/api/users/{user['id']}", payload, headers=headers)
    assert status == 400 and field in body["fields"]


async def test_rename_to_a_taken_name_is_409(env):
    proxy = await env.proxy()
    headers = await admin_headers(proxy)
    _, gina = await create(proxy, headers, "gina")
    status, _ = await proxy.json("PATCH", f"/api/users/{gina['id']}", {"username": "Admin"}, headers=headers)
    assert status == 409


async def test_unknown_user_is_404(env):
    proxy = await env.proxy()
    headers = await admin_headers(proxy)
    for method, body in (("GET", None), ("PATCH", {"role": "admin"}), ("DELETE", None)):
        status, answer = await proxy.json(method, "/api/users/no-such-id", body, headers=headers)
        assert status == 404, method
        assert "error" in answer


async def test_the_last_admin_cannot_be_deleted_or_demoted(env):
    proxy = await env.proxy()
    headers = await admin_headers(proxy)
    _, users = await proxy.json("GET", "/api/users", headers=headers)
    admin_id = users["users"][0]["id"]
    status, body = await proxy.json("DELETE", f"/api/users/{admin_id}", headers=headers)
    assert status == 409 and "last admin" in body["error"]
    status, body = await proxy.json("PATCH", f"/api/users/{admin_id}", {"role": "viewer"}, headers=headers)
    assert status == 409 and "last admin" in body["error"]

    # With a second admin, the first may go.
    _, second = await create(proxy, headers, "second", role="admin")
    assert (await proxy.json("PATCH", f"/api/users/{admin_id}", {"role": "viewer"}, headers=headers))[0] == 200
    # The demotion applies at once: the old admin's token is a viewer's now.
    assert (await proxy.json("GET", "/api/users", headers=headers))[0] == 403
    _, tokens = await proxy.json("POST", "/api/auth/login", {"username": "second", "password": "password-123"})
    second_headers = bearer(tokens["access"])
    assert (await proxy.json("PATCH", f"/api/users/{second['id']}", {"role": "viewer"},
                             headers=second_headers))[0] == 409
    assert (await proxy.json("DELETE", f"/api/users/{second['id']}", headers=second_headers))[0] == 409
    assert (await proxy.json("DELETE", f"/api/users/{admin_id}", headers=second_headers))[0] == 200


async def test_delete_user_revokes_their_keys(env):
    proxy = await env.proxy()
    headers = await admin_headers(proxy)
    _, hank = await create(proxy, headers, "hank")
    _, created = await proxy.json("POST", "/api/proxy/keys", {"name": "hank's script", "user_id": hank["id"]},
                                  headers=headers)
    key_headers = bearer(created["secret"])
    status, me = await proxy.json("GET", "/api/auth/me", headers=key_headers)
    assert status == 200 and me["username"] == "hank" and me["via"] == "api_token"

    status, body = await proxy.json("DELETE", f"/api/users/{hank['id']}", headers=headers)
    assert status == 200 and body["deleted"] is True
    assert (await proxy.json("GET", "/api/auth/me", headers=key_headers))[0] == 401
    _, keys = await proxy.json("GET", "/api/proxy/keys", headers=headers)
    assert [k["revoked"] for k in keys["keys"]] == [True]
    assert (await proxy.json("GET", f"/api/users/{hank['id']}", headers=headers))[0] == 404


async def test_viewer_and_anonymous_are_refused(env):
    proxy = await env.proxy()
    headers = await admin_headers(proxy)
    _, ivy = await create(proxy, headers, "ivy")
    _, tokens = await proxy.json("POST", "/api/auth/login", {"username": "ivy", "password": "password-123"})
    viewer = bearer(tokens["access"])
    for method, path, body in [("GET", "/api/users", None), ("POST", "/api/users", {"username": "x"}),
                               ("GET", f"/api/users/{ivy['id']}", None),
                               ("PATCH", f"/api/users/{ivy['id']}", {"role": "admin"}),
                               ("DELETE", f"/api/users/{ivy['id']}", None)]:
        assert (await proxy.json(method, path, body, headers=viewer))[0] == 403, (method, path)
        assert (await proxy.json(method, path, body))[0] == 401, (method, path)
    # She did not promote herself.
    _, me = await proxy.json("GET", "/api/auth/me", headers=viewer)
    assert me["role"] == "viewer"


async def test_store_failure_is_503(env, monkeypatch):
    from app.store import StoreUnavailable

    proxy = await env.proxy()
    headers = await admin_headers(proxy)

    async def down(*args, **kwargs):
        raise StoreUnavailable("down")

    monkeypatch.setattr(proxy.services.store.users, "list", down)
    monkeypatch.setattr(proxy.services.store.users, "create", down)
    status, body = await proxy.json("GET", "/api/users", headers=headers)
    assert status == 503 and "error" in body
    status, body = await create(proxy, headers, "jill")
    assert status == 503
    # Logged-in callers are still recognised from memory while the store is down.
    monkeypatch.setattr(proxy.services.store.users, "get", down)
    proxy.services.auth.monotonic = lambda: 10**9  # every cached user record is stale now
    status, me = await proxy.json("GET", "/api/auth/me", headers=headers)
    assert status == 200 and me["username"] == "admin"
