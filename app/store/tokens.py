"""API tokens and gateway keys (collection ``tokens``) and revoked JWT ids (``revoked``).

Only a hash of each token is stored; the hash never leaves this module. Creating or revoking
a token bumps the change counter, so processes that cache gateway keys in memory reload them.
Revoked JWT ids expire through a TTL index on MongoDB; mongomock has no TTL, so reads also
check ``expires_at`` and writes sweep expired entries.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .base import Durability, Repo
from .changes import ChangeRepo
from .documents import new_id, to_db_time, utcnow

KINDS = ("api", "gateway")
_HIDDEN = ("token_hash",)


class TokenRepo(Repo):
    collection = "tokens"
    unique = {"token_hash": "token_hash"}

    def __init__(self, db: Any, durability: Durability, changes: ChangeRepo) -> None:
        super().__init__(db, durability)
        self._changes = changes
        self._revoked = db["revoked"]

    async def _ensure_indexes(self) -> None:
        await self._col.create_index("token_hash", unique=True)
        await self._col.create_index("user_id")
        await self._revoked.create_index("expires_at", expireAfterSeconds=0)

    async def create(self, user_id: str, name: str, token_hash: str, prefix: str, kind: str,
                     limits: dict[str, Any] | None = None) -> dict[str, Any]:
        """Store a token by its hash; ``prefix`` (its first characters) is what people see.

        ``limits``: a gateway key's optional ``rpm`` and ``tpd`` (``None`` = unlimited).
        """
        if kind not in KINDS:
            raise ValueError(f"token kind must be one of {KINDS}, not {kind!r}")
        doc = {
            "_id": new_id(),
            "user_id": user_id,
            "name": name,
            "token_hash": token_hash,
            "prefix": prefix,
            "kind": kind,
            "created_at": utcnow(),
            "last_used_at": None,
            "revoked": False,
            "rpm": (limits or {}).get("rpm"),
            "tpd": (limits or {}).get("tpd"),
        }
        await self._insert(doc)
        await self._changed()
        return self._public(doc, _HIDDEN)

    async def update(self, token_id: str, fields: dict[str, Any]) -> dict[str, Any] | None:
        """Change a token's ``name``, ``rpm`` or ``tpd``; None when there is no such token.

        Bumps the change counter: other processes reload the key's limits from here.
        """
        unknown = set(fields) - {"name", "rpm", "tpd"}
        if unknown:
            raise ValueError(f"cannot update {sorted(unknown)} of a token")
        doc = await self._set(token_id, dict(fields))
        if doc is not None:
            await self._changed()
        return self._public(doc, _HIDDEN)

    async def find_by_hash(self, token_hash: str) -> dict[str, Any] | None:
        """The active (not revoked) token with this hash."""
        doc = await self._col.find_one({"token_hash": token_hash, "revoked": False})
        return self._public(doc, _HIDDEN)

    async def list(self, user_id: str | None = None) -> list[dict[str, Any]]:
        """Tokens, oldest first, revoked ones included (they say so)."""
        query = {} if user_id is None else {"user_id": user_id}
        docs = await self._col.find(query).sort([("created_at", 1), ("_id", 1)]).to_list(None)
        return [self._public(doc, _HIDDEN) for doc in docs]

    async def revoke(self, token_id: str) -> bool:
        """Revoke a token; False when there is no such token. Revoking twice is fine."""
        result = await self._col.update_one(
            {"_id": token_id, "revoked": False}, {"$set": {"revoked": True, "revoked_at": utcnow()}}
        )
        if result.modified_count:
            await self._changed()
            return True
        return await self._col.count_documents({"_id": token_id}, limit=1) > 0

    async def touch(self, token_id: str, when: datetime) -> None:
        """Record a use. Not awaited to disk in the embedded store: it runs on every request,
        and losing a few seconds of ``last_used_at`` in a crash is harmless."""
        await self._col.update_one({"_id": token_id}, {"$set": {"last_used_at": to_db_time(when)}})
        self._durability.saved_later()

    async def revoke_jti(self, jti: str, expires_at: datetime) -> None:
        """Refuse the JWT with this id until it would have expired anyway."""
        await self._revoked.delete_many({"expires_at": {"$lte": utcnow()}})
        await self._revoked.update_one({"_id": jti}, {"$set": {"expires_at": to_db_time(expires_at)}}, upsert=True)
        await self._saved()

    async def is_jti_revoked(self, jti: str) -> bool:
        doc = await self._revoked.find_one({"_id": jti, "expires_at": {"$gt": utcnow()}}, {"_id": 1})
        return doc is not None

    async def _changed(self) -> None:
        await self._changes._bump()
        await self._saved()
