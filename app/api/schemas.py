"""OpenAPI component schemas that belong to no single route module.

The error shapes every route answers with, the auth objects several modules
return, and the Ollama and OpenAI wire shapes of the gateway (whose handlers
relay a node's answer, so these describe what an Ollama node sends: the fields
marked required are the ones Ollama always sends). Route modules keep their
own objects next to their handlers in a module-level ``SCHEMAS`` dict; the docs
builder (:mod:`app.api.docs`) collects both.
"""

from __future__ import annotations

from typing import Any

_STR: dict[str, Any] = {"type": "string"}
_INT: dict[str, Any] = {"type": "integer"}
_BOOL: dict[str, Any] = {"type": "boolean"}
_OBJ: dict[str, Any] = {"type": "object"}
_NS = {"type": "integer", "description": "nanoseconds"}
_VECTOR = {"type": "array", "items": {"type": "number"}}
_TIME = {"type": "string", "format": "date-time"}
_KEEP_ALIVE = {
    "oneOf": [{"type": "number"}, {"type": "string"}],
    "description": 'How long the model stays loaded: seconds, or a duration such as "5m"; negative = forever',
}
_FORMAT = {"oneOf": [{"type": "string", "enum": ["json"]}, {"type": "object"}],
           "description": '"json", or a JSON schema the answer must follow'}
_OPTIONS = {"type": "object", "description": "Model parameters (temperature, num_ctx, num_predict, seed, stop …)"}
_THINK = {"oneOf": [{"type": "boolean"}, {"type": "string", "enum": ["low", "medium", "high"]}]}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


SCHEMAS: dict[str, dict[str, Any]] = {
    # -- errors -------------------------------------------------------------------------------------------------
    "Error": {
        "type": "object",
        "description": "Every error of the Ollama and management routes. Some carry more fields "
                       "(`field`, `in_flight`, `results`).",
        "required": ["error"],
        "properties": {
            "error": {"type": "string", "example": "model 'llama3' not found"},
            "fields": {"type": "object", "additionalProperties": {"type": "string"},
                       "description": "Field-level validation errors: field name → message"},
        },
    },
    "OpenAIError": {
        "type": "object",
        "description": "Errors of the /v1 routes, in OpenAI's shape (the OpenAI SDKs map `type` to exceptions).",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["message", "type"],
                "properties": {
                    "message": _STR,
                    "type": {"type": "string", "example": "invalid_request_error"},
                    "param": {"type": "string", "nullable": True},
                    "code": {"type": "string", "nullable": True},
                },
            },
        },
    },
    # -- auth objects -------------------------------------------------------------------------------------------
    "User": {
        "type": "object",
        "required": ["id", "username", "role"],
        "properties": {
            "id": _STR,
            "username": _STR,
            "role": {"type": "string", "enum": ["admin", "viewer"]},
            "created_at": {**_TIME, "nullable": True},
            "updated_at": {**_TIME, "nullable": True},
        },
    },
    "Tokens": {
        "type": "object",
        "description": "A login or refresh answer: send `Authorization: Bearer <access>`; refresh before it expires.",
        "required": ["access", "refresh", "token_type", "expires_in"],
        "properties": {
            "access": {"type": "string", "description": "access JWT (HS256)"},
            "refresh": {"type": "string", "description": "refresh JWT; single use (rotated on refresh)"},
            "token_type": {"type": "string", "enum": ["Bearer"]},
            "expires_in": {"type": "integer", "description": "seconds the access token is valid"},
            "refresh_expires_in": {"type": "integer"},
            "user": _ref("User"),
        },
    },
    "Key": {
        "type": "object",
        "description": "An API token (`kind: api`, `avx_…`) or gateway key (`kind: gateway`, `avx_gw_…`); "
                       "never its secret.",
        "required": ["id", "kind", "prefix", "revoked"],
        "properties": {
            "id": _STR,
            "name": {"type": "string", "nullable": True},
            "kind": {"type": "string", "enum": ["api", "gateway"]},
            "prefix": {"type": "string", "description": "the visible start of the secret"},
            "user_id": {"type": "string", "nullable": True},
            "username": {"type": "string", "nullable": True},
            "created_at": {**_TIME, "nullable": True},
            "last_used_at": {**_TIME, "nullable": True},
            "revoked": _BOOL,
            "revoked_at": {**_TIME, "nullable": True},
        },
    },
    # -- Ollama API ---------------------------------------------------------------------------------------------
    "OllamaVersion": {
        "type": "object",
        "required": ["version"],
        "properties": {"version": {"type": "string", "example": "0.12.3",
                                   "description": "the lowest version among the active nodes"}},
    },
    "OllamaModelDetails": {
        "type": "object",
        "properties": {
            "parent_model": _STR,
            "format": {"type": "string", "example": "gguf"},
            "family": {"type": "string", "example": "llama"},
            "families": {"type": "array", "items": _STR, "nullable": True},
            "parameter_size": {"type": "string", "example": "3.2B"},
            "quantization_level": {"type": "string", "example": "Q4_K_M"},
        },
    },
    "OllamaModel": {
        "type": "object",
        "description": "A model as the nodes list it (the newest copy in the fleet).",
        "properties": {
            "name": {"type": "string", "example": "llama3.2:latest"},
            "model": {"type": "string", "example": "llama3.2:latest"},
            "modified_at": _TIME,
            "size": {"type": "integer", "description": "bytes"},
            "digest": {"type": "string", "description": "identifies the exact weights"},
            "details": _ref("OllamaModelDetails"),
        },
    },
    "OllamaTags": {
        "type": "object",
        "required": ["models"],
        "properties": {"models": {"type": "array", "items": _ref("OllamaModel")}},
    },
    "OllamaRunningModel": {
        "type": "object",
        "description": "A model loaded on some node (the copy that stays loaded longest).",
        "properties": {
            "name": _STR,
            "model": _STR,
            "size": _INT,
            "digest": _STR,
            "details": _ref("OllamaModelDetails"),
            "expires_at": _TIME,
            "size_vram": _INT,
            "context_length": _INT,
        },
    },
    "OllamaPs": {
        "type": "object",
        "required": ["models"],
        "properties": {"models": {"type": "array", "items": _ref("OllamaRunningModel")}},
    },
    "OllamaMessage": {
        "type": "object",
        "required": ["role", "content"],
        "properties": {
            "role": {"type": "string", "example": "user", "description": "system, user, assistant or tool"},
            "content": _STR,
            "thinking": _STR,
            "images": {"type": "array", "items": {"type": "string", "format": "byte"}},
            "tool_calls": {"type": "array", "items": _OBJ},
            "tool_name": _STR,
        },
    },
    "GenerateRequest": {
        "type": "object",
        "required": ["model"],
        "description": "An empty prompt only loads the model (with `keep_alive: 0`: unloads it).",
        "properties": {
            "model": {"type": "string", "example": "llama3.2"},
            "prompt": _STR,
            "suffix": _STR,
            "system": _STR,
            "template": _STR,
            "context": {"type": "array", "items": _INT, "description": "deprecated: the previous answer's context"},
            "images": {"type": "array", "items": {"type": "string", "format": "byte"}},
            "format": _FORMAT,
            "options": _OPTIONS,
            "stream": {"type": "boolean", "default": True},
            "raw": _BOOL,
            "think": _THINK,
            "keep_alive": _KEEP_ALIVE,
        },
    },
    "GenerateResponse": {
        "type": "object",
        "description": "One object with `stream: false`; else every NDJSON line has this shape. The last one has "
                       "`done: true` and the metrics; a stream that fails after it started ends with an "
                       '`{"error": "..."}` line instead.',
        "required": ["model", "created_at", "response", "done"],
        "properties": {
            "model": _STR,
            "created_at": _TIME,
            "response": _STR,
            "thinking": _STR,
            "done": _BOOL,
            "done_reason": {"type": "string", "example": "stop", "description": "stop, length, load or unload"},
            "context": {"type": "array", "items": _INT},
            "total_duration": _NS,
            "load_duration": _NS,
            "prompt_eval_count": _INT,
            "prompt_eval_duration": _NS,
            "eval_count": _INT,
            "eval_duration": _NS,
        },
    },
    "ChatRequest": {
        "type": "object",
        "required": ["model"],
        "properties": {
            "model": {"type": "string", "example": "llama3.2"},
            "messages": {"type": "array", "items": _ref("OllamaMessage")},
            "tools": {"type": "array", "items": _OBJ},
            "format": _FORMAT,
            "options": _OPTIONS,
            "stream": {"type": "boolean", "default": True},
            "think": _THINK,
            "keep_alive": _KEEP_ALIVE,
        },
    },
    "ChatResponse": {
        "type": "object",
        "description": "One object with `stream: false`; else every NDJSON line has this shape (see "
                       "GenerateResponse for the last line).",
        "required": ["model", "created_at", "message", "done"],
        "properties": {
            "model": _STR,
            "created_at": _TIME,
            "message": _ref("OllamaMessage"),
            "done": _BOOL,
            "done_reason": _STR,
            "total_duration": _NS,
            "load_duration": _NS,
            "prompt_eval_count": _INT,
            "prompt_eval_duration": _NS,
            "eval_count": _INT,
            "eval_duration": _NS,
        },
    },
    "ShowRequest": {
        "type": "object",
        "description": "`model` (or the legacy `name`) is required.",
        "anyOf": [{"required": ["model"]}, {"required": ["name"]}],
        "properties": {
            "model": {"type": "string", "example": "llama3.2"},
            "name": {"type": "string", "deprecated": True},
            "verbose": _BOOL,
        },
    },
    "ShowResponse": {
        "type": "object",
        "required": ["model_info"],
        "properties": {
            "modelfile": _STR,
            "parameters": _STR,
            "template": _STR,
            "system": _STR,
            "license": _STR,
            "details": _ref("OllamaModelDetails"),
            "model_info": {"type": "object", "nullable": True,
                           "description": "architecture keys (general.architecture, llama.context_length …)"},
            "capabilities": {"type": "array", "items": _STR},
            "modified_at": _TIME,
        },
    },
    "EmbedRequest": {
        "type": "object",
        "required": ["model"],
        "properties": {
            "model": {"type": "string", "example": "nomic-embed-text"},
            "input": {"oneOf": [{"type": "string"}, {"type": "array", "items": _STR}]},
            "truncate": {"type": "boolean", "default": True},
            "dimensions": _INT,
            "options": _OPTIONS,
            "keep_alive": _KEEP_ALIVE,
        },
    },
    "EmbedResponse": {
        "type": "object",
        "required": ["model", "embeddings"],
        "properties": {
            "model": _STR,
            "embeddings": {"type": "array", "items": _VECTOR},
            "total_duration": _NS,
            "load_duration": _NS,
            "prompt_eval_count": _INT,
        },
    },
    "EmbeddingsRequest": {
        "type": "object",
        "required": ["model"],
        "properties": {
            "model": {"type": "string", "example": "nomic-embed-text"},
            "prompt": _STR,
            "options": _OPTIONS,
            "keep_alive": _KEEP_ALIVE,
        },
    },
    "EmbeddingsResponse": {
        "type": "object",
        "required": ["embedding"],
        "properties": {"embedding": _VECTOR},
    },
    "ModelNameRequest": {
        "type": "object",
        "description": "`model` (or the legacy `name`) is required.",
        "anyOf": [{"required": ["model"]}, {"required": ["name"]}],
        "properties": {
            "model": {"type": "string", "example": "llama3.2"},
            "name": {"type": "string", "deprecated": True},
        },
    },
    "PullRequest": {
        "type": "object",
        "description": "`model` (or the legacy `name`) is required.",
        "anyOf": [{"required": ["model"]}, {"required": ["name"]}],
        "properties": {
            "model": {"type": "string", "example": "llama3.2"},
            "name": {"type": "string", "deprecated": True},
            "insecure": {"type": "boolean", "default": False},
            "stream": {"type": "boolean", "default": True},
        },
    },
    "PullProgress": {
        "type": "object",
        "description": "One line of a pull or push stream. Layer lines carry `digest` and the byte counts (summed "
                       'over the nodes); the stream ends with `{"status": "success"}` or an `{"error"}` line.',
        "properties": {
            "status": {"type": "string", "example": "pulling dde5aa3fc5ff"},
            "digest": _STR,
            "total": _INT,
            "completed": _INT,
            "error": _STR,
        },
    },
    "Status": {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"type": "string", "example": "success"}},
    },
    "CopyRequest": {
        "type": "object",
        "required": ["source", "destination"],
        "properties": {
            "source": {"type": "string", "example": "llama3.2"},
            "destination": {"type": "string", "example": "llama3.2-backup"},
        },
    },
    # -- OpenAI-compatible API ----------------------------------------------------------------------------------
    "OpenAIChatRequest": {
        "type": "object",
        "required": ["model", "messages"],
        "properties": {
            "model": {"type": "string", "example": "llama3.2"},
            "messages": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["role"],
                    "properties": {
                        "role": _STR,
                        "content": {"oneOf": [{"type": "string"}, {"type": "array", "items": _OBJ}],
                                    "nullable": True},
                        "tool_calls": {"type": "array", "items": _OBJ},
                        "tool_call_id": _STR,
                    },
                },
            },
            "stream": {"type": "boolean", "default": False},
            "stream_options": {"type": "object", "properties": {"include_usage": _BOOL}},
            "temperature": {"type": "number"},
            "top_p": {"type": "number"},
            "max_tokens": _INT,
            "max_completion_tokens": _INT,
            "stop": {"oneOf": [{"type": "string"}, {"type": "array", "items": _STR}]},
            "seed": _INT,
            "response_format": _OBJ,
            "tools": {"type": "array", "items": _OBJ},
        },
    },
    "OpenAIUsage": {
        "type": "object",
        "properties": {"prompt_tokens": _INT, "completion_tokens": _INT, "total_tokens": _INT},
    },
    "OpenAIChatCompletion": {
        "type": "object",
        "description": "With `stream: true`: server-sent events, each `data:` a chat.completion.chunk (choices "
                       "carry `delta` instead of `message`), ending with `data: [DONE]`.",
        "required": ["id", "object", "created", "model", "choices"],
        "properties": {
            "id": {"type": "string", "example": "chatcmpl-123"},
            "object": {"type": "string", "example": "chat.completion"},
            "created": _INT,
            "model": _STR,
            "system_fingerprint": _STR,
            "choices": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "index": _INT,
                        "message": {"type": "object", "properties": {
                            "role": _STR, "content": {"type": "string", "nullable": True},
                            "reasoning": _STR, "tool_calls": {"type": "array", "items": _OBJ}}},
                        "finish_reason": {"type": "string", "nullable": True},
                    },
                },
            },
            "usage": _ref("OpenAIUsage"),
        },
    },
    "OpenAICompletionRequest": {
        "type": "object",
        "required": ["model", "prompt"],
        "properties": {
            "model": {"type": "string", "example": "llama3.2"},
            "prompt": {"oneOf": [{"type": "string"}, {"type": "array", "items": _STR}]},
            "suffix": _STR,
            "stream": {"type": "boolean", "default": False},
            "stream_options": {"type": "object", "properties": {"include_usage": _BOOL}},
            "temperature": {"type": "number"},
            "top_p": {"type": "number"},
            "max_tokens": _INT,
            "stop": {"oneOf": [{"type": "string"}, {"type": "array", "items": _STR}]},
            "seed": _INT,
        },
    },
    "OpenAICompletion": {
        "type": "object",
        "description": "With `stream: true`: server-sent events of text_completion chunks, ending with "
                       "`data: [DONE]`.",
        "required": ["id", "object", "created", "model", "choices"],
        "properties": {
            "id": {"type": "string", "example": "cmpl-123"},
            "object": {"type": "string", "example": "text_completion"},
            "created": _INT,
            "model": _STR,
            "system_fingerprint": _STR,
            "choices": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"index": _INT, "text": _STR,
                                   "finish_reason": {"type": "string", "nullable": True}},
                },
            },
            "usage": _ref("OpenAIUsage"),
        },
    },
    "OpenAIEmbeddingRequest": {
        "type": "object",
        "required": ["model", "input"],
        "properties": {
            "model": {"type": "string", "example": "nomic-embed-text"},
            "input": {"oneOf": [{"type": "string"}, {"type": "array", "items": _STR}]},
            "encoding_format": {"type": "string", "enum": ["float", "base64"]},
            "dimensions": _INT,
        },
    },
    "OpenAIEmbeddingList": {
        "type": "object",
        "required": ["object", "data", "model"],
        "properties": {
            "object": {"type": "string", "example": "list"},
            "data": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "object": {"type": "string", "example": "embedding"},
                        "embedding": {"oneOf": [_VECTOR, {"type": "string", "description": "base64"}]},
                        "index": _INT,
                    },
                },
            },
            "model": _STR,
            "usage": _ref("OpenAIUsage"),
        },
    },
    "OpenAIModel": {
        "type": "object",
        "required": ["id", "object", "created", "owned_by"],
        "properties": {
            "id": {"type": "string", "example": "llama3.2:latest"},
            "object": {"type": "string", "enum": ["model"]},
            "created": {"type": "integer", "description": "Unix time the model was last modified"},
            "owned_by": {"type": "string", "example": "library"},
        },
    },
    "OpenAIModelList": {
        "type": "object",
        "required": ["object", "data"],
        "properties": {
            "object": {"type": "string", "enum": ["list"]},
            "data": {"type": "array", "items": _ref("OpenAIModel")},
        },
    },
}
