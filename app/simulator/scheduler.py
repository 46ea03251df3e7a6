"""Model runners, slots, the pending queue, loads and keep_alive, as a real node schedules.

Rules (shared/ollama-api.md §6, simplified where the real server is an implementation detail):

* A request for a loaded model with a free slot starts at once and is never "queued".
* Any other request is pending until it holds a slot (or, for a preload, until the model is
  loaded). At most ``max_queue`` requests may be pending; one more gets :class:`SchedulerBusy`
  (the node answers 503).
* Loads happen one at a time, FIFO. A load runs to completion even if the requests that
  wanted it go away (the model then sits idle until keep_alive expires). When ``max_loaded``
  models are resident, the least recently used idle one is evicted; if none is idle the load
  waits for one.
* Each runner has ``num_parallel`` slots; further requests wait FIFO for a slot.
* When a runner's last request ends, its keep_alive timer starts (0 = unload now,
  forever = never). A runner is listed by ``/api/ps`` from the moment its load starts.

Cancellation (client disconnect) at any await gives back whatever was taken, so the
counters always return to zero.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from app.simulator.catalog import ModelEntry
from app.simulator.options import SimulatorOptions
from app.simulator.wire import FOREVER, rfc3339_until

LOADING = "loading"
LOADED = "loaded"


class SchedulerBusy(Exception):
    """The pending queue is full."""


@dataclass(eq=False)
class Runner:
    """A model resident (or loading) on the node."""

    entry: ModelEntry
    keep_alive: float
    context_length: int
    loaded: asyncio.Future[None]
    state: str = LOADING
    busy: int = 0
    refs: int = 0
    waiters: deque[asyncio.Future[None]] = field(default_factory=deque)
    last_used: float = field(default_factory=time.monotonic)
    idle_since: float | None = None
    timer: asyncio.TimerHandle | None = None
    task: asyncio.Future[None] | None = None


@dataclass(eq=False)
class Lease:
    """What a request holds: a reference on a runner and maybe a slot. Release exactly once."""

    runner: Runner
    slot: bool
    load_ns: int
    wait_ns: int
    released: bool = False


class Scheduler:
    """Runners of one node. All methods run on the node's event loop."""

    def __init__(self, options: SimulatorOptions) -> None:
        self.options = options
        self.runners: dict[str, Runner] = {}
        self.queued = 0
        self.loads = 0
        self.unloads = 0
        self.busy_rejections = 0
        self._load_lock = asyncio.Lock()
        self._room_waiters: list[asyncio.Future[None]] = []

    @property
    def load_time(self) -> float:
        return 0.0 if self.options.fast else self.options.load_time

    async def acquire(
        self, entry: ModelEntry, keep_alive: float | None, *, slot: bool = True, num_ctx: int | None = None
    ) -> Lease:
        """Wait until ``entry`` is loaded (and a slot is free when ``slot``); see module rules."""
        start = time.perf_counter_ns()
        runner = self.runners.get(entry.key)
        if (
            runner is not None
            and runner.state == LOADED
            and (not slot or (runner.busy < self.options.num_parallel and not runner.waiters))
        ):
            self._attach(runner, keep_alive)
            if slot:
                runner.busy += 1
            return Lease(runner, slot, 0, 0)
        if self.queued >= self.options.max_queue:
            self.busy_rejections += 1
            raise SchedulerBusy
        self.queued += 1
        attached: Runner | None = None
        try:
            runner = await self._runner_for(entry, num_ctx)
            self._attach(runner, keep_alive)
            attached = runner
            if runner.state != LOADED:
                await asyncio.shield(runner.loaded)
            load_ns = time.perf_counter_ns() - start
            if slot:
                await self._take_slot(runner)
        except BaseException:
            if attached is not None:
                attached.refs -= 1
                self._maybe_idle(attached)
            raise
        finally:
            self.queued -= 1
        return Lease(runner, slot, load_ns, time.perf_counter_ns() - start)

    def release(self, lease: Lease) -> None:
        """Give back the slot and the reference; starts keep_alive when the runner goes idle."""
        if lease.released:
            return
        lease.released = True
        runner = lease.runner
        if lease.slot:
            self._release_slot(runner)
        runner.refs -= 1
        runner.last_used = time.monotonic()
        self._maybe_idle(runner)

    def unload(self, key: str) -> bool:
        """Unload now if idle, else as soon as its last request ends. False if not resident."""
        runner = self.runners.get(key)
        if runner is None:
            return False
        runner.keep_alive = 0.0
        if runner.refs == 0 and runner.state == LOADED:
            self._unload(runner)
        return True

    def close(self) -> None:
        """Stop timers and loads (node shutdown)."""
        for runner in list(self.runners.values()):
            if runner.timer is not None:
                runner.timer.cancel()
            if runner.task is not None:
                runner.task.cancel()
        self.runners.clear()

    # -- views -------------------------------------------------------------------------

    def slots_in_use(self) -> int:
        return sum(r.busy for r in self.runners.values())

    def ps_models(self) -> list[dict[str, Any]]:
        """``/api/ps`` entries, the model expiring last first (as Ollama sorts them)."""
        now = time.time()
        rows = []
        for runner in self.runners.values():
            entry = runner.entry
            if runner.keep_alive == FOREVER:
                remaining = FOREVER
            elif runner.refs == 0 and runner.idle_since is not None:
                remaining = max(0.0, runner.idle_since + runner.keep_alive - now)
            else:
                remaining = runner.keep_alive
            rows.append((remaining, {
                "name": entry.name,
                "model": entry.name,
                "size": entry.size,
                "digest": entry.digest,
                "details": entry.details(),
                "expires_at": rfc3339_until(remaining),
                "size_vram": entry.size,
                "context_length": runner.context_length,
            }))
        rows.sort(key=lambda row: row[0], reverse=True)
        return [row[1] for row in rows]

    # -- internals ---------------------------------------------------------------------

    def _attach(self, runner: Runner, keep_alive: float | None) -> None:
        runner.refs += 1
        runner.idle_since = None
        if keep_alive is not None:
            runner.keep_alive = keep_alive
        if runner.timer is not None:
            runner.timer.cancel()
            runner.timer = None

    async def _runner_for(self, entry: ModelEntry, num_ctx: int | None) -> Runner:
        runner = self.runners.get(entry.key)
        if runner is not None:
            return runner
        await self._load_lock.acquire()
        handed_over = False
        try:
            runner = self.runners.get(entry.key)
            if runner is not None:
                return runner
            await self._make_room()
            runner = self._start_load(entry, num_ctx)
            handed_over = True
            return runner
        finally:
            if not handed_over:
                self._load_lock.release()

    async def _make_room(self) -> None:
        while len(self.runners) >= self.options.max_loaded:
            idle = [r for r in self.runners.values() if r.refs == 0 and r.state == LOADED]
            if idle:
                self._unload(min(idle, key=lambda r: r.last_used))
                continue
            waiter = asyncio.get_running_loop().create_future()
            self._room_waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._room_waiters:
                    self._room_waiters.remove(waiter)

    def _start_load(self, entry: ModelEntry, num_ctx: int | None) -> Runner:
        """Create the runner (visible in /api/ps now); the load owns the load lock until done."""
        runner = Runner(
            entry=entry,
            keep_alive=self.options.keep_alive,
            context_length=num_ctx if num_ctx and num_ctx > 0 else self.options.context_length,
            loaded=asyncio.get_running_loop().create_future(),
        )
        self.runners[entry.key] = runner
        self.loads += 1
        if self.load_time <= 0:
            self._finish_load(runner)
        else:
            runner.task = asyncio.ensure_future(self._load(runner))
        return runner

    async def _load(self, runner: Runner) -> None:
        try:
            await asyncio.sleep(self.load_time)
        except asyncio.CancelledError:
            self._load_lock.release()
            raise
        runner.task = None
        self._finish_load(runner)

    def _finish_load(self, runner: Runner) -> None:
        runner.state = LOADED
        runner.last_used = time.monotonic()
        if not runner.loaded.done():
            runner.loaded.set_result(None)
        self._load_lock.release()
        self._maybe_idle(runner)

    async def _take_slot(self, runner: Runner) -> None:
        if runner.busy < self.options.num_parallel and not runner.waiters:
            runner.busy += 1
            return
        waiter = asyncio.get_running_loop().create_future()
        runner.waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self._release_slot(runner)  # the slot was handed to us just before the cancel
            elif waiter in runner.waiters:
                runner.waiters.remove(waiter)
            raise

    def _release_slot(self, runner: Runner) -> None:
        while runner.waiters:
            waiter = runner.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # hand the slot over: busy stays the same
                return
        runner.busy -= 1

    def _maybe_idle(self, runner: Runner) -> None:
        if runner.refs != 0 or runner.state != LOADED or self.runners.get(runner.entry.key) is not runner:
            return
        runner.idle_since = time.time()
        if runner.timer is not None:
            runner.timer.cancel()
            runner.timer = None
        if runner.keep_alive <= 0:
            self._unload(runner)
            return
        if runner.keep_alive != FOREVER:
            runner.timer = asyncio.get_running_loop().call_later(runner.keep_alive, self._expire, runner)
        self._notify_room()

    def _expire(self, runner: Runner) -> None:
        runner.timer = None
        if runner.refs == 0 and self.runners.get(runner.entry.key) is runner:
            self._unload(runner)

    def _unload(self, runner: Runner) -> None:
        if runner.timer is not None:
            runner.timer.cancel()
            runner.timer = None
        if self.runners.get(runner.entry.key) is runner:
            del self.runners[runner.entry.key]
            self.unloads += 1
        self._notify_room()

    def _notify_room(self) -> None:
        waiters, self._room_waiters = self._room_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
