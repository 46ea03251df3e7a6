"""Logging in and staying logged in, over real HTTP: tokens, sessions, XSRF, throttling, roles."""

from __future__ import annotations

import base64
import json
import logging
import time

import jwt
import pytest

from app.auth.jwt_tokens import ACCESS_TTL, LEEWAY, REFRESH_TTL
from tests.conftest import ADMIN_PASSWORD, JWT_SECRET


class Clock:
    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def login(proxy, username="admin", password=ADMIN_PASSWORD):
    status, body = await proxy.json("POST", "/api/auth/login", {"username": username, "password": password})
    assert status == 200, body
    return body


async def make_user(proxy, admin_token, username, password="viewer-password", role="viewer"):
    status, body = await proxy.json("POST", "/api/users", {"username": username, "password": password, "role": role},
                                    headers=bearer(admin_token))
    assert status == 201, body
    return body


def assert_no_secret(body, *secrets):
    text = json.dumps(body) if not isinstance(body, str) else body
    assert "password_hash" not in text and "$2b$" not in text and "token_hash" not in text
    for secret in secrets:
        assert secret not in text


def cookies_of(response) -> dict[str, str]:
    """Set-Cookie lines by cookie name."""
    return {line.split("=", 1)[0]: line for line in response.headers.get_list("Set-Cookie")}


def cookie_value(line: str) -> str:
    return line.split("=", 1)[1].split(";", 1)[0]


# ------------------------------------------------------------------ login


async def test_login_returns_a_bearer_token_pair(env):
    proxy = await env.proxy()
    body = await login(proxy)
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == ACCESS_TTL == 15 * 60
    assert body["refresh_expires_in"] == REFRESH_TTL == 7 * 24 * 3600
    assert body["user"]["username"] == "admin" and body["user"]["role"] == "admin"
    assert_no_secret(body, ADMIN_PASSWORD)
    claims = jwt.decode(body["access"], JWT_SECRET, algorithms=["HS256"])
    assert {"sub", "exp", "iat", "jti", "typ"} <= claims.keys()
    assert claims["sub"] == body["user"]["id"] and claims["typ"] == "access"

    status, me = await proxy.json("GET", "/api/auth/me", headers=bearer(body["access"]))
    assert status == 200
    assert me == {"id": body["user"]["id"], "username": "admin", "role": "admin", "via": "jwt"}


async def test_login_username_ignores_case(env):
    proxy = await env.proxy()
    assert (await login(proxy, "ADMIN"))["user"]["username"] == "admin"


@pytest.mark.parametrize("username,password", [("admin", "wrong-password"), ("nobody", ADMIN_PASSWORD),
                                               ("admin", "x" * 100)])
async def test_login_failure_is_401_json_without_telling_which_part_was_wrong(env, username, password):
    proxy = await env.proxy()
    status, body = await proxy.json("POST", "/api/auth/login", {"username": username, "password": password})
    assert status == 401
    assert body == {"error": "invalid username or password"}


@pytest.mark.parametrize("payload,field", [
    ({"password": "x"}, "username"),
    ({"username": "admin"}, "password"),
    ({"username": "admin", "password": 12345678}, "password"),
    ({"username": ["admin"], "password": "x"}, "username"),
    ({"username": "admin", "password": "x", "session": "yes"}, "session"),
    ({"username": "admin", "password": "x", "role": "admin"}, "role"),
])
async def test_login_bad_body_is_400_naming_the_field(env, payload, field):
    proxy = await env.proxy()
    status, body = await proxy.json("POST", "/api/auth/login", payload)
    assert status == 400
    assert field in body["fields"]


async def test_login_rejects_non_json(env):
    proxy = await env.proxy()
    response = await proxy.request("POST", "/api/auth/login", raw=b"username=admin&password=x")
    assert response.code == 400
    assert "error" in json.loads(response.body)


# ------------------------------------------------------------------ credentials that must not work


async def test_no_credential_is_401_with_www_authenticate(env):
    proxy = await env.proxy()
    response = await proxy.request("GET", "/api/auth/me")
    assert response.code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert json.loads(response.body) == {"error": "authentication required"}


def _forge(claims: dict, secret: str | None = JWT_SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, secret, algorithm=algorithm)


def _claims(user_id: str, **overrides):
    now = int(time.time())
    claims = {"iss": "aivonx-proxy", "sub": user_id, "typ": "access", "jti": "forged", "iat": now,
              "exp": now + 600, "gen": 0}
    claims.update(overrides)
    return claims


async def test_bad_tokens_are_401_json(env):
    proxy = await env.proxy()
    tokens = await login(proxy)
    user_id = tokens["user"]["id"]
    header, payload, signature = tokens["access"].split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    data["exp"] += 3600
    longer = base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()
    now = int(time.time())
    cases = {
        "forged with our secret is accepted (control)": _forge(_claims(user_id)),
        "expired": _forge(_claims(user_id, iat=now - 7200, exp=now - 3600)),
        "tampered payload": f"{header}.{longer}.{signature}",
        "tampered signature": f"{header}.{payload}.{signature[:-4]}AAAA",
        "alg none": _forge(_claims(user_id), None, "none"),
        "wrong secret": _forge(_claims(user_id), "another-secret-that-is-long-enough-for-hs256-x"),
        "refresh used as access": tokens["refresh"],
        "unknown user": _forge(_claims("no-such-user")),
        "garbage": "eyJnot-a-jwt",
        "unknown api token": "avx_" + "A" * 43,
    }
    for name, token in cases.items():
        status, body = await proxy.json("GET", "/api/auth/me", headers=bearer(token))
        if name.endswith("(control)"):
            assert status == 200, (name, body)
            continue
        assert status == 401, (name, status, body)
        assert isinstance(body["error"], str) and body["error"], name


async def test_other_schemes_and_empty_bearer_are_401(env):
    proxy = await env.proxy()
    for header in ("Basic YWRtaW46eA==", "Bearer", "Bearer   ", "Token abc"):
        status, body = await proxy.json("GET", "/api/auth/me", headers={"Authorization": header})
        assert status == 401, header
        assert "error" in body


async def test_access_token_expires_after_its_lifetime(env):
    """The time seam: the signer's clock jumps past the lifetime (plus leeway) of a real token."""
    proxy = await env.proxy()
    tokens = await login(proxy)
    signer = proxy.services.auth.signer
    signer.clock = lambda: time.time() + ACCESS_TTL - 60
    status, _ = await proxy.json("GET", "/api/auth/me", headers=bearer(tokens["access"]))
    assert status == 200
    signer.clock = lambda: time.time() + ACCESS_TTL + LEEWAY + 5
    status, body = await proxy.json("GET", "/api/auth/me", headers=bearer(tokens["access"]))
    assert status == 401
    assert "expired" in body["error"]


# ------------------------------------------------------------------ refresh and logout


async def test_refresh_rotates_and_the_old_refresh_token_is_revoked(env):
    proxy = await env.proxy()
    first = await login(proxy)
    status, second = await proxy.json("POST", "/api/auth/refresh", {"refresh": first["refresh"]})
    assert status == 200
    assert second["token_type"] == "Bearer" and second["access"] != first["access"]
    assert (await proxy.json("GET", "/api/auth/me", headers=bearer(second["access"])))[0] == 200
    # Reusing the old refresh token: refused.
    status, body = await proxy.json("POST", "/api/auth/refresh", {"refresh": first["refresh"]})
    assert status == 401 and "revoked" in body["error"]
    status, third = await proxy.json("POST", "/api/auth/refresh", {"refresh": second["refresh"]})
    assert status == 200 and third["access"] != second["access"]


async def test_refresh_refuses_access_tokens_and_junk(env):
    proxy = await env.proxy()
    tokens = await login(proxy)
    assert (await proxy.json("POST", "/api/auth/refresh", {"refresh": tokens["access"]}))[0] == 401
    assert (await proxy.json("POST", "/api/auth/refresh", {"refresh": "junk"}))[0] == 401
    status, body = await proxy.json("POST", "/api/auth/refresh", {})
    assert status == 400 and "refresh" in body["fields"]
    expired = _forge(_claims(tokens["user"]["id"], typ="refresh", iat=int(time.time()) - 10**6,
                             exp=int(time.time()) - 10**5))
    assert (await proxy.json("POST", "/api/auth/refresh", {"refresh": expired}))[0] == 401


async def test_logout_revokes_the_refresh_token(env):
    proxy = await env.proxy()
    tokens = await login(proxy)
    status, body = await proxy.json("POST", "/api/auth/logout", {"refresh": tokens["refresh"]},
                                    headers=bearer(tokens["access"]))
    assert (status, body) == (200, {"logged_out": True})
    status, body = await proxy.json("POST", "/api/auth/refresh", {"refresh": tokens["refresh"]})
    assert status == 401
    # Logging out twice is fine; with nothing to log out it says what to send; a forgery is 401.
    assert (await proxy.json("POST", "/api/auth/logout", {"refresh": tokens["refresh"]}))[0] == 200
    status, body = await proxy.json("POST", "/api/auth/logout", {})
    assert status == 400 and "refresh" in body["error"]
    forged = _forge(_claims(tokens["user"]["id"], typ="refresh"), "not-our-secret-but-long-enough-for-hs256")
    assert (await proxy.json("POST", "/api/auth/logout", {"refresh": forged}))[0] == 401
    expired = _forge(_claims(tokens["user"]["id"], typ="refresh", iat=int(time.time()) - 10**6,
                             exp=int(time.time()) - 10**5))
    assert (await proxy.json("POST", "/api/auth/logout", {"refresh": expired}))[0] == 200  # already over
    assert (await proxy.json("POST", "/api/auth/logout", {"refresh": tokens["access"]}))[0] == 401


async def test_deleted_user_tokens_stop_at_once(env):
    proxy = await env.proxy()
    admin = await login(proxy)
    user = await make_user(proxy, admin["access"], "temp", role="viewer")
    tokens = await login(proxy, "temp", "viewer-password")
    assert (await proxy.json("GET", "/api/auth/me", headers=bearer(tokens["access"])))[0] == 200
    assert (await proxy.json("DELETE", f"/api/users/{user['id']}", headers=bearer(admin["access"])))[0] == 200
    assert (await proxy.json("GET", "/api/auth/me", headers=bearer(tokens["access"])))[0] == 401
    assert (await proxy.json("POST", "/api/auth/refresh", {"refresh": tokens["refresh"]}))[0] == 401


# ------------------------------------------------------------------ roles


async def test_viewer_reads_but_cannot_administer(env):
    proxy = await env.proxy()
    admin = await login(proxy)
    await make_user(proxy, admin["access"], "vera")
    viewer = await login(proxy, "vera", "viewer-password")
    headers = bearer(viewer["access"])
    status, me = await proxy.json("GET", "/api/auth/me", headers=headers)
    assert status == 200 and me["role"] == "viewer"
    for method, path, body in [("GET", "/api/users", None),
                               ("POST", "/api/users", {"username": "x", "password": "password1"}),
                               ("GET", "/api/proxy/keys", None),
                               ("POST", "/api/proxy/keys", {"name": "mine"})]:
        status, answer = await proxy.json(method, path, body, headers=headers)
        assert status == 403, (method, path, status)
        assert answer == {"error": "this needs the admin role"}
        status, _ = await proxy.json(method, path, body)
        assert status == 401, (method, path)


# ------------------------------------------------------------------ own password


async def test_change_own_password_ends_older_tokens(env):
    proxy = await env.proxy()
    admin = await login(proxy)
    await make_user(proxy, admin["access"], "paul")
    old = await login(proxy, "paul", "viewer-password")
    status, body = await proxy.json("POST", "/api/auth/password",
                                    {"current_password": "viewer-password", "new_password": "brand-new-pass"},
                                    headers=bearer(old["access"]))
    assert status == 200 and body["changed"] is True
    assert_no_secret(body, "brand-new-pass", "viewer-password")
    # The answer's tokens work; the older ones do not.
    assert (await proxy.json("GET", "/api/auth/me", headers=bearer(body["access"])))[0] == 200
    assert (await proxy.json("GET", "/api/auth/me", headers=bearer(old["access"])))[0] == 401
    assert (await proxy.json("POST", "/api/auth/refresh", {"refresh": old["refresh"]}))[0] == 401
    assert (await proxy.json("POST", "/api/auth/login", {"username": "paul", "password": "viewer-password"}))[0] == 401
    await login(proxy, "paul", "brand-new-pass")


@pytest.mark.parametrize("payload,field", [
    ({"current_password": "wrong-one", "new_password": "brand-new-pass"}, "current_password"),
    ({"new_password": "brand-new-pass"}, "current_password"),
    ({"current_password": ADMIN_PASSWORD, "new_password": "short"}, "new_password"),
    ({"current_password": ADMIN_PASSWORD, "new_password": "x" * 73}, "new_password"),
    ({"current_password": ADMIN_PASSWORD, "new_password": "brand-new-pass", "user": "bob"}, "user"),
])
async def test_change_password_refusals_name_the_field(env, payload, field):
    proxy = await env.proxy()
    tokens = await login(proxy)
    status, body = await proxy.json("POST", "/api/auth/password", payload, headers=bearer(tokens["access"]))
    assert status == 400, body
    assert field in body["fields"]
    await login(proxy)  # unchanged


# ------------------------------------------------------------------ throttling


async def test_repeated_failures_slow_down_then_lock_for_a_while_then_recover(env):
    proxy = await env.proxy()
    clock = Clock()
    proxy.services.auth.throttle.clock = clock
    wrong = {"username": "admin", "password": "wrong-password"}
    right = {"username": "admin", "password": ADMIN_PASSWORD}

    for _ in range(3):  # free failures
        assert (await proxy.json("POST", "/api/auth/login", wrong))[0] == 401
    assert (await proxy.json("POST", "/api/auth/login", wrong))[0] == 401  # the 4th imposes a delay
    response = await proxy.request("POST", "/api/auth/login", right)
    assert response.code == 429  # even the right password waits: no guess is checked while throttled
    assert response.headers["Retry-After"] == "1"
    body = json.loads(response.body)
    assert "try again" in body["error"] and body["retry_after"] == 1

    # Keep failing past every delay until the lockout.
    for _ in range(6):
        clock.now += 60
        assert (await proxy.json("POST", "/api/auth/login", wrong))[0] == 401
    clock.now += 60
    response = await proxy.request("POST", "/api/auth/login", right)
    assert response.code == 429
    assert 800 < int(response.headers["Retry-After"]) <= 900

    # Not forever: after the lockout the real user logs in, and that clears the count.
    clock.now += 901
    assert (await proxy.json("POST", "/api/auth/login", right))[0] == 200
    assert (await proxy.json("POST", "/api/auth/login", wrong))[0] == 401
    assert (await proxy.json("POST", "/api/auth/login", right))[0] == 200


async def test_one_address_trying_many_usernames_is_slowed(env):
    proxy = await env.proxy()
    proxy.services.auth.throttle.clock = Clock()
    for i in range(11):
        status, _ = await proxy.json("POST", "/api/auth/login", {"username": f"user{i}", "password": "guess-1234"})
        assert status == 401, i
    response = await proxy.request("POST", "/api/auth/login", {"username": "admin", "password": ADMIN_PASSWORD})
    assert response.code == 429
    assert int(response.headers["Retry-After"]) >= 1


async def test_password_change_guessing_is_throttled(env):
    proxy = await env.proxy()
    proxy.services.auth.throttle.clock = Clock()
    tokens = await login(proxy)
    statuses = []
    for _ in range(5):
        status, _ = await proxy.json("POST", "/api/auth/password",
                                     {"current_password": "guess-guess", "new_password": "brand-new-pass"},
                                     headers=bearer(tokens["access"]))
        statuses.append(status)
    assert statuses == [400, 400, 400, 400, 429]


# ------------------------------------------------------------------ cookie sessions and XSRF


async def test_cookie_session_with_xsrf_on_unsafe_methods(env):
    proxy = await env.proxy()
    response = await proxy.request("POST", "/api/auth/login",
                                   {"username": "admin", "password": ADMIN_PASSWORD, "session": True})
    assert response.code == 200
    body = json.loads(response.body)
    assert body["session"] is True and "access" not in body and "refresh" not in body
    lines = cookies_of(response)
    session_line, xsrf_line = lines["aivonx_session"], lines["aivonx_xsrf"]
    assert "HttpOnly" in session_line and "SameSite=Strict" in session_line and "Path=/" in session_line
    assert "Secure" not in session_line  # plain http here
    assert "HttpOnly" not in xsrf_line and "SameSite=Strict" in xsrf_line
    xsrf = cookie_value(xsrf_line)
    assert xsrf == body["xsrf_token"]
    cookie = {"Cookie": f"aivonx_session={cookie_value(session_line)}; aivonx_xsrf={xsrf}"}

    status, me = await proxy.json("GET", "/api/auth/me", headers=cookie)
    assert status == 200 and me["via"] == "session" and me["xsrf_token"] == xsrf

    new_user = {"username": "cookie-made", "password": "password-123", "role": "viewer"}
    status, body = await proxy.json("POST", "/api/users", new_user, headers=cookie)
    assert status == 403 and "XSRF" in body["error"]
    status, body = await proxy.json("POST", "/api/users", new_user, headers={**cookie, "X-XSRFToken": "forged"})
    assert status == 403
    status, body = await proxy.json("POST", "/api/users", new_user, headers={**cookie, "X-XSRFToken": xsrf})
    assert status == 201

    # Logout needs the XSRF token too, ends the session and clears the cookies.
    assert (await proxy.json("POST", "/api/auth/logout", headers=cookie))[0] == 403
    response = await proxy.request("POST", "/api/auth/logout", headers={**cookie, "X-XSRFToken": xsrf})
    assert response.code == 200
    assert set(cookies_of(response)) == {"aivonx_session", "aivonx_xsrf"}
    assert (await proxy.json("GET", "/api/auth/me", headers=cookie))[0] == 401


async def test_bearer_requests_need_no_xsrf_even_with_a_cookie_present(env):
    proxy = await env.proxy()
    tokens = await login(proxy)
    status, _ = await proxy.json("POST", "/api/users",
                                 {"username": "bearer-made", "password": "password-123"},
                                 headers={**bearer(tokens["access"]), "Cookie": "aivonx_session=stale"})
    assert status == 201


async def test_session_cookie_is_secure_over_https(env):
    proxy = await env.proxy(xheaders=True)
    response = await proxy.request("POST", "/api/auth/login",
                                   {"username": "admin", "password": ADMIN_PASSWORD, "session": True},
                                   headers={"X-Forwarded-Proto": "https"})
    assert response.code == 200
    for line in cookies_of(response).values():
        assert "Secure" in line and "SameSite=Strict" in line


async def test_session_is_not_a_bearer_token(env):
    proxy = await env.proxy()
    response = await proxy.request("POST", "/api/auth/login",
                                   {"username": "admin", "password": ADMIN_PASSWORD, "session": True})
    session = cookie_value(cookies_of(response)["aivonx_session"])
    assert (await proxy.json("GET", "/api/auth/me", headers=bearer(session)))[0] == 401


# ------------------------------------------------------------------ nothing secret leaks


async def test_no_secret_in_responses_or_logs(env, caplog):
    caplog.set_level(logging.DEBUG)
    proxy = await env.proxy()
    tokens = await login(proxy)
    await proxy.json("POST", "/api/auth/login", {"username": "admin", "password": "Wrong-Secret-123"})
    await make_user(proxy, tokens["access"], "lena", password="Lenas-Secret-99")
    status, created = await proxy.json("POST", "/api/proxy/keys", {"name": "ci", "kind": "api"},
                                       headers=bearer(tokens["access"]))
    assert status == 201
    key = created["secret"]
    bodies = []
    for path in ("/api/users", "/api/proxy/keys", "/api/auth/me"):
        bodies.append((await proxy.json("GET", path, headers=bearer(key)))[1])
    for body in bodies:
        assert_no_secret(body, ADMIN_PASSWORD, "Lenas-Secret-99", key, tokens["access"], tokens["refresh"])
    logged = caplog.text
    for secret in (ADMIN_PASSWORD, "Wrong-Secret-123", "Lenas-Secret-99", key, tokens["access"], JWT_SECRET):
        assert secret not in logged
    assert "$2b$" not in logged


async def test_password_change_in_a_cookie_session_renews_the_session(env):
    proxy = await env.proxy()
    response = await proxy.request("POST", "/api/auth/login",
                                   {"username": "admin", "password": ADMIN_PASSWORD, "session": True})
    lines = cookies_of(response)
    old_xsrf = cookie_value(lines["aivonx_xsrf"])
    old = {"Cookie": f"aivonx_session={cookie_value(lines['aivonx_session'])}; aivonx_xsrf={old_xsrf}"}
    change = {"current_password": ADMIN_PASSWORD, "new_password": "a-new-admin-password"}
    assert (await proxy.json("POST", "/api/auth/password", change, headers=old))[0] == 403  # no XSRF token
    response = await proxy.request("POST", "/api/auth/password", change, headers={**old, "X-XSRFToken": old_xsrf})
    assert response.code == 200
    body = json.loads(response.body)
    assert "access" not in body and body["xsrf_token"] != old_xsrf
    lines = cookies_of(response)
    new = {"Cookie": f"aivonx_session={cookie_value(lines['aivonx_session'])}; "
                     f"aivonx_xsrf={cookie_value(lines['aivonx_xsrf'])}"}
    assert (await proxy.json("GET", "/api/auth/me", headers=old))[0] == 401
    assert (await proxy.json("GET", "/api/auth/me", headers=new))[0] == 200
