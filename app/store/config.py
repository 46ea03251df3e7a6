"""Routing settings changed at run time through the API (collection ``config``).

One document (``_id: "routing"``) holds the whole set, so a save replaces it atomically and a
reader never sees half of an update. Saving bumps the change counter.
"""

from __future__ import annotations

from typing import Any

from .base import Durability, Repo
from .changes import ChangeRepo
from .documents import plain, utcnow

_DOC_ID = "routing"


class ConfigRepo(Repo):
    collection = "config"

    def __init__(self, db: Any, durability: Durability, changes: ChangeRepo) -> None:
        super().__init__(db, durability)
        self._changes = changes

    async def load(self) -> dict[str, Any]:
        """The stored settings; {} when none were ever saved."""
        doc = await self._col.find_one({"_id": _DOC_ID})
        if doc is None:
            return {}
        return plain(doc.get("values", {}))

    async def save(self, values: dict[str, Any]) -> None:
        """Replace the whole set of stored settings."""
        if not isinstance(values, dict):
            raise TypeError("settings must be a dict")
        doc = {"_id": _DOC_ID, "values": dict(values), "updated_at": utcnow()}
        await self._col.replace_one({"_id": _DOC_ID}, doc, upsert=True)
        await self._changes._bump()
        await self._saved()
