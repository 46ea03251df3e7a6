"""Everything that knows which Mongo driver we use: clients, constants, error classes.

The repos speak the Motor/PyMongo collection API and ask this module what a driver
exception means. Moving from Motor to ``pymongo.AsyncMongoClient`` (Motor is deprecated)
should only change :func:`new_mongo_client` and :func:`close_client`.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

from mongomock_motor import AsyncMongoMockClient
from motor.motor_asyncio import AsyncIOMotorClient
from pymongo import ReturnDocument
from pymongo.errors import (
    BulkWriteError,
    ConfigurationError,
    ConnectionFailure,
    DuplicateKeyError,
    ExecutionTimeout,
    InvalidName,
    InvalidOperation,
    OperationFailure,
    PyMongoError,
    WriteConcernError,
    WTimeoutError,
)

__all__ = [
    "CONFIG_ERRORS",
    "RETURN_AFTER",
    "BulkWriteError",
    "ConnectionFailure",
    "DuplicateKeyError",
    "PyMongoError",
    "close_client",
    "duplicate_key_name",
    "is_auth_failure",
    "is_unavailable",
    "new_embedded_client",
    "new_mongo_client",
    "only_duplicates",
]

RETURN_AFTER = ReturnDocument.AFTER

# Server error codes that mean "the database is not usable right now", not "your query is wrong".
_UNAVAILABLE_CODES = frozenset(
    {
        6,  # HostUnreachable
        7,  # HostNotFound
        13,  # Unauthorized
        18,  # AuthenticationFailed
        50,  # MaxTimeMSExpired
        89,  # NetworkTimeout
        91,  # ShutdownInProgress
        189,  # PrimarySteppedDown
        262,  # ExceededTimeLimit
        10107,  # NotWritablePrimary
        11600,  # InterruptedAtShutdown
        11602,  # InterruptedDueToReplStateChange
        13435,  # NotPrimaryNoSecondaryOk
        13436,  # NotPrimaryOrSecondary
    }
)
_TRANSIENT_LABELS = ("RetryableWriteError", "TransientTransactionError")
_INDEX_IN_MESSAGE = re.compile(r"index: (\S+)")


def new_mongo_client(url: str, server_selection_timeout_ms: int) -> Any:
    """A client for a real MongoDB; tests replace this seam with :func:`new_embedded_client`."""
    return AsyncIOMotorClient(
        url,
        tz_aware=True,
        serverSelectionTimeoutMS=server_selection_timeout_ms,
        appname="aivonx-proxy",
    )


def new_embedded_client() -> Any:
    """An in-process, Motor-compatible database (mongomock-motor)."""
    return AsyncMongoMockClient(tz_aware=True)


async def close_client(client: Any) -> None:
    """Close either kind of client (``AsyncMongoClient.close`` is a coroutine, Motor's is not)."""
    result = client.close()
    if inspect.isawaitable(result):
        await result


def is_unavailable(exc: BaseException) -> bool:
    """True when ``exc`` means the database is unreachable or refusing work (answer 503)."""
    if isinstance(exc, ConnectionFailure | ExecutionTimeout | WTimeoutError | WriteConcernError):
        return True
    if isinstance(exc, InvalidOperation):  # the client was closed under us (shutdown)
        return True
    if isinstance(exc, PyMongoError) and any(exc.has_error_label(label) for label in _TRANSIENT_LABELS):
        return True
    return isinstance(exc, OperationFailure) and exc.code in _UNAVAILABLE_CODES


def is_auth_failure(exc: BaseException) -> bool:
    """True when the server rejected our credentials (retrying will not help)."""
    return isinstance(exc, OperationFailure) and exc.code in (13, 18)


def only_duplicates(exc: BulkWriteError) -> bool:
    """True when every failed write of an unordered bulk insert hit an existing ``_id`` (a retry)."""
    errors = (exc.details or {}).get("writeErrors") or []
    return bool(errors) and all(error.get("code") == 11000 for error in errors) \
        and not (exc.details or {}).get("writeConcernErrors")


def duplicate_key_name(exc: DuplicateKeyError) -> str | None:
    """The indexed key that collided, from the server's ``keyPattern`` or its message."""
    details = exc.details or {}
    pattern = details.get("keyPattern")
    if isinstance(pattern, dict) and pattern:
        return next(iter(pattern))
    match = _INDEX_IN_MESSAGE.search(str(details.get("errmsg") or exc))
    if match:
        return re.sub(r"_-?1$", "", match.group(1))
    return None


# What a bad URL or database name raises when the client is built.
CONFIG_ERRORS = (ConfigurationError, InvalidName, ValueError, TypeError)
