"""Opening a Store on a real MongoDB server."""

from __future__ import annotations

import asyncio
import re

from . import backend
from .base import ServerDurability
from .errors import StoreConnectError
from .redact import redact_url, scrub
from .store import Store

_WHERE_TO_LOOK = "the URL (AIVONX_MONGO_URL / --mongo-url) and credentials"


async def open_mongodb(url: str, db_name: str, connect_timeout: float) -> Store:
    """Connect, waiting up to ``connect_timeout`` seconds for the server (it may still be
    starting, e.g. in docker compose), then create the indexes.

    Errors are raised ``from None``: a chained driver exception could print the URL.
    """
    shown = redact_url(url)
    # Also the time an operation waits for a lost server before the API answers 503.
    selection_ms = int(min(max(connect_timeout, 0.5), 5.0) * 1000)
    try:
        client = backend.new_mongo_client(url, selection_ms)
    except backend.CONFIG_ERRORS as exc:
        raise _invalid(shown, db_name, scrub(str(exc), url)) from None
    try:
        try:
            db = client[db_name]
        except backend.CONFIG_ERRORS as exc:
            raise _invalid(shown, db_name, scrub(str(exc), url)) from None
        await _wait_for_server(db, url, shown, connect_timeout)
        store = Store(
            kind="mongodb",
            db=db,
            description=f"MongoDB at {shown}, database {db_name}",
            durability=ServerDurability(),
            closer=lambda: backend.close_client(client),
        )
        try:
            await store._prepare()
        except backend.PyMongoError as exc:
            raise StoreConnectError(f"cannot create the indexes in MongoDB at {shown}: {_reason(exc, url)}") from None
        return store
    except BaseException:
        await backend.close_client(client)
        raise


def _invalid(shown: str, db_name: str, reason: str) -> StoreConnectError:
    return StoreConnectError(
        f"invalid MongoDB settings for {shown} (database {db_name!r}): {reason}; check AIVONX_MONGO_URL / --mongo-url"
    )


async def _wait_for_server(db: object, url: str, shown: str, connect_timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + connect_timeout
    while True:
        try:
            await db.command("ping")  # type: ignore[attr-defined]
            return
        except backend.PyMongoError as exc:
            if backend.is_auth_failure(exc):
                raise StoreConnectError(
                    f"MongoDB at {shown} rejected the credentials: check the user name, password "
                    "and authSource in the URL (AIVONX_MONGO_URL / --mongo-url)"
                ) from None
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise StoreConnectError(
                    f"cannot reach MongoDB at {shown} after {connect_timeout:g}s: check that the "
                    f"server is running and reachable, {_WHERE_TO_LOOK} (last error: {_reason(exc, url)})"
                ) from None
        await asyncio.sleep(min(0.5, remaining))


def _reason(exc: Exception, url: str) -> str:
    """The driver's message, without the topology dump or any password, kept short."""
    text = str(exc).split(", Timeout:")[0].split(", Topology Description:")[0]
    text = re.sub(r" \(configured timeouts:[^)]*\)", "", text)
    text = scrub(text, url)
    return text if len(text) <= 300 else text[:297] + "..."
