"""The OpenAI-compatible routes under /v1, as Ollama's compatibility layer shapes them."""

from __future__ import annotations

import base64
import struct
import time
from typing import Any

from app.fleet.names import parse
from app.simulator.catalog import ModelEntry
from app.simulator.handlers_base import SimHandler
from app.simulator.inference import Plan, Run, embed_inputs, plan_answer
from app.simulator.streaming import LineStream
from app.simulator.wire import (
    ApiError,
    dumps,
    field_bool,
    field_dict,
    field_int,
    field_list,
    field_stop,
    field_str,
    json_str,
    parse_body,
    parse_keep_alive,
)

FINGERPRINT = "fp_ollama"


def owned_by(name: str) -> str:
    """``owned_by``: the model's namespace (``library`` for official models)."""
    return parse(name).namespace.lower()


def model_object(entry: ModelEntry, model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": int(entry.modified_at), "owned_by": owned_by(entry.name)}


def _message_text(message: Any) -> str:
    if not isinstance(message, dict):
        raise ApiError(400, "invalid message: expected an object")
    role = field_str(message, "role")
    content = message.get("content")
    if content is None or isinstance(content, str):
        return f"{role}: {content or ''}"
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict):
                raise ApiError(400, "invalid message content part")
            if part.get("type") == "text":
                texts.append(field_str(part, "text"))
        return f"{role}: {' '.join(texts)}"
    raise ApiError(400, "invalid message content type")


def _json_requested(body: dict[str, Any]) -> bool:
    kind = field_dict(body, "response_format").get("type")
    return kind in ("json_object", "json_schema")


class _CompletionHandler(SimHandler):
    """Shared by chat completions and legacy completions: JSON or SSE answers."""

    openai = True
    chat = True

    def _lookup(self, body: dict[str, Any]) -> tuple[str, ModelEntry]:
        model = field_str(body, "model")
        if not model:
            raise ApiError(400, "model is required")
        entry = self.state.catalog.find(model)
        if entry is None:
            raise ApiError(404, f"model '{model}' not found")
        if entry.is_embedding:
            raise ApiError(400, f'"{model}" does not support {"chat" if self.chat else "generate"}')
        return model, entry

    def _plan(self, body: dict[str, Any], entry: ModelEntry, prompt: str) -> Plan:
        max_tokens = field_int(body, "max_completion_tokens")
        if max_tokens is None:
            max_tokens = field_int(body, "max_tokens")
        return plan_answer(
            self.state, entry, prompt, {}, json_format=_json_requested(body), num_predict=max_tokens,
            stops=field_stop(body), seed=field_int(body, "seed"),
        )

    def _choice(self, text: str, finish: str | None, first: bool) -> dict[str, Any]:
        if not self.chat:
            return {"text": text, "index": 0, "finish_reason": finish}
        return {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}

    def _chunk_choices(self, token: str, finish: str | None, first: bool) -> str:
        """The ``choices`` array of one stream chunk, built without a JSON encoder per token."""
        reason = "null" if finish is None else json_str(finish)
        if not self.chat:
            return f'[{{"text":{json_str(token)},"index":0,"finish_reason":{reason}}}]'
        role = '"role":"assistant",' if first else ""
        return f'[{{"index":0,"delta":{{{role}"content":{json_str(token)}}},"finish_reason":{reason}}}]'

    async def complete(self, body: dict[str, Any], model: str, entry: ModelEntry, plan: Plan, started: int) -> None:
        stream = field_bool(body, "stream", False)
        include_usage = field_dict(body, "stream_options").get("include_usage") is True
        keep_alive = parse_keep_alive(body.get("keep_alive"), None)
        scheduler = self.state.scheduler
        lease = await scheduler.acquire(entry, keep_alive)
        try:
            run = Run(self.state, lease, plan, started)
            await run.prompt_eval()
            number = next(self.state.completion_ids)
            ident = f"chatcmpl-{number}" if self.chat else f"cmpl-{number}"
            created = int(time.time())
            count = len(plan.tokens)
            usage = {"prompt_tokens": plan.prompt_tokens, "completion_tokens": count,
                     "total_tokens": plan.prompt_tokens + count}
            kind = "chat.completion" if self.chat else "text_completion"
            if not stream:
                await run.generate_all()
                await self.send_json({
                    "id": ident, "object": kind, "created": created, "model": model,
                    "system_fingerprint": FINGERPRINT,
                    "choices": [self._choice("".join(plan.tokens), plan.done_reason, True)],
                    "usage": usage,
                })
                return
            chunk_kind = "chat.completion.chunk" if self.chat else "text_completion"
            head = (f'{{"id":"{ident}","object":"{chunk_kind}","created":{created},"model":{dumps(model)},'
                    f'"system_fingerprint":"{FINGERPRINT}","choices":')
            out = LineStream(self, sse=True, fault=self.take_stream_fault())
            tokens = plan.tokens or ("",)
            last = len(tokens) - 1
            for index, token in enumerate(tokens):
                if plan.tokens:
                    await run.pace()
                finish = plan.done_reason if index == last else None
                payload = head + self._chunk_choices(token, finish, index == 0) + "}"
                if index < last:
                    await out.send(payload)
                    continue
                finals = [payload]
                if include_usage:
                    finals.append(head + '[],"usage":' + dumps(usage) + "}")
                finals.append("[DONE]")
                await out.send_final(*finals)
        finally:
            scheduler.release(lease)


class ChatCompletionsHandler(_CompletionHandler):
    route = "/v1/chat/completions"

    async def post(self) -> None:
        await self.serve(self._chat)

    async def _chat(self) -> None:
        started = time.perf_counter_ns()
        body = parse_body(self.request.body)
        model, entry = self._lookup(body)
        messages = field_list(body, "messages")
        if not messages:
            raise ApiError(400, "[] is too short - 'messages'")
        prompt = "\n".join(_message_text(m) for m in messages)
        await self.complete(body, model, entry, self._plan(body, entry, prompt), started)


class CompletionsHandler(_CompletionHandler):
    route = "/v1/completions"
    chat = False

    async def post(self) -> None:
        await self.serve(self._complete)

    async def _complete(self) -> None:
        started = time.perf_counter_ns()
        body = parse_body(self.request.body)
        model, entry = self._lookup(body)
        prompt = body.get("prompt", "")
        if isinstance(prompt, list) and all(isinstance(p, str) for p in prompt):
            prompt = "\n".join(prompt)
        if not isinstance(prompt, str):
            raise ApiError(400, "invalid prompt: expected a string")
        await self.complete(body, model, entry, self._plan(body, entry, prompt + field_str(body, "suffix")), started)


class EmbeddingsHandler(SimHandler):
    route = "/v1/embeddings"
    openai = True

    async def post(self) -> None:
        await self.serve(self._embed)

    async def _embed(self) -> None:
        body = parse_body(self.request.body)
        model = field_str(body, "model")
        if not model:
            raise ApiError(400, "model is required")
        entry = self.state.catalog.find(model)
        if entry is None:
            raise ApiError(404, f'model "{model}" not found, try pulling it first')
        value = body.get("input")
        inputs = [value] if isinstance(value, str) else value
        if not isinstance(inputs, list) or not all(isinstance(v, str) for v in inputs):
            raise ApiError(400, "invalid input type")
        if not inputs or not all(inputs):
            raise ApiError(400, "invalid input")
        encoding = field_str(body, "encoding_format", "float")
        if encoding not in ("float", "base64"):
            raise ApiError(400, f"invalid encoding format: {encoding}")
        keep_alive = parse_keep_alive(body.get("keep_alive"), None)
        vectors, metrics = await embed_inputs(
            self.state, entry, inputs, keep_alive, dimensions=field_int(body, "dimensions")
        )
        data = []
        for index, vector in enumerate(vectors):
            shown: Any = vector
            if encoding == "base64":
                shown = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
            data.append({"object": "embedding", "embedding": shown, "index": index})
        tokens = metrics["prompt_eval_count"]
        await self.send_json({"object": "list", "data": data, "model": model,
                              "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


class ModelsHandler(SimHandler):
    route = "/v1/models"
    openai = True

    async def get(self) -> None:
        await self.serve(self._list)

    async def _list(self) -> None:
        data = [model_object(e, e.name) for e in self.state.catalog.entries()]
        await self.send_json({"object": "list", "data": data})


class ModelHandler(SimHandler):
    route = "/v1/models/:model"
    openai = True

    async def get(self, model: str) -> None:
        await self.serve(lambda: self._get(model))

    async def _get(self, model: str) -> None:
        entry = self.state.catalog.find(model)
        if entry is None:
            raise ApiError(404, f"model '{model}' not found")
        await self.send_json(model_object(entry, model))
