"""``/api/proxy/usage`` (who used how much) and ``/api/proxy/requests`` (the latest requests).

Usage is aggregated from the stored usage records (one per proxied request, written in
batches off the hot path; this process's pending ones are written first, so a request
just finished here is counted). An admin may group by user, key, model, node or day; a
viewer sees the totals only and gets 403 for ``group_by`` (a clear refusal rather than a
silently different answer). Records past ``usage_retention_days`` are gone.

The requests list is read from memory: the last 1,000 requests of this proxy process
(seeded from the store at start), newest first — cheap enough for the console to poll.
"""

from __future__ import annotations

import math
import re
import time
from datetime import UTC, datetime
from typing import Any

from app.api.base import ApiError, ManagementHandler
from app.fleet.names import try_model_key
from app.store.usage import GROUPS

DEFAULT_WINDOW = 86400.0
MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
_NUMBER = re.compile(r"^-?\d+(\.\d+)?$", re.ASCII)
_STATUS = re.compile(r"^([1-5]\d\d|[1-5]xx)$", re.ASCII)
_LIMIT = re.compile(r"^\d{1,7}$", re.ASCII)
_LOST_PLUS = re.compile(r" (\d\d:?\d\d)$", re.ASCII)  # "+00:00" sent unencoded in a query string arrives as " 00:00"
_LATEST = 253402300800.0  # 10000-01-01

_COUNTS = {
    "requests": {"type": "integer"},
    "tokens_in": {"type": "integer", "description": "prompt tokens (prompt_eval_count, usage.prompt_tokens)"},
    "tokens_out": {"type": "integer", "description": "generated tokens (eval_count, usage.completion_tokens)"},
    "errors": {"type": "integer", "description": "requests that ended with a status >= 400 or an error "
                                                 "(node failure, stream cut, client gone)"},
}
_NULLABLE_STR = {"type": "string", "nullable": True}
_NULLABLE_NUM = {"type": "number", "nullable": True}
_NULLABLE_INT = {"type": "integer", "nullable": True}

SCHEMAS: dict[str, dict[str, Any]] = {
    "UsageSummary": {
        "type": "object",
        "properties": {
            "from": {"type": "string", "format": "date-time"},
            "to": {"type": "string", "format": "date-time", "description": "exclusive"},
            "group_by": {"type": "string", "enum": list(GROUPS), "nullable": True},
            "totals": {"type": "object", "properties": _COUNTS},
            "groups": {
                "type": "array",
                "description": "empty without group_by; by day oldest first, else most tokens first",
                "items": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "string", "nullable": True,
                               "description": "user id, key id, model, node name or YYYY-MM-DD (UTC); null for "
                                              "requests without a user or key (require_api_key off)"},
                        "name": {"type": "string", "nullable": True,
                                 "description": "username or key name (else the same as id)"},
                        **_COUNTS,
                    },
                },
            },
        },
    },
    "RecentRequest": {
        "type": "object",
        "properties": {
            "time": {"type": "string", "format": "date-time", "description": "when the request arrived"},
            "request_id": {"type": "string", "description": "as in X-Request-Id and logs/proxy.json"},
            "client": {"type": "string"},
            "method": {"type": "string"},
            "path": {"type": "string"},
            "model": _NULLABLE_STR,
            "node": {"type": "string", "nullable": True, "description": "the node that answered (X-Aivonx-Node)"},
            "status": {"type": "integer", "description": "0 when the client left before any answer"},
            "ttfb_ms": _NULLABLE_NUM,
            "duration_ms": {"type": "number"},
            "tokens_in": _NULLABLE_INT,
            "tokens_out": _NULLABLE_INT,
            "error": _NULLABLE_STR,
            "user": {"type": "string", "nullable": True, "description": "the gateway key's owner"},
            "key": {"type": "string", "nullable": True, "description": "the gateway key's name"},
        },
    },
}


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(name: str, text: str) -> float:
    """ISO 8601 (no zone = UTC) or epoch seconds → epoch seconds; 400 naming ``name`` otherwise."""
    text = _LOST_PLUS.sub(r"+\1", text.strip())
    value: float | None
    if _NUMBER.match(text):
        value = float(text)
    else:
        try:
            when = datetime.fromisoformat(text)
            value = (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()
        except (ValueError, OverflowError):
            value = None
    if value is None or not math.isfinite(value) or not 0 <= value < _LATEST:
        raise ApiError(400, f"invalid {name}: use ISO 8601 (2025-01-31T00:00:00Z) or epoch seconds",
                       fields={name: "not a time"})
    return value


def request_view(record: dict[str, Any]) -> dict[str, Any]:
    """A usage record as the console's Requests screen shows it."""
    return {
        "time": _iso(record["time"]),
        "request_id": record.get("request_id"),
        "client": record.get("client"),
        "method": record.get("method"),
        "path": record.get("path"),
        "model": record.get("model"),
        "node": record.get("node"),
        "status": record.get("status"),
        "ttfb_ms": record.get("ttfb_ms"),
        "duration_ms": record.get("duration_ms"),
        "tokens_in": record.get("tokens_in"),
        "tokens_out": record.get("tokens_out"),
        "error": record.get("error"),
        "user": record.get("username"),
        "key": record.get("key_name"),
    }


class UsageHandler(ManagementHandler):
    async def get(self) -> None:
        """Requests, tokens in and out, and errors over [from, to), in total and (admin) per group.
        ---
        summary: Usage
        tags: [usage]
        parameters:
          - {name: from, in: query, required: false, schema: {type: string},
             description: "ISO 8601 (no zone = UTC) or epoch seconds; default `to` minus 24 h"}
          - {name: to, in: query, required: false, schema: {type: string},
             description: "exclusive; ISO 8601 or epoch seconds; default now"}
          - {name: group_by, in: query, required: false,
             schema: {type: string, enum: [user, key, model, node, day]},
             description: "admin only: also the same counts per user, gateway key, model, node or UTC day"}
        responses:
          "200":
            description: The totals (and groups) of the stored usage records in the window.
            content:
              application/json:
                schema: {$ref: "#/components/schemas/UsageSummary"}
          "400": {description: "A bad from, to or group_by (the error names it, `fields` too)"}
          "401": {description: Not logged in}
          "403": {description: group_by needs the admin role (viewers see totals only)}
          "503": {description: The store is unavailable}
        """
        end = self._time("to", time.time())
        start = self._time("from", end - DEFAULT_WINDOW)
        if start >= end:
            raise ApiError(400, "from must be before to", fields={"from": "not before to"})
        group_by = self.get_query_argument("group_by", "").strip() or None
        if group_by is not None and group_by not in GROUPS:
            raise ApiError(400, f"invalid group_by: use one of {', '.join(GROUPS)}",
                           fields={"group_by": "unknown grouping"})
        if group_by is not None and self.principal.role != "admin":
            raise ApiError(403, "grouping usage needs the admin role; viewers see the totals (leave out group_by)")
        summary = await self.services.usage.summary(start, end, group_by)
        self.send_json({"from": _iso(start), "to": _iso(end), "group_by": group_by, "totals": summary["totals"],
                        "groups": summary["groups"]})

    def _time(self, name: str, default: float) -> float:
        text = self.get_query_argument(name, "").strip()
        return parse_time(name, text) if text else default


class RequestsHandler(ManagementHandler):
    def get(self) -> None:
        """The latest proxied requests of this proxy process, newest first (from memory).
        ---
        summary: Recent requests
        tags: [usage]
        parameters:
          - {name: limit, in: query, required: false, schema: {type: integer, minimum: 1, maximum: 1000, default: 100}}
          - {name: model, in: query, required: false, schema: {type: string},
             description: "only this model (any spelling: llama3 = llama3:latest)"}
          - {name: node, in: query, required: false, schema: {type: string}, description: only this node (name)}
          - {name: status, in: query, required: false, schema: {type: string, pattern: "^([1-5][0-9][0-9]|[1-5]xx)$"},
             description: "an HTTP status (404) or a class (5xx)"}
        responses:
          "200":
            description: At most `limit` of the last 1,000 requests of this process, filtered.
            content:
              application/json:
                schema:
                  type: object
                  properties:
                    requests: {type: array, items: {$ref: "#/components/schemas/RecentRequest"}}
          "400": {description: "A bad limit, model or status (the error names it, `fields` too)"}
          "401": {description: Not logged in}
        """
        text = self.get_query_argument("limit", "").strip()
        limit = DEFAULT_LIMIT
        if text:
            if not _LIMIT.match(text) or not 1 <= int(text) <= MAX_LIMIT:
                raise ApiError(400, f"invalid limit: an integer from 1 to {MAX_LIMIT}",
                               fields={"limit": "out of range"})
            limit = int(text)
        model = self.get_query_argument("model", "").strip() or None
        if model is not None:
            key = try_model_key(model)
            if key is None:
                raise ApiError(400, "invalid model: not a model name", fields={"model": "not a model name"})
            model = key
        node = self.get_query_argument("node", "").strip() or None
        status_text = self.get_query_argument("status", "").strip().lower() or None
        status: int | str | None = None
        if status_text is not None:
            if not _STATUS.match(status_text):
                raise ApiError(400, "invalid status: an HTTP status such as 404, or a class such as 5xx",
                               fields={"status": "not a status"})
            status = status_text if status_text.endswith("xx") else int(status_text)
        records = self.services.usage.latest(limit, model=model, node=node, status=status)
        self.send_json({"requests": [request_view(r) for r in records]})


ROUTES: list[tuple[str, type]] = [
    (r"/api/proxy/usage", UsageHandler),
    (r"/api/proxy/requests", RequestsHandler),
]
