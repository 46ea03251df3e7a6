"""The embedded store: durability in store.json, atomic saves, the data-directory lock."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from app.store import DataDirLocked, StoreError, StoreUnavailable, connect
from app.store import embedded as embedded_module

REPO_ROOT = Path(__file__).resolve().parents[2]


async def open_store(data_dir: Path):
    return await connect(None, "aivonx", data_dir)


async def test_describe_names_the_absolute_data_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = await open_store(Path("rel"))
    try:
        assert store.kind == "embedded"
        assert store.describe() == (f"embedded store in {tmp_path / 'rel'} (mongomock-motor, persisted to store.json)")
        await store.ping()
    finally:
        await store.close()


async def test_everything_survives_a_restart(data_dir):
    store = await open_store(data_dir)
    node = await store.nodes.create({"name": "gpu", "url": "http://h:1", "labels": {"a": "b"}, "max_concurrency": None})
    user = await store.users.create("ann", "hash", "admin")
    await store.config.save({"strategy": "least_active", "timeout": 1.5})
    secret = await store.secrets.get_or_create("jwt", lambda: "s3cret")
    token = await store.tokens.create(user["id"], "ci", "thash", "aivx_x", "api")
    await store.tokens.revoke_jti("jti-1", datetime.now(UTC) + timedelta(hours=1))
    changes = await store.changes.current()
    await store.close()

    store = await open_store(data_dir)
    try:
        assert await store.nodes.list() == [node]
        assert await store.users.get_by_username("ANN") == user
        assert await store.config.load() == {"strategy": "least_active", "timeout": 1.5}
        assert await store.secrets.get_or_create("jwt", lambda: "other") == secret
        assert await store.tokens.find_by_hash("thash") == token
        assert await store.tokens.is_jti_revoked("jti-1")
        assert await store.changes.current() == changes
        # The unique indexes are back too.
        with pytest.raises(StoreError):
            await store.nodes.create({"name": "GPU", "url": "http://h:2"})
    finally:
        await store.close()


async def test_a_write_is_on_disk_when_it_returns(embedded_store, data_dir):
    node = await embedded_store.nodes.create({"name": "gpu", "url": "http://h:1"})
    saved = json.loads((data_dir / "store.json").read_text())
    assert [doc["_id"] for doc in saved["collections"]["nodes"]] == [node["id"]]
    assert saved["collections"]["nodes"][0]["created_at"] == {
        "$date": node["created_at"].isoformat(timespec="milliseconds").replace("+00:00", "Z")
    }


async def test_files_are_private_to_the_owner(embedded_store, data_dir):
    await embedded_store.users.create("ann", "hash", "admin")
    for path in (data_dir, data_dir / "store.json", data_dir / "aivonx.lock"):
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path


async def test_concurrent_writes_share_snapshots_and_all_persist(data_dir, monkeypatch):
    writes = []
    real_write = embedded_module.SnapshotFile.write

    def counting_write(self, collections):
        writes.append(len(collections.get("nodes", [])))
        real_write(self, collections)

    monkeypatch.setattr(embedded_module.SnapshotFile, "write", counting_write)
    store = await open_store(data_dir)
    await asyncio.gather(*(store.nodes.create({"name": f"n{i}", "url": f"http://h:{i}"}) for i in range(20)))
    # The first write runs alone; the nineteen that queued behind it share one snapshot.
    assert writes == [1, 20]
    await store.close()
    store = await open_store(data_dir)
    try:
        assert len(await store.nodes.list()) == 20
    finally:
        await store.close()


async def test_touch_is_saved_later_or_on_close(data_dir, monkeypatch):
    monkeypatch.setattr(embedded_module.SnapshotPersister, "DEFER_SECONDS", 0.05)
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    store = await open_store(data_dir)
    token = await store.tokens.create("u", "n", "h", "p", "gateway")
    await store.tokens.touch(token["id"], when)
    await asyncio.sleep(0.2)
    assert "2026-01-02T03:04:05" in (data_dir / "store.json").read_text()
    await store.tokens.touch(token["id"], when + timedelta(days=1))
    await store.close()  # before the deferred save: close flushes it
    store = await open_store(data_dir)
    try:
        assert (await store.tokens.find_by_hash("h"))["last_used_at"] == when + timedelta(days=1)
    finally:
        await store.close()


async def test_a_failed_save_keeps_the_old_file_and_reports_503(embedded_store, data_dir, monkeypatch):
    await embedded_store.nodes.create({"name": "kept", "url": "http://h:1"})
    before = (data_dir / "store.json").read_bytes()

    def crash(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(embedded_module.os, "replace", crash)
    with pytest.raises(StoreUnavailable, match="No space left on device") as caught:
        await embedded_store.nodes.create({"name": "lost", "url": "http://h:2"})
    assert str(data_dir / "store.json") in str(caught.value)
    assert (data_dir / "store.json").read_bytes() == before
    assert not (data_dir / "store.json.tmp").exists()
    with pytest.raises(StoreUnavailable):
        await embedded_store.ping()

    monkeypatch.undo()
    await embedded_store.users.create("ann", "h", "admin")  # the disk is back: next save has both
    await embedded_store.ping()
    saved = json.loads((data_dir / "store.json").read_text())["collections"]
    assert sorted(doc["name"] for doc in saved["nodes"]) == ["kept", "lost"]


async def test_a_crash_mid_write_leaves_the_old_file_and_the_leftover_tmp_is_ignored(data_dir):
    store = await open_store(data_dir)
    await store.nodes.create({"name": "kept", "url": "http://h:1"})
    await store.close()
    # What a crash before the rename leaves behind: a half-written temporary file.
    (data_dir / "store.json.tmp").write_text('{"format": "aivonx-store", "coll')

    store = await open_store(data_dir)
    try:
        assert [n["name"] for n in await store.nodes.list()] == ["kept"]
        await store.nodes.create({"name": "new", "url": "http://h:2"})
        assert not (data_dir / "store.json.tmp").exists()
    finally:
        await store.close()


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"",
        b"\xff\xfe\x00",
        b'{"format": "something-else", "version": 1, "collections": {}}',
        b'{"format": "aivonx-store", "version": 99, "collections": {}}',
        b'{"format": "aivonx-store", "version": 1, "collections": {"nodes": [{"no": "id"}]}}',
        b'{"format": "aivonx-store", "version": 1, "collections": {"nodes": ['
        b'{"_id": "a", "name_key": "x", "url": "u1"}, {"_id": "b", "name_key": "x", "url": "u2"}]}}',
    ],
    ids=["garbage", "empty", "binary", "foreign", "newer", "no-id", "duplicates"],
)
async def test_an_unreadable_store_file_refuses_to_start_and_is_kept(data_dir, content):
    data_dir.mkdir()
    (data_dir / "store.json").write_bytes(content)
    with pytest.raises(StoreError) as caught:
        await open_store(data_dir)
    assert str(data_dir / "store.json") in str(caught.value)
    assert (data_dir / "store.json").read_bytes() == content
    # The failed start released the lock: fixing the file is enough to start.
    (data_dir / "store.json").unlink()
    store = await open_store(data_dir)
    await store.close()


async def test_a_second_store_on_the_same_dir_is_refused(embedded_store, data_dir):
    with pytest.raises(DataDirLocked) as caught:
        await open_store(data_dir)
    message = str(caught.value)
    assert str(data_dir) in message and f"pid {os.getpid()}" in message and "--data-dir" in message


async def test_close_releases_the_data_dir(data_dir):
    store = await open_store(data_dir)
    await store.close()
    await store.close()  # twice is harmless
    with pytest.raises(StoreUnavailable):
        await store.nodes.create({"name": "late", "url": "http://h:1"})
    store = await open_store(data_dir)
    await store.close()


HOLDER = """
import asyncio, sys
from pathlib import Path
from app.store import connect

async def main():
    store = await connect(None, "aivonx", Path(sys.argv[1]))
    await store.nodes.create({"name": "from-child", "url": "http://child:1"})
    print("ready", flush=True)
    await asyncio.sleep(30)

asyncio.run(main())
"""


async def test_another_process_holding_the_dir_is_named_and_its_death_frees_it(data_dir):
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(data_dir)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline().strip() == "ready"
        with pytest.raises(DataDirLocked, match=f"in use by another aivonx-proxy process \\(pid {child.pid}\\)"):
            await open_store(data_dir)
    finally:
        child.kill()  # no close(): the OS must drop the lock of a dead process
        child.wait(timeout=10)
        child.stdout.close()
    store = await open_store(data_dir)
    try:
        assert [n["name"] for n in await store.nodes.list()] == ["from-child"]
    finally:
        await store.close()
