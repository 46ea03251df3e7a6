"""The OpenAI-compatible `/v1` routes, routed by model like the Ollama ones.

Errors take OpenAI's shape (``{"error": {"message", "type", "param", "code"}}``)
so the OpenAI SDKs raise the right exception classes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from app.api.base import ApiError, BaseHandler, GatewayKeyMixin
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


class OpenAIRoutedHandler(OpenAIErrors, GatewayKeyMixin, RelayHandler):
    """The OpenAI-compatible calls, forwarded to one node that has the model (errors in OpenAI's shape).
    ---
    /v1/chat/completions:
      post:
        summary: Chat completion (OpenAI)
        tags: [openai]
        requestBody:
          required: true
          content:
            application/json:
              schema: {$ref: "#/components/schemas/OpenAIChatRequest"}
              example: {model: llama3.2, messages: [{role: user, content: Hello}]}
        responses:
          "200":
            description: >
              One chat.completion; with `stream: true` server-sent events of chat.completion.chunk objects
              ending with `data: [DONE]`.
            content:
              application/json:
                schema: {$ref: "#/components/schemas/OpenAIChatCompletion"}
              text/event-stream:
                schema: {type: string}
          "400": {description: "Missing or invalid model, stream or body"}
          "401": {description: A gateway key is required (require_api_key is on) and was missing or invalid}
          "404": {description: No node that takes requests has this model}
          "413": {description: The body is larger than the max_body_size setting}
          "502": {description: Every node tried failed or answered garbage (or a node's own 5xx answer)}
          "503":
            description: Every node with the model is busy, down or draining; see Retry-After.
            headers:
              Retry-After: {schema: {type: integer}}
          "504": {description: The node did not answer within the first_byte_timeout setting}
    /v1/completions:
      post:
        summary: Text completion (OpenAI, legacy)
        tags: [openai]
        requestBody:
          required: true
          content:
            application/json:
              schema: {$ref: "#/components/schemas/OpenAICompletionRequest"}
              example: {model: llama3.2, prompt: Once upon a time}
        responses:
          "200":
            description: >
              One text_completion; with `stream: true` server-sent events of text_completion chunks ending
              with `data: [DONE]`.
            content:
              application/json:
                schema: {$ref: "#/components/schemas/OpenAICompletion"}
              text/event-stream:
                schema: {type: string}
          "400": {description: "Missing or invalid model, stream or body"}
          "401": {description: A gateway key is required (require_api_key is on) and was missing or invalid}
          "404": {description: No node that takes requests has this model}
          "413": {description: The body is larger than the max_body_size setting}
          "502": {description: Every node tried failed or answered garbage (or a node's own 5xx answer)}
          "503":
            description: Every node with the model is busy, down or draining; see Retry-After.
            headers:
              Retry-After: {schema: {type: integer}}
          "504": {description: The node did not answer within the first_byte_timeout setting}
    /v1/embeddings:
      post:
        summary: Embeddings (OpenAI)
        tags: [openai]
        requestBody:
          required: true
          content:
            application/json:
              schema: {$ref: "#/components/schemas/OpenAIEmbeddingRequest"}
              example: {model: nomic-embed-text, input: some text}
        responses:
          "200":
            description: One embedding per input, in OpenAI's list format.
            content:
              application/json:
                schema: {$ref: "#/components/schemas/OpenAIEmbeddingList"}
          "400": {description: "Missing or invalid model, stream or body"}
          "401": {description: A gateway key is required (require_api_key is on) and was missing or invalid}
          "404": {description: No node that takes requests has this model}
          "413": {description: The body is larger than the max_body_size setting}
          "502": {description: Every node tried failed or answered garbage (or a node's own 5xx answer)}
          "503":
            description: Every node with the model is busy, down or draining; see Retry-After.
            headers:
              Retry-After: {schema: {type: integer}}
          "504": {description: The node did not answer within the first_byte_timeout setting}
    """

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


class ModelsHandler(OpenAIErrors, GatewayKeyMixin, BaseHandler):
    def get(self) -> None:
        """The fleet's models in OpenAI's list format (from memory, as /api/tags).
        ---
        summary: List models (OpenAI)
        tags: [openai]
        responses:
          "200":
            description: Every model of the nodes that take requests.
            content:
              application/json:
                schema: {$ref: "#/components/schemas/OpenAIModelList"}
          "401": {description: A gateway key is required (require_api_key is on) and was missing or invalid}
        """
        entries = catalog.merged_tags(self.services.fleet.routable())
        self.send_json({"object": "list", "data": [_model_object(e) for e in entries]})


class ModelHandler(OpenAIErrors, GatewayKeyMixin, BaseHandler):
    def get(self, name: str) -> None:
        """One model of the fleet in OpenAI's format; the name matches as Ollama's does (case, `:latest`).
        ---
        summary: Get a model (OpenAI)
        tags: [openai]
        parameters:
          - name: name
            in: path
            required: true
            description: The model name; may contain `/` (e.g. `hf.co/org/model:tag`).
            schema: {type: string}
            example: llama3.2:latest
        responses:
          "200":
            description: The model.
            content:
              application/json:
                schema: {$ref: "#/components/schemas/OpenAIModel"}
          "401": {description: A gateway key is required (require_api_key is on) and was missing or invalid}
          "404": {description: No node that takes requests has this model}
        """
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
