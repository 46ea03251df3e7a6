"""The OpenAI-compatible `/v1` routes, routed by model like the Ollama ones.

Errors take OpenAI's shape (``{"error": {"message", "type", "param", "code"}}``)
so the OpenAI SDKs raise the right exception classes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from app.api.base import ApiError, BaseHandler
from app.api.ollama import required_model, wants_stream
from app.api.relaying import RelayHandler
from app.fleet import catalog
from app.fleet.names import try_model_key
from app.fleet.relay import BUFFER, SSE, ProxyRequest


def openai_error(status: int, message: str) -> dict[str, Any]:
    kind = {400: "invalid_request_error", 404: "not_found_error"}.get(status, "api_error")
    if status in (401, 403):
        kind = "authentication_error" if status == 401 else "permission_error"
    elif status == 429:
        kind = "rate_limit_error"
    elif status == 413:
        kind = "invalid_request_error"
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


class OpenAIErrors:
    """Mixin: errors in OpenAI's shape."""

    def error_payload(self, status: int, message: str, extra: dict[str, Any]) -> dict[str, Any]:
        return openai_error(status, message)


class OpenAIRoutedHandler(OpenAIErrors, RelayHandler):
    async def post(self) -> None:
        body = self.json_body()
        self.model, key = required_model(body, "model")
        stream = wants_stream(body, False)
        await self.proxy(ProxyRequest(
            method="POST", path=self.request.path, body=self.body, key=key, model_label=self.model,
            framing=SSE if stream else BUFFER))

    def not_found_text(self) -> str:
        return f'model "{self.model}" not found, try pulling it first'


def _model_object(entry: dict[str, Any]) -> dict[str, Any]:
    try:
        created = int(datetime.fromisoformat(str(entry.get("modified_at", "")).replace("Z", "+00:00")).timestamp())
    except ValueError:
        created = 0
    return {"id": entry.get("name") or entry.get("model"), "object": "model", "created": created,
            "owned_by": "library"}


class ModelsHandler(OpenAIErrors, BaseHandler):
    def get(self) -> None:
        entries = catalog.merged_tags(self.services.fleet.routable())
        self.send_json({"object": "list", "data": [_model_object(e) for e in entries]})


class ModelHandler(OpenAIErrors, BaseHandler):
    def get(self, name: str) -> None:
        key = try_model_key(name)
        for entry in catalog.merged_tags(self.services.fleet.routable()):
            if key is not None and try_model_key(entry.get("name") or entry.get("model")) == key:
                self.send_json(_model_object(entry))
                return
        raise ApiError(404, f"model '{name}' not found")


ROUTES: list[tuple[str, type]] = [
    (r"/v1/chat/completions", OpenAIRoutedHandler),
    (r"/v1/completions", OpenAIRoutedHandler),
    (r"/v1/embeddings", OpenAIRoutedHandler),
    (r"/v1/models", ModelsHandler),
    (r"/v1/models/(.+)", ModelHandler),
]
