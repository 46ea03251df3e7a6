"""The Store: one object holding the repositories, whatever database is behind them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from . import backend
from .base import Durability, Repo
from .changes import ChangeRepo
from .config import ConfigRepo
from .errors import StoreUnavailable
from .nodes import NodeRepo
from .secrets import SecretRepo
from .tokens import TokenRepo
from .usage import EmbeddedUsageRepo, UsageRepo
from .users import UserRepo


class Store:
    """Repositories over one database; built by :func:`app.store.connect`."""

    def __init__(
        self,
        *,
        kind: str,
        db: Any,
        description: str,
        durability: Durability,
        closer: Callable[[], Awaitable[None]],
        health: Callable[[], None] | None = None,
        usage: EmbeddedUsageRepo | None = None,
    ) -> None:
        self.kind = kind
        self._db = db
        self._description = description
        self._closer = closer
        self._health = health
        self._closed = False
        self.changes = ChangeRepo(db, durability)
        self.nodes = NodeRepo(db, durability, self.changes)
        self.users = UserRepo(db, durability)
        self.config = ConfigRepo(db, durability, self.changes)
        self.secrets = SecretRepo(db, durability)
        self.tokens = TokenRepo(db, durability, self.changes)
        # Usage records: in the database, or (embedded store) in their own journal file.
        self.usage: UsageRepo | EmbeddedUsageRepo = usage if usage is not None else UsageRepo(db, durability)

    def describe(self) -> str:
        """One line for the start-up log; never contains a password."""
        return self._description

    async def ping(self) -> None:
        """Raise StoreUnavailable unless the database answers (and, embedded, saving works)."""
        if self._closed:
            raise StoreUnavailable("the store is closed")
        try:
            await self._db.command("ping")
        except backend.PyMongoError as exc:
            raise StoreUnavailable(f"the database is unavailable ({type(exc).__name__})") from exc
        if self._health is not None:
            self._health()

    async def close(self) -> None:
        """Flush pending writes and release the database (or the data directory)."""
        if self._closed:
            return
        self._closed = True
        await self._closer()

    def _repos(self) -> list[Repo]:
        repos: list[Repo] = [self.changes, self.nodes, self.users, self.config, self.secrets, self.tokens]
        if isinstance(self.usage, UsageRepo):
            repos.append(self.usage)
        return repos

    async def _prepare(self) -> None:
        """Create every collection's indexes; idempotent, run at connect."""
        for repo in self._repos():
            await repo._ensure_indexes()
