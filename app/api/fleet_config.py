"""``/api/proxy/config``: the routing settings operators tune while the proxy runs.

Validated field by field (every bad field named at once), saved to the store,
then applied live: strategy, hysteresis and timeouts from the next request, the
health interval by rescheduling the monitor. Other proxy instances on the same
store pick the change up through their sync watcher.
"""

from __future__ import annotations

from typing import Any

from app.api.base import ApiError, ManagementHandler
from app.config import ConfigError, RoutingConfig, validate_routing
from app.logs import app_log

SCHEMAS: dict[str, dict[str, Any]] = {
    "RoutingConfig": {
        "type": "object",
        "properties": {
            "strategy": {"type": "string", "enum": ["least_active", "lowest_latency", "round_robin", "random"]},
            "health_interval": {"type": "number", "minimum": 1, "maximum": 86400, "description": "seconds"},
            "fall": {"type": "integer", "minimum": 1, "maximum": 100},
            "rise": {"type": "integer", "minimum": 1, "maximum": 100},
            "probe_timeout": {"type": "number", "minimum": 0.1, "maximum": 300},
            "connect_timeout": {"type": "number", "minimum": 0.1, "maximum": 300},
            "first_byte_timeout": {"type": "number", "minimum": 1, "maximum": 86400},
            "idle_timeout": {"type": "number", "minimum": 1, "maximum": 86400},
            "max_attempts": {"type": "integer", "minimum": 1, "maximum": 10},
            "queue_timeout": {"type": "number", "minimum": 0, "maximum": 3600},
            "pull_target": {"type": "string", "description": '"all" or the id of one node'},
            "require_api_key": {"type": "boolean"},
            "public_state": {"type": "boolean"},
            "public_metrics": {"type": "boolean"},
            "cors_origins": {"type": "array", "items": {"type": "string"}},
            "max_body_size": {"type": "integer", "minimum": 1024},
            "shutdown_grace": {"type": "number", "minimum": 0, "maximum": 3600},
            "usage_retention_days": {"type": "number", "minimum": 1, "maximum": 3650, "default": 30,
                                     "description": "usage records older than this many days are deleted"},
        },
    },
}


class ConfigHandler(ManagementHandler):
    def get(self) -> None:
        """The routing settings in effect.
        ---
        summary: Get the routing settings
        tags: [config]
        responses:
          "200":
            description: Every setting with its current value.
            content:
              application/json:
                schema: {$ref: "#/components/schemas/RoutingConfig"}
          "401": {description: Not logged in}
        """
        self.send_json(self.services.config.to_json())

    async def put(self) -> None:
        """Replace the routing settings: settings left out go back to their defaults.
        ---
        summary: Replace the routing settings
        tags: [config]
        requestBody:
          required: true
          content:
            application/json:
              schema: {$ref: "#/components/schemas/RoutingConfig"}
        responses:
          "200":
            description: The settings now in effect.
            content:
              application/json:
                schema: {$ref: "#/components/schemas/RoutingConfig"}
          "400": {description: 'Invalid settings: {"error": "invalid config", "fields": {setting: message}}'}
          "401": {description: Not logged in}
          "403": {description: Not an admin}
          "503": {description: The store is unavailable; nothing was changed}
        """
        await self.update(replace=True)

    async def patch(self) -> None:
        """Change some routing settings; the others keep their value.
        ---
        summary: Update routing settings
        tags: [config]
        requestBody:
          required: true
          content:
            application/json:
              schema: {$ref: "#/components/schemas/RoutingConfig"}
              example: {strategy: round_robin, health_interval: 30}
        responses:
          "200":
            description: The settings now in effect.
            content:
              application/json:
                schema: {$ref: "#/components/schemas/RoutingConfig"}
          "400": {description: 'Invalid settings: {"error": "invalid config", "fields": {setting: message}}'}
          "401": {description: Not logged in}
          "403": {description: Not an admin}
          "503": {description: The store is unavailable; nothing was changed}
        """
        await self.update(replace=False)

    async def update(self, *, replace: bool) -> None:
        values = self.json_body()
        self.check(values, RoutingConfig() if replace else self.services.config)
        try:
            config = await self.services.update_config(values, replace=replace)
        except ConfigError as exc:
            raise ApiError(400, "invalid config", fields=exc.errors) from None
        app_log().info("routing settings %s by %s: %s", "replaced" if replace else "changed",
                       getattr(self.principal, "username", None) or "?", ", ".join(sorted(values)) or "defaults")
        self.send_json(config.to_json())

    def check(self, values: dict[str, Any], base: RoutingConfig) -> None:
        """Every problem at once, including a ``pull_target`` that names no registered node."""
        errors: dict[str, str] = {}
        try:
            validate_routing(values, base)
        except ConfigError as exc:
            errors.update(exc.errors)
        target = values.get("pull_target")
        if "pull_target" not in errors and isinstance(target, str) and target.strip() != "all":
            fleet = self.services.fleet
            if fleet.get(target.strip()) is None and fleet.by_name(target.strip()) is None:
                errors["pull_target"] = 'no registered node has this id; use "all" or a node id'
        if errors:
            raise ApiError(400, "invalid config", fields=errors)


ROUTES: list[tuple[str, type]] = [
    (r"/api/proxy/config", ConfigHandler),
]
