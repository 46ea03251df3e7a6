"""Deterministic "model output": token text, token counts and embedding vectors.

The same (node seed, request seed, model digest, input) always gives the same output, so
tests can compare answers across runs and across nodes that hold the same weights. Results
are cached because benchmarks repeat the same prompt many times.
"""

from __future__ import annotations

import functools
import hashlib
import math
import random

_WORDS = (
    "the sky is blue because molecules in air scatter short wavelengths of sunlight more than long "
    "ones light from sun reaches earth and interacts with nitrogen oxygen this effect called rayleigh "
    "scattering makes daytime appear while sunsets look red orange as travels through thicker "
    "atmosphere a model answers questions about science history language code music art every "
    "token here comes from simulated node that behaves like real ollama server for tests benchmarks "
    "proxy fleet routing stream chunk line json response message assistant user system prompt "
    "context window memory load unload keep alive queue slot runner parallel request"
).split()


def request_hash(*parts: object) -> int:
    """A stable 64-bit integer from the parts (Python's ``hash`` is salted per process)."""
    text = "\x1f".join(str(p) for p in parts)
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


@functools.lru_cache(maxsize=4096)
def tokens_for(seed: int, count: int) -> tuple[str, ...]:
    """``count`` tokens of English-looking text: ``("The", " sky", " is", …)``."""
    rng = random.Random(seed)
    out: list[str] = []
    capital = True
    for index in range(count):
        word = rng.choice(_WORDS)
        if capital:
            word = word.capitalize()
        capital = rng.random() < 0.08 and index + 1 < count
        if capital:
            word += "."
        out.append(word if index == 0 else " " + word)
    return tuple(out)


@functools.lru_cache(maxsize=4096)
def json_tokens_for(seed: int, count: int) -> tuple[str, ...]:
    """Tokens that concatenate to a JSON object, for requests with ``format``."""
    words = "".join(tokens_for(seed, max(count - 2, 1))).replace('"', "")
    pieces = ['{"', "answer", '":', ' "']
    pieces += [words[i:i + 4] for i in range(0, len(words), 4)]
    pieces += ['"}']
    return tuple(pieces)


def count_tokens(text: str) -> int:
    """Roughly four characters a token, at least one for a non-empty text."""
    return (len(text) + 3) // 4


def apply_stop(tokens: tuple[str, ...], stops: list[str]) -> tuple[tuple[str, ...], bool]:
    """Cut the output before the first stop sequence; True when one was found."""
    if not stops:
        return tokens, False
    text = "".join(tokens)
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
    if cut < 0:
        return tokens, False
    kept: list[str] = []
    length = 0
    for token in tokens:
        if length + len(token) > cut:
            rest = token[: cut - length]
            if rest:
                kept.append(rest)
            break
        kept.append(token)
        length += len(token)
    return tuple(kept), True


def context_ids(seed: int, count: int) -> list[int]:
    """The ``context`` array of a generate answer: stable fake token ids."""
    base = seed % 100_000
    return [(base + i * 7919) % 128_000 for i in range(count)]


@functools.lru_cache(maxsize=8192)
def embedding_for(seed: int, dim: int, normalise: bool = True) -> tuple[float, ...]:
    """A unit-length (or raw) vector of ``dim`` floats for one input."""
    rng = random.Random(seed)
    values = [rng.uniform(-1.0, 1.0) for _ in range(dim)]
    if normalise:
        norm = math.sqrt(sum(v * v for v in values)) or 1.0
        values = [v / norm for v in values]
    return tuple(round(v, 7) for v in values)
