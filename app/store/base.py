"""What every repository shares: error translation, durable writes, unique-key diagnosis."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ClassVar, Protocol

from . import backend
from .documents import to_public
from .errors import DuplicateKey, StoreError, StoreUnavailable


class Durability(Protocol):
    """How a repo makes its writes survive a restart (a no-op when MongoDB does it for us)."""

    async def saved(self) -> None:
        """Return once every write made so far is durable."""

    def saved_later(self) -> None:
        """Make writes durable soon, without waiting (for low-value writes on busy paths)."""


class ServerDurability:
    """MongoDB acknowledges a write once it is stored: nothing left to do."""

    async def saved(self) -> None:
        return None

    def saved_later(self) -> None:
        return None


def _translating(method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """Turn driver exceptions into store errors, so no caller ever sees a pymongo class."""

    @functools.wraps(method)
    async def wrapper(self: Repo, *args: Any, **kwargs: Any) -> Any:
        try:
            return await method(self, *args, **kwargs)
        except StoreError:
            raise
        except backend.DuplicateKeyError as exc:
            key = backend.duplicate_key_name(exc)
            raise DuplicateKey(self.unique.get(key or "", key or "unknown")) from exc
        except Exception as exc:
            if backend.is_unavailable(exc):
                raise StoreUnavailable(f"the database is unavailable ({type(exc).__name__})") from exc
            raise

    wrapper.translates_errors = True  # type: ignore[attr-defined]
    return wrapper


class Repo:
    """One collection. Every public coroutine of a subclass is wrapped by :func:`_translating`.

    Wrapping in ``__init_subclass__`` rather than by decorators means a new method cannot
    forget it.
    """

    collection: ClassVar[str]
    unique: ClassVar[dict[str, str]] = {}  # stored key -> the field name DuplicateKey reports

    def __init__(self, db: Any, durability: Durability) -> None:
        self._col = db[self.collection]
        self._durability = durability

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name, value in list(vars(cls).items()):
            if not name.startswith("_") and inspect.iscoroutinefunction(value):
                setattr(cls, name, _translating(value))

    async def _ensure_indexes(self) -> None:
        """Create this collection's indexes (idempotent); called once at connect."""

    async def _saved(self) -> None:
        await self._durability.saved()

    async def _insert(self, doc: dict[str, Any]) -> None:
        try:
            await self._col.insert_one(doc)
        except backend.DuplicateKeyError as exc:
            raise await self._duplicate(exc, doc, own_id=None) from exc

    async def _set(self, doc_id: str, values: dict[str, Any]) -> dict[str, Any] | None:
        """``$set`` ``values`` on one document and return it as stored afterwards (None if unknown)."""
        try:
            return await self._col.find_one_and_update(
                {"_id": doc_id}, {"$set": values}, return_document=backend.RETURN_AFTER
            )
        except backend.DuplicateKeyError as exc:
            raise await self._duplicate(exc, values, own_id=doc_id) from exc

    async def _duplicate(self, exc: Exception, values: Mapping[str, Any], own_id: str | None) -> DuplicateKey:
        """Find which unique field collided by looking for the other document.

        The driver's ``keyPattern`` is right on MongoDB but wrong on mongomock for updates
        (it reports the first unique index matching the updated document itself); asking the
        data works on both. The driver's answer is the fallback if the other one is gone.
        """
        for key, field in self.unique.items():
            if key in values:
                other = await self._col.find_one({key: values[key], "_id": {"$ne": own_id}}, {"_id": 1})
                if other is not None:
                    return DuplicateKey(field)
        key = backend.duplicate_key_name(exc) if isinstance(exc, backend.DuplicateKeyError) else None
        return DuplicateKey(self.unique.get(key or "", key or "unknown"))

    @staticmethod
    def _public(doc: Mapping[str, Any] | None, hidden: tuple[str, ...] = ()) -> dict[str, Any] | None:
        return to_public(doc, hidden)
