"""The MongoDB path: connecting, redacting credentials, translating driver errors."""

from __future__ import annotations

import time

import pytest
from pymongo.errors import AutoReconnect, DuplicateKeyError, OperationFailure, ServerSelectionTimeoutError

from app.store import DuplicateKey, StoreConnectError, StoreUnavailable, backend, connect
from app.store.redact import redact_url, scrub

from .conftest import FAKE_URL


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("mongodb://user:secret@127.0.0.1:1/aivonx", "mongodb://user:***@127.0.0.1:1/aivonx"),
        ("mongodb://db:27017/aivonx", "mongodb://db:27017/aivonx"),
        ("mongodb://x509user@db/", "mongodb://x509user@db/"),
        ("mongodb+srv://u:p@ss/w@cluster.example.net/", "mongodb+srv://u:***@cluster.example.net/"),
        (
            "mongodb://db/?tls=true&tlsCertificateKeyFilePassword=pw&w=1",
            "mongodb://db/?tls=true&tlsCertificateKeyFilePassword=***&w=1",
        ),
        ("not a url with @ inside", "***"),
    ],
)
def test_redact_url(url, shown):
    assert redact_url(url) == shown


def test_scrub_removes_raw_and_escaped_passwords():
    url = "mongodb://user:p%40ss@db/"
    assert scrub(f"failed: {url} with p@ss and p%40ss", url) == "failed: mongodb://user:***@db/ with *** and ***"


async def test_unreachable_server_fails_fast_without_the_password(tmp_path):
    started = time.monotonic()
    with pytest.raises(StoreConnectError) as caught:
        await connect("mongodb://user:secret@127.0.0.1:1/aivonx", "aivonx", tmp_path, connect_timeout=1)
    assert time.monotonic() - started < 5
    message = str(caught.value)
    assert "secret" not in message
    assert message.startswith(
        "cannot reach MongoDB at mongodb://user:***@127.0.0.1:1/aivonx after 1s: check that the server "
        "is running and reachable, the URL (AIVONX_MONGO_URL / --mongo-url) and credentials"
    )
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


async def test_invalid_url_is_a_connect_error_without_the_password(tmp_path):
    with pytest.raises(StoreConnectError) as caught:
        await connect("mongodb://user:secret@db:notaport/x", "aivonx", tmp_path, connect_timeout=1)
    assert "secret" not in str(caught.value) and "user:***@" in str(caught.value)


async def test_describe_hides_the_password(mongodb_store):
    assert mongodb_store.kind == "mongodb"
    assert mongodb_store.describe() == "MongoDB at mongodb://admin:***@db.example:27017/aivonx, database aivonx"
    await mongodb_store.ping()


class FlakyClient:
    """A client whose ping fails ``failures`` times with ``error`` before the real one answers."""

    def __init__(self, error: Exception, failures: int) -> None:
        self.real = backend.new_embedded_client()
        self.error, self.failures, self.pings = error, failures, 0

    def __getitem__(self, name):
        db = self.real[name]
        real_command = db.command

        async def command(*args, **kwargs):
            self.pings += 1
            if self.pings <= self.failures:
                raise self.error
            return await real_command(*args, **kwargs)

        db.command = command
        return db

    def close(self) -> None:
        self.real.close()


async def test_connect_waits_for_a_server_that_is_starting(tmp_path, monkeypatch):
    client = FlakyClient(ServerSelectionTimeoutError("starting"), failures=2)
    monkeypatch.setattr(backend, "new_mongo_client", lambda url, ms: client)
    store = await connect(FAKE_URL, "aivonx", tmp_path, connect_timeout=5)
    try:
        assert client.pings == 3
        await store.nodes.create({"name": "n", "url": "http://h:1"})
    finally:
        await store.close()


async def test_rejected_credentials_fail_at_once(tmp_path, monkeypatch):
    client = FlakyClient(OperationFailure("Authentication failed.", code=18), failures=100)
    monkeypatch.setattr(backend, "new_mongo_client", lambda url, ms: client)
    with pytest.raises(StoreConnectError, match="rejected the credentials") as caught:
        await connect(FAKE_URL, "aivonx", tmp_path, connect_timeout=5)
    assert client.pings == 1
    assert "hunter2" not in str(caught.value)


class DownCollection:
    """Every operation fails the way Motor does when the server went away."""

    def __getattr__(self, name):
        def fail(*args, **kwargs):
            raise AutoReconnect("connection closed")

        return fail


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.nodes.list(),
        lambda s: s.nodes.create({"name": "n", "url": "http://h:1"}),
        lambda s: s.nodes.update("x", {"enabled": True}),
        lambda s: s.nodes.delete("x"),
        lambda s: s.users.get_by_username("ann"),
        lambda s: s.users.count(),
        lambda s: s.config.load(),
        lambda s: s.secrets.get_or_create("jwt", lambda: "x"),
        lambda s: s.tokens.find_by_hash("h"),
        lambda s: s.changes.bump(),
    ],
)
async def test_a_lost_server_is_store_unavailable(mongodb_store, call):
    for repo in (
        mongodb_store.nodes,
        mongodb_store.users,
        mongodb_store.config,
        mongodb_store.secrets,
        mongodb_store.tokens,
        mongodb_store.changes,
    ):
        repo._col = DownCollection()
    with pytest.raises(StoreUnavailable) as caught:
        await call(mongodb_store)
    assert isinstance(caught.value.__cause__, AutoReconnect)


async def test_ping_reports_a_lost_server(mongodb_store):
    mongodb_store._db = DownCollection()
    with pytest.raises(StoreUnavailable):
        await mongodb_store.ping()


async def test_a_query_bug_is_not_disguised_as_an_outage(mongodb_store):
    class BadQuery(DownCollection):
        def __getattr__(self, name):
            def fail(*args, **kwargs):
                raise OperationFailure("unknown operator: $bogus", code=2)

            return fail

    mongodb_store.nodes._col = BadQuery()
    with pytest.raises(OperationFailure):
        await mongodb_store.nodes.get("x")


def test_duplicate_key_name_from_a_real_server_error():
    with_pattern = DuplicateKeyError("E11000", 11000, {"keyPattern": {"url": 1}, "keyValue": {"url": "u"}})
    assert backend.duplicate_key_name(with_pattern) == "url"
    old_server = DuplicateKeyError(
        'E11000 duplicate key error collection: aivonx.nodes index: name_key_1 dup key: { name_key: "a" }', 11000
    )
    assert backend.duplicate_key_name(old_server) == "name_key"


async def test_duplicate_key_without_the_other_document_falls_back_to_the_driver(mongodb_store):
    """If the colliding document is gone by the time we look, the driver's answer is used."""

    class Colliding(DownCollection):
        def __getattr__(self, name):
            async def op(*args, **kwargs):
                if name == "insert_one":
                    raise DuplicateKeyError("E11000", 11000, {"keyPattern": {"url": 1}})
                return None

            return op

    mongodb_store.nodes._col = Colliding()
    with pytest.raises(DuplicateKey) as caught:
        await mongodb_store.nodes.create({"name": "n", "url": "http://h:1"})
    assert caught.value.field == "url"


async def test_invalid_database_name_is_a_connect_error(tmp_path):
    started = time.monotonic()
    with pytest.raises(StoreConnectError, match="invalid MongoDB settings") as caught:
        await connect("mongodb://user:secret@127.0.0.1:1/", "bad.name", tmp_path, connect_timeout=3)
    assert time.monotonic() - started < 1  # refused before trying to reach a server
    assert "secret" not in str(caught.value)
