"""A change counter shared by every proxy process on one MongoDB.

Who bumps it: the write methods of :class:`~app.store.nodes.NodeRepo`,
:class:`~app.store.config.ConfigRepo` and :class:`~app.store.tokens.TokenRepo` (create and
revoke), after their write and before they return, so no caller can forget. Another process
polls :meth:`ChangeRepo.current` and reloads its in-memory view (nodes, routing settings,
cached gateway keys) when the number moved. Callers may also :meth:`ChangeRepo.bump` by hand.
"""

from __future__ import annotations

from . import backend
from .base import Repo

_MARKER = "changes"


class ChangeRepo(Repo):
    collection = "meta"

    async def bump(self) -> int:
        """Advance the counter atomically and return its new value."""
        value = await self._bump()
        await self._saved()
        return value

    async def current(self) -> int:
        """The counter's value; 0 before the first bump."""
        doc = await self._col.find_one({"_id": _MARKER})
        return int(doc["value"]) if doc else 0

    async def _bump(self) -> int:
        """Bump without persisting: for repos that persist their own write right after."""
        update = {"$inc": {"value": 1}}
        try:
            doc = await self._col.find_one_and_update(
                {"_id": _MARKER}, update, upsert=True, return_document=backend.RETURN_AFTER
            )
        except backend.DuplicateKeyError:  # two first-ever bumps raced on the upsert
            doc = await self._col.find_one_and_update({"_id": _MARKER}, update, return_document=backend.RETURN_AFTER)
        return int(doc["value"])
