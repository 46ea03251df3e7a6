"""The Ollama API at the root: the whole fleet behind one Ollama-compatible address.

Routed calls (`/api/generate`, `/api/chat`, `/api/show`, `/api/embed`,
`/api/embeddings`) go to one node that has the model; listings (`/api/tags`,
`/api/ps`, `/api/version`) are answered from memory; model management
(`/api/pull`, `/api/delete`, `/api/copy`, …) fans out — see ``app/api/models.py``.
"""

from __future__ import annotations

from typing import Any

from app.api.base import ApiError, BaseHandler
from app.api.relaying import RelayHandler
from app.fleet import catalog
from app.fleet.names import InvalidModelName, display_name, model_key
from app.fleet.relay import BUFFER, NDJSON, ProxyRequest


class RootHandler(BaseHandler):
    """``Ollama is running`` for clients' heartbeats; a browser goes to the console."""

    def get(self) -> None:
        if "text/html" in self.request.headers.get("Accept", ""):
            self.redirect("/ui/")
            return
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish("Ollama is running")

    def head(self) -> None:
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.set_header("Content-Length", str(len("Ollama is running")))
        self.finish()


class VersionHandler(BaseHandler):
    """The lowest version among active nodes: what every node can do."""

    def get(self) -> None:
        version = catalog.lowest_version(self.services.fleet.active())
        if version is None:
            raise ApiError(503, "no active node", headers={"Retry-After": "5"})
        self.send_json({"version": version})

    head = get


class TagsHandler(BaseHandler):
    def get(self) -> None:
        self.send_json({"models": catalog.merged_tags(self.services.fleet.routable())})

    head = get


class PsHandler(BaseHandler):
    def get(self) -> None:
        self.send_json({"models": catalog.merged_ps(self.services.fleet.routable())})


def required_model(body: dict[str, Any], *fields: str, missing: str = "model is required") -> tuple[str, str]:
    """The request's model string as sent and its canonical key; 400 when absent or malformed."""
    value: Any = None
    for name in fields:
        value = body.get(name)
        if value not in (None, ""):
            break
    if value in (None, ""):
        raise ApiError(400, missing)
    if not isinstance(value, str):
        raise ApiError(400, "model must be a string")
    try:
        return value, model_key(value)
    except InvalidModelName as exc:
        raise ApiError(400, str(exc)) from None


def wants_stream(body: dict[str, Any], default: bool) -> bool:
    value = body.get("stream", default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ApiError(400, "stream must be true or false")
    return value


class RoutedHandler(RelayHandler):
    """POST with a model: forwarded to one node that has it."""

    model_fields: tuple[str, ...] = ("model",)
    streams_by_default = False
    missing_text = "model is required"

    async def post(self) -> None:
        body = self.json_body()
        self.model, key = required_model(body, *self.model_fields, missing=self.missing_text)
        stream = wants_stream(body, self.streams_by_default) if self.streams_by_default else False
        await self.proxy(ProxyRequest(
            method="POST", path=self.request.path, body=self.body, key=key, model_label=self.model,
            framing=NDJSON if stream else BUFFER, expect_done=stream))

    def not_found_text(self) -> str:
        return f"model '{self.model}' not found"


class GenerateHandler(RoutedHandler):
    streams_by_default = True


class ChatHandler(RoutedHandler):
    streams_by_default = True


class ShowHandler(RoutedHandler):
    model_fields = ("model", "name")

    def not_found_text(self) -> str:
        return f"model '{display_name(self.model)}' not found"


class EmbedHandler(RoutedHandler):
    def not_found_text(self) -> str:
        return f'model "{self.model}" not found, try pulling it first'


ROUTES: list[tuple[str, type]] = [
    (r"/", RootHandler),
    (r"/api/version", VersionHandler),
    (r"/api/tags", TagsHandler),
    (r"/api/ps", PsHandler),
    (r"/api/generate", GenerateHandler),
    (r"/api/chat", ChatHandler),
    (r"/api/show", ShowHandler),
    (r"/api/embed", EmbedHandler),
    (r"/api/embeddings", EmbedHandler),
]
