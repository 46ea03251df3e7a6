"""Server-side secrets generated once and shared (collection ``secrets``), e.g. the JWT key.

Several proxy processes on one MongoDB must sign with the same key, so creation is an upsert
that only the first process wins; everybody then reads the winner's value back.
"""

from __future__ import annotations

from collections.abc import Callable

from . import backend
from .base import Repo
from .documents import utcnow


class SecretRepo(Repo):
    collection = "secrets"

    async def get_or_create(self, name: str, factory: Callable[[], str]) -> str:
        """The secret called ``name``, created from ``factory()`` if it does not exist yet."""
        doc = await self._col.find_one({"_id": name})
        if doc is not None:
            return doc["value"]
        created = False
        try:
            result = await self._col.update_one(
                {"_id": name},
                {"$setOnInsert": {"value": factory(), "created_at": utcnow()}},
                upsert=True,
            )
            created = result.upserted_id is not None
        except backend.DuplicateKeyError:  # another process inserted it between our two calls
            pass
        if created:
            await self._saved()
        doc = await self._col.find_one({"_id": name})
        return doc["value"]
