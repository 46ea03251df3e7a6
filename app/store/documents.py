"""Shape of documents crossing the store boundary: string ids in, plain dicts with ``id`` out.

Ids are generated here (uuid4 hex stored in ``_id``) rather than by the driver, so the same
documents work on mongomock and on MongoDB and never leak an ObjectId to JSON encoders.
Times are stored as UTC with millisecond precision, which is all BSON keeps: what ``create``
returns is then exactly what a later ``get`` reads back.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any


def new_id() -> str:
    return uuid.uuid4().hex


def utcnow() -> datetime:
    """The current time, aware UTC, truncated to what BSON stores."""
    return to_db_time(datetime.now(UTC))


def to_db_time(value: datetime) -> datetime:
    """An aware UTC datetime at millisecond precision; naive input is taken as UTC."""
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def to_public(doc: Mapping[str, Any] | None, hidden: Iterable[str] = ()) -> dict[str, Any] | None:
    """Turn a stored document into what callers get: ``id`` instead of ``_id``, aware UTC times."""
    if doc is None:
        return None
    skip = {"_id", *hidden}
    out: dict[str, Any] = {"id": str(doc["_id"])}
    out.update((key, plain(value)) for key, value in doc.items() if key not in skip)
    return out


def plain(value: Any) -> Any:
    """``value`` with every datetime inside it made aware UTC (the drivers may return naive)."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, Mapping):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain(item) for item in value]
    return value
