"""The long-lived objects of one proxy process, wired once at start.

Handlers receive this container and delegate to it (thin handlers, managers
that hold the logic — the jupyter_server shape). Nothing here is global, so
tests can run several proxies in one process.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from app.config import RoutingConfig, Settings, validate_routing
from app.fleet.model_ops import ModelOps
from app.fleet.pool import Fleet
from app.fleet.relay import Relay
from app.fleet.upstream import UpstreamClient

if TYPE_CHECKING:
    from app.fleet.health import HealthMonitor
    from app.store import Store


@dataclass
class Services:
    settings: Settings
    store: Store
    fleet: Fleet
    upstream: UpstreamClient
    relay: Relay
    monitor: HealthMonitor | None = None
    # The AuthService (app/auth/service.py): resolves credentials to principals.
    auth: Any = None
    # Accounting: the UsageRecorder (app/fleet/usage.py), the KeyLimiter (app/fleet/limits.py)
    # and the ProxyMetrics (app/metrics.py) of this process.
    usage: Any = None
    limits: Any = None
    metrics: Any = None
    started_at: float = field(default_factory=time.time)
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def model_ops(self) -> ModelOps:
        """Pull/delete/copy on nodes, refreshing each node's model list as soon as it is done."""
        ops = self.extras.get("model_ops")
        if ops is None:
            refresh = self.monitor.check if self.monitor is not None else None
            ops = self.extras["model_ops"] = ModelOps(self.fleet, self.upstream, refresh=refresh)
        return ops

    @property
    def config(self) -> RoutingConfig:
        return self.fleet.config

    async def update_config(self, values: dict[str, Any], *, replace: bool = False) -> RoutingConfig:
        """Validate, persist, then apply live. Raises ``ConfigError`` naming bad fields."""
        base = RoutingConfig() if replace else self.fleet.config
        config = validate_routing(values, base)
        stored = config.to_json()
        await self.store.config.save(stored)
        self.apply_config(config)
        return config

    def apply_config(self, config: RoutingConfig) -> None:
        old = self.fleet.config
        self.fleet.set_config(config)
        if self.monitor is not None and old.health_interval != config.health_interval:
            self.monitor.reschedule()
