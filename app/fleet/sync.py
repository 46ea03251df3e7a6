"""Multi-instance convergence: follow changes other proxy processes make to the shared store.

Several proxies may run on one MongoDB. Every write to nodes, routing settings or
gateway keys bumps a change counter in the store (``store.changes``); this watcher
polls it (a cheap single-document read, every ``interval`` seconds) and, when it
moved, reloads the registered nodes into the fleet and the routing settings into
the running config. New nodes and nodes whose address changed are probed at once.

Polling rather than change streams: it works on every MongoDB deployment (change
streams need a replica set) and on the embedded store. A store outage while
polling is logged once, retried at the same pace, and never stops the watcher.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from app.config import ConfigError, RoutingConfig, validate_routing
from app.fleet.node import NodeState
from app.fleet.pool import Fleet
from app.logs import app_log
from app.store import Store, StoreError

DEFAULT_INTERVAL = 2.0

Reloader = Callable[[], Awaitable[None]]


class SyncWatcher:
    """Polls ``store.changes`` and reloads nodes and config when another writer moved it."""

    def __init__(
        self,
        store: Store,
        fleet: Fleet,
        apply_config: Callable[[RoutingConfig], None],
        refresh: Callable[[NodeState], Awaitable[Any]] | None = None,
        interval: float = DEFAULT_INTERVAL,
    ):
        self.store = store
        self.fleet = fleet
        self.apply_config = apply_config
        self.refresh = refresh
        self.interval = interval
        self.reloads = 0
        self._reloaders: list[Reloader] = []
        # None: never loaded — the first poll always reloads (closes the gap since start-up).
        self._seen: int | None = None
        self._outage = False
        self._bad_config: dict[str, str] | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._background: set[asyncio.Future[Any]] = set()

    # -- life cycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Start polling on the running loop (idempotent)."""
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for pending in list(self._background):
            pending.cancel()

    def set_interval(self, seconds: float) -> None:
        """Change the polling pace now (tests use a small one)."""
        self.interval = seconds
        self._wake.set()

    def add_reloader(self, reloader: Reloader) -> None:
        """Also run ``reloader()`` whenever the store changed (e.g. to reload cached gateway keys)."""
        self._reloaders.append(reloader)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    # -- polling --------------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            await self.poll_once()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)

    async def poll_once(self) -> bool:
        """One poll: True when the store had changed and everything was reloaded."""
        try:
            for _ in range(3):
                marker = await self.store.changes.current()
                if marker == self._seen:
                    self._recovered()
                    return False
                if await self._reload_at(marker):
                    self._recovered()
                    self._seen = marker
                    return True
            return False  # written to all the time: the next poll tries again
        except asyncio.CancelledError:
            raise
        except StoreError as exc:
            self._failed(exc, trace=False)
            return False
        except Exception as exc:  # a bug must not end convergence for the life of the process
            self._failed(exc, trace=True)
            return False

    def _failed(self, exc: BaseException, *, trace: bool) -> None:
        if self._outage:
            return
        self._outage = True
        app_log().warning("cannot follow changes in the store (%s); retrying every %gs", exc, self.interval,
                          exc_info=exc if trace else None)

    def _recovered(self) -> None:
        if self._outage:
            self._outage = False
            app_log().info("following changes in the store again")

    async def reload(self) -> None:
        """Make the fleet and the running config match the store now."""
        while True:
            marker = await self.store.changes.current()
            if await self._reload_at(marker):
                self._seen = marker
                return

    async def _reload_at(self, marker: int) -> bool:
        """Load nodes and config, and apply them only if nothing was written meanwhile.

        A write made through this process while we read (store first, memory second) could
        otherwise be undone in memory by our older read; the moved marker tells us to read again.
        """
        records = await self.store.nodes.list()
        stored_config = await self.store.config.load()
        if await self.store.changes.current() != marker:
            return False
        before = {node_id: node.url for node_id, node in self.fleet.nodes.items()}
        self.fleet.sync(records)
        for node in list(self.fleet.nodes.values()):
            if before.get(node.id) != node.url:
                self._probe(node)
        config = self._routing(stored_config)
        if config != self.fleet.config:
            self.apply_config(config)
        for reloader in self._reloaders:
            await reloader()
        self.reloads += 1
        return True

    def _routing(self, stored: dict[str, Any]) -> RoutingConfig:
        try:
            config = validate_routing(stored)
            self._bad_config = None
            return config
        except ConfigError as exc:
            if self._bad_config != exc.errors:
                self._bad_config = exc.errors
                app_log().warning("ignoring invalid stored settings: %s", exc)
            return validate_routing({k: v for k, v in stored.items() if k not in exc.errors})

    def _probe(self, node: NodeState) -> None:
        if self.refresh is None:
            return
        future = asyncio.ensure_future(self.refresh(node))
        self._background.add(future)
        future.add_done_callback(self._probed)

    def _probed(self, future: asyncio.Future[Any]) -> None:
        self._background.discard(future)
        if not future.cancelled() and future.exception() is not None:
            app_log().error("probing a node after a store change failed", exc_info=future.exception())
