"""The health monitor: probes every node and moves it between the pools.

A ``PeriodicCallback`` at ``health_interval`` probes all nodes concurrently; a
standby node is also re-probed sooner, with backoff (1 s, 2 s, 4 s … up to the
interval), so a node that comes back serves again quickly. Each probe is three
small requests (`/api/version`, `/api/tags`, `/api/ps`) with their own timeouts,
so a hung node delays nothing but itself. Hysteresis (``fall``/``rise``) lives in
:class:`~app.fleet.pool.Fleet`; the gateway's passive failures feed the same counters.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from tornado.ioloop import IOLoop, PeriodicCallback

from app.fleet.node import ACTIVE, NodeState
from app.fleet.pool import Fleet
from app.fleet.upstream import Timeouts, UpstreamClient, UpstreamError
from app.logs import app_log

MIN_BACKOFF = 1.0


class ProbeFailed(Exception):
    pass


class HealthMonitor:
    def __init__(self, fleet: Fleet, upstream: UpstreamClient):
        self.fleet = fleet
        self.upstream = upstream
        self._periodic: PeriodicCallback | None = None
        self._inflight: dict[str, asyncio.Future[bool]] = {}
        self._retry_handles: dict[str, Any] = {}
        self._backoff: dict[str, float] = {}
        self.ticks = 0
        fleet.subscribe(self._on_change)

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        self.reschedule()
        IOLoop.current().add_callback(self.tick)

    def stop(self) -> None:
        if self._periodic is not None:
            self._periodic.stop()
            self._periodic = None
        loop = IOLoop.current()
        for handle in self._retry_handles.values():
            loop.remove_timeout(handle)
        self._retry_handles.clear()

    def reschedule(self) -> None:
        """(Re)start the periodic tick at the configured interval — applies a config change at once."""
        if self._periodic is not None:
            self._periodic.stop()
        self._periodic = PeriodicCallback(self.tick, self.fleet.config.health_interval * 1000)
        self._periodic.start()

    async def tick(self) -> None:
        """Probe every node at once; one slow node never holds up the others."""
        self.ticks += 1
        nodes = list(self.fleet.nodes.values())
        if nodes:
            await asyncio.gather(*(self.check(node) for node in nodes))

    # -- probing --------------------------------------------------------------------------------

    async def check(self, node: NodeState) -> bool:
        """Probe ``node`` now (shared with a probe already running). True when healthy."""
        running = self._inflight.get(node.id)
        if running is not None:
            return await asyncio.shield(running)
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._inflight[node.id] = future
        try:
            healthy = await self._probe(node)
            future.set_result(healthy)
            return healthy
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved
            raise
        finally:
            self._inflight.pop(node.id, None)

    async def _probe(self, node: NodeState) -> bool:
        timeout = self.fleet.config.probe_timeout
        timeouts = Timeouts(connect=timeout, first_byte=timeout, idle=timeout)
        started = time.monotonic()
        before = _fingerprint(node)
        try:
            version, tags, ps = await asyncio.gather(
                self._get_json(node, "/api/version", timeouts, started),
                self._get_json(node, "/api/tags", timeouts),
                self._get_json(node, "/api/ps", timeouts),
            )
            models = tags.get("models")
            loaded = ps.get("models")
            if not isinstance(models, list) or not isinstance(loaded, list):
                raise ProbeFailed("/api/tags or /api/ps did not list models")
        except (ProbeFailed, UpstreamError) as exc:
            node.probe_duration = time.monotonic() - started
            if self.fleet.nodes.get(node.id) is node:
                was = node.status
                self.fleet.mark_failure(node, f"health check: {exc}", probe=True)
                if was == ACTIVE and node.status != ACTIVE:
                    app_log().warning("node %s is down: %s", node.name, exc)
                self._schedule_retry(node)
            return False
        node.probe_duration = time.monotonic() - started
        if self.fleet.nodes.get(node.id) is not node:
            return False  # removed while we were probing
        node.version = str(version.get("version") or "") or None
        node.probe_latency = version["_rtt"]
        node.set_models(models)
        node.set_loaded(loaded)
        was = node.status
        self.fleet.mark_success(node, probe=True)
        if was != ACTIVE and node.status == ACTIVE:
            app_log().info("node %s is active (version %s)", node.name, node.version)
        if node.status != ACTIVE:
            self._schedule_retry(node)
        else:
            self._backoff.pop(node.id, None)
        if _fingerprint(node) != before:
            self.fleet.models_changed(node)
        return node.status == ACTIVE

    async def _get_json(self, node: NodeState, path: str, timeouts: Timeouts,
                        started: float | None = None) -> dict[str, Any]:
        status, _headers, body = await self.upstream.fetch(
            node.url, "GET", path, headers=dict(node.headers), timeouts=timeouts, max_size=16 * 1024 * 1024)
        if status != 200:
            raise ProbeFailed(f"{path} answered {status}")
        try:
            value = json.loads(body)
        except ValueError:
            raise ProbeFailed(f"{path} did not answer JSON") from None
        if not isinstance(value, dict):
            raise ProbeFailed(f"{path} did not answer a JSON object")
        if started is not None:
            value["_rtt"] = time.monotonic() - started
        return value

    # -- standby re-probes ----------------------------------------------------------------------

    def _schedule_retry(self, node: NodeState) -> None:
        if node.id in self._retry_handles:
            return
        interval = self.fleet.config.health_interval
        delay = min(self._backoff.get(node.id, MIN_BACKOFF / 2) * 2, interval)
        self._backoff[node.id] = delay
        if delay >= interval:
            return  # the periodic tick comes as soon

        def fire() -> None:
            self._retry_handles.pop(node.id, None)
            if self.fleet.nodes.get(node.id) is node and node.status != ACTIVE:
                IOLoop.current().add_callback(self.check, node)

        self._retry_handles[node.id] = IOLoop.current().call_later(delay, fire)

    def _on_change(self, kind: str, data: dict[str, Any]) -> None:
        if kind == "node_removed":
            handle = self._retry_handles.pop(data["id"], None)
            if handle is not None:
                IOLoop.current().remove_timeout(handle)
            self._backoff.pop(data["id"], None)
        elif kind == "status" and data.get("status") != ACTIVE:
            # Marked down by real traffic: start re-probing it right away.
            node = self.fleet.nodes.get(data["id"])
            if node is not None:
                self._backoff.pop(node.id, None)
                self._schedule_retry(node)


def _fingerprint(node: NodeState) -> tuple[Any, ...]:
    return (
        tuple(sorted((k, m.digest) for k, m in node.models.items())),
        tuple(sorted(node.loaded)),
    )
