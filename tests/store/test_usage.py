"""Usage records in the store: the same answers from MongoDB and the embedded journal, and
the embedded journal's own promises (survives a restart, bounded, compacted, torn lines)."""

from __future__ import annotations

import errno
import json
import os
import time

import pytest

from app.store import StoreUnavailable, connect
from app.store.embedded import USAGE_NAME
from app.store.usage import EmbeddedUsageRepo

DAY = 86400.0
NOW = 1_750_000_000.0  # 2025-06-15T15:06:40Z


def rec(n: int, at: float, **fields) -> dict:
    base = {"id": f"r{n}", "time": at, "request_id": f"req-{n}", "user_id": "u1", "username": "ada",
            "key_id": "k1", "key_name": "ci", "client": "127.0.0.1", "route": "/api/chat", "method": "POST",
            "path": "/api/chat", "model": "llama3:latest", "node": "gpu-1", "status": 200, "ttfb_ms": 1.5,
            "duration_ms": 9.25, "tokens_in": 10, "tokens_out": 20, "retried": False, "attempts": 1,
            "retried_on": None, "strategy": "least_active", "candidates": 1, "loaded": True, "queued_ms": 0.0,
            "error": None, "failed": False}
    base.update(fields)
    return base


async def test_summary_totals_and_every_grouping(store):
    await store.usage.insert_many([
        rec(1, NOW - 10),
        rec(2, NOW - 9, model="qwen2.5:7b", node="gpu-2", tokens_in=5, tokens_out=None),
        rec(3, NOW - 8, user_id="u2", username="bob", key_id="k2", key_name="web", status=502, failed=True,
            tokens_in=None, tokens_out=None),
        rec(4, NOW - DAY, tokens_in=1, tokens_out=1),  # yesterday
        rec(5, NOW - 3 * DAY),  # outside the window below
    ])
    start, end = NOW - 2 * DAY, NOW
    summary = await store.usage.summary(start, end)
    assert summary == {"totals": {"requests": 4, "tokens_in": 16, "tokens_out": 21, "errors": 1}, "groups": []}

    by = {g: (await store.usage.summary(start, end, g))["groups"] for g in ("user", "key", "model", "node", "day")}
    assert by["user"] == [
        {"id": "u1", "name": "ada", "requests": 3, "tokens_in": 16, "tokens_out": 21, "errors": 0},
        {"id": "u2", "name": "bob", "requests": 1, "tokens_in": 0, "tokens_out": 0, "errors": 1},
    ]
    assert [(g["id"], g["name"], g["requests"]) for g in by["key"]] == [("k1", "ci", 3), ("k2", "web", 1)]
    assert {g["id"]: (g["tokens_in"], g["tokens_out"]) for g in by["model"]} == {
        "llama3:latest": (11, 21), "qwen2.5:7b": (5, 0)}
    assert {g["id"]: g["requests"] for g in by["node"]} == {"gpu-1": 3, "gpu-2": 1}
    assert [(g["id"], g["requests"]) for g in by["day"]] == [("2025-06-14", 1), ("2025-06-15", 3)]
    # The end is exclusive, the start inclusive.
    assert (await store.usage.summary(NOW - 10, NOW - 9))["totals"]["requests"] == 1


async def test_a_retried_batch_is_stored_once(store):
    batch = [rec(1, NOW), rec(2, NOW)]
    await store.usage.insert_many(batch)
    await store.usage.insert_many([*batch, rec(3, NOW)])
    assert await store.usage.count() == 3


async def test_latest_is_newest_first_with_float_times(store):
    await store.usage.insert_many([rec(1, NOW - 5), rec(2, NOW - 1), rec(3, NOW - 3)])
    latest = await store.usage.latest(2)
    assert [r["id"] for r in latest] == ["r2", "r3"]
    assert latest[0]["time"] == pytest.approx(NOW - 1, abs=0.001)
    assert latest[0]["request_id"] == "req-2" and latest[0]["tokens_in"] == 10


async def test_prune_deletes_what_is_older_than_the_retention(store):
    await store.usage.insert_many([rec(1, NOW - 40 * DAY), rec(2, NOW - 31 * DAY), rec(3, NOW - 29 * DAY)])
    assert await store.usage.prune(NOW - 30 * DAY) == 2
    assert [r["id"] for r in await store.usage.latest(10)] == ["r3"]


async def test_mongodb_expires_usage_with_a_ttl_index_that_follows_the_setting(mongodb_store):
    await mongodb_store.usage.set_retention(30)
    info = await mongodb_store.usage._col.index_information()
    assert info["time_ttl"]["expireAfterSeconds"] == 30 * 86400
    await mongodb_store.usage.set_retention(7)
    info = await mongodb_store.usage._col.index_information()
    assert info["time_ttl"]["expireAfterSeconds"] == 7 * 86400


# ------------------------------------------------------------------ the embedded journal


async def test_embedded_usage_survives_a_restart_and_stays_out_of_store_json(data_dir):
    store = await connect(None, "aivonx", data_dir)
    await store.usage.insert_many([rec(1, NOW), rec(2, NOW + 1)])
    await store.close()
    assert not (data_dir / "store.json").exists() or "req-1" not in (data_dir / "store.json").read_text()
    assert len((data_dir / USAGE_NAME).read_text().splitlines()) == 2

    store = await connect(None, "aivonx", data_dir)
    try:
        assert [r["id"] for r in await store.usage.latest(10)] == ["r2", "r1"]
        assert (await store.usage.summary(NOW, NOW + 2))["totals"]["tokens_out"] == 40
    finally:
        await store.close()


async def test_embedded_load_skips_a_torn_last_line_and_duplicates_then_compacts(data_dir):
    data_dir.mkdir(parents=True)
    lines = [json.dumps(rec(1, NOW)), json.dumps(rec(2, NOW)), json.dumps(rec(2, NOW)), '{"id": "r3", "ti']
    (data_dir / USAGE_NAME).write_text("\n".join(lines))  # no final newline: a crash mid-append
    store = await connect(None, "aivonx", data_dir)
    try:
        assert await store.usage.count() == 2
        # Rewritten clean, so the next append starts on a line of its own.
        text = (data_dir / USAGE_NAME).read_text()
        assert text.endswith("\n") and len(text.splitlines()) == 2
        await store.usage.insert_many([rec(4, NOW)])
        assert [json.loads(line)["id"] for line in (data_dir / USAGE_NAME).read_text().splitlines()] == \
            ["r1", "r2", "r4"]
    finally:
        await store.close()


async def test_embedded_cap_keeps_the_newest_and_compaction_bounds_the_file(tmp_path):
    repo = EmbeddedUsageRepo(tmp_path / USAGE_NAME)
    repo.cap = 100
    repo.COMPACT_SLACK = 10
    await repo.load()
    for batch in range(10):
        await repo.insert_many([rec(batch * 50 + i, NOW + batch * 50 + i) for i in range(50)])
        assert await repo.count() <= repo.cap + repo.cap // 20
    await repo.prune(0)  # applies the cap exactly
    assert await repo.count() == 100
    assert [r["id"] for r in await repo.latest(1)] == ["r499"]
    assert (await repo.latest(100))[-1]["id"] == "r400"
    lines = len((tmp_path / USAGE_NAME).read_text().splitlines())
    assert lines <= 2 * 100 + 10 + 50, lines  # compacted along the way, not 500 lines
    await repo.close()

    summary = await repo.summary(0, NOW + 1000, "model")

    reopened = EmbeddedUsageRepo(tmp_path / USAGE_NAME)
    reopened.cap = 100
    await reopened.load()
    assert await reopened.count() == 100 and [r["id"] for r in await reopened.latest(1)] == ["r499"]
    # Compaction copied whole records: every field is back, and the sums agree.
    assert (await reopened.latest(1))[0] == {**rec(499, NOW + 499), "time": NOW + 499}
    assert await reopened.summary(0, NOW + 1000, "model") == summary
    await reopened.close()


async def test_embedded_prune_rewrites_the_journal_once_most_of_it_is_gone(tmp_path):
    repo = EmbeddedUsageRepo(tmp_path / USAGE_NAME)
    repo.COMPACT_SLACK = 0
    await repo.load()
    await repo.insert_many([rec(i, NOW - 40 * DAY) for i in range(20)] + [rec(100, NOW)])
    assert await repo.prune(NOW - 30 * DAY) == 20
    assert [json.loads(line)["id"] for line in (tmp_path / USAGE_NAME).read_text().splitlines()] == ["r100"]
    await repo.close()


async def test_embedded_summary_of_many_records_is_quick(tmp_path):
    repo = EmbeddedUsageRepo(tmp_path / USAGE_NAME)
    await repo.load()
    await repo.insert_many([rec(i, NOW - i, model=f"m{i % 7}") for i in range(20_000)])
    started = time.perf_counter()
    summary = await repo.summary(NOW - DAY, NOW + 1, "model")
    assert time.perf_counter() - started < 2.0
    assert summary["totals"]["requests"] == 20_000 and len(summary["groups"]) == 7
    await repo.close()


@pytest.mark.parametrize("truncate_works", [True, False])
async def test_a_failed_append_never_glues_the_retry_onto_a_torn_line(tmp_path, monkeypatch, truncate_works):
    repo = EmbeddedUsageRepo(tmp_path / USAGE_NAME)
    await repo.load()
    await repo.insert_many([rec(1, NOW)])
    real_write = os.write

    def half_then_disk_full(fd, data):
        if fd == repo._fd:
            real_write(fd, bytes(data[: len(data) // 2]))
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    def cannot_truncate(fd, length):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "write", half_then_disk_full)
    if not truncate_works:
        monkeypatch.setattr(os, "ftruncate", cannot_truncate)
    with pytest.raises(StoreUnavailable, match="No space left on device"):
        await repo.insert_many([rec(2, NOW), rec(3, NOW)])
    assert await repo.count() == 1
    monkeypatch.undo()
    await repo.insert_many([rec(2, NOW), rec(3, NOW)])  # the recorder's retry
    assert [r["id"] for r in await repo.latest(10)] == ["r3", "r2", "r1"]
    await repo.close()

    reopened = EmbeddedUsageRepo(tmp_path / USAGE_NAME)
    await reopened.load()
    assert sorted(r["id"] for r in await reopened.latest(10)) == ["r1", "r2", "r3"]
    assert (await reopened.summary(0, NOW + 1))["totals"]["requests"] == 3
    await reopened.close()
    lines = (tmp_path / USAGE_NAME).read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["r1", "r2", "r3"]  # clean (or compacted clean)
