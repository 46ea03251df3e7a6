"""Persistence: the only package that knows MongoDB.

``connect()`` returns a :class:`Store` whose repositories (``nodes``, ``users``, ``config``,
``secrets``, ``tokens``, ``changes``, ``usage``) return plain dicts with a string ``id`` and aware UTC
datetimes. Without a MongoDB URL the same code runs on an embedded mongomock database saved
to the data directory. Driver errors surface only as the exceptions below.
"""

from .connection import connect
from .errors import DataDirLocked, DuplicateKey, StoreConnectError, StoreError, StoreUnavailable
from .store import Store

__all__ = [
    "DataDirLocked",
    "DuplicateKey",
    "Store",
    "StoreConnectError",
    "StoreError",
    "StoreUnavailable",
    "connect",
]
