"""The models a simulated node holds on disk, and its blob store.

Everything about a model (digest, size, family, parameter size…) is derived from its
name, so two nodes started with the same names advertise identical models; a per-node
``digest_salt`` gives "same tag, different weights" for tests of digest-aware routing.
"""

from __future__ import annotations

import functools
import hashlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from app.fleet.names import InvalidModelName, display_name, model_key, parse
from app.simulator.wire import dumps, rfc3339_local

DEFAULT_TEMPLATE = "{{ if .System }}{{ .System }}\n{{ end }}{{ .Prompt }}"
DEFAULT_STOP = ("<|eot_id|>", "<|end_of_text|>")

cached_key = functools.lru_cache(maxsize=8192)(model_key)
cached_display = functools.lru_cache(maxsize=8192)(display_name)

_FAMILY_ALIASES = {"qwen": "qwen2", "nomic": "nomic-bert", "mxbai": "bert", "bge": "bert", "all": "bert"}
_EMBEDDING_HINTS = ("embed", "minilm", "bge", "mxbai")
_PARAMS = re.compile(r"(?<![a-z0-9.])(\d+(?:\.\d+)?)([bm])(?![a-z0-9])")
_QUANT = re.compile(r"(q\d_[0-9a-z_]+|q\d_\d|fp16|f16|bf16|q8_0)")


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class ModelEntry:
    """One model as ``/api/tags`` and ``/api/show`` describe it."""

    name: str
    key: str
    digest: str
    size: int
    family: str
    parameter_size: str
    quantization_level: str
    modified_at: float
    capabilities: tuple[str, ...]
    context_length: int
    embedding_length: int
    parent_model: str = ""
    template: str = DEFAULT_TEMPLATE
    system: str = ""
    license: str = ""
    parameters: dict[str, list[str]] = field(default_factory=dict)

    @property
    def is_embedding(self) -> bool:
        return self.capabilities == ("embedding",)

    def details(self) -> dict[str, Any]:
        return {
            "parent_model": self.parent_model,
            "format": "gguf",
            "family": self.family,
            "families": [self.family],
            "parameter_size": self.parameter_size,
            "quantization_level": self.quantization_level,
        }

    def tags_entry(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model": self.name,
            "modified_at": rfc3339_local(self.modified_at),
            "size": self.size,
            "digest": self.digest,
            "details": self.details(),
        }

    def parameters_text(self, num_ctx: int) -> str:
        """The ``parameters`` string of ``/api/show`` (Continue reads num_ctx and stop)."""
        params = {"num_ctx": [str(num_ctx)], **self.parameters}
        lines = []
        for name, values in params.items():
            for value in values:
                shown = f'"{value}"' if name == "stop" else value
                lines.append(f"{name:<30} {shown}")
        return "\n".join(lines)

    def layer_digests(self) -> list[tuple[str, int]]:
        """(digest, size) of the blobs a pull/push moves: weights first, then small layers."""
        small = [(_sha256(f"{self.digest}:{kind}"), length) for kind, length in
                 (("template", 1429), ("license", 7711), ("params", 96))]
        weights = self.size - sum(length for _, length in small) - 561
        return [(_sha256(f"{self.digest}:weights"), max(weights, 1)), *small]


def _param_count(base: str, tag: str, digest: str, embedding: bool) -> tuple[str, float]:
    for text in (tag, base):
        match = _PARAMS.search(text)
        if match:
            number = float(match.group(1))
            billions = number if match.group(2) == "b" else number / 1000
            return f"{match.group(1)}{match.group(2).upper()}", billions
    if embedding:
        choices = (("137M", 0.137), ("335M", 0.335), ("567M", 0.567))
    else:
        choices = (("1.2B", 1.2), ("3.2B", 3.2), ("7.2B", 7.2), ("8.0B", 8.0))
    return choices[int(digest[:8], 16) % len(choices)]


def derive_entry(name: str, salt: str, modified_at: float, context_length: int) -> ModelEntry:
    """A model's stable description, computed from its name (and the node's salt)."""
    shown = cached_display(name)
    key = shown.lower()
    parts = parse(shown)
    base, tag = parts.model.lower(), parts.tag.lower()
    digest = _sha256(f"{salt}\0{key}")
    embedding = any(hint in base for hint in _EMBEDDING_HINTS)
    prefix = re.match(r"[a-z]+", base)
    family = _FAMILY_ALIASES.get(prefix.group(0), prefix.group(0)) if prefix else "llama"
    if embedding and family not in ("nomic-bert", "bert"):
        family = "bert"
    param_size, billions = _param_count(base, tag, digest, embedding)
    quant_match = _QUANT.search(tag)
    quant = quant_match.group(1).upper() if quant_match else ("F16" if embedding else "Q4_K_M")
    bytes_per_param = 2.0 if quant in ("F16", "FP16", "BF16") else 0.6
    size = int(billions * 1e9 * bytes_per_param) + int(digest[8:16], 16) % 10_000_000 + 1_000_000
    if embedding:
        return ModelEntry(
            name=shown, key=key, digest=digest, size=size, family=family, parameter_size=param_size,
            quantization_level=quant, modified_at=modified_at, capabilities=("embedding",),
            context_length=8192, embedding_length=768, template="{{ .Prompt }}",
        )
    return ModelEntry(
        name=shown, key=key, digest=digest, size=size, family=family, parameter_size=param_size,
        quantization_level=quant, modified_at=modified_at, capabilities=("completion", "tools"),
        context_length=max(context_length, 131072), embedding_length=3072,
        parameters={"stop": list(DEFAULT_STOP)},
    )


class Catalog:
    """Models on the node, keyed by :func:`model_key`; plus blobs uploaded to it."""

    def __init__(self, names: list[str], salt: str = "", context_length: int = 4096) -> None:
        # Called with a model key when its weights change (create/copy over it): the node
        # must not keep serving the old weights from a resident runner.
        self.on_replaced: Callable[[str], None] | None = None
        self.salt = salt
        self.context_length = context_length
        self._models: dict[str, ModelEntry] = {}
        self.blobs: dict[str, int] = {}
        self._tags_body: bytes | None = None
        now = time.time()
        # The first name given is the newest, so /api/tags lists them in the given order.
        for index, name in enumerate(names):
            self.add(name, modified_at=now - 60 * index)

    def find(self, name: Any) -> ModelEntry | None:
        """The model called ``name`` in any spelling, or None (also for invalid names)."""
        if not isinstance(name, str):
            return None
        try:
            return self._models.get(cached_key(name))
        except InvalidModelName:
            return None

    def add(self, name: str, modified_at: float | None = None) -> ModelEntry:
        """Add (or refresh) ``name`` with its derived description; raises InvalidModelName."""
        entry = derive_entry(name, self.salt, time.time() if modified_at is None else modified_at,
                             self.context_length)
        return self.put(entry)

    def put(self, entry: ModelEntry) -> ModelEntry:
        previous = self._models.get(entry.key)
        if previous is not None and previous.digest != entry.digest and self.on_replaced is not None:
            self.on_replaced(entry.key)
        self._models[entry.key] = entry
        self._tags_body = None
        return entry

    def copy(self, source: ModelEntry, destination: str) -> ModelEntry:
        """``destination`` becomes the same weights as ``source`` (same digest), modified now."""
        shown = cached_display(destination)
        return self.put(replace(source, name=shown, key=shown.lower(), modified_at=time.time()))

    def derive(self, source: ModelEntry, name: str, **changes: Any) -> ModelEntry:
        """A new model built on ``source`` (``/api/create``): new digest, same weights size."""
        shown = cached_display(name)
        digest = _sha256(f"{source.digest}\0{shown.lower()}\0{sorted(changes.items())!r}")
        entry = replace(source, name=shown, key=shown.lower(), digest=digest, modified_at=time.time(),
                        parent_model=source.name, **changes)
        return self.put(entry)

    def remove(self, name: str) -> ModelEntry | None:
        entry = self.find(name)
        if entry is not None:
            del self._models[entry.key]
            self._tags_body = None
        return entry

    def entries(self) -> list[ModelEntry]:
        """Newest ``modified_at`` first, as ``/api/tags`` lists them."""
        return sorted(self._models.values(), key=lambda e: e.modified_at, reverse=True)

    def tags_body(self) -> bytes:
        """The encoded ``/api/tags`` answer, cached until the catalog changes."""
        if self._tags_body is None:
            self._tags_body = dumps({"models": [e.tags_entry() for e in self.entries()]}).encode()
        return self._tags_body
