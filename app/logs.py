"""JSON-lines logging that never blocks the event loop and never writes a secret.

Three files under ``--log-dir``, each rotated by size:

* ``app.json``   — general events (logger ``aivonx``)
* ``proxy.json`` — one line per proxied request (logger ``aivonx.proxy``)
* ``error.log``  — errors with tracebacks, from every logger

Records go through a queue to a writer thread, so a slow disk never stalls a
stream. A redaction filter scrubs bearer tokens, passwords and secrets that a
careless message might carry.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import queue
import re
import sys
from datetime import UTC, datetime
from pathlib import Path

APP_LOGGER = "aivonx"
PROXY_LOGGER = "aivonx.proxy"
MAX_BYTES = 20 * 1024 * 1024
BACKUPS = 5

_SECRET_PATTERNS = (
    (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"), r"\1[redacted]"),
    (re.compile(r"(?i)(\"?(?:password|secret|token|authorization|api_key|access|refresh)\"?\s*[:=]\s*\"?)"
                r"[^\"\s,}]+"), r"\1[redacted]"),
    (re.compile(r"(mongodb(?:\+srv)?://[^:/@\s]+:)[^@\s]+@"), r"\1***@"),
)
_SECRET_KEYS = frozenset({"password", "secret", "token", "authorization", "cookie", "api_key", "access",
                          "refresh", "headers", "password_hash"})


def redact(text: str) -> str:
    """Scrub anything that looks like a credential out of ``text``."""
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            for key, value in fields.items():
                entry[key] = "[redacted]" if key.lower() in _SECRET_KEYS else value
        if record.exc_info:
            entry["traceback"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """Human-readable lines for error.log and the console, redacted as well."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class _OnlyProxy(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.name == PROXY_LOGGER


class _NotProxy(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.name != PROXY_LOGGER


_listener: logging.handlers.QueueListener | None = None


def setup_logging(log_dir: Path, level: str = "INFO", console: bool = True) -> None:
    """Route all logging through a queue to the three rotating files (and stderr)."""
    global _listener
    stop_logging()
    log_dir.mkdir(parents=True, exist_ok=True)

    def rotating(name: str, formatter: logging.Formatter) -> logging.Handler:
        handler = logging.handlers.RotatingFileHandler(
            log_dir / name, maxBytes=MAX_BYTES, backupCount=BACKUPS, encoding="utf-8")
        handler.setFormatter(formatter)
        return handler

    app_file = rotating("app.json", JsonFormatter())
    app_file.addFilter(_NotProxy())
    proxy_file = rotating("proxy.json", JsonFormatter())
    proxy_file.addFilter(_OnlyProxy())
    error_file = rotating("error.log", TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    error_file.setLevel(logging.ERROR)
    handlers: list[logging.Handler] = [app_file, proxy_file, error_file]
    if console:
        stderr = logging.StreamHandler(sys.stderr)
        stderr.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(message)s"))
        stderr.setLevel(logging.WARNING)
        stderr.addFilter(_NotProxy())
        handlers.append(stderr)

    log_queue: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(logging.handlers.QueueHandler(log_queue))
    root.setLevel(logging.WARNING)
    logging.getLogger(APP_LOGGER).setLevel(level)
    logging.getLogger(PROXY_LOGGER).setLevel(logging.INFO)
    # Tornado logs every request at INFO; our proxy log already covers them.
    logging.getLogger("tornado.access").setLevel(logging.WARNING)
    _listener = logging.handlers.QueueListener(log_queue, *handlers, respect_handler_level=True)
    _listener.start()


def stop_logging() -> None:
    """Flush the queue and close the files (at shutdown)."""
    global _listener
    if _listener is not None:
        _listener.stop()
        for handler in _listener.handlers:
            handler.close()
        _listener = None


def app_log() -> logging.Logger:
    return logging.getLogger(APP_LOGGER)


def proxy_log() -> logging.Logger:
    return logging.getLogger(PROXY_LOGGER)
