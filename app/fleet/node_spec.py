"""Validation of a node's registration: what an operator may register, field by field.

Shared by ``--node URL`` at start and the management API, so both accept and
refuse exactly the same things. URLs are normalised to ``scheme://host:port``
(the unique identity of a node's address).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

MAX_NAME = 100
MAX_HOST = 253
MAX_LABELS = 50
MAX_HEADERS = 20
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._\-]*$")
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9\-]{0,61}[A-Za-z0-9])?"
_HOST = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*$")
_IPV6 = re.compile(r"^[0-9A-Fa-f:.]+$")
_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~\-]{1,100}$")
# Headers a node configuration may not set: they belong to the connection or to the proxy.
_FORBIDDEN_HEADERS = {"host", "content-length", "transfer-encoding", "connection", "keep-alive", "upgrade",
                      "te", "trailer", "proxy-connection", "x-request-id"}
DEFAULT_PORT = 11434


class NodeInvalid(ValueError):
    """Field-level errors: ``errors`` maps each bad field to what is wrong with it."""

    def __init__(self, errors: dict[str, str]):
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


def build_url(scheme: str, host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown.lower()}:{port}"


def _check_host(host: Any, errors: dict[str, str], field: str = "address") -> str | None:
    if not isinstance(host, str) or not host.strip():
        errors[field] = "a host name or IP address is required"
        return None
    host = host.strip().strip("[]")
    if len(host) > MAX_HOST:
        errors[field] = f"at most {MAX_HOST} characters"
        return None
    if ":" in host:
        if not _IPV6.match(host):
            errors[field] = "not a valid IPv6 address"
            return None
    elif not _HOST.match(host):
        errors[field] = "not a valid host name or IP address"
        return None
    return host


def _check_port(port: Any, errors: dict[str, str]) -> int | None:
    if isinstance(port, str) and port.strip().isdigit():
        port = int(port.strip())
    if isinstance(port, bool) or not isinstance(port, int):
        errors["port"] = "must be an integer from 1 to 65535"
        return None
    if not 1 <= port <= 65535:
        errors["port"] = "must be from 1 to 65535"
        return None
    return port


def parse_url(url: Any, errors: dict[str, str], field: str = "url") -> str | None:
    """Normalise a full node URL; records the problem under ``field``."""
    if not isinstance(url, str) or not url.strip():
        errors[field] = "a URL such as http://gpu-1:11434 is required"
        return None
    text = url.strip()
    if len(text) > 300:
        errors[field] = "at most 300 characters"
        return None
    if "://" not in text:
        text = "http://" + text
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        errors[field] = f"not a valid URL: {exc}"
        return None
    if parts.scheme not in ("http", "https"):
        errors[field] = "scheme must be http or https"
        return None
    if parts.username or parts.password:
        errors[field] = "credentials do not belong in the URL; use headers"
        return None
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        errors[field] = "a node URL has no path, query or fragment"
        return None
    host = _check_host(parts.hostname, errors, field)
    if host is None:
        return None
    if port is None:
        port = DEFAULT_PORT if parts.scheme == "http" else 443
    if not 1 <= port <= 65535:
        errors[field] = "port must be from 1 to 65535"
        return None
    return build_url(parts.scheme, host, port)


def default_name(url: str) -> str:
    """A readable name for a node registered by URL only: ``host-port``."""
    parts = urlsplit(url)
    return f"{parts.hostname}-{parts.port}".replace(":", "-")[:MAX_NAME]


def parse_node(data: Any, *, partial: bool = False, current: dict[str, Any] | None = None) -> dict[str, Any]:
    """Validate a node registration (or, with ``partial``, changes to one).

    Accepts ``name`` + ``address`` + ``port`` (+ ``scheme``) or a full ``url``;
    optional ``enabled``, ``draining``, ``max_concurrency``, ``labels``, ``headers``.
    Returns the clean fields to store; raises :class:`NodeInvalid` with every problem.
    """
    if not isinstance(data, dict):
        raise NodeInvalid({"body": "must be a JSON object"})
    errors: dict[str, str] = {}
    clean: dict[str, Any] = {}
    known = {"name", "address", "host", "port", "scheme", "url", "enabled", "draining", "max_concurrency",
             "labels", "headers"}
    for key in data:
        if key not in known and key not in {"id", "status", "created_at", "updated_at", "header_names"}:
            errors[key] = "unknown field"

    if "name" in data or not partial:
        name = data.get("name")
        if name is None and not partial and ("url" in data):
            name = None  # derived from the URL below
        elif not isinstance(name, str) or not name.strip():
            errors["name"] = "a name is required"
        elif len(name.strip()) > MAX_NAME:
            errors["name"] = f"at most {MAX_NAME} characters"
        elif not _NAME.match(name.strip()):
            errors["name"] = "letters, digits, spaces, '.', '_' and '-' only, starting with a letter or digit"
        else:
            clean["name"] = name.strip()

    address_given = any(k in data for k in ("address", "host", "port", "scheme"))
    if "url" in data:
        url = parse_url(data["url"], errors)
        if url is not None:
            clean["url"] = url
    elif address_given or not partial:
        base = urlsplit(current["url"]) if current else None
        scheme = data.get("scheme", base.scheme if base else "http")
        if scheme not in ("http", "https"):
            errors["scheme"] = "must be http or https"
        host_value = data.get("address", data.get("host", base.hostname if base else None))
        if isinstance(host_value, str) and "://" in host_value:
            url = parse_url(host_value if "port" not in data else f"{host_value.rstrip('/')}", errors, "address")
            host_value = urlsplit(url).hostname if url else None
        host = _check_host(host_value, errors)
        port_value = data.get("port", base.port if base else DEFAULT_PORT)
        port = _check_port(port_value, errors)
        if host and port and scheme in ("http", "https"):
            clean["url"] = build_url(scheme, host, port)

    if not partial and "name" not in clean and "name" not in errors and "url" in clean:
        clean["name"] = default_name(clean["url"])

    for flag in ("enabled", "draining"):
        if flag in data:
            if not isinstance(data[flag], bool):
                errors[flag] = "must be true or false"
            else:
                clean[flag] = data[flag]
    if not partial:
        clean.setdefault("enabled", True)
        clean.setdefault("draining", False)

    if "max_concurrency" in data:
        value = data["max_concurrency"]
        if value is None:
            clean["max_concurrency"] = None
        elif isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 10000:
            errors["max_concurrency"] = "must be null or an integer from 1 to 10000"
        else:
            clean["max_concurrency"] = value
    elif not partial:
        clean["max_concurrency"] = None

    if "labels" in data:
        labels = data["labels"]
        if not isinstance(labels, dict) or len(labels) > MAX_LABELS or not all(
                isinstance(k, str) and isinstance(v, str) and 0 < len(k) <= 64 and len(v) <= 256
                for k, v in labels.items()):
            errors["labels"] = f"must be an object of at most {MAX_LABELS} short string values"
        else:
            clean["labels"] = dict(labels)
    elif not partial:
        clean["labels"] = {}

    if "headers" in data:
        headers = data["headers"]
        if not isinstance(headers, dict) or len(headers) > MAX_HEADERS:
            errors["headers"] = f"must be an object of at most {MAX_HEADERS} headers"
        else:
            bad = [k for k, v in headers.items()
                   if not isinstance(k, str) or not _HEADER_NAME.match(k) or k.lower() in _FORBIDDEN_HEADERS
                   or not isinstance(v, str) or len(v) > 4096 or "\r" in v or "\n" in v]
            if bad:
                errors["headers"] = "invalid or forbidden header: " + ", ".join(sorted(map(str, bad)))[:200]
            else:
                clean["headers"] = dict(headers)
    elif not partial:
        clean["headers"] = {}

    if errors:
        raise NodeInvalid(errors)
    return clean
