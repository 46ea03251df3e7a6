"""Routing strategies: pure functions from candidate nodes to the chosen one.

Every strategy first narrows the field to nodes where the model is already
loaded (a cold load costs seconds), unless those are so much busier than the
rest that waiting for them would cost more than loading elsewhere. Ties are
broken by a rotating counter, never "first node wins", so sequential traffic
spreads over the fleet.
"""

from __future__ import annotations

import random as _random
import time
from collections.abc import Sequence

from app.fleet.node import NodeState

# How many more in-flight requests a node with the model loaded may carry
# before a node that would have to load it is considered instead.
LOADED_BONUS = 2
# least_active: scores this close to the best count as a tie (measured speeds jitter).
TIE_TOLERANCE = 0.1
# Seconds assumed for a node whose latency is unknown yet (optimistic, so new nodes get tried).
UNKNOWN_LATENCY = 0.0


def prefer_loaded(candidates: Sequence[NodeState], key: str) -> list[NodeState]:
    """Nodes with ``key`` loaded, unless they are clearly busier than the others."""
    loaded = [n for n in candidates if n.has_loaded(key)]
    if not loaded or len(loaded) == len(candidates):
        return list(candidates)
    least_loaded = min(n.in_flight for n in loaded)
    least_any = min(n.in_flight for n in candidates)
    return loaded if least_loaded <= least_any + LOADED_BONUS else list(candidates)


def _rotate(tied: Sequence[NodeState], turn: int) -> NodeState:
    ordered = sorted(tied, key=lambda n: n.id)
    return ordered[turn % len(ordered)]


def least_active(candidates: Sequence[NodeState], key: str, turn: int, rng: _random.Random) -> NodeState:
    """Fewest requests in flight, each node's count weighed by its measured generation speed.

    Score = tokens per second ÷ (1 + in flight), highest wins: a node twice as fast as another
    carries about twice its requests. Scores within :data:`TIE_TOLERANCE` of the best count as
    equal (speeds are measurements, not constants); among those the fewest in flight win, and
    ties rotate. On a fleet of equal nodes, or before any answer has been timed, that is plain
    "fewest in flight". A node not yet timed is assumed as fast as the fastest, so it gets tried
    and measured (so is one whose timing has gone stale).
    """
    now = time.monotonic()
    speeds = {n.id: n.speed_estimate(key, now) for n in candidates}
    known = [s for s in speeds.values() if s is not None]
    prior = max(known) if known else 1.0

    def score(node: NodeState) -> float:
        speed = speeds[node.id]
        return (prior if speed is None else speed) / (1 + node.in_flight)

    scores = {n.id: score(n) for n in candidates}
    best = max(scores.values())
    close = [n for n in candidates if scores[n.id] >= best * (1 - TIE_TOLERANCE)]
    fewest = min(n.in_flight for n in close)
    return _rotate([n for n in close if n.in_flight == fewest], turn)


def lowest_latency(candidates: Sequence[NodeState], key: str, turn: int, rng: _random.Random) -> NodeState:
    """Expected wait = measured time to first byte × (1 + requests already in flight)."""

    def cost(node: NodeState) -> float:
        latency = node.latency_estimate(key)
        base = UNKNOWN_LATENCY if latency is None else latency
        return round(base * (1 + node.in_flight), 6) + node.in_flight * 1e-9

    best = min(cost(n) for n in candidates)
    return _rotate([n for n in candidates if cost(n) == best], turn)


def round_robin(candidates: Sequence[NodeState], key: str, turn: int, rng: _random.Random) -> NodeState:
    return _rotate(candidates, turn)


def random(candidates: Sequence[NodeState], key: str, turn: int, rng: _random.Random) -> NodeState:
    return rng.choice(list(candidates))


STRATEGIES = {
    "least_active": least_active,
    "lowest_latency": lowest_latency,
    "round_robin": round_robin,
    "random": random,
}


def choose(strategy: str, candidates: Sequence[NodeState], key: str, turn: int,
           rng: _random.Random) -> NodeState:
    """Pick one of ``candidates`` (non-empty) for model ``key`` with ``strategy``."""
    field = prefer_loaded(candidates, key)
    return STRATEGIES[strategy](field, key, turn, rng)
