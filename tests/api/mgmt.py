"""Logging in to a test proxy's management API.

Uses the real ``POST /api/auth/login`` once the AuthService is wired into
``services.auth``; until then a stand-in that knows two fixed Bearer tokens
(``admin``, ``viewer``) lets the management routes be tested on their own.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tests.conftest import ADMIN_PASSWORD, Proxy

VIEWER_PASSWORD = "viewer-password-for-tests"



@dataclass
class _Principal:
    username: str
    role: str
    user_id: str = ""
    via: str = "test"


class StandInAuth:
    """Resolves ``Authorization: Bearer admin|viewer``; anything else is anonymous."""

    async def authenticate(self, handler: Any) -> _Principal | None:
        header = handler.request.headers.get("Authorization", "")
        role = {"Bearer admin": "admin", "Bearer viewer": "viewer"}.get(header)
        return _Principal(role, role) if role else None


def _uses_stand_in(proxy: Proxy) -> bool:
    if proxy.services.auth is None:
        proxy.services.auth = StandInAuth()
    return isinstance(proxy.services.auth, StandInAuth)


async def _login(proxy: Proxy, username: str, password: str) -> dict[str, str]:
    status, body = await proxy.json("POST", "/api/auth/login", {"username": username, "password": password})
    assert status == 200, (status, body)
    return {"Authorization": f"Bearer {body['access']}"}


async def admin(proxy: Proxy) -> dict[str, str]:
    """Headers that authenticate an admin on ``proxy``."""
    if _uses_stand_in(proxy):
        return {"Authorization": "Bearer admin"}
    return await _login(proxy, "admin", ADMIN_PASSWORD)


async def viewer(proxy: Proxy) -> dict[str, str]:
    """Headers that authenticate a viewer on ``proxy`` (created on first use)."""
    if _uses_stand_in(proxy):
        return {"Authorization": "Bearer viewer"}
    await proxy.json("POST", "/api/users", {"username": "viewer", "password": VIEWER_PASSWORD, "role": "viewer"},
                     headers=await admin(proxy))
    return await _login(proxy, "viewer", VIEWER_PASSWORD)


def strict_json(text: str | bytes) -> Any:
    """Parse JSON refusing NaN and ±Infinity (what a browser's JSON.parse refuses too)."""

    def refuse(constant: str) -> Any:
        raise ValueError(f"non-finite number in JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


async def eventually(predicate: Callable[[], Any], timeout: float = 5.0, step: float = 0.02) -> Any:
    """Poll ``predicate`` (sync or async) until it is truthy; fail after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if loop.time() >= deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(step)
