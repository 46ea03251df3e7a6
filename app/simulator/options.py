"""Knobs of a simulated node, in one dataclass shared by the CLI, tests and benchmarks."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

DEFAULT_MODELS = ("llama3.2:latest",)
# Substrings that make a name unknown to the simulated registry (pull → "file does not exist").
DEFAULT_UNKNOWN = ("doesnotexist",)


@dataclass
class SimulatorOptions:
    """How a simulated Ollama node looks and behaves.

    Times are seconds (``keep_alive`` negative or ``math.inf`` = forever). ``fast`` removes
    every delay (load, prompt eval, token pacing, pull progress) so the node is never the
    bottleneck of a benchmark; the durations it reports are then the nominal ones
    (``eval_count / tokens_per_second``) so clients that compute tokens/s still get sane numbers.
    """

    models: list[str] = field(default_factory=lambda: list(DEFAULT_MODELS))
    version: str = "0.33.0"
    tokens_per_second: float = 50.0
    prompt_tokens_per_second: float = 1000.0
    load_time: float = 1.0
    num_parallel: int = 1
    max_queue: int = 512
    max_loaded: int = 3
    keep_alive: float = 300.0
    seed: int = 0
    fast: bool = False
    default_tokens: int = 20
    digest_salt: str = ""
    context_length: int = 4096
    embedding_dim: int = 64
    # Pull: None = every valid name is pullable, else only these names (any spelling).
    pullable: list[str] | None = None
    unknown_models: list[str] = field(default_factory=lambda: list(DEFAULT_UNKNOWN))
    pull_time: float = 1.0
    pull_step: float = 0.06
    # Answer 403 (empty body) to a Host header that is not local, as a real loopback node does.
    strict_host: bool = False
    # Fault specs applied at start: dicts as accepted by POST /_sim/faults.
    faults: list[dict[str, Any]] = field(default_factory=list)
    # Lines written per flush in fast mode (1 = flush every line, like a real node).
    fast_flush_lines: int = 32

    def __post_init__(self) -> None:
        if isinstance(self.models, str):
            self.models = [m for m in (p.strip() for p in self.models.split(",")) if m]
        if self.keep_alive < 0:
            self.keep_alive = math.inf  # negative = forever, as in a request
        problems = []
        if self.tokens_per_second <= 0:
            problems.append("tokens_per_second must be > 0")
        if self.prompt_tokens_per_second <= 0:
            problems.append("prompt_tokens_per_second must be > 0")
        if self.num_parallel < 1:
            problems.append("num_parallel must be >= 1")
        if self.max_queue < 0:
            problems.append("max_queue must be >= 0")
        if self.max_loaded < 1:
            problems.append("max_loaded must be >= 1")
        if self.load_time < 0 or self.pull_time < 0 or self.pull_step <= 0:
            problems.append("load_time and pull_time must be >= 0, pull_step > 0")
        if self.default_tokens < 0:
            problems.append("default_tokens must be >= 0")
        if self.embedding_dim < 1:
            problems.append("embedding_dim must be >= 1")
        if self.fast_flush_lines < 1:
            problems.append("fast_flush_lines must be >= 1")
        if problems:
            raise ValueError("; ".join(problems))
