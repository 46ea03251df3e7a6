"""Routing decisions, admission and health transitions of the in-memory fleet."""

import asyncio
import random

import pytest

from app.config import RoutingConfig
from app.fleet.node import ACTIVE, SPEED_MAX_AGE, STANDBY
from app.fleet.pool import Fleet, NoCandidate


def _fleet(n=3, strategy="least_active", models=("llama3:latest",), **config):
    fleet = Fleet(RoutingConfig(strategy=strategy, **config), rng=random.Random(7))
    for i in range(n):
        node = fleet.upsert({"id": f"n{i}", "name": f"node-{i}", "url": f"http://127.0.0.1:{1000 + i}"})
        node.set_models([{"name": m, "digest": "d", "size": 1, "modified_at": "2025-01-01T00:00:00Z"} for m in models])
        fleet.mark_success(node, probe=True)
    return fleet


def _pick(fleet, key="llama3:latest"):
    lease = asyncio.run(fleet.acquire(key))
    lease.release()
    return lease.node.id


def test_least_active_rotates_ties_so_sequential_traffic_spreads():
    fleet = _fleet()
    assert {_pick(fleet) for _ in range(6)} == {"n0", "n1", "n2"}
    picks = [_pick(fleet) for _ in range(9)]
    assert sorted(picks.count(n) for n in ("n0", "n1", "n2")) == [3, 3, 3]


def test_least_active_prefers_fewest_in_flight():
    fleet = _fleet()
    fleet.nodes["n0"].in_flight = 2
    fleet.nodes["n1"].in_flight = 1
    assert {_pick(fleet) for _ in range(5)} == {"n2"}


def _timed(fleet, speeds):
    for node_id, speed in speeds.items():
        fleet.nodes[node_id].record_speed(speed, "llama3:latest")


def test_least_active_weighs_in_flight_by_measured_speed():
    fleet = _fleet()
    _timed(fleet, {"n0": 60.0, "n1": 30.0, "n2": 10.0})
    assert {_pick(fleet) for _ in range(4)} == {"n0"}  # all idle: the fastest
    fleet.nodes["n0"].in_flight = 1  # 60 / 2 = 30 / 1: equal scores, and n1 has fewer in flight
    assert {_pick(fleet) for _ in range(4)} == {"n1"}
    fleet.nodes["n1"].in_flight = 1  # 60 / 2 > 30 / 2
    assert {_pick(fleet) for _ in range(4)} == {"n0"}
    fleet.nodes["n0"].in_flight = 3  # 60 / 4 < 30 / 1
    fleet.nodes["n1"].in_flight = 0
    assert {_pick(fleet) for _ in range(4)} == {"n1"}
    fleet.nodes["n0"].in_flight = 7  # 60 / 8 and 30 / 4 < 10 / 1: now the slowest, idle node wins
    fleet.nodes["n1"].in_flight = 3
    assert {_pick(fleet) for _ in range(4)} == {"n2"}


def test_least_active_treats_near_equal_speeds_as_a_tie():
    fleet = _fleet()
    _timed(fleet, {"n0": 30.0, "n1": 31.5, "n2": 29.0})
    picks = [_pick(fleet) for _ in range(9)]
    assert sorted(picks.count(n) for n in ("n0", "n1", "n2")) == [3, 3, 3]


def test_least_active_without_timings_is_strictly_fewest_in_flight_however_busy():
    fleet = _fleet()
    fleet.nodes["n0"].in_flight = 10
    fleet.nodes["n1"].in_flight = 9  # scores 1/11 and 1/10 are within 10 %: still n1, never n0
    fleet.nodes["n2"].in_flight = 12
    assert {_pick(fleet) for _ in range(6)} == {"n1"}


def test_least_active_tries_an_untimed_node_as_if_it_were_the_fastest():
    fleet = _fleet()
    _timed(fleet, {"n0": 60.0, "n1": 10.0})
    assert {_pick(fleet) for _ in range(4)} == {"n0", "n2"}


def test_least_active_retries_a_node_whose_speed_is_stale():
    fleet = _fleet(n=2)
    _timed(fleet, {"n0": 60.0, "n1": 10.0})
    assert {_pick(fleet) for _ in range(3)} == {"n0"}
    fleet.nodes["n1"].speed_timed_at -= SPEED_MAX_AGE + 1  # unknown again: as fast as the fastest
    assert {_pick(fleet) for _ in range(4)} == {"n0", "n1"}


def test_least_active_uses_the_node_speed_for_a_model_not_yet_timed_there():
    fleet = _fleet(models=("llama3:latest", "phi3:latest"))
    fleet.nodes["n0"].record_speed(90.0, "llama3:latest")
    fleet.nodes["n1"].record_speed(20.0, "phi3:latest")
    fleet.nodes["n2"].record_speed(10.0, "phi3:latest")
    assert {_pick(fleet, "phi3:latest") for _ in range(3)} == {"n0"}


def test_round_robin_cycles():
    fleet = _fleet(strategy="round_robin")
    picks = [_pick(fleet) for _ in range(6)]
    assert picks[:3] != [picks[0]] * 3 and picks[:3] == picks[3:]


def test_lowest_latency_prefers_measured_fast_node_but_counts_in_flight():
    fleet = _fleet(strategy="lowest_latency")
    fleet.nodes["n0"].record_ttfb(0.50, "llama3:latest")
    fleet.nodes["n1"].record_ttfb(0.05, "llama3:latest")
    fleet.nodes["n2"].record_ttfb(0.20, "llama3:latest")
    assert _pick(fleet) == "n1"
    fleet.nodes["n1"].in_flight = 5  # 0.05 × 6 = 0.30 > 0.20 × 1
    assert _pick(fleet) == "n2"


def test_every_strategy_prefers_a_node_with_the_model_loaded():
    for strategy in ("least_active", "lowest_latency", "round_robin", "random"):
        fleet = _fleet(strategy=strategy)
        fleet.nodes["n2"].set_loaded([{"name": "llama3:latest"}])
        assert {_pick(fleet) for _ in range(8)} == {"n2"}, strategy


def test_loaded_preference_yields_when_the_loaded_node_is_much_busier():
    fleet = _fleet()
    fleet.nodes["n2"].set_loaded([{"name": "llama3:latest"}])
    fleet.nodes["n2"].in_flight = 3
    assert _pick(fleet) in {"n0", "n1"}


def test_unknown_model_is_not_found_and_known_but_down_is_unavailable():
    fleet = _fleet()
    with pytest.raises(NoCandidate) as info:
        asyncio.run(fleet.acquire("mistral:latest"))
    assert not info.value.known and "mistral" in str(info.value)
    for node in fleet.nodes.values():
        fleet.mark_failure(node, "refused", hard=True)
    with pytest.raises(NoCandidate) as info:
        asyncio.run(fleet.acquire("llama3:latest"))
    assert info.value.known and info.value.retry_after >= 1


def test_disabled_and_draining_nodes_get_no_traffic():
    fleet = _fleet()
    fleet.nodes["n0"].enabled = False
    fleet.nodes["n1"].draining = True
    assert {_pick(fleet) for _ in range(5)} == {"n2"}


def test_hysteresis_fall_and_rise():
    fleet = _fleet(n=1, fall=3, rise=2)
    node = fleet.nodes["n0"]
    fleet.mark_failure(node, "e1")
    fleet.mark_failure(node, "e2")
    assert node.status == ACTIVE
    fleet.mark_failure(node, "e3")
    assert node.status == STANDBY
    fleet.mark_success(node)
    assert node.status == STANDBY
    fleet.mark_success(node)
    assert node.status == ACTIVE


def test_hard_failure_moves_to_standby_at_once():
    fleet = _fleet(n=1, fall=3)
    fleet.mark_failure(fleet.nodes["n0"], "connection refused", hard=True)
    assert fleet.nodes["n0"].status == STANDBY


def test_a_new_node_is_active_after_its_first_good_probe():
    fleet = Fleet(RoutingConfig(rise=3))
    node = fleet.upsert({"id": "x", "name": "x", "url": "http://127.0.0.1:1"})
    assert node.status == STANDBY
    fleet.mark_success(node, probe=True)
    assert node.status == ACTIVE


def test_admission_queue_is_fifo_and_bounded_by_queue_timeout():
    async def scenario():
        fleet = _fleet(n=1, queue_timeout=5)
        fleet.nodes["n0"].max_concurrency = 1
        first = await fleet.acquire("llama3:latest")
        order = []

        async def waiter(tag):
            lease = await fleet.acquire("llama3:latest")
            order.append(tag)
            await asyncio.sleep(0)
            lease.release()

        tasks = [asyncio.ensure_future(waiter(i)) for i in range(3)]
        await asyncio.sleep(0.01)
        assert fleet.total_queued() == 3 and fleet.nodes["n0"].queued == 3
        first.release()
        await asyncio.gather(*tasks)
        assert order == [0, 1, 2]
        assert fleet.nodes["n0"].in_flight == 0 and fleet.nodes["n0"].queued == 0

        fleet.set_config(RoutingConfig(queue_timeout=0.05))
        held = await fleet.acquire("llama3:latest")
        with pytest.raises(NoCandidate) as info:
            await fleet.acquire("llama3:latest")
        assert info.value.known and "concurrency limit" in str(info.value)
        held.release()
        assert fleet.nodes["n0"].in_flight == 0 and fleet.total_queued() == 0

    asyncio.run(scenario())


def test_abandoned_waiter_leaks_nothing():
    async def scenario():
        fleet = _fleet(n=1, queue_timeout=5)
        fleet.nodes["n0"].max_concurrency = 1
        held = await fleet.acquire("llama3:latest")
        gone = asyncio.get_running_loop().create_future()
        task = asyncio.ensure_future(fleet.acquire("llama3:latest", abandon=gone))
        await asyncio.sleep(0.01)
        gone.set_result(None)
        with pytest.raises(asyncio.CancelledError):
            await task
        held.release()
        assert fleet.nodes["n0"].in_flight == 0 and fleet.total_queued() == 0 and fleet.nodes["n0"].queued == 0

    asyncio.run(scenario())


def test_lease_release_is_idempotent():
    fleet = _fleet(n=1)
    lease = asyncio.run(fleet.acquire("llama3:latest"))
    lease.release()
    lease.release()
    assert fleet.nodes["n0"].in_flight == 0


def test_sync_follows_the_store():
    fleet = _fleet(n=2)
    fleet.sync([{"id": "n0", "name": "renamed", "url": "http://127.0.0.1:1000", "enabled": False},
                {"id": "n9", "name": "new", "url": "http://127.0.0.1:1009"}])
    assert set(fleet.nodes) == {"n0", "n9"}
    assert fleet.nodes["n0"].name == "renamed" and not fleet.nodes["n0"].enabled
    assert fleet.nodes["n0"].status == ACTIVE  # same URL: health kept
