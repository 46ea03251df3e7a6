"""Model-name canonicalisation, as Ollama itself resolves names.

Clients disagree on how they spell one model (`llama3`, `llama3:latest`,
`library/llama3`, `Llama3`), so every comparison in the proxy goes through
:func:`model_key`; what we show to people goes through :func:`display_name`.
Grammar: ``[host/][namespace/]model[:tag]``; a ``:`` is a tag separator only
after the last ``/`` (``localhost:5000/ns/m`` has no tag).
"""

from __future__ import annotations

import re
from typing import NamedTuple

DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"

MAX_NAME_LENGTH = 350
_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
_HOST = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*(:[0-9]+)?$")


class InvalidModelName(ValueError):
    """A model string that no Ollama server would accept."""


class ModelName(NamedTuple):
    host: str
    namespace: str
    model: str
    tag: str


def parse(name: str) -> ModelName:
    """Split ``name`` into its four parts, filling Ollama's defaults.

    Raises :class:`InvalidModelName` for empty, oversized or malformed names so
    that callers can answer 400 instead of routing garbage.
    """
    if not isinstance(name, str):
        raise InvalidModelName("model name must be a string")
    text = name.strip()
    if not text:
        raise InvalidModelName("model is required")
    if len(text) > MAX_NAME_LENGTH:
        raise InvalidModelName("model name is too long")
    head, slash, last = text.rpartition("/")
    model, colon, tag = last.partition(":")
    if not colon:
        tag = DEFAULT_TAG
    parts = head.split("/") if slash else []
    if len(parts) > 2:
        raise InvalidModelName(f"invalid model name {name!r}")
    if len(parts) == 2:
        host, namespace = parts
    elif len(parts) == 1:
        host, namespace = DEFAULT_HOST, parts[0]
    else:
        host, namespace = DEFAULT_HOST, DEFAULT_NAMESPACE
    for part in (namespace, model, tag):
        if not _PART.match(part):
            raise InvalidModelName(f"invalid model name {name!r}")
    if not _HOST.match(host):
        raise InvalidModelName(f"invalid model name {name!r}")
    return ModelName(host, namespace, model, tag)


def display_name(name: str) -> str:
    """The form Ollama shows: with a tag, default host and ``library/`` dropped."""
    host, namespace, model, tag = parse(name)
    prefix = ""
    if host.lower() != DEFAULT_HOST:
        prefix = f"{host}/{namespace}/"
    elif namespace.lower() != DEFAULT_NAMESPACE:
        prefix = f"{namespace}/"
    return f"{prefix}{model}:{tag}"


def model_key(name: str) -> str:
    """The case-insensitive identity of a model: equal keys are one model."""
    return display_name(name).lower()


def try_model_key(name: object) -> str | None:
    """:func:`model_key`, or ``None`` for a name that cannot be parsed."""
    try:
        return model_key(name)  # type: ignore[arg-type]
    except InvalidModelName:
        return None


def is_cloud_model(name: str) -> bool:
    """Names ending ``:cloud`` or ``-cloud`` are run remotely by the node."""
    tag = parse(name).tag.lower()
    return tag == "cloud" or tag.endswith("-cloud")
