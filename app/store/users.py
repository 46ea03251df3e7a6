"""People who may use the management API (collection ``users``).

Usernames are unique ignoring case (stored ``username_key``). Documents include
``password_hash``: callers strip it before answering a client.
"""

from __future__ import annotations

from typing import Any

from .base import Repo
from .documents import new_id, utcnow

_HIDDEN = ("username_key",)
_READ_ONLY = frozenset({"id", "_id", "username_key", "created_at", "updated_at"})


class UserRepo(Repo):
    collection = "users"
    unique = {"username_key": "username"}

    async def _ensure_indexes(self) -> None:
        await self._col.create_index("username_key", unique=True)

    async def create(self, username: str, password_hash: str, role: str) -> dict[str, Any]:
        """Store a new user; raises DuplicateKey("username")."""
        now = utcnow()
        doc = {
            "_id": new_id(),
            **_writable({"username": username}),
            "password_hash": password_hash,
            "role": role,
            "created_at": now,
            "updated_at": now,
        }
        await self._insert(doc)
        await self._saved()
        return self._public(doc, _HIDDEN)

    async def get(self, user_id: str) -> dict[str, Any] | None:
        return self._public(await self._col.find_one({"_id": user_id}), _HIDDEN)

    async def get_by_username(self, username: str) -> dict[str, Any] | None:
        """Look a user up ignoring case, as people type their name at the login prompt."""
        if not isinstance(username, str):
            return None
        return self._public(await self._col.find_one({"username_key": username.lower()}), _HIDDEN)

    async def list(self) -> list[dict[str, Any]]:
        """All users, sorted by username (ignoring case)."""
        docs = await self._col.find({}).sort("username_key", 1).to_list(None)
        return [self._public(doc, _HIDDEN) for doc in docs]

    async def update(self, user_id: str, fields: dict[str, Any]) -> dict[str, Any] | None:
        """Set the given fields; None when the user is unknown; DuplicateKey("username")."""
        doc = await self._set(user_id, {**_writable(fields), "updated_at": utcnow()})
        if doc is None:
            return None
        await self._saved()
        return self._public(doc, _HIDDEN)

    async def delete(self, user_id: str) -> bool:
        result = await self._col.delete_one({"_id": user_id})
        if not result.deleted_count:
            return False
        await self._saved()
        return True

    async def count(self, role: str | None = None) -> int:
        """How many users there are (with ``role``, if given): e.g. to keep one admin."""
        return await self._col.count_documents({} if role is None else {"role": role})


def _writable(fields: dict[str, Any]) -> dict[str, Any]:
    values = {key: value for key, value in fields.items() if key not in _READ_ONLY}
    if "username" in values:
        if not (isinstance(values["username"], str) and values["username"]):
            raise ValueError("a username must be a non-empty string")
        values["username_key"] = values["username"].lower()
    return values
