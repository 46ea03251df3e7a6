"""CORS: nothing is allowed by default; configured origins get correct preflights and headers."""

from __future__ import annotations

import json

from tests.conftest import ADMIN_PASSWORD

CONSOLE = "https://console.example.com"
EVIL = "https://evil.example.net"



def preflight(origin: str, method: str = "POST", headers: str = "authorization, content-type") -> dict[str, str]:
    return {"Origin": origin, "Access-Control-Request-Method": method, "Access-Control-Request-Headers": headers}


async def test_nothing_is_allowed_by_default(env):
    proxy = await env.proxy()
    response = await proxy.request("OPTIONS", "/api/auth/login", headers=preflight(CONSOLE))
    assert response.code == 403
    assert "origin" in json.loads(response.body)["error"]
    assert "Access-Control-Allow-Origin" not in response.headers
    response = await proxy.request("GET", "/api/tags", headers={"Origin": CONSOLE})
    assert response.code == 200
    assert "Access-Control-Allow-Origin" not in response.headers


async def test_allowed_origin_preflight(env):
    proxy = await env.proxy(config={"cors_origins": [CONSOLE]})
    response = await proxy.request("OPTIONS", "/api/users", headers=preflight(CONSOLE, "POST"))
    assert response.code == 204
    assert response.headers["Access-Control-Allow-Origin"] == CONSOLE
    assert "Origin" in response.headers["Vary"]
    methods = {m.strip() for m in response.headers["Access-Control-Allow-Methods"].split(",")}
    assert {"GET", "POST"} <= methods and "DELETE" not in methods  # what /api/users implements
    allowed = {h.strip().lower() for h in response.headers["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "content-type", "x-xsrftoken", "x-request-id"} <= allowed
    assert int(response.headers["Access-Control-Max-Age"]) > 0
    # Cookie sessions stay same-origin: credentials are never allowed cross-origin.
    assert "Access-Control-Allow-Credentials" not in response.headers

    response = await proxy.request("OPTIONS", "/api/users/some-id", headers=preflight(CONSOLE, "DELETE"))
    assert response.code == 204
    assert "DELETE" in response.headers["Access-Control-Allow-Methods"]


async def test_unlisted_origin_preflight_is_403_json(env):
    proxy = await env.proxy(config={"cors_origins": [CONSOLE]})
    for path in ("/api/auth/login", "/api/tags", "/v1/chat/completions"):
        response = await proxy.request("OPTIONS", path, headers=preflight(EVIL))
        assert response.code == 403, path
        assert "Access-Control-Allow-Origin" not in response.headers
        body = json.loads(response.body)
        assert "error" in body
    # A look-alike is not the configured origin.
    response = await proxy.request("OPTIONS", "/api/tags", headers=preflight(CONSOLE + ".evil.net"))
    assert response.code == 403


async def test_actual_responses_carry_the_headers_for_allowed_origins_only(env):
    proxy = await env.proxy(config={"cors_origins": [CONSOLE]})
    response = await proxy.request("POST", "/api/auth/login", {"username": "admin", "password": ADMIN_PASSWORD},
                                   headers={"Origin": CONSOLE})
    assert response.code == 200
    assert response.headers["Access-Control-Allow-Origin"] == CONSOLE
    assert "Retry-After" in response.headers["Access-Control-Expose-Headers"]
    # Errors too, so the browser can read the JSON.
    response = await proxy.request("GET", "/api/auth/me", headers={"Origin": CONSOLE})
    assert response.code == 401
    assert response.headers["Access-Control-Allow-Origin"] == CONSOLE
    response = await proxy.request("GET", "/api/auth/me", headers={"Origin": EVIL})
    assert response.code == 401
    assert "Access-Control-Allow-Origin" not in response.headers
    assert "Origin" in response.headers["Vary"]


async def test_gateway_preflight_needs_no_key(env):
    proxy = await env.proxy(config={"cors_origins": [CONSOLE], "require_api_key": True})
    response = await proxy.request("OPTIONS", "/v1/chat/completions",
                                   headers=preflight(CONSOLE, "POST", "authorization, content-type, x-stainless-os"))
    assert response.code == 204
    assert "x-stainless-os" in response.headers["Access-Control-Allow-Headers"].lower()
    response = await proxy.request("GET", "/v1/models", headers={"Origin": CONSOLE})
    assert response.code == 401
    assert response.headers["Access-Control-Allow-Origin"] == CONSOLE


async def test_wildcard_allows_any_origin_and_config_applies_live(env):
    proxy = await env.proxy()
    assert (await proxy.request("OPTIONS", "/api/tags", headers=preflight(EVIL, "GET"))).code == 403
    await proxy.services.update_config({"cors_origins": ["*"]})
    response = await proxy.request("OPTIONS", "/api/tags", headers=preflight(EVIL, "GET"))
    assert response.code == 204
    assert response.headers["Access-Control-Allow-Origin"] == EVIL


async def test_options_without_origin_lists_methods(env):
    proxy = await env.proxy()
    response = await proxy.request("OPTIONS", "/api/auth/login")
    assert response.code == 204
    assert "POST" in response.headers["Allow"]
