"""Everything one simulated node knows: catalog, scheduler, faults and counters.

Handlers share one :class:`SimulatorState`; tests reach it as ``node.state`` to inject
faults or read counters without going through HTTP.
"""

from __future__ import annotations

import itertools
from collections import Counter
from typing import Any

from app.fleet.names import try_model_key
from app.simulator.catalog import Catalog, ModelEntry
from app.simulator.faults import Fault, FaultTable
from app.simulator.options import SimulatorOptions
from app.simulator.scheduler import LOADED, Scheduler


class SimulatorState:
    def __init__(self, options: SimulatorOptions) -> None:
        self.options = options
        self.catalog = Catalog(options.models, options.digest_salt, options.context_length)
        self.scheduler = Scheduler(options)
        self.catalog.on_replaced = self.scheduler.unload
        self.faults = FaultTable()
        for spec in options.faults:
            self.faults.add(spec)
        self.requests: Counter[str] = Counter()
        self.active = 0
        self.cancelled = 0
        self.completion_ids = itertools.count(1)

    # -- faults ------------------------------------------------------------------------

    def set_fault(
        self,
        mode: str,
        *,
        count: int | None = None,
        routes: list[str] | None = None,
        after_chunks: int = 0,
        delay: float = 0.0,
        message: str | None = None,
    ) -> Fault:
        """Inject a fault (see :mod:`app.simulator.faults`); ValueError for a bad spec."""
        return self.faults.add({
            "mode": mode, "count": count, "routes": routes, "after_chunks": after_chunks,
            "delay": delay, "message": message,
        })

    def clear_faults(self) -> None:
        self.faults.clear()

    # -- models ------------------------------------------------------------------------

    def add_model(self, name: str) -> ModelEntry:
        """Put a model on the node's "disk" (InvalidModelName for a bad name)."""
        return self.catalog.add(name)

    def remove_model(self, name: str) -> bool:
        """Delete a model; a resident runner is unloaded once idle, as Ollama does."""
        entry = self.catalog.remove(name)
        if entry is None:
            return False
        self.scheduler.unload(entry.key)
        return True

    def is_pullable(self, name: str) -> bool:
        """Whether the simulated registry has ``name`` (see SimulatorOptions.pullable)."""
        lowered = name.lower()
        if any(bad.lower() in lowered for bad in self.options.unknown_models):
            return False
        if self.options.pullable is None:
            return True
        wanted = try_model_key(name)
        return wanted is not None and any(try_model_key(p) == wanted for p in self.options.pullable)

    # -- counters ----------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Counters for tests: per-route requests, in-flight, queued, disconnects, models."""
        runners = self.scheduler.runners.values()
        return {
            "requests": dict(self.requests),
            "requests_total": sum(self.requests.values()),
            "active": self.active,
            "queued": self.scheduler.queued,
            "cancelled": self.cancelled,
            "busy_rejections": self.scheduler.busy_rejections,
            "slots_in_use": self.scheduler.slots_in_use(),
            "loaded_models": [r.entry.name for r in runners if r.state == LOADED],
            "loading_models": [r.entry.name for r in runners if r.state != LOADED],
            "loads": self.scheduler.loads,
            "unloads": self.scheduler.unloads,
            "models": [e.name for e in self.catalog.entries()],
            "faults": self.faults.active(),
            "faults_fired": self.faults.fired,
        }

    def reset_stats(self) -> None:
        """Zero the cumulative counters (in-flight and queued reflect live state and stay)."""
        self.requests.clear()
        self.cancelled = 0
        self.faults.fired = 0
        self.scheduler.busy_rejections = 0
        self.scheduler.loads = 0
        self.scheduler.unloads = 0
