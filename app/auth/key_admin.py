"""API tokens and gateway keys: created (the secret shown once), listed, limited, revoked.

A mixin of :class:`~app.auth.service.AuthService`, which provides the store and the
in-memory token cache (:meth:`_forget_token` drops a changed key from it).
Only a key's sha256 is stored: keys are 256-bit random strings, so a slow hash adds nothing.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import TYPE_CHECKING, Any

from app.api.base import ApiError
from app.auth.user_admin import _iso, _unknown
from app.logs import app_log

if TYPE_CHECKING:
    from app.auth.service import Principal

KINDS = ("api", "gateway")
# Visible token prefixes: people (and secret scanners) can tell what a leaked string is.
KEY_PREFIX = {"api": "avx_", "gateway": "avx_gw_"}
MAX_NAME_LENGTH = 100
# A gateway key's optional limits (enforced per proxy process, see app/fleet/limits.py): name → range, meaning.
KEY_LIMITS = {"rpm": (1, 1_000_000, "requests per minute"), "tpd": (1, 10**12, "tokens per day")}


class KeyAdmin:
    store: Any

    def _forget_token(self, token_id: str) -> None:  # provided by AuthService
        raise NotImplementedError

    async def create_key(self, body: dict[str, Any], caller: Principal) -> tuple[str, dict[str, Any]]:
        """A new API token or gateway key; its secret is returned here and never again."""
        errors = _unknown(body, {"name", "kind", "user_id", *KEY_LIMITS})
        name = body.get("name")
        kind = body.get("kind", "api")
        user_id = body.get("user_id", caller.user_id)
        _check_key_name(name, errors)
        if kind not in KINDS:
            errors["kind"] = f"must be one of {', '.join(KINDS)}"
        limits = _key_limits(body, errors, kind)
        user = None
        if not isinstance(user_id, str) or not user_id:
            errors["user_id"] = "must be the id of a user"
        else:
            user = await self.store.users.get(user_id)
            if user is None:
                errors["user_id"] = "no such user"
        if errors or user is None:
            raise ApiError(400, "invalid key", fields=errors)
        secret = KEY_PREFIX[kind] + secrets.token_urlsafe(32)
        prefix = secret[:len(KEY_PREFIX[kind]) + 6]
        record = await self.store.tokens.create(user["id"], name.strip(), hash_token(secret), prefix, kind,
                                                limits=limits)
        app_log().info("created %s key %s (%r) for user %r", kind, prefix, record["name"], user["username"])
        return secret, public_key(record, user["username"])

    async def list_keys(self, user_id: str | None = None, kind: str | None = None) -> list[dict[str, Any]]:
        if kind is not None and kind not in KINDS:
            raise ApiError(400, f"kind must be one of {', '.join(KINDS)}", fields={"kind": "unknown kind"})
        names = {u["id"]: u["username"] for u in await self.store.users.list()}
        records = await self.store.tokens.list(user_id)
        return [public_key(r, names.get(r["user_id"])) for r in records if kind is None or r.get("kind") == kind]

    async def get_key(self, key_id: str) -> dict[str, Any]:
        for record in await self.list_keys():
            if record["id"] == key_id:
                return record
        raise ApiError(404, f"no key with id {key_id!r}")

    async def update_key(self, key_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """Rename a key or change a gateway key's ``rpm``/``tpd`` (``null`` removes a limit).

        Applies at once on this process (the cached key is dropped) and within seconds on
        others (the change counter moves).
        """
        errors = _unknown(body, {"name", *KEY_LIMITS})
        current = await self.get_key(key_id)
        fields: dict[str, Any] = _key_limits(body, errors, current["kind"])
        if "name" in body:
            _check_key_name(body["name"], errors)
            if "name" not in errors:
                fields["name"] = body["name"].strip()
        if errors:
            raise ApiError(400, "invalid key", fields=errors)
        if fields:
            if await self.store.tokens.update(key_id, fields) is None:
                raise ApiError(404, f"no key with id {key_id!r}")
            self._forget_token(key_id)
            app_log().info("changed %s key %s: %s", current["kind"], current["prefix"],
                           ", ".join(f"{k}={v}" for k, v in sorted(fields.items()) if k != "name")
                           or "name")
        return await self.get_key(key_id)

    async def revoke_key(self, key_id: str) -> dict[str, Any]:
        await self.get_key(key_id)
        await self.store.tokens.revoke(key_id)
        self._forget_token(key_id)
        record = await self.get_key(key_id)
        app_log().info("revoked %s key %s", record["kind"], record["prefix"])
        return record



def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def public_key(record: dict[str, Any], username: str | None) -> dict[str, Any]:
    """What clients may see of an API token or gateway key (never the secret or its hash)."""
    return {"id": record["id"], "name": record.get("name"), "kind": record.get("kind"),
            "prefix": record.get("prefix"), "user_id": record.get("user_id"), "username": username,
            "created_at": _iso(record.get("created_at")), "last_used_at": _iso(record.get("last_used_at")),
            "revoked": bool(record.get("revoked")), "revoked_at": _iso(record.get("revoked_at")),
            "rpm": record.get("rpm"), "tpd": record.get("tpd")}


def _check_key_name(name: Any, errors: dict[str, str]) -> None:
    if not isinstance(name, str) or not name.strip():
        errors["name"] = "a name is required (what the key is for)"
    elif len(name.strip()) > MAX_NAME_LENGTH:
        errors["name"] = f"at most {MAX_NAME_LENGTH} characters"


def _key_limits(body: dict[str, Any], errors: dict[str, str], kind: Any) -> dict[str, int | None]:
    """The ``rpm``/``tpd`` fields present in ``body``, validated (``null`` = no limit)."""
    limits: dict[str, int | None] = {}
    for name, (low, high, meaning) in KEY_LIMITS.items():
        if name not in body:
            continue
        value = body[name]
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high):
            errors[name] = f"must be null (no limit) or an integer from {low} to {high} ({meaning})"
        elif value is not None and kind != "gateway":
            errors[name] = "limits apply to gateway keys only"
        else:
            limits[name] = value
    return limits
