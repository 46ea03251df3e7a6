"""The Ollama API at the root: the whole fleet behind one Ollama-compatible address.

Routed calls (`/api/generate`, `/api/chat`, `/api/show`, `/api/embed`,
`/api/embeddings`) go to one node that has the model; listings (`/api/tags`,
`/api/ps`, `/api/version`) are answered from memory; model management
(`/api/pull`, `/api/delete`, `/api/copy`, …) fans out — see ``app/api/models.py``.
"""

from __future__ import annotations

from typing import Any

from app.api.base import ApiError, BaseHandler, GatewayKeyMixin
from app.api.relaying import RelayHandler
from app.fleet import catalog
from app.fleet.names import InvalidModelName, display_name, model_key
from app.fleet.relay import BUFFER, NDJSON, ProxyRequest


class RootHandler(BaseHandler):
    """``Ollama is running`` for clients' heartbeats; a browser goes to the console."""

    def get(self) -> None:
        """Heartbeat, as Ollama answers it; a browser is sent to the console.
        ---
        summary: Heartbeat
        tags: [gateway]
        responses:
          "200":
            description: The text `Ollama is running`.
            content:
              text/plain:
                schema: {type: string, enum: [Ollama is running]}
          "302":
            description: The request accepts text/html (a browser); redirected to the console at /ui/.
            headers:
              Location: {schema: {type: string}}
        """
        if "text/html" in self.request.headers.get("Accept", ""):
            self.redirect("/ui/")
            return
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish("Ollama is running")

    def head(self) -> None:
        """The Ollama CLI's heartbeat.
        ---
        summary: Heartbeat (headers only)
        tags: [gateway]
        responses:
          "200": {description: The proxy is running.}
        """
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.set_header("Content-Length", str(len("Ollama is running")))
        self.finish()


class VersionHandler(GatewayKeyMixin, BaseHandler):
    """The lowest version among active nodes: what every node can do."""

    def get(self) -> None:
        """The Ollama version of the fleet: the lowest among the active nodes.
        ---
        summary: Ollama version
        tags: [gateway]
        responses:
          "200":
            description: The lowest version of the active nodes (clients compare it to enable features).
            content:
              application/json:
                schema: {$ref: "#/components/schemas/OllamaVersion"}
          "401": {description: A gateway key is required (require_api_key is on) and was missing or invalid}
          "503":
            description: No active node; see Retry-After.
            headers:
              Retry-After: {schema: {type: integer}}
        """
        version = catalog.lowest_version(self.services.fleet.active())
        if version is None:
            raise ApiError(503, "no active node", headers={"Retry-After": "5"})
        self.send_json({"version": version})

    head = get


class TagsHandler(GatewayKeyMixin, BaseHandler):
    def get(self) -> None:
        """Every model of the nodes that take requests, each once, newest first.
        ---
        summary: List models
        tags: [gateway]
        responses:
          "200":
            description: The fleet's models, from memory (refreshed by the health monitor); `[]` when none.
            content:
              application/json:
                schema: {$ref: "#/components/schemas/OllamaTags"}
          "401": {description: A gateway key is required (require_api_key is on) and was missing or invalid}
        """
        self.send_json({"models": catalog.merged_tags(self.services.fleet.routable())})

    head = get


class PsHandler(GatewayKeyMixin, BaseHandler):
    def get(self) -> None:
        """The models loaded on the nodes that take requests, each once.
        ---
        summary: List loaded models
        tags: [gateway]
        responses:
          "200":
            description: Loaded models, from memory; for a model loaded on several nodes, the copy that stays longest.
            content:
              application/json:
                schema: {$ref: "#/components/schemas/OllamaPs"}
          "401": {description: A gateway key is required (require_api_key is on) and was missing or invalid}
        """
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


class RoutedHandler(GatewayKeyMixin, RelayHandler):
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
    """Text generation on one node that has the model.
    ---
    post:
      summary: Generate a completion
      tags: [gateway]
      requestBody:
        required: true
        content:
          application/json:
            schema: {$ref: "#/components/schemas/GenerateRequest"}
            example: {model: llama3.2, prompt: "Why is the sky blue?", stream: false}
      responses:
        "200":
          description: >
            Streamed by default: NDJSON, one GenerateResponse per line, the last with `done: true` (or an
            `error` line when the node fails mid-stream). With `stream: false`: one GenerateResponse.
          content:
            application/x-ndjson:
              schema: {$ref: "#/components/schemas/GenerateResponse"}
            application/json:
              schema: {$ref: "#/components/schemas/GenerateResponse"}
        "400": {description: "Missing or invalid model, stream or body"}
        "401": {description: A gateway key is required (require_api_key is on) and was missing or invalid}
        "404": {description: No node that takes requests has this model}
        "413": {description: The body is larger than the max_body_size setting}
        "502": {description: Every node tried failed or answered garbage (or a node's own 5xx answer)}
        "503":
          description: Every node with the model is busy, down or draining (queue_timeout passed); see Retry-After.
          headers:
            Retry-After: {schema: {type: integer}}
        "504": {description: The node did not answer within the first_byte_timeout setting}
    """

    streams_by_default = True


class ChatHandler(RoutedHandler):
    """A chat turn on one node that has the model.
    ---
    post:
      summary: Chat
      tags: [gateway]
      requestBody:
        required: true
        content:
          application/json:
            schema: {$ref: "#/components/schemas/ChatRequest"}
            example: {model: llama3.2, messages: [{role: user, content: Hello}], stream: false}
      responses:
        "200":
          description: >
            Streamed by default: NDJSON, one ChatResponse per line, the last with `done: true` (or an `error`
            line when the node fails mid-stream). With `stream: false`: one ChatResponse.
          content:
            application/x-ndjson:
              schema: {$ref: "#/components/schemas/ChatResponse"}
            application/json:
              schema: {$ref: "#/components/schemas/ChatResponse"}
        "400": {description: "Missing or invalid model, stream or body"}
        "401": {description: A gateway key is required (require_api_key is on) and was missing or invalid}
        "404": {description: No node that takes requests has this model}
        "413": {description: The body is larger than the max_body_size setting}
        "502": {description: Every node tried failed or answered garbage (or a node's own 5xx answer)}
        "503":
          description: Every node with the model is busy, down or draining (queue_timeout passed); see Retry-After.
          headers:
            Retry-After: {schema: {type: integer}}
        "504": {description: The node did not answer within the first_byte_timeout setting}
    """

    streams_by_default = True


class ShowHandler(RoutedHandler):
    """A model's details, from one node that has it.
    ---
    post:
      summary: Show model details
      tags: [gateway]
      requestBody:
        required: true
        content:
          application/json:
            schema: {$ref: "#/components/schemas/ShowRequest"}
            example: {model: llama3.2}
      responses:
        "200":
          description: Modelfile, parameters, template, details and model_info.
          content:
            application/json:
              schema: {$ref: "#/components/schemas/ShowResponse"}
        "400": {description: "Missing or invalid model, stream or body"}
        "401": {description: A gateway key is required (require_api_key is on) and was missing or invalid}
        "404": {description: No node that takes requests has this model}
        "413": {description: The body is larger than the max_body_size setting}
        "502": {description: Every node tried failed or answered garbage (or a node's own 5xx answer)}
        "503":
          description: Every node with the model is busy, down or draining (queue_timeout passed); see Retry-After.
          headers:
            Retry-After: {schema: {type: integer}}
        "504": {description: The node did not answer within the first_byte_timeout setting}
    """

    model_fields = ("model", "name")

    def not_found_text(self) -> str:
        return f"model '{display_name(self.model)}' not found"


class EmbedHandler(RoutedHandler):
    """Embeddings from one node that has the model (``/api/embed``, and the legacy ``/api/embeddings``).
    ---
    /api/embed:
      post:
        summary: Embed
        tags: [gateway]
        requestBody:
          required: true
          content:
            application/json:
              schema: {$ref: "#/components/schemas/EmbedRequest"}
              example: {model: nomic-embed-text, input: [first text, second text]}
        responses:
          "200":
            description: One vector per input.
            content:
              application/json:
                schema: {$ref: "#/components/schemas/EmbedResponse"}
          "400": {description: "Missing or invalid model, stream or body"}
          "401": {description: A gateway key is required (require_api_key is on) and was missing or invalid}
          "404": {description: No node that takes requests has this model}
          "413": {description: The body is larger than the max_body_size setting}
          "502": {description: Every node tried failed or answered garbage (or a node's own 5xx answer)}
          "503":
            description: Every node with the model is busy, down or draining (queue_timeout passed); see Retry-After.
            headers:
              Retry-After: {schema: {type: integer}}
          "504": {description: The node did not answer within the first_byte_timeout setting}
    /api/embeddings:
      post:
        summary: Embed one prompt (legacy)
        tags: [gateway]
        deprecated: true
        requestBody:
          required: true
          content:
            application/json:
              schema: {$ref: "#/components/schemas/EmbeddingsRequest"}
              example: {model: nomic-embed-text, prompt: some text}
        responses:
          "200":
            description: The prompt's vector.
            content:
              application/json:
                schema: {$ref: "#/components/schemas/EmbeddingsResponse"}
          "400": {description: "Missing or invalid model, stream or body"}
          "401": {description: A gateway key is required (require_api_key is on) and was missing or invalid}
          "404": {description: No node that takes requests has this model}
          "413": {description: The body is larger than the max_body_size setting}
          "502": {description: Every node tried failed or answered garbage (or a node's own 5xx answer)}
          "503":
            description: Every node with the model is busy, down or draining (queue_timeout passed); see Retry-After.
            headers:
              Retry-After: {schema: {type: integer}}
          "504": {description: The node did not answer within the first_byte_timeout setting}
    """

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
