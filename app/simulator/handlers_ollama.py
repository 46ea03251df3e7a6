"""Ollama's informational and inference routes: /, version, tags, ps, generate, chat, embed."""

from __future__ import annotations

import time
from typing import Any

from app.simulator.catalog import ModelEntry
from app.simulator.generation import context_ids
from app.simulator.handlers_base import TEXT, SimHandler
from app.simulator.inference import Plan, Run, embed_inputs, plan_answer
from app.simulator.streaming import NDJSON, LineStream
from app.simulator.wire import (
    ApiError,
    dumps,
    field_bool,
    field_dict,
    field_int,
    field_list,
    field_str,
    json_str,
    parse_body,
    parse_keep_alive,
    rfc3339_utc,
)


class RootHandler(SimHandler):
    route = "/"
    garbage_type = TEXT

    async def get(self) -> None:
        await self.serve(self._answer)

    async def head(self) -> None:
        await self.serve(self._answer)

    async def _answer(self) -> None:
        self.set_header("Content-Type", TEXT)
        await self.finish("Ollama is running")


class VersionHandler(SimHandler):
    route = "/api/version"

    async def get(self) -> None:
        await self.serve(self._answer)

    async def head(self) -> None:
        await self.serve(self._answer)

    async def _answer(self) -> None:
        await self.send_json({"version": self.state.options.version})


class TagsHandler(SimHandler):
    route = "/api/tags"

    async def get(self) -> None:
        await self.serve(self._answer)

    async def head(self) -> None:
        await self.serve(self._answer)

    async def _answer(self) -> None:
        await self.send_json(self.state.catalog.tags_body())


class PsHandler(SimHandler):
    route = "/api/ps"

    async def get(self) -> None:
        await self.serve(self._answer)

    async def _answer(self) -> None:
        await self.send_json({"models": self.state.scheduler.ps_models()})


def json_format(body: dict[str, Any]) -> bool:
    """Whether ``format`` asks for JSON output (``"json"`` or a JSON schema)."""
    value = body.get("format")
    if value in (None, ""):
        return False
    if value == "json" or isinstance(value, dict):
        return True
    raise ApiError(400, f'invalid format: {dumps(value)}; expected "json" or a JSON schema')


class _InferenceHandler(SimHandler):
    """Shared by generate and chat: the load/unload shortcut and the answer loop."""

    garbage_type = NDJSON
    chat = False

    def _reply(self, model: str, text: str) -> dict[str, Any]:
        reply: dict[str, Any] = {"model": model, "created_at": rfc3339_utc()}
        if self.chat:
            reply["message"] = {"role": "assistant", "content": text}
        else:
            reply["response"] = text
        return reply

    async def load_or_unload(
        self, entry: ModelEntry, model: str, keep_alive: float | None, options: dict[str, Any]
    ) -> None:
        """An empty prompt: load the model (``done_reason: load``) or, with keep_alive 0, unload it."""
        scheduler = self.state.scheduler
        if keep_alive == 0:
            scheduler.unload(entry.key)
            reason = "unload"
        else:
            lease = await scheduler.acquire(entry, keep_alive, slot=False, num_ctx=field_int(options, "num_ctx"))
            scheduler.release(lease)
            reason = "load"
        await self.send_json({**self._reply(model, ""), "done": True, "done_reason": reason})

    async def answer(
        self, entry: ModelEntry, model: str, plan: Plan, stream: bool, keep_alive: float | None, started: int
    ) -> None:
        scheduler = self.state.scheduler
        lease = await scheduler.acquire(entry, keep_alive, num_ctx=plan.num_ctx)
        try:
            run = Run(self.state, lease, plan, started)
            await run.prompt_eval()
            extra = {} if self.chat else {"context": context_ids(plan.seed, plan.prompt_tokens + len(plan.tokens))}
            if not stream:
                await run.generate_all()
                final = {**self._reply(model, "".join(plan.tokens)), "done": True,
                         "done_reason": plan.done_reason, **extra, **run.metrics()}
                await self.send_json(final)
                return
            out = LineStream(self, fault=self.take_stream_fault())
            head = '{"model":' + dumps(model) + ',"created_at":"'
            field = '","message":{"role":"assistant","content":' if self.chat else '","response":'
            tail = '},"done":false}' if self.chat else ',"done":false}'
            fast = self.state.options.fast
            stamp = rfc3339_utc()
            for token in plan.tokens:
                await run.pace()
                if not fast:
                    stamp = rfc3339_utc()
                await out.send(head + stamp + field + json_str(token) + tail)
            final = {**self._reply(model, ""), "done": True, "done_reason": plan.done_reason,
                     **extra, **run.metrics()}
            await out.send_final(dumps(final))
        finally:
            scheduler.release(lease)


class GenerateHandler(_InferenceHandler):
    route = "/api/generate"

    async def post(self) -> None:
        await self.serve(self._generate)

    async def _generate(self) -> None:
        started = time.perf_counter_ns()
        body = parse_body(self.request.body)
        model = field_str(body, "model")
        entry = self.state.catalog.find(model)
        if entry is None:
            raise ApiError(404, f"model '{model}' not found")
        prompt = field_str(body, "prompt")
        text = field_str(body, "system") + "\n" + prompt + field_str(body, "suffix")
        images = field_list(body, "images")
        context = field_list(body, "context")
        stream = field_bool(body, "stream", True)
        options = field_dict(body, "options")
        keep_alive = parse_keep_alive(body.get("keep_alive"), None)
        fmt = json_format(body)
        if entry.is_embedding:
            raise ApiError(400, f'"{model}" does not support generate')
        if not prompt and not images:
            await self.load_or_unload(entry, model, keep_alive, options)
            return
        plan = plan_answer(self.state, entry, f"{text}\n{len(context)}", options, json_format=fmt)
        await self.answer(entry, model, plan, stream, keep_alive, started)


def chat_prompt(messages: list[Any]) -> str:
    """The conversation as one text (for determinism and prompt token counts)."""
    parts = []
    for message in messages:
        if not isinstance(message, dict):
            raise ApiError(400, "invalid message: expected an object")
        role = field_str(message, "role")
        content = message.get("content")
        if content is not None and not isinstance(content, str):
            raise ApiError(400, 'invalid value for "content": expected a string')
        parts.append(f"{role}: {content or ''}")
    return "\n".join(parts)


class ChatHandler(_InferenceHandler):
    route = "/api/chat"
    chat = True

    async def post(self) -> None:
        await self.serve(self._chat)

    async def _chat(self) -> None:
        started = time.perf_counter_ns()
        body = parse_body(self.request.body)
        model = field_str(body, "model")
        if not model:
            raise ApiError(400, "model is required")
        entry = self.state.catalog.find(model)
        if entry is None:
            raise ApiError(404, f"model '{model}' not found")
        messages = field_list(body, "messages")
        prompt = chat_prompt(messages)
        field_list(body, "tools")
        stream = field_bool(body, "stream", True)
        options = field_dict(body, "options")
        keep_alive = parse_keep_alive(body.get("keep_alive"), None)
        fmt = json_format(body)
        if entry.is_embedding:
            raise ApiError(400, f'"{model}" does not support chat')
        if not messages:
            await self.load_or_unload(entry, model, keep_alive, options)
            return
        plan = plan_answer(self.state, entry, prompt, options, json_format=fmt)
        await self.answer(entry, model, plan, stream, keep_alive, started)


def embed_model(state_handler: SimHandler, body: dict[str, Any]) -> tuple[str, ModelEntry]:
    """The embedding routes' model lookup and their own not-found text."""
    model = field_str(body, "model")
    if not model:
        raise ApiError(400, "model is required")
    entry = state_handler.state.catalog.find(model)
    if entry is None:
        raise ApiError(404, f'model "{model}" not found, try pulling it first')
    return model, entry


def embed_input(value: Any) -> list[str]:
    """``input``: a string or a list of strings; an empty string means no input."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise ApiError(400, "invalid input type")


class EmbedHandler(SimHandler):
    route = "/api/embed"

    async def post(self) -> None:
        await self.serve(self._embed)

    async def _embed(self) -> None:
        body = parse_body(self.request.body)
        model, entry = embed_model(self, body)
        inputs = embed_input(body.get("input"))
        keep_alive = parse_keep_alive(body.get("keep_alive"), None)
        field_bool(body, "truncate", True)
        dimensions = field_int(body, "dimensions")
        if not inputs:
            await self.send_json({"model": model, "embeddings": []})
            return
        vectors, metrics = await embed_inputs(self.state, entry, inputs, keep_alive, dimensions=dimensions)
        await self.send_json({"model": model, "embeddings": vectors, **metrics})


class EmbeddingsHandler(SimHandler):
    """The legacy route: one ``prompt``, one raw (not normalised) vector."""

    route = "/api/embeddings"

    async def post(self) -> None:
        await self.serve(self._embeddings)

    async def _embeddings(self) -> None:
        body = parse_body(self.request.body)
        _, entry = embed_model(self, body)
        prompt = field_str(body, "prompt")
        keep_alive = parse_keep_alive(body.get("keep_alive"), None)
        if not prompt:
            await self.send_json({"embedding": []})
            return
        vectors, _ = await embed_inputs(self.state, entry, [prompt], keep_alive, normalise=False)
        await self.send_json({"embedding": vectors[0]})

