"""Per-gateway-key limits, checked in memory: requests per minute and tokens per day.

* ``rpm`` — a sliding window of the last 60 seconds at one-second resolution. A request
  is counted when it is admitted; a refused one is not.
* ``tpd`` — tokens (in + out) per UTC calendar day, counted from finished requests. A
  request is admitted while the day's count is below the limit, so the one that crosses
  it finishes; the next is refused until midnight UTC. Counted for every gateway key (so a
  limit set during the day knows the day so far) and seeded at start from the stored usage.

The counters are per proxy process: with several proxies behind a load balancer, each one
enforces the limits on the traffic it sees.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

WINDOW = 60
DAY = 86400


@dataclass(frozen=True)
class Refusal:
    """Why a request is over its key's limit, and when to come back."""

    limit: str  # "rpm" | "tpd"
    retry_after: int
    message: str


class _Minute:
    """Admitted requests of one key per second, over the last :data:`WINDOW` seconds."""

    __slots__ = ("slots", "total")

    def __init__(self) -> None:
        self.slots: deque[list[int]] = deque()  # [epoch second, requests]
        self.total = 0

    def admit(self, now: float, limit: int) -> int:
        """0 when admitted (and counted), else the seconds until a slot frees."""
        second = int(now)
        slots = self.slots
        while slots and slots[0][0] <= second - WINDOW:
            self.total -= slots.popleft()[1]
        if self.total >= limit:
            excess, freed = self.total - limit + 1, 0
            for at, count in slots:
                freed += count
                if freed >= excess:
                    return max(1, at + WINDOW - second)
            return WINDOW
        if slots and slots[-1][0] == second:
            slots[-1][1] += 1
        else:
            slots.append([second, 1])
        self.total += 1
        return 0


class KeyLimiter:
    """The limit state of every gateway key seen by this process."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._minutes: dict[str, _Minute] = {}
        self._days: dict[str, tuple[int, int]] = {}  # key id → (UTC day number, tokens)
        self.refused = {"rpm": 0, "tpd": 0}

    def check(self, key_id: str, rpm: int | None, tpd: int | None) -> Refusal | None:
        """Admit one request of ``key_id`` (counting it), or say why not."""
        now = self.clock()
        if tpd is not None:
            used = self.tokens_today(key_id, now)
            if used >= tpd:
                self.refused["tpd"] += 1
                wait = math.ceil((int(now // DAY) + 1) * DAY - now)
                return Refusal("tpd", max(1, wait),
                               f"this API key used {used} of its {tpd} tokens per day; "
                               f"the count resets at midnight UTC (in {max(1, wait)} s)")
        if rpm is not None:
            window = self._minutes.get(key_id)
            if window is None:
                window = self._minutes[key_id] = _Minute()
            wait = window.admit(now, rpm)
            if wait:
                self.refused["rpm"] += 1
                return Refusal("rpm", wait, f"this API key is limited to {rpm} requests per minute; "
                                            f"retry in {wait} s")
        return None

    def add_tokens(self, key_id: str, tokens: int) -> None:
        """Count a finished request's tokens against its key's day."""
        if tokens <= 0:
            return
        day = int(self.clock() // DAY)
        current_day, used = self._days.get(key_id, (day, 0))
        self._days[key_id] = (day, (used if current_day == day else 0) + tokens)

    def tokens_today(self, key_id: str, now: float | None = None) -> int:
        day = int((self.clock() if now is None else now) // DAY)
        current_day, used = self._days.get(key_id, (day, 0))
        return used if current_day == day else 0

    def seed(self, key_id: str, tokens: int) -> None:
        """Start the day's count of ``key_id`` at ``tokens`` (from the stored usage, at start)."""
        self._days[key_id] = (int(self.clock() // DAY), max(0, tokens))
