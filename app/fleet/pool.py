"""The fleet: every node's runtime state, the active/standby pools, and admission.

All routing decisions are made here from memory. :meth:`Fleet.acquire` hands out
a :class:`Lease` (one in-flight request on one node); its ``release`` must run in
a ``finally``. When every candidate is at its ``max_concurrency`` the request
waits in a FIFO queue until a slot frees or ``queue_timeout`` passes.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from app.config import RoutingConfig
from app.fleet import strategies
from app.fleet.names import display_name
from app.fleet.node import ACTIVE, STANDBY, NodeState


class NoCandidate(Exception):
    """No node can take the request now. ``known`` tells 404 (nobody has the model) from 503."""

    def __init__(self, message: str, known: bool, retry_after: int = 5):
        super().__init__(message)
        self.known = known
        self.retry_after = retry_after


@dataclass
class Lease:
    """One request in flight on ``node``. Release exactly once (idempotent)."""

    fleet: Fleet
    node: NodeState
    key: str | None
    started: float = field(default_factory=time.monotonic)
    waited: float = 0.0
    candidates: int = 0
    loaded: bool = False
    released: bool = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.fleet._release(self.node)


@dataclass
class _Waiter:
    key: str | None
    exclude: frozenset[str]
    future: asyncio.Future[Lease]
    nodes: list[NodeState]
    enqueued: float = field(default_factory=time.monotonic)


Listener = Callable[[str, dict[str, Any]], None]


class Fleet:
    """In-memory state of all registered nodes; the only place routing decisions are made."""

    def __init__(self, config: RoutingConfig | None = None, rng: random.Random | None = None):
        self.config = config or RoutingConfig()
        self.nodes: dict[str, NodeState] = {}
        self._turn = 0
        self._rng = rng or random.Random()
        self._waiters: deque[_Waiter] = deque()
        self._listeners: list[Listener] = []

    # -- registry -------------------------------------------------------------------------------

    def upsert(self, record: dict[str, Any]) -> NodeState:
        """Add or update a node from its stored record; returns its state."""
        node = self.nodes.get(record["id"])
        if node is None:
            node = self.nodes[record["id"]] = NodeState.from_record(record)
        else:
            url_changed = node.url != record["url"]
            node.apply_record(record)
            if url_changed:
                # A different server now: forget what we learnt about the old one.
                node.status, node.checked, node.models, node.loaded = STANDBY, False, {}, {}
                node.forget_measurements()
        self.changed("node", {"id": node.id})
        self._pump()
        return node

    def remove(self, node_id: str) -> NodeState | None:
        node = self.nodes.pop(node_id, None)
        if node is not None:
            self.changed("node_removed", {"id": node_id})
        return node

    def sync(self, records: Iterable[dict[str, Any]]) -> None:
        """Make the registry match the store (another proxy instance may have changed it)."""
        seen = set()
        for record in records:
            seen.add(record["id"])
            existing = self.nodes.get(record["id"])
            if existing is None or _record_differs(existing, record):
                self.upsert(record)
        for node_id in list(self.nodes):
            if node_id not in seen:
                self.remove(node_id)

    def set_config(self, config: RoutingConfig) -> None:
        self.config = config
        self.changed("config", {})
        self._pump()

    def get(self, node_id: str) -> NodeState | None:
        return self.nodes.get(node_id)

    def by_name(self, name: str) -> NodeState | None:
        lowered = name.lower()
        return next((n for n in self.nodes.values() if n.name.lower() == lowered), None)

    # -- listeners (state events for the console) -----------------------------------------------

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def changed(self, kind: str, data: dict[str, Any]) -> None:
        for listener in list(self._listeners):
            listener(kind, data)

    # -- health transitions ---------------------------------------------------------------------

    def mark_success(self, node: NodeState, *, probe: bool = False) -> None:
        """A good probe (or answer): ``rise`` in a row bring a standby node back.

        A node never checked before becomes active on its first good probe, so a
        freshly added node serves at once.
        """
        first = not node.checked
        node.consecutive_failures = 0
        node.consecutive_successes += 1
        node.checked = True
        if probe:
            node.last_check = datetime.now(UTC)
        if node.status != ACTIVE and (first or node.consecutive_successes >= self.config.rise):
            self._set_status(node, ACTIVE)

    def mark_failure(self, node: NodeState, error: str, *, hard: bool = False, probe: bool = False) -> None:
        """A failed probe or request. ``fall`` in a row, or one hard failure, → standby."""
        node.consecutive_successes = 0
        node.consecutive_failures += 1
        node.failures_total += 1
        node.checked = True
        node.record_error(error)
        if probe:
            node.last_check = datetime.now(UTC)
        if node.status == ACTIVE and (hard or node.consecutive_failures >= self.config.fall):
            self._set_status(node, STANDBY)
        else:
            self.changed("node", {"id": node.id})

    def _set_status(self, node: NodeState, status: str) -> None:
        node.status = status
        self.changed("status", {"id": node.id, "name": node.name, "status": status})
        if status == ACTIVE:
            self._pump()
        else:
            self._fail_hopeless_waiters()

    def models_changed(self, node: NodeState) -> None:
        self.changed("models", {"id": node.id})
        self._pump()

    # -- routing --------------------------------------------------------------------------------

    def known(self, key: str) -> bool:
        """Does any registered node (healthy or not) have this model?"""
        return any(n.has_model(key) for n in self.nodes.values())

    def candidates(self, key: str | None, exclude: Iterable[str] = ()) -> list[NodeState]:
        """Routable nodes that have ``key`` (any routable node when ``key`` is None)."""
        excluded = set(exclude)
        return [
            n for n in self.nodes.values()
            if n.routable and n.id not in excluded and (key is None or n.has_model(key))
        ]

    def _pick(self, key: str | None, nodes: list[NodeState]) -> NodeState | None:
        with_room = [n for n in nodes if n.has_room]
        if not with_room:
            return None
        self._turn += 1
        return strategies.choose(self.config.strategy, with_room, key or "", self._turn, self._rng)

    def _grant(self, node: NodeState, key: str | None, candidates: int) -> Lease:
        node.in_flight += 1
        node.requests_total += 1
        return Lease(self, node, key, candidates=candidates, loaded=key is not None and node.has_loaded(key))

    async def acquire(self, key: str | None, exclude: Iterable[str] = (), *,
                      model_label: str | None = None, abandon: asyncio.Future[Any] | None = None) -> Lease:
        """One slot on the best node for ``key``; waits in FIFO order when all are full.

        Raises :class:`NoCandidate` (``known=False`` → nobody has the model: 404;
        otherwise 503 with ``retry_after``). When ``abandon`` resolves (the client
        left) while waiting, raises ``asyncio.CancelledError``.
        """
        excluded = frozenset(exclude)
        nodes = self.candidates(key, excluded)
        label = model_label or (display_name(key) if key else "")
        if not nodes:
            if key is not None and not self.known(key):
                raise NoCandidate(f"model '{label}' not found", known=False)
            raise NoCandidate(self._unavailable_text(key, label), known=True,
                              retry_after=self.retry_after())
        if not self._waiters:
            node = self._pick(key, nodes)
            if node is not None:
                return self._grant(node, key, len(nodes))
        if self.config.queue_timeout <= 0:
            raise NoCandidate(f"every node serving '{label}' is at its concurrency limit", known=True,
                              retry_after=1)
        future: asyncio.Future[Lease] = asyncio.get_running_loop().create_future()
        waiter = _Waiter(key, excluded, future, nodes)
        self._waiters.append(waiter)
        self._count_queued(waiter, +1)
        try:
            waits: set[asyncio.Future[Any]] = {future} if abandon is None else {future, abandon}
            await asyncio.wait(waits, timeout=self.config.queue_timeout, return_when=asyncio.FIRST_COMPLETED)
            if not future.done():
                if abandon is not None and abandon.done():
                    raise asyncio.CancelledError("client left while queued")
                raise TimeoutError
            lease = future.result()
        except TimeoutError:
            self._abandon(waiter)
            raise NoCandidate(
                f"every node serving '{label}' stayed at its concurrency limit for "
                f"{self.config.queue_timeout:g}s", known=True, retry_after=self.retry_after()) from None
        except BaseException:
            self._abandon(waiter)
            raise
        lease.waited = time.monotonic() - waiter.enqueued
        return lease

    def _abandon(self, waiter: _Waiter) -> None:
        """The waiting request gave up (timeout, client gone): leave the queue, return any grant."""
        if waiter in self._waiters:
            self._waiters.remove(waiter)
            self._count_queued(waiter, -1)
        future = waiter.future
        if not future.done():
            future.cancel()
        elif not future.cancelled() and future.exception() is None:
            future.result().release()

    def _count_queued(self, waiter: _Waiter, delta: int) -> None:
        for node in waiter.nodes:
            node.queued = max(0, node.queued + delta)

    def _pump(self) -> None:
        """Hand freed slots to waiting requests, oldest first."""
        if not self._waiters:
            return
        for waiter in list(self._waiters):
            if waiter.future.done():
                continue
            nodes = self.candidates(waiter.key, waiter.exclude)
            node = self._pick(waiter.key, nodes)
            if node is None:
                continue
            self._waiters.remove(waiter)
            self._count_queued(waiter, -1)
            waiter.future.set_result(self._grant(node, waiter.key, len(nodes)))

    def _fail_hopeless_waiters(self) -> None:
        for waiter in list(self._waiters):
            if not waiter.future.done() and not self.candidates(waiter.key, waiter.exclude):
                self._waiters.remove(waiter)
                self._count_queued(waiter, -1)
                waiter.future.set_exception(NoCandidate(
                    "no active node serves this model any more", known=True, retry_after=self.retry_after()))

    def _release(self, node: NodeState) -> None:
        node.in_flight -= 1
        self._pump()
        if node.draining and node.in_flight == 0:
            self.changed("node", {"id": node.id, "idle": True})

    def retry_after(self) -> int:
        """Seconds a client should wait before retrying when no node can serve."""
        return max(1, min(60, int(self.config.health_interval // 4) or 1))

    def _unavailable_text(self, key: str | None, label: str) -> str:
        if key is None:
            return "no active node available"
        return f"no active node serving '{label}' is available"

    # -- views ----------------------------------------------------------------------------------

    def routable(self) -> list[NodeState]:
        """Nodes that take new requests: what the fleet-wide listings show."""
        return [n for n in self.nodes.values() if n.routable]

    def active(self) -> list[NodeState]:
        return [n for n in self.nodes.values() if n.status == ACTIVE]

    def standby(self) -> list[NodeState]:
        return [n for n in self.nodes.values() if n.status != ACTIVE]

    def total_in_flight(self) -> int:
        return sum(n.in_flight for n in self.nodes.values())

    def total_queued(self) -> int:
        return len(self._waiters)


def _record_differs(node: NodeState, record: dict[str, Any]) -> bool:
    return (
        node.name != record["name"] or node.url != record["url"]
        or node.enabled != bool(record.get("enabled", True))
        or node.draining != bool(record.get("draining", False))
        or node.max_concurrency != record.get("max_concurrency")
        or node.labels != dict(record.get("labels") or {})
        or node.headers != dict(record.get("headers") or {})
    )

