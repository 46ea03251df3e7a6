"""Usage accounting off the hot path: token counts, a bounded batcher in front of the store,
and a ring of the most recent requests.

A finished request costs the handler one :meth:`UsageRecorder.record` call: a dict copy and
two deque appends, no await, no I/O. A background task writes the pending records to
``store.usage`` in batches (every :attr:`~UsageRecorder.INTERVAL` seconds, or sooner once
:attr:`~UsageRecorder.BATCH` are waiting). While the store is down the records stay in the
buffer and the writes are retried with backoff; the buffer is bounded
(:attr:`~UsageRecorder.CAPACITY`): when it is full the oldest record is dropped and counted
(``dropped``, exported as ``aivonx_usage_records_dropped_total``), so a long outage costs
memory up to that bound and never blocks a client. Whatever is pending is flushed at
shutdown. A second task prunes records past ``usage_retention_days`` at start and hourly.

The ring (:attr:`~UsageRecorder.RING` records, seeded from the store at start) answers the
console's Requests screen from memory. Both the ring and any limits are per proxy process.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from app.logs import app_log
from app.store import StoreError


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def tokens_of(final: dict[str, Any] | None) -> tuple[int | None, int | None]:
    """(tokens in, tokens out) of a response's final message; ``None`` where it does not say.

    Ollama: ``prompt_eval_count`` / ``eval_count`` on the last line (``done: true``) or the
    unstreamed object. OpenAI (``/v1``): ``usage.prompt_tokens`` / ``usage.completion_tokens``
    on the unstreamed object, or on the last event before ``[DONE]`` when the client asked for
    ``stream_options.include_usage`` (without it a stream carries no counts).
    """
    if not final:
        return None, None
    usage = final.get("usage")
    if isinstance(usage, dict):
        return _count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens"))
    return _count(final.get("prompt_eval_count")), _count(final.get("eval_count"))


def status_matches(status: int, wanted: int | str) -> bool:
    """``wanted`` is an exact status or a class such as ``"5xx"``."""
    if isinstance(wanted, int):
        return status == wanted
    return str(status)[:1] == wanted[:1]


class UsageRecorder:
    """The batcher, the ring and the pruner of one proxy process."""

    RING = 1000
    CAPACITY = 100_000
    BATCH = 500
    INTERVAL = 1.0
    MAX_BACKOFF = 30.0
    PRUNE_INTERVAL = 3600.0
    CLOSE_TIMEOUT = 5.0

    def __init__(self, repo: Any, retention_days: Callable[[], float], *,
                 clock: Callable[[], float] = time.time) -> None:
        self.repo = repo
        self.retention_days = retention_days
        self.clock = clock
        self.recent: deque[dict[str, Any]] = deque(maxlen=self.RING)
        self.pending: deque[dict[str, Any]] = deque()
        self.dropped = 0
        self.written = 0
        self.flush_failures = 0
        self.pruned = 0
        self._prefix = uuid.uuid4().hex[:16]
        self._ids: Iterator[int] = itertools.count()
        self._wake = asyncio.Event()
        self._prune_now = asyncio.Event()
        self._flush_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._outage = False
        self._retention: float | None = None
        self._closed = False

    # -- the hot path -------------------------------------------------------------------------------

    def record(self, fields: dict[str, Any], *, at: float) -> dict[str, Any]:
        """Account one finished request that started at ``at`` (epoch seconds); never blocks.

        ``fields`` (the request's log fields) is copied, not kept or changed: the log writer
        thread may still be reading it.
        """
        status = fields.get("status") or 0
        record = {**fields, "time": at, "id": self._prefix + format(next(self._ids), "x"),
                  "failed": status >= 400 or status == 0 or fields.get("error") is not None}
        pending = self.pending
        if len(pending) >= self.CAPACITY:
            pending.popleft()
            self.dropped += 1
        pending.append(record)
        self.recent.append(record)
        if len(pending) >= self.BATCH and not self._outage:
            self._wake.set()
        return record

    # -- reading ------------------------------------------------------------------------------------

    def latest(self, limit: int, *, model: str | None = None, node: str | None = None,
               status: int | str | None = None) -> list[dict[str, Any]]:
        """The newest requests of this process (at most :attr:`RING`), newest first, filtered."""
        node = node.lower() if node else None
        out: list[dict[str, Any]] = []
        for record in reversed(self.recent):
            if model is not None and record.get("model") != model:
                continue
            if node is not None and (record.get("node") or "").lower() != node:
                continue
            if status is not None and not status_matches(record.get("status") or 0, status):
                continue
            out.append(record)
            if len(out) >= limit:
                break
        return out

    async def summary(self, start: float, end: float, group_by: str | None = None) -> dict[str, Any]:
        """Aggregated usage over ``[start, end)``; this process's pending records are written first."""
        with contextlib.suppress(StoreError):
            await self.flush()
        return await self.repo.summary(start, end, group_by)

    # -- life cycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        """Seed the ring from the store, then start the flusher and the pruner."""
        try:
            for record in reversed(await self.repo.latest(self.RING)):
                self.recent.append(record)
        except StoreError as exc:
            app_log().warning("cannot read recent usage records: %s", exc)
        self._tasks = [asyncio.ensure_future(self._flush_loop()), asyncio.ensure_future(self._prune_loop())]

    def config_changed(self) -> None:
        """Apply a new ``usage_retention_days`` at once (the fleet's config listener calls this)."""
        if self.retention_days() != self._retention:
            self._prune_now.set()

    async def close(self) -> None:
        """Stop the tasks and write what is pending, trying for up to :attr:`CLOSE_TIMEOUT` seconds.

        A write in progress is let finish (the flusher stops after it) rather than cancelled.
        """
        self._closed = True
        self._wake.set()
        flusher, *others = self._tasks or [None]
        for task in others:
            task.cancel()
        for task in [flusher, *others]:
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._tasks = []
        deadline = time.monotonic() + self.CLOSE_TIMEOUT
        while self.pending:
            try:
                await self.flush()
            except StoreError as exc:
                if time.monotonic() >= deadline:
                    app_log().error("%d usage record(s) lost at shutdown: %s", len(self.pending), exc)
                    return
                await asyncio.sleep(0.2)

    # -- writing ------------------------------------------------------------------------------------

    async def flush(self) -> int:
        """Write the records pending now (not those arriving meanwhile: they wait for the next
        batch, so a busy proxy writes few large batches, not many small ones). Raises
        :class:`StoreError` when the store fails; the records stay pending."""
        async with self._flush_lock:
            written = 0
            remaining = len(self.pending)
            while remaining > 0 and self.pending:
                count = min(self.BATCH, remaining, len(self.pending))
                remaining -= count
                batch = [self.pending.popleft() for _ in range(count)]
                try:
                    await self.repo.insert_many(batch)
                except StoreError:
                    self._put_back(batch)
                    raise
                except Exception:
                    # Not an outage but a record the store refuses: retrying would loop forever.
                    app_log().exception("dropping %d usage record(s) the store refused", len(batch))
                    self.dropped += len(batch)
                    continue
                except BaseException:  # cancelled: keep them (a repeated insert is skipped by id)
                    self._put_back(batch)
                    raise
                written += count
                self.written += count
            return written

    def _put_back(self, batch: list[dict[str, Any]]) -> None:
        """Return a failed batch to the front of the buffer; the oldest go if it overflowed meanwhile."""
        self.pending.extendleft(reversed(batch))
        while len(self.pending) > self.CAPACITY:
            self.pending.popleft()
            self.dropped += 1

    async def _flush_loop(self) -> None:
        delay = self.INTERVAL
        while not self._closed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)
            self._wake.clear()
            if self._closed:
                return  # close() writes what is left
            try:
                await self.flush()
            except StoreError as exc:
                self.flush_failures += 1
                if not self._outage:
                    app_log().warning("cannot write usage records (%d buffered, retrying): %s", len(self.pending), exc)
                self._outage = True
                delay = min(delay * 2, self.MAX_BACKOFF)
                continue
            if self._outage:
                app_log().info("usage records are written again")
            self._outage = False
            delay = self.INTERVAL

    # -- retention ----------------------------------------------------------------------------------

    async def prune(self) -> int:
        """Delete records older than the retention (and, embedded, beyond the cap); how many went."""
        days = self.retention_days()
        if days != self._retention:
            await self.repo.set_retention(days)
            self._retention = days
        removed = await self.repo.prune(self.clock() - days * 86400)
        self.pruned += removed
        if removed:
            app_log().info("pruned %d usage record(s) older than %g day(s)", removed, days)
        return removed

    async def _prune_loop(self) -> None:
        while True:
            self._prune_now.clear()
            try:
                await self.prune()
            except StoreError as exc:
                app_log().warning("cannot prune usage records: %s", exc)
            except Exception:
                app_log().exception("pruning usage records failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._prune_now.wait(), self.PRUNE_INTERVAL)
