"""The Ollama nodes an operator registered (collection ``nodes``).

Names are unique ignoring case (through the stored ``name_key``), URLs are unique as given:
the caller normalises them to ``http://host:port`` first. Every write bumps the change
counter so other proxy processes reload the fleet.
"""

from __future__ import annotations

from typing import Any

from .base import Durability, Repo
from .changes import ChangeRepo
from .documents import new_id, utcnow

_HIDDEN = ("name_key",)
_READ_ONLY = frozenset({"id", "_id", "name_key", "created_at", "updated_at"})


class NodeRepo(Repo):
    collection = "nodes"
    unique = {"name_key": "name", "url": "url"}

    def __init__(self, db: Any, durability: Durability, changes: ChangeRepo) -> None:
        super().__init__(db, durability)
        self._changes = changes

    async def _ensure_indexes(self) -> None:
        await self._col.create_index("name_key", unique=True)
        await self._col.create_index("url", unique=True)

    async def list(self) -> list[dict[str, Any]]:
        """All nodes, sorted by name (ignoring case)."""
        docs = await self._col.find({}).sort("name_key", 1).to_list(None)
        return [self._public(doc, _HIDDEN) for doc in docs]

    async def get(self, node_id: str) -> dict[str, Any] | None:
        return self._public(await self._col.find_one({"_id": node_id}), _HIDDEN)

    async def get_by_url(self, url: str) -> dict[str, Any] | None:
        return self._public(await self._col.find_one({"url": url}), _HIDDEN)

    async def create(self, fields: dict[str, Any]) -> dict[str, Any]:
        """Store a new node; raises DuplicateKey("name") or DuplicateKey("url")."""
        values = _writable(fields)
        if "name" not in values or "url" not in values:
            raise ValueError("a node needs a name and a url")
        now = utcnow()
        doc = {"_id": new_id(), **values, "created_at": now, "updated_at": now}
        await self._insert(doc)
        await self._changed()
        return self._public(doc, _HIDDEN)

    async def update(self, node_id: str, fields: dict[str, Any]) -> dict[str, Any] | None:
        """Set the given fields (others keep their value); None when the node is unknown.

        Read-only keys (id, created_at, updated_at) are ignored, so a caller may send back a
        document it read.
        """
        values = {**_writable(fields), "updated_at": utcnow()}
        doc = await self._set(node_id, values)
        if doc is None:
            return None
        await self._changed()
        return self._public(doc, _HIDDEN)

    async def delete(self, node_id: str) -> bool:
        result = await self._col.delete_one({"_id": node_id})
        if not result.deleted_count:
            return False
        await self._changed()
        return True

    async def _changed(self) -> None:
        await self._changes._bump()
        await self._saved()


def _writable(fields: dict[str, Any]) -> dict[str, Any]:
    values = {key: value for key, value in fields.items() if key not in _READ_ONLY}
    for key in ("name", "url"):
        if key in values and not (isinstance(values[key], str) and values[key]):
            raise ValueError(f"a node's {key} must be a non-empty string")
    if "name" in values:
        values["name_key"] = values["name"].lower()
    return values
