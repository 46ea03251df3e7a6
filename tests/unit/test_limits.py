"""Per-key limits on a fake clock, and reading token counts from final messages."""

from __future__ import annotations

from app.fleet.limits import KeyLimiter
from app.fleet.usage import tokens_of

MIDNIGHT = 1_750_032_000.0  # 2025-06-16T00:00:00Z


class Clock:
    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_requests_per_minute_is_a_sliding_window():
    clock = Clock(MIDNIGHT + 0.5)
    limiter = KeyLimiter(clock)
    assert limiter.check("k", 3, None) is None
    clock.now += 20
    assert limiter.check("k", 3, None) is None
    assert limiter.check("k", 3, None) is None
    refusal = limiter.check("k", 3, None)
    assert refusal is not None and refusal.limit == "rpm" and refusal.retry_after == 40  # the first one expires
    clock.now += 39
    assert limiter.check("k", 3, None) is not None  # refusals are not counted, and it is still 1 s early
    clock.now += 1
    assert limiter.check("k", 3, None) is None  # 60 s after the first
    assert limiter.check("k", 3, None).retry_after == 20
    assert limiter.check("other", 3, None) is None  # per key
    assert limiter.refused == {"rpm": 3, "tpd": 0}


def test_tokens_per_day_refuses_once_reached_until_midnight_utc():
    clock = Clock(MIDNIGHT + 3600)
    limiter = KeyLimiter(clock)
    assert limiter.check("k", None, 100) is None
    limiter.add_tokens("k", 60)
    assert limiter.check("k", None, 100) is None  # below: admitted (it may cross the limit)
    limiter.add_tokens("k", 60)
    refusal = limiter.check("k", None, 100)
    assert refusal.limit == "tpd" and refusal.retry_after == 86400 - 3600 and "120 of its 100" in refusal.message
    clock.now = MIDNIGHT + 86400  # the next UTC day
    assert limiter.tokens_today("k") == 0 and limiter.check("k", None, 100) is None
    limiter.seed("k", 500)
    assert limiter.check("k", None, 100) is not None


def test_a_tpd_refusal_does_not_use_up_the_minute():
    limiter = KeyLimiter(Clock(MIDNIGHT))
    limiter.seed("k", 10)
    for _ in range(5):
        assert limiter.check("k", 1, 10).limit == "tpd"
    limiter.seed("k", 0)
    assert limiter.check("k", 1, 10) is None


def test_token_counts_from_ollama_and_openai_final_messages():
    assert tokens_of({"done": True, "prompt_eval_count": 12, "eval_count": 30}) == (12, 30)
    assert tokens_of({"embeddings": [[0.1]], "prompt_eval_count": 4}) == (4, None)
    assert tokens_of({"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 9}}) == (7, 9)
    assert tokens_of({"object": "list", "usage": {"prompt_tokens": 3, "total_tokens": 3}}) == (3, None)
    assert tokens_of({"choices": [{"delta": {}}]}) == (None, None)  # a stream without include_usage
    assert tokens_of(None) == (None, None)
    assert tokens_of({"prompt_eval_count": True, "eval_count": -1}) == (None, None)
