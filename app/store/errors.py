"""The store's exceptions: the only failure types callers need to know.

Driver exceptions never leave ``app.store``; they are translated into these so the API can
answer 503 (:class:`StoreUnavailable`) or 409 (:class:`DuplicateKey`) without knowing Mongo.
"""

from __future__ import annotations


class StoreError(Exception):
    """Base class of every error the store raises on purpose."""


class StoreUnavailable(StoreError):
    """The database cannot be reached or failed the operation; retrying later may work."""


class StoreConnectError(StoreError):
    """The store could not be opened at start-up; the message says what to check."""


class DataDirLocked(StoreError):
    """Another process owns the embedded store's data directory."""


class DuplicateKey(StoreError):
    """A write collided with a unique field of another document."""

    def __init__(self, field: str) -> None:
        super().__init__(f"another document already has this {field}")
        self.field = field
