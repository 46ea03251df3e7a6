"""Small wire-format helpers: request bodies, durations, timestamps, compact JSON.

Kept apart from the handlers so that every route validates input the same way and a
bad field always becomes a 400 with a JSON error, never a traceback.
"""

from __future__ import annotations

import functools
import json
import math
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any

_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
dumps = _ENCODER.encode
# Tokens come from a small vocabulary: encoding each once keeps fast-mode streams cheap.
json_str = functools.lru_cache(maxsize=8192)(_ENCODER.encode)

FOREVER = math.inf


class ApiError(Exception):
    """An error answered as ``status`` with ``{"error": message}`` (or the OpenAI shape)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def parse_body(raw: bytes) -> dict[str, Any]:
    """The request's JSON object; 400 for an empty, malformed or non-object body."""
    if not raw or not raw.strip():
        raise ApiError(400, "missing request body")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"invalid JSON body: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid JSON body: expected an object")
    return body


def field_str(body: dict[str, Any], name: str, default: str = "") -> str:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, str):
        raise ApiError(400, f'invalid value for "{name}": expected a string')
    return value


def field_bool(body: dict[str, Any], name: str, default: bool) -> bool:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ApiError(400, f'invalid value for "{name}": expected true or false')
    return value


def field_dict(body: dict[str, Any], name: str) -> dict[str, Any]:
    value = body.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ApiError(400, f'invalid value for "{name}": expected an object')
    return value


def field_list(body: dict[str, Any], name: str) -> list[Any]:
    value = body.get(name)
    if value is None:
        return []
    if not isinstance(value, list):
        raise ApiError(400, f'invalid value for "{name}": expected an array')
    return value


def field_int(body: dict[str, Any], name: str) -> int | None:
    """An integer option; JSON numbers like ``5.0`` are accepted as Go would."""
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise ApiError(400, f'invalid value for "{name}": expected an integer')
    return int(value)


def field_stop(body: dict[str, Any], name: str = "stop") -> list[str]:
    """``stop`` as a list of strings (a single string is accepted, as OpenAI allows)."""
    value = body.get(name)
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return [v for v in value if v]
    raise ApiError(400, f'invalid value for "{name}": expected a string or an array of strings')


_DURATION_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """A Go duration string (``"5m"``, ``"1h30m"``, ``"0"``, ``"-1s"``) in seconds."""
    s = text.strip()
    sign = 1.0
    if s and s[0] in "+-":
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if s == "0":
        return 0.0
    if not s:
        raise ValueError(f'time: invalid duration "{text}"')
    total, pos = 0.0, 0
    while pos < len(s):
        match = _DURATION_PART.match(s, pos)
        if match is None:
            if re.fullmatch(r"\d+\.?\d*", s[pos:]):
                raise ValueError(f'time: missing unit in duration "{text}"')
            raise ValueError(f'time: invalid duration "{text}"')
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    return sign * total


def parse_keep_alive(value: Any, default: float | None) -> float | None:
    """``keep_alive`` in seconds: a number, a duration string or a bare number string; negative = forever.

    ``None`` (absent) returns ``default`` so the runner keeps its previous setting.
    """
    if value is None:
        return default
    if isinstance(value, bool):
        raise ApiError(400, 'invalid value for "keep_alive": expected a number or a duration')
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        if not value.strip():
            return default
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            # Lenient like Ollama's OLLAMA_KEEP_ALIVE: a bare number ("-1", "300") is seconds.
            try:
                seconds = float(value)
            except ValueError:
                raise ApiError(400, str(exc)) from None
    else:
        raise ApiError(400, 'invalid value for "keep_alive": expected a number or a duration')
    if math.isnan(seconds):
        raise ApiError(400, 'invalid value for "keep_alive"')
    return FOREVER if seconds < 0 else seconds


def rfc3339_local(ts: float) -> str:
    """RFC 3339 with the local UTC offset, as Ollama writes ``modified_at``/``expires_at``."""
    return datetime.fromtimestamp(ts).astimezone().isoformat()


def rfc3339_until(seconds: float) -> str:
    """``expires_at`` for a model kept ``seconds`` longer (forever → a far date, like Ollama)."""
    now = datetime.now().astimezone()
    if seconds == FOREVER or seconds > 1e10:
        return (now + timedelta(days=365 * 290)).isoformat()
    return (now + timedelta(seconds=seconds)).isoformat()


def rfc3339_utc(ts: float | None = None) -> str:
    """``created_at`` of a stream chunk: UTC with a ``Z``."""
    stamp = datetime.fromtimestamp(time.time() if ts is None else ts, UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
