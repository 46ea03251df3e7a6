"""Settings: one home, one name each.

Two kinds live here:

* :class:`Settings` — how the process starts (address, directories, store).
  Resolved once from defaults < TOML config file < ``AIVONX_*`` environment <
  command-line flags; ``--health-interval`` = ``AIVONX_HEALTH_INTERVAL`` =
  ``health_interval``.
* :class:`RoutingConfig` — what operators tune while the proxy runs (strategy,
  timeouts, …). Persisted in the store, validated field by field, applied live.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV_PREFIX = "AIVONX_"


class ConfigError(ValueError):
    """A setting has a value we cannot use; ``errors`` maps field → message."""

    def __init__(self, errors: dict[str, str]):
        self.errors = errors
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))


# --------------------------------------------------------------------------- start-up settings


@dataclass(frozen=True)
class Option:
    """One start-up setting and its three spellings (flag, env, config key)."""

    name: str
    default: Any
    help: str
    parse: Callable[[str], Any] = str
    repeatable: bool = False
    secret: bool = False
    cli: bool = True

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise ValueError("port must be 0-65535")
    return value


def _positive(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise ValueError("must be a positive number")
    return value


OPTIONS: tuple[Option, ...] = (
    Option("host", "127.0.0.1", "address to listen on"),
    Option("port", 8000, "port to listen on (0 picks a free one)", _port),
    Option("data_dir", "./data", "directory of the embedded store (used when no MongoDB URL is set)"),
    Option("log_dir", "./logs", "directory for app.json, proxy.json and error.log"),
    Option("mongo_url", None, "MongoDB URL; without it an embedded store in --data-dir is used", secret=True),
    Option("db_name", "aivonx", "MongoDB database name"),
    Option("mongo_connect_timeout", 30.0, "seconds to keep retrying an unreachable MongoDB at start", _positive),
    Option(
        "node",
        (),
        "Ollama node URL to register at start if not registered yet (repeatable)",
        repeatable=True,
    ),
    Option("health_interval", 60.0, "seconds between health checks of the nodes", _positive),
    Option("log_level", "INFO", "log level of logs/app.json (DEBUG, INFO, WARNING, ERROR)"),
    Option("xheaders", False, "trust X-Forwarded-For/X-Real-Ip from a load balancer in front", lambda s: _bool(s)),
    Option("client_header_timeout", 60.0,
           "seconds a client may take to send a request's headers (also how long an idle keep-alive "
           "connection stays open)", _positive),
    Option("client_body_timeout", 300.0, "seconds a client may take to send a whole request body", _positive),
    Option("client_send_timeout", 60.0,
           "seconds a client may leave an answer unread (no write to it completes) before the connection "
           "is closed and the node's request cancelled", _positive),
    # Secrets: environment (or config file) only — never a flag, since flags show in `ps`.
    Option("jwt_secret", None, "secret that signs login tokens (generated and stored when unset)", secret=True,
           cli=False),
    Option("admin_password", None, "password of the first admin user (generated and printed when unset)",
           secret=True, cli=False),
)

_OPTION_BY_NAME = {opt.name: opt for opt in OPTIONS}


def _bool(text: str | bool) -> bool:
    if isinstance(text, bool):
        return text
    lowered = str(text).strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"not a boolean: {text!r}")


@dataclass(frozen=True)
class Settings:
    """How this process starts. Build it with :func:`load_settings`."""

    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Path("./data")
    log_dir: Path = Path("./logs")
    mongo_url: str | None = None
    db_name: str = "aivonx"
    mongo_connect_timeout: float = 30.0
    node: tuple[str, ...] = ()
    health_interval: float = 60.0
    log_level: str = "INFO"
    xheaders: bool = False
    client_header_timeout: float = 60.0
    client_body_timeout: float = 300.0
    client_send_timeout: float = 60.0
    jwt_secret: str | None = field(default=None, repr=False)
    admin_password: str | None = field(default=None, repr=False)
    config: Path | None = None
    # Names of the settings given explicitly (file, env or flag) rather than defaulted.
    explicit: frozenset[str] = frozenset()


def add_settings_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--config`` and one flag per start-up option, defaulting to "not given"."""
    parser.add_argument("--config", type=Path, default=None,
                        help=f"TOML config file (keys as below with underscores; env {ENV_PREFIX}CONFIG)")
    for opt in OPTIONS:
        if not opt.cli:
            continue
        kwargs: dict[str, Any] = {"dest": opt.name, "default": None,
                                  "help": f"{opt.help} (env {opt.env}; default {opt.default!r})"}
        if opt.repeatable:
            kwargs["action"] = "append"
            kwargs["metavar"] = "URL"
        elif opt.parse is not str:
            kwargs["type"] = _argparse_type(opt)
        parser.add_argument(opt.flag, **kwargs)


def _argparse_type(opt: Option) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            return opt.parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{opt.flag}: {exc}") from None

    convert.__name__ = opt.name
    return convert


def load_settings(
    cli: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Merge defaults < config file < environment < CLI into one :class:`Settings`.

    ``cli`` holds parsed flags (``None`` = not given). Raises :class:`ConfigError`
    naming the setting and where its bad value came from.
    """
    cli = dict(cli or {})
    environ = os.environ if environ is None else environ
    config_path = cli.get("config") or environ.get(ENV_PREFIX + "CONFIG")
    layers: list[tuple[str, Mapping[str, Any]]] = []
    if config_path:
        layers.append((f"config file {config_path}", _read_config_file(Path(config_path))))
    layers.append(("environment", {opt.name: environ[opt.env] for opt in OPTIONS if opt.env in environ}))
    layers.append(("command line", {k: v for k, v in cli.items() if k in _OPTION_BY_NAME and v is not None}))

    values: dict[str, Any] = {opt.name: opt.default for opt in OPTIONS}
    explicit: set[str] = set()
    errors: dict[str, str] = {}
    for source, layer in layers:
        for name, raw in layer.items():
            opt = _OPTION_BY_NAME[name]
            try:
                values[name] = _coerce(opt, raw)
                explicit.add(name)
            except (TypeError, ValueError) as exc:
                errors[name] = f"{exc} (from {source})"
    if errors:
        raise ConfigError(errors)
    values["node"] = tuple(values["node"] or ())
    values["data_dir"] = Path(values["data_dir"])
    values["log_dir"] = Path(values["log_dir"])
    values["log_level"] = str(values["log_level"]).upper()
    return Settings(**values, config=Path(config_path) if config_path else None, explicit=frozenset(explicit))


def _coerce(opt: Option, raw: Any) -> Any:
    if opt.repeatable:
        if isinstance(raw, str):
            return tuple(part.strip() for part in raw.split(",") if part.strip())
        if isinstance(raw, Sequence):
            return tuple(str(item) for item in raw)
        raise ValueError("must be a list of URLs")
    if isinstance(raw, str):
        return opt.parse(raw)
    if opt.parse is str:
        raise ValueError("must be a string")
    return opt.parse(str(raw)) if not isinstance(raw, bool) else _bool(raw)


def _read_config_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError({"config": f"file not found: {path}"}) from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError({"config": f"cannot read {path}: {exc}"}) from None
    unknown = sorted(set(data) - set(_OPTION_BY_NAME))
    if unknown:
        raise ConfigError({"config": f"unknown keys in {path}: {', '.join(unknown)}"})
    return data


# --------------------------------------------------------------------------- live routing config

STRATEGIES = ("least_active", "lowest_latency", "round_robin", "random")


def _num(lo: float, hi: float, integer: bool = False, allow_none: bool = False) -> Callable[[Any], Any]:
    kind = "an integer" if integer else "a number"

    def check(value: Any) -> Any:
        if value is None and allow_none:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"must be {kind}")
        if integer and (not isinstance(value, int) and not float(value).is_integer()):
            raise ValueError(f"must be {kind}")
        if not math.isfinite(value) or not lo <= value <= hi:
            raise ValueError(f"must be between {lo:g} and {hi:g}")
        return int(value) if integer else float(value)

    return check


def _choice(options: Sequence[str]) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in options:
            raise ValueError(f"must be one of {', '.join(options)}")
        return value

    return check


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


def _origins(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError("must be a list of origins such as https://console.example.com")
    result = []
    for origin in value:
        origin = origin.strip().rstrip("/")
        if origin != "*" and not origin.startswith(("http://", "https://")):
            raise ValueError(f"{origin!r} is not an origin (scheme://host[:port]) or *")
        if len(origin) > 300:
            raise ValueError("origin too long")
        result.append(origin)
    if len(result) > 100:
        raise ValueError("at most 100 origins")
    return result


def _pull_target(value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 200:
        raise ValueError('must be "all" or the id of one node')
    return value.strip()


@dataclass(frozen=True)
class RoutingConfig:
    """Operator-tunable behaviour, validated by :func:`validate_routing`."""

    strategy: str = "least_active"
    health_interval: float = 60.0
    fall: int = 3
    rise: int = 2
    probe_timeout: float = 5.0
    connect_timeout: float = 5.0
    first_byte_timeout: float = 600.0
    idle_timeout: float = 300.0
    max_attempts: int = 3
    queue_timeout: float = 30.0
    pull_target: str = "all"
    require_api_key: bool = False
    public_state: bool = False
    public_metrics: bool = False
    cors_origins: tuple[str, ...] = ()
    max_body_size: int = 64 * 1024 * 1024
    shutdown_grace: float = 30.0
    # Usage records older than this are deleted (TTL index on MongoDB, plus an hourly prune).
    usage_retention_days: float = 30.0

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["cors_origins"] = list(self.cors_origins)
        return data


ROUTING_VALIDATORS: dict[str, Callable[[Any], Any]] = {
    "strategy": _choice(STRATEGIES),
    "health_interval": _num(1, 86400),
    "fall": _num(1, 100, integer=True),
    "rise": _num(1, 100, integer=True),
    "probe_timeout": _num(0.1, 300),
    "connect_timeout": _num(0.1, 300),
    "first_byte_timeout": _num(1, 86400),
    "idle_timeout": _num(1, 86400),
    "max_attempts": _num(1, 10, integer=True),
    "queue_timeout": _num(0, 3600),
    "pull_target": _pull_target,
    "require_api_key": _boolean,
    "public_state": _boolean,
    "public_metrics": _boolean,
    "cors_origins": _origins,
    "max_body_size": _num(1024, 4 * 1024**3, integer=True),
    "shutdown_grace": _num(0, 3600),
    "usage_retention_days": _num(1, 3650),
}


def validate_routing(values: Mapping[str, Any], base: RoutingConfig | None = None) -> RoutingConfig:
    """Apply ``values`` on top of ``base`` (defaults when ``None``).

    Raises :class:`ConfigError` listing every bad or unknown field at once, so
    a form can show all its errors in one round trip.
    """
    errors: dict[str, str] = {}
    clean: dict[str, Any] = {}
    if not isinstance(values, Mapping):
        raise ConfigError({"body": "must be a JSON object"})
    for key, value in values.items():
        validator = ROUTING_VALIDATORS.get(key)
        if validator is None:
            errors[key] = "unknown setting"
            continue
        try:
            clean[key] = validator(value)
        except ValueError as exc:
            errors[key] = str(exc)
    if errors:
        raise ConfigError(errors)
    if "cors_origins" in clean:
        clean["cors_origins"] = tuple(clean["cors_origins"])
    return dataclasses.replace(base or RoutingConfig(), **clean)
