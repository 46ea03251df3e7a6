"""Repository behaviour, run against both store kinds."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from app.store import DuplicateKey

NODE = {
    "name": "gpu-1",
    "url": "http://10.0.0.1:11434",
    "enabled": True,
    "draining": False,
    "max_concurrency": 4,
    "labels": {"zone": "a"},
    "headers": {"Authorization": "Bearer x"},
}


def assert_aware_utc(*values: datetime) -> None:
    for value in values:
        assert isinstance(value, datetime)
        assert value.utcoffset() == timedelta(0)
        assert value.tzinfo is UTC


# --- nodes -----------------------------------------------------------------------------------


async def test_node_create_returns_the_stored_document(store):
    node = await store.nodes.create(dict(NODE))
    assert isinstance(node["id"], str) and len(node["id"]) == 32
    assert "_id" not in node and "name_key" not in node
    assert {k: node[k] for k in NODE} == NODE
    assert_aware_utc(node["created_at"], node["updated_at"])
    assert await store.nodes.get(node["id"]) == node
    assert await store.nodes.get_by_url("http://10.0.0.1:11434") == node


async def test_node_list_is_sorted_by_name_ignoring_case(store):
    for name, port in [("charlie", 1), ("Alpha", 2), ("bravo", 3)]:
        await store.nodes.create({"name": name, "url": f"http://h:{port}"})
    assert [n["name"] for n in await store.nodes.list()] == ["Alpha", "bravo", "charlie"]


async def test_node_update_sets_only_given_fields_and_bumps_updated_at(store):
    node = await store.nodes.create(dict(NODE))
    await asyncio.sleep(0.002)
    updated = await store.nodes.update(node["id"], {"enabled": False, "labels": {}})
    assert updated["enabled"] is False and updated["labels"] == {}
    assert updated["url"] == NODE["url"] and updated["created_at"] == node["created_at"]
    assert updated["updated_at"] > node["updated_at"]
    assert await store.nodes.get(node["id"]) == updated


async def test_node_update_ignores_read_only_keys(store):
    node = await store.nodes.create(dict(NODE))
    echoed = {**node, "id": "other", "created_at": datetime(2000, 1, 1, tzinfo=UTC), "name": "renamed"}
    updated = await store.nodes.update(node["id"], echoed)
    assert updated["id"] == node["id"] and updated["created_at"] == node["created_at"]
    assert updated["name"] == "renamed"


async def test_node_update_and_delete_of_unknown_id(store):
    assert await store.nodes.update("nope", {"enabled": False}) is None
    assert await store.nodes.delete("nope") is False
    assert await store.nodes.get("nope") is None
    assert await store.nodes.get_by_url("http://nowhere:1") is None


async def test_node_delete(store):
    node = await store.nodes.create(dict(NODE))
    assert await store.nodes.delete(node["id"]) is True
    assert await store.nodes.get(node["id"]) is None
    assert await store.nodes.list() == []


async def test_node_name_is_unique_ignoring_case(store):
    await store.nodes.create(dict(NODE))
    with pytest.raises(DuplicateKey) as caught:
        await store.nodes.create({**NODE, "name": "GPU-1", "url": "http://other:1"})
    assert caught.value.field == "name"


async def test_node_url_is_unique(store):
    await store.nodes.create(dict(NODE))
    with pytest.raises(DuplicateKey) as caught:
        await store.nodes.create({**NODE, "name": "gpu-2"})
    assert caught.value.field == "url"


@pytest.mark.parametrize(("change", "field"), [({"name": "Gpu-1"}, "name"), ({"url": NODE["url"]}, "url")])
async def test_node_update_into_a_duplicate_names_the_field(store, change, field):
    await store.nodes.create(dict(NODE))
    other = await store.nodes.create({"name": "gpu-2", "url": "http://10.0.0.2:11434"})
    with pytest.raises(DuplicateKey) as caught:
        await store.nodes.update(other["id"], change)
    assert caught.value.field == field
    assert await store.nodes.get(other["id"]) == other


async def test_node_may_keep_its_own_name_and_url_on_update(store):
    node = await store.nodes.create(dict(NODE))
    updated = await store.nodes.update(node["id"], {"name": "GPU-1", "url": NODE["url"]})
    assert updated["name"] == "GPU-1"


async def test_node_without_name_or_url_is_refused(store):
    with pytest.raises(ValueError):
        await store.nodes.create({"name": "x"})
    with pytest.raises(ValueError):
        await store.nodes.create({"name": "", "url": "http://h:1"})


# --- change marker -----------------------------------------------------------------------------


async def test_node_config_and_token_writes_bump_the_change_counter(store):
    assert await store.changes.current() == 0
    node = await store.nodes.create(dict(NODE))
    assert await store.changes.current() == 1
    await store.nodes.update(node["id"], {"draining": True})
    await store.config.save({"strategy": "least_active"})
    token = await store.tokens.create("u1", "ci", "h1", "aivx_ab", "gateway")
    await store.tokens.revoke(token["id"])
    await store.nodes.delete(node["id"])
    assert await store.changes.current() == 6
    assert await store.changes.bump() == 7


async def test_failed_and_unrelated_writes_do_not_bump(store):
    await store.nodes.create(dict(NODE))
    with pytest.raises(DuplicateKey):
        await store.nodes.create(dict(NODE))
    await store.nodes.update("nope", {"enabled": False})
    await store.nodes.delete("nope")
    await store.users.create("ann", "hash", "admin")
    assert await store.changes.current() == 1


# --- users -------------------------------------------------------------------------------------


async def test_user_crud(store):
    ann = await store.users.create("Ann", "hash-a", "admin")
    assert {k: ann[k] for k in ("username", "password_hash", "role")} == {
        "username": "Ann",
        "password_hash": "hash-a",
        "role": "admin",
    }
    assert "username_key" not in ann and "_id" not in ann
    assert_aware_utc(ann["created_at"])
    await store.users.create("bob", "hash-b", "viewer")
    assert await store.users.get(ann["id"]) == ann
    assert await store.users.get_by_username("aNN") == ann
    assert await store.users.get_by_username("nobody") is None
    assert [u["username"] for u in await store.users.list()] == ["Ann", "bob"]
    assert (await store.users.count(), await store.users.count("admin"), await store.users.count("x")) == (2, 1, 0)

    updated = await store.users.update(ann["id"], {"role": "viewer", "password_hash": "new"})
    assert (updated["role"], updated["password_hash"]) == ("viewer", "new")
    assert await store.users.update("nope", {"role": "admin"}) is None
    assert await store.users.delete(ann["id"]) is True
    assert await store.users.delete(ann["id"]) is False
    assert await store.users.count() == 1


async def test_username_is_unique_ignoring_case(store):
    await store.users.create("ann", "h", "admin")
    bob = await store.users.create("bob", "h", "viewer")
    with pytest.raises(DuplicateKey) as caught:
        await store.users.create("ANN", "h", "viewer")
    assert caught.value.field == "username"
    with pytest.raises(DuplicateKey) as caught:
        await store.users.update(bob["id"], {"username": "Ann"})
    assert caught.value.field == "username"
    renamed = await store.users.update(bob["id"], {"username": "Bobby"})
    assert await store.users.get_by_username("bobby") == renamed


# --- config ------------------------------------------------------------------------------------


async def test_config_load_and_save_replace_the_whole_set(store):
    assert await store.config.load() == {}
    await store.config.save({"strategy": "round_robin", "retries": 2, "nested": {"a": [1, 2]}})
    assert await store.config.load() == {"strategy": "round_robin", "retries": 2, "nested": {"a": [1, 2]}}
    await store.config.save({"retries": 3})
    assert await store.config.load() == {"retries": 3}


async def test_config_load_returns_a_copy(store):
    await store.config.save({"list": [1]})
    loaded = await store.config.load()
    loaded["list"].append(2)
    assert await store.config.load() == {"list": [1]}


# --- secrets -----------------------------------------------------------------------------------


async def test_secret_is_created_once(store):
    calls = []

    def factory() -> str:
        calls.append(1)
        return f"secret-{len(calls)}"

    first = await store.secrets.get_or_create("jwt", factory)
    second = await store.secrets.get_or_create("jwt", factory)
    assert first == second == "secret-1"
    assert await store.secrets.get_or_create("other", lambda: "x") == "x"


async def test_concurrent_secret_creation_agrees_on_one_value(store):
    values = iter(["a", "b", "c", "d"])
    results = await asyncio.gather(*(store.secrets.get_or_create("jwt", lambda: next(values)) for _ in range(4)))
    assert len(set(results)) == 1


# --- tokens ------------------------------------------------------------------------------------


async def test_token_create_find_list_revoke(store):
    api = await store.tokens.create("u1", "laptop", "hash-1", "aivx_1a", "api")
    await asyncio.sleep(0.002)  # list() is oldest first; times have millisecond precision
    gw = await store.tokens.create("u2", "webui", "hash-2", "aivx_2b", "gateway")
    assert "token_hash" not in api and "_id" not in api
    assert {k: api[k] for k in ("user_id", "name", "prefix", "kind", "last_used_at", "revoked")} == {
        "user_id": "u1",
        "name": "laptop",
        "prefix": "aivx_1a",
        "kind": "api",
        "last_used_at": None,
        "revoked": False,
    }
    assert_aware_utc(api["created_at"])
    assert await store.tokens.find_by_hash("hash-1") == api
    assert await store.tokens.find_by_hash("unknown") is None
    assert [t["id"] for t in await store.tokens.list()] == [api["id"], gw["id"]]
    assert [t["id"] for t in await store.tokens.list("u2")] == [gw["id"]]
    assert all("token_hash" not in t for t in await store.tokens.list())

    assert await store.tokens.revoke(api["id"]) is True
    assert await store.tokens.revoke(api["id"]) is True  # idempotent
    assert await store.tokens.revoke("nope") is False
    assert await store.tokens.find_by_hash("hash-1") is None
    listed = {t["id"]: t for t in await store.tokens.list()}
    assert listed[api["id"]]["revoked"] is True and listed[gw["id"]]["revoked"] is False


async def test_token_hash_is_unique_and_kind_is_checked(store):
    await store.tokens.create("u1", "a", "same", "p", "api")
    with pytest.raises(DuplicateKey) as caught:
        await store.tokens.create("u2", "b", "same", "p", "gateway")
    assert caught.value.field == "token_hash"
    with pytest.raises(ValueError):
        await store.tokens.create("u1", "c", "other", "p", "admin")


async def test_token_touch_records_last_use(store):
    token = await store.tokens.create("u1", "a", "h", "p", "gateway")
    when = datetime(2026, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
    await store.tokens.touch(token["id"], when)
    found = await store.tokens.find_by_hash("h")
    assert found["last_used_at"] == datetime(2026, 5, 1, 12, 0, 0, 123000, tzinfo=UTC)
    assert_aware_utc(found["last_used_at"])


async def test_revoked_jti_until_it_expires(store):
    now = datetime.now(UTC)
    await store.tokens.revoke_jti("live", now + timedelta(hours=1))
    await store.tokens.revoke_jti("expired", now - timedelta(seconds=1))
    assert await store.tokens.is_jti_revoked("live") is True
    assert await store.tokens.is_jti_revoked("expired") is False
    assert await store.tokens.is_jti_revoked("never") is False


async def test_expired_jtis_are_swept_on_the_next_revocation(store):
    now = datetime.now(UTC)
    await store.tokens.revoke_jti("old", now - timedelta(minutes=1))
    await store.tokens.revoke_jti("new", now + timedelta(minutes=1))
    assert await store._db["revoked"].count_documents({}) == 1
