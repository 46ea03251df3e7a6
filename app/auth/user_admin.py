"""User administration: create, list, change, delete users — never the last admin.

A mixin of :class:`~app.auth.service.AuthService`, which provides the store, the
user cache and the lock that keeps one admin at least (per process).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

from app.api.base import ApiError
from app.auth import passwords
from app.logs import app_log
from app.store import DuplicateKey

ROLES = ("admin", "viewer")
USERNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


class UserAdmin:
    store: Any
    _users: dict[str, Any]
    _admin_lock: asyncio.Lock

    def _forget_token(self, token_id: str) -> None:  # provided by AuthService
        raise NotImplementedError

    async def list_users(self) -> list[dict[str, Any]]:
        return [public_user(u) for u in await self.store.users.list()]

    async def get_user(self, user_id: str) -> dict[str, Any]:
        user = await self.store.users.get(user_id)
        if user is None:
            raise ApiError(404, f"no user with id {user_id!r}")
        return public_user(user)

    async def create_user(self, body: dict[str, Any]) -> dict[str, Any]:
        errors = _unknown(body, {"username", "password", "role"})
        username = body.get("username")
        role = body.get("role", "viewer")
        _check_username(username, errors)
        _check_role(role, errors)
        _check_password(body.get("password"), errors, required=True)
        if errors:
            raise ApiError(400, "invalid user", fields=errors)
        password_hash = await _in_thread(passwords.hash_password, body["password"])
        try:
            user = await self.store.users.create(username, password_hash, role)
        except DuplicateKey:
            raise ApiError(409, f"a user named {username!r} already exists",
                           fields={"username": "already taken"}) from None
        app_log().info("created user %r with role %s", user["username"], role)
        return public_user(user)

    async def update_user(self, user_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """Change role, username, or reset the password (which ends the user's sessions)."""
        errors = _unknown(body, {"username", "password", "role"})
        if "username" in body:
            _check_username(body["username"], errors)
        if "role" in body:
            _check_role(body["role"], errors)
        if "password" in body:
            _check_password(body["password"], errors, required=True)
        if errors:
            raise ApiError(400, "invalid user", fields=errors)
        async with self._admin_lock:
            user = await self.store.users.get(user_id)
            if user is None:
                raise ApiError(404, f"no user with id {user_id!r}")
            fields: dict[str, Any] = {k: body[k] for k in ("username", "role") if k in body}
            if user["role"] == "admin" and fields.get("role", "admin") != "admin":
                await self._keep_an_admin("demote")
            if "password" in body:
                fields["password_hash"] = await _in_thread(passwords.hash_password, body["password"])
                fields["token_gen"] = _gen(user) + 1
            if not fields:
                return public_user(user)
            try:
                updated = await self.store.users.update(user_id, fields)
            except DuplicateKey:
                raise ApiError(409, f"a user named {body.get('username')!r} already exists",
                               fields={"username": "already taken"}) from None
        self._users.pop(user_id, None)
        if updated is None:
            raise ApiError(404, f"no user with id {user_id!r}")
        changed = ", ".join("password" if k == "password_hash" else k for k in fields if k != "token_gen")
        app_log().info("updated user %r: %s", updated["username"], changed)
        return public_user(updated)

    async def delete_user(self, user_id: str) -> dict[str, Any]:
        """Delete a user and revoke their API tokens and gateway keys; never the last admin."""
        async with self._admin_lock:
            user = await self.store.users.get(user_id)
            if user is None:
                raise ApiError(404, f"no user with id {user_id!r}")
            if user["role"] == "admin":
                await self._keep_an_admin("delete")
            await self.store.users.delete(user_id)
        self._users.pop(user_id, None)
        for record in await self.store.tokens.list(user_id):
            if not record.get("revoked"):
                await self.store.tokens.revoke(record["id"])
                self._forget_token(record["id"])
        app_log().info("deleted user %r", user["username"])
        return public_user(user)

    async def _keep_an_admin(self, action: str) -> None:
        if await self.store.users.count("admin") <= 1:
            raise ApiError(409, f"cannot {action} the last admin; make another user admin first")


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def public_user(user: dict[str, Any]) -> dict[str, Any]:
    """What clients may see of a user: never the hash, never the token generation."""
    return {"id": user["id"], "username": user["username"], "role": user["role"],
            "created_at": _iso(user.get("created_at")), "updated_at": _iso(user.get("updated_at"))}


def _gen(user: dict[str, Any]) -> int:
    value = user.get("token_gen", 0)
    return value if isinstance(value, int) else 0


async def _in_thread(func: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, func, *args)


def _unknown(body: dict[str, Any], allowed: set[str]) -> dict[str, str]:
    return {key: "unknown field" for key in body if key not in allowed}


def _check_username(value: Any, errors: dict[str, str]) -> None:
    if not isinstance(value, str) or not value:
        errors["username"] = "a username is required"
    elif not USERNAME_RE.match(value):
        errors["username"] = ("1-64 characters: letters, digits and . _ @ -, "
                              "starting with a letter or digit")


def _check_role(value: Any, errors: dict[str, str]) -> None:
    if value not in ROLES:
        errors["role"] = f"must be one of {', '.join(ROLES)}"


def _check_password(value: Any, errors: dict[str, str], *, required: bool) -> None:
    if value is None and not required:
        return
    try:
        passwords.check_password_rules(value)
    except passwords.WeakPassword as exc:
        errors["password"] = str(exc)
