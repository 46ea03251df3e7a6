"""One inference on a slot: what to say, how fast, and the metrics Ollama reports.

Shared by ``/api/generate``, ``/api/chat`` and the OpenAI routes so that pacing and
metrics mean the same thing everywhere. Durations are measured wall time, except that in
fast mode prompt-eval and eval durations are the nominal ones (count / speed): a client
computing tokens/s must never divide by zero.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from app.simulator.catalog import ModelEntry
from app.simulator.generation import (
    apply_stop,
    count_tokens,
    embedding_for,
    json_tokens_for,
    request_hash,
    tokens_for,
)
from app.simulator.scheduler import Lease
from app.simulator.state import SimulatorState
from app.simulator.wire import ApiError, field_int, field_stop


@dataclass
class Plan:
    """The answer decided up front: tokens, why it stops, how long the prompt is."""

    tokens: tuple[str, ...]
    done_reason: str
    prompt_tokens: int
    seed: int
    num_ctx: int | None


def plan_answer(
    state: SimulatorState,
    entry: ModelEntry,
    prompt_text: str,
    options: dict[str, Any],
    *,
    json_format: bool = False,
    num_predict: int | None = None,
    stops: list[str] | None = None,
    seed: int | None = None,
) -> Plan:
    """Deterministic output for this request; ``options`` is Ollama's ``options`` object."""
    if num_predict is None:
        num_predict = field_int(options, "num_predict")
    if seed is None:
        seed = field_int(options, "seed")
    if stops is None:
        stops = field_stop(options)
    num_ctx = field_int(options, "num_ctx")
    key = request_hash(state.options.seed, seed, entry.digest, json_format, prompt_text)
    natural = state.options.default_tokens
    tokens = json_tokens_for(key, natural) if json_format else tokens_for(key, natural)
    tokens, _ = apply_stop(tokens, stops)
    reason = "stop"
    if num_predict is not None and 0 <= num_predict < len(tokens):
        tokens, reason = tokens[:num_predict], "length"
    return Plan(tokens, reason, max(1, count_tokens(prompt_text)), key, num_ctx)


class Run:
    """Paces one answer on a lease and measures it."""

    def __init__(self, state: SimulatorState, lease: Lease, plan: Plan, started_ns: int) -> None:
        self.state = state
        self.lease = lease
        self.plan = plan
        self.started_ns = started_ns
        self.fast = state.options.fast
        self.prompt_ns = 0
        self._eval_start = 0.0
        self._next_at = 0.0
        self._eval_end_ns = 0

    def _speed(self) -> float:
        # Generation slows as slots of the same runner fill, as on a real GPU.
        busy = max(1, self.lease.runner.busy)
        return self.state.options.tokens_per_second / (1 + 0.25 * (busy - 1))

    async def prompt_eval(self) -> None:
        seconds = self.plan.prompt_tokens / self.state.options.prompt_tokens_per_second
        if self.fast:
            self.prompt_ns = int(seconds * 1e9)
        else:
            start = time.perf_counter_ns()
            await asyncio.sleep(seconds)
            self.prompt_ns = time.perf_counter_ns() - start
        self._eval_start = self._next_at = time.monotonic()

    async def pace(self) -> None:
        """Wait for the next token's turn (no-op in fast mode)."""
        if self.fast:
            return
        self._next_at += 1.0 / self._speed()
        delay = self._next_at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)

    async def generate_all(self) -> None:
        """The whole answer's generation time at once (``stream: false``)."""
        if not self.fast and self.plan.tokens:
            await asyncio.sleep(len(self.plan.tokens) / self._speed())

    def metrics(self) -> dict[str, Any]:
        count = len(self.plan.tokens)
        if self.fast:
            eval_ns = max(1000, int(count / self.state.options.tokens_per_second * 1e9))
        else:
            eval_ns = max(1000, int((time.monotonic() - self._eval_start) * 1e9))
        measured = time.perf_counter_ns() - self.started_ns
        total = measured + (eval_ns + self.prompt_ns if self.fast else 0)
        return {
            "total_duration": total,
            "load_duration": max(1000, self.lease.load_ns),
            "prompt_eval_count": self.plan.prompt_tokens,
            "prompt_eval_duration": max(1000, self.prompt_ns),
            "eval_count": count,
            "eval_duration": eval_ns,
        }


async def embed_inputs(
    state: SimulatorState,
    entry: ModelEntry,
    inputs: list[str],
    keep_alive: float | None,
    *,
    dimensions: int | None = None,
    normalise: bool = True,
) -> tuple[list[tuple[float, ...]], dict[str, Any]]:
    """Vectors for ``inputs`` after loading the model and holding a slot for the prompt eval."""
    if dimensions is not None and dimensions < 1:
        raise ApiError(400, "dimensions must be a positive integer")
    started = time.perf_counter_ns()
    lease = await state.scheduler.acquire(entry, keep_alive)
    try:
        tokens = sum(max(1, count_tokens(text)) for text in inputs)
        if not state.options.fast:
            await asyncio.sleep(tokens / state.options.prompt_tokens_per_second)
        dim = state.options.embedding_dim
        vectors = []
        for text in inputs:
            vector = embedding_for(request_hash(state.options.seed, entry.digest, text), dim, normalise)
            if dimensions is not None and dimensions < dim:
                vector = _renormalise(vector[:dimensions]) if normalise else vector[:dimensions]
            vectors.append(vector)
        metrics = {
            "total_duration": time.perf_counter_ns() - started,
            "load_duration": max(1000, lease.load_ns),
            "prompt_eval_count": tokens,
        }
        return vectors, metrics
    finally:
        state.scheduler.release(lease)


def _renormalise(vector: tuple[float, ...]) -> tuple[float, ...]:
    norm = sum(v * v for v in vector) ** 0.5 or 1.0
    return tuple(round(v / norm, 7) for v in vector)
