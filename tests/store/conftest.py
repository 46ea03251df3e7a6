"""Fixtures: a fresh store of each kind. The "mongodb" kind runs its real code path (URL,
ping, indexes, error translation) on mongomock-motor injected through the backend seam,
because no MongoDB server can be installed here."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.store import backend, connect

FAKE_URL = "mongodb://admin:hunter2@db.example:27017/aivonx"


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def fake_mongo(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``connect(<mongodb url>)`` build a mongomock client instead of a Motor one."""
    monkeypatch.setattr(backend, "new_mongo_client", lambda url, timeout_ms: backend.new_embedded_client())


@pytest.fixture
def embedded_store(io_loop, data_dir):
    store = io_loop.run_sync(lambda: connect(None, "aivonx", data_dir))
    yield store
    io_loop.run_sync(store.close)


@pytest.fixture
def mongodb_store(io_loop, fake_mongo, tmp_path):
    store = io_loop.run_sync(lambda: connect(FAKE_URL, "aivonx", tmp_path / "unused", connect_timeout=1))
    yield store
    io_loop.run_sync(store.close)


@pytest.fixture(params=["embedded", "mongodb"])
def store(request):
    """The same behaviour is expected of both kinds."""
    return request.getfixturevalue(f"{request.param}_store")
