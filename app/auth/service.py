"""Who is calling: logins, tokens, sessions, API tokens and gateway keys.

Handlers stay thin and call :class:`AuthService`, which holds the logic and the
in-memory state (throttle, caches). Credentials it understands:

* ``Authorization: Bearer <JWT>`` — a short-lived access token from login/refresh.
  Checked without the database except for the (cached) user record, so a
  deleted user or a changed password stops it within ``USER_CACHE_TTL``
  (at once on this process).
* ``Authorization: Bearer avx_…`` — an API token for scripts, or (on the Ollama
  and ``/v1`` routes only) an ``avx_gw_…`` gateway key. Only their sha256 is
  stored: they are 256-bit random strings, so a slow hash would add nothing.
  Known tokens are answered from memory; a background poll of the store's
  change counter notices revocations made by other processes.
* The ``aivonx_session`` cookie (the console): an HttpOnly, SameSite=Strict
  session JWT, revocable, with a double-submit XSRF token bound into it. Unsafe
  methods must echo that token in ``X-XSRFToken``; Bearer requests need none
  (a browser never adds an Authorization header on its own).

User administration and key administration are mixins in ``user_admin.py`` and
``key_admin.py``. Secrets never leave these modules except a new key's value (returned once) and
the tokens a login issues; none is ever logged.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from app.api.base import ApiError
from app.auth import passwords
from app.auth.jwt_tokens import (
    ACCESS,
    ACCESS_TTL,
    REFRESH,
    REFRESH_TTL,
    SESSION,
    SESSION_TTL,
    Claims,
    TokenExpired,
    TokenInvalid,
    TokenSigner,
)
from app.auth.key_admin import KeyAdmin, hash_token
from app.auth.throttle import LoginThrottle
from app.auth.user_admin import UserAdmin, _gen, _in_thread, public_user
from app.logs import app_log
from app.store import StoreUnavailable

SESSION_COOKIE = "aivonx_session"
XSRF_COOKIE = "aivonx_xsrf"
XSRF_HEADER = "X-XSRFToken"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


# How long a user record is trusted from memory before it is read again.
USER_CACHE_TTL = 30.0
# How often (at most) the store's change counter is polled to notice revoked keys.
CHANGE_POLL_INTERVAL = 5.0
# An unknown key is remembered as unknown this long (a burst of bad keys costs one read each).
NEGATIVE_TTL = 5.0
TOKEN_CACHE_SIZE = 10_000
# ``last_used_at`` is written at most this often per key, in the background.
TOUCH_INTERVAL = 60.0
# Concurrent login attempts allowed per username / per address (parallel guessing).
MAX_PENDING_PER_USER = 1
MAX_PENDING_PER_ADDRESS = 5


@dataclass(frozen=True)
class Principal:
    """The authenticated caller."""

    user_id: str
    username: str
    role: str
    via: str  # "jwt" | "session" | "api_token" | "gateway_key"
    token_id: str | None = None  # the key's id, or the JWT's jti
    xsrf: str | None = field(default=None, repr=False)  # the session's XSRF token (cookie sessions only)
    # Gateway keys only: the key's name (usage records) and its limits (None = unlimited).
    key_name: str | None = None
    rpm: int | None = None
    tpd: int | None = None


@dataclass
class _Cached:
    record: dict[str, Any] | None
    at: float


@dataclass
class Session:
    """A new cookie session: what the handler puts in the two cookies."""

    cookie: str
    xsrf: str
    expires_in: int


def unauthorized(message: str) -> ApiError:
    return ApiError(401, message, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})


class AuthService(UserAdmin, KeyAdmin):
    """Authentication (and, through its mixins, user and key administration) for one proxy process."""

    def __init__(self, store: Any, secret: str, get_config: Callable[[], Any], *,
                 clock: Callable[[], float] = time.time):
        self.store = store
        self.get_config = get_config
        self.signer = TokenSigner(secret, clock=clock)
        self.throttle = LoginThrottle()
        self.monotonic: Callable[[], float] = time.monotonic
        if self.signer.short_secret:
            app_log().warning("the JWT secret is shorter than 32 bytes; set a longer random AIVONX_JWT_SECRET")
        self._users: dict[str, _Cached] = {}
        self._tokens: OrderedDict[str, _Cached] = OrderedDict()  # sha256 → active token record
        self._token_epoch = 0  # bumped by local revocations: fills started before are dropped
        self._lookups: dict[str, asyncio.Future[dict[str, Any] | None]] = {}
        self._seen_changes: int | None = None
        self._last_poll = float("-inf")
        self._polling = False
        self._touched: dict[str, float] = {}
        self._revoked: dict[str, int] = {}  # jti → exp, revocations made here (fallback when the store is down)
        self._refreshing: set[str] = set()
        self._pending: dict[str, int] = {}
        self._admin_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._dummy_hash: str | None = None

    # ----------------------------------------------------------------------- resolving a request

    async def authenticate(self, handler: Any) -> Principal | None:
        """The caller of a management request, or ``None`` when it sent no credential.

        A Bearer credential that is bad, expired or revoked is a 401 (never a silent
        anonymous); a stale session cookie counts as no credential. A cookie session on
        an unsafe method without the matching XSRF token is a 403.
        """
        header = handler.request.headers.get("Authorization")
        if header is not None:
            token = bearer_token(header)
            if token.startswith("eyJ"):
                return await self._jwt_principal(token)
            return await self._api_token_principal(token)
        cookie = handler.get_cookie(SESSION_COOKIE)
        if not cookie:
            return None
        principal = await self.session_principal(cookie)
        if principal is None:
            return None
        if handler.request.method not in SAFE_METHODS:
            check_xsrf(handler, principal)
        return principal

    async def check_gateway_key(self, handler: Any) -> Principal:
        """The owner of the request's gateway key; 401 without an active one."""
        header = handler.request.headers.get("Authorization")
        if not header:
            raise ApiError(401, "an API key is required: send Authorization: Bearer <key>",
                           headers={"WWW-Authenticate": "Bearer"})
        record = await self._token_record(bearer_token(header))
        if record is None or record.get("kind") != "gateway":
            raise unauthorized("invalid API key")
        self._touch(record["id"])
        return Principal(user_id=record["user_id"], username=record.get("_username") or "",
                         role=record.get("_role") or "viewer", via="gateway_key", token_id=record["id"],
                         key_name=record.get("name"), rpm=record.get("rpm"), tpd=record.get("tpd"))

    async def _jwt_principal(self, token: str) -> Principal:
        claims = self._verify(token, ACCESS)
        user = await self._user_for(claims)
        return Principal(user_id=user["id"], username=user["username"], role=user["role"], via="jwt",
                         token_id=claims.jti)

    async def _api_token_principal(self, token: str) -> Principal:
        record = await self._token_record(token)
        if record is None or record.get("kind") != "api":
            raise unauthorized("invalid or revoked API token")
        user = await self._user(record["user_id"])
        if user is None:
            raise unauthorized("invalid or revoked API token")
        self._touch(record["id"])
        return Principal(user_id=user["id"], username=user["username"], role=user["role"], via="api_token",
                         token_id=record["id"])

    async def session_principal(self, cookie: str) -> Principal | None:
        """The principal of a session cookie; ``None`` when it is invalid, expired or revoked."""
        try:
            claims = self.signer.verify(cookie, SESSION)
        except TokenInvalid:
            return None
        if not claims.xsrf or await self._is_revoked(claims.jti):
            return None
        user = await self._user(claims.sub)
        if user is None or _gen(user) != claims.gen:
            return None
        return Principal(user_id=user["id"], username=user["username"], role=user["role"], via="session",
                         token_id=claims.jti, xsrf=claims.xsrf)

    # ----------------------------------------------------------------------- login family

    async def login(self, username: str, password: str, address: str) -> dict[str, Any]:
        """Check a password (throttled); the user record on success. 401/429 otherwise."""
        self._throttled(username, address)
        if not self._begin(username, address):
            raise ApiError(429, "another login for this user is in progress; try again in a moment",
                           headers={"Retry-After": "1"}, retry_after=1)
        try:
            user = await self.store.users.get_by_username(username)
            ok = await self._check_password(password, user["password_hash"] if user else None)
        finally:
            self._end(username, address)
        if not ok or user is None:
            wait = self.throttle.failed(username, address)
            app_log().warning("failed login for %s from %s%s",
                              repr(user["username"]) if user else "an unknown user", address,
                              f" (next attempt in {wait} s)" if wait else "")
            raise unauthorized("invalid username or password")
        self.throttle.succeeded(username)
        app_log().info("user %r logged in from %s", user["username"], address)
        return user

    def issue_tokens(self, user: dict[str, Any]) -> dict[str, Any]:
        """A fresh access + refresh pair: the body of a login or refresh answer."""
        access, _ = self.signer.issue(user["id"], ACCESS, gen=_gen(user))
        refresh, _ = self.signer.issue(user["id"], REFRESH, gen=_gen(user))
        return {"access": access, "refresh": refresh, "token_type": "Bearer", "expires_in": ACCESS_TTL,
                "refresh_expires_in": REFRESH_TTL, "user": public_user(user)}

    def issue_session(self, user: dict[str, Any]) -> Session:
        xsrf = secrets.token_urlsafe(24)
        cookie, _ = self.signer.issue(user["id"], SESSION, gen=_gen(user), xsrf=xsrf)
        return Session(cookie=cookie, xsrf=xsrf, expires_in=SESSION_TTL)

    async def refresh(self, token: object) -> dict[str, Any]:
        """Trade a refresh token for a new pair; the old refresh token is revoked (rotation)."""
        claims = self._verify(token, REFRESH)
        if claims.jti in self._refreshing or await self._is_revoked(claims.jti):
            raise unauthorized("token has been revoked")
        self._refreshing.add(claims.jti)
        try:
            user = await self._user_for(claims)
            await self._revoke_jti(claims)
        finally:
            self._refreshing.discard(claims.jti)
        return self.issue_tokens(user)

    async def revoke_refresh(self, token: object) -> None:
        """Logout with a refresh token. Already expired or revoked is fine; forged is 401."""
        try:
            claims = self.signer.verify(token, REFRESH)
        except TokenExpired:
            return
        except TokenInvalid as exc:
            raise unauthorized(f"cannot log out: {exc}") from None
        await self._revoke_jti(claims)

    async def end_session(self, principal: Principal) -> None:
        if principal.via == "session" and principal.token_id:
            claims_exp = int(self.signer.clock()) + SESSION_TTL
            await self.store.tokens.revoke_jti(principal.token_id, _dt(claims_exp))
            self._remember_revoked(principal.token_id, claims_exp)

    async def change_password(self, principal: Principal, current: object, new: object,
                              address: str) -> dict[str, Any]:
        """Change one's own password. Every token and session issued before stops working."""
        errors: dict[str, str] = {}
        if not isinstance(current, str) or not current:
            errors["current_password"] = "the current password is required"
        try:
            passwords.check_password_rules(new)
        except passwords.WeakPassword as exc:
            errors["new_password"] = str(exc)
        if errors:
            raise ApiError(400, "invalid password change", fields=errors)
        self._throttled(principal.username, address)
        user = await self.store.users.get(principal.user_id)
        if user is None:
            raise unauthorized("this user no longer exists")
        if not await self._check_password(current, user["password_hash"]):  # type: ignore[arg-type]
            self.throttle.failed(principal.username, address)
            raise ApiError(400, "invalid password change", fields={"current_password": "incorrect password"})
        self.throttle.succeeded(principal.username)
        updated = await self._set_password(user, new)  # type: ignore[arg-type]
        app_log().info("user %r changed their password", user["username"])
        return updated

    async def _set_password(self, user: dict[str, Any], new: str) -> dict[str, Any]:
        password_hash = await _in_thread(passwords.hash_password, new)
        updated = await self.store.users.update(user["id"], {"password_hash": password_hash,
                                                             "token_gen": _gen(user) + 1})
        self._users.pop(user["id"], None)
        if updated is None:
            raise unauthorized("this user no longer exists")
        return updated

    # ----------------------------------------------------------------------- life cycle

    async def close(self) -> None:
        """Let background writes (``last_used_at``) finish; call before closing the store."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # ----------------------------------------------------------------------- internals: tokens

    def _verify(self, token: object, typ: str) -> Claims:
        try:
            return self.signer.verify(token, typ)
        except TokenInvalid as exc:
            raise unauthorized(str(exc)) from None

    async def _user_for(self, claims: Claims) -> dict[str, Any]:
        user = await self._user(claims.sub)
        if user is None:
            raise unauthorized("this user no longer exists")
        if _gen(user) != claims.gen:
            raise unauthorized("token has been revoked (the password was changed)")
        return user

    async def _user(self, user_id: str) -> dict[str, Any] | None:
        """A user record from memory when fresh; a stale one when the store is down."""
        cached = self._users.get(user_id)
        now = self.monotonic()
        if cached is not None and now - cached.at < USER_CACHE_TTL:
            return cached.record
        try:
            user = await self.store.users.get(user_id)
        except StoreUnavailable:
            if cached is not None:
                return cached.record
            raise
        if user is None:
            self._users.pop(user_id, None)
        else:
            if len(self._users) >= TOKEN_CACHE_SIZE:
                self._users.clear()
            self._users[user_id] = _Cached(user, now)
        return user

    async def _is_revoked(self, jti: str) -> bool:
        if jti in self._revoked:
            return True
        try:
            return await self.store.tokens.is_jti_revoked(jti)
        except StoreUnavailable:
            # Only revocations made by another process are missed while the store is down.
            app_log().warning("cannot check token revocation: the database is unavailable")
            return False

    async def _revoke_jti(self, claims: Claims) -> None:
        await self.store.tokens.revoke_jti(claims.jti, _dt(claims.exp))
        self._remember_revoked(claims.jti, claims.exp)

    def _remember_revoked(self, jti: str, exp: int) -> None:
        now = self.signer.clock()
        if len(self._revoked) >= TOKEN_CACHE_SIZE:
            for key in [k for k, e in self._revoked.items() if e < now]:
                del self._revoked[key]
            while len(self._revoked) >= TOKEN_CACHE_SIZE:
                del self._revoked[next(iter(self._revoked))]
        self._revoked[jti] = exp

    async def _token_record(self, token: str) -> dict[str, Any] | None:
        """The active token with this secret: from memory, else one store read (shared by concurrent callers)."""
        if not token.startswith("avx_") or len(token) > 200:
            return None
        digest = hash_token(token)
        self._maybe_poll()
        cached = self._tokens.get(digest)
        now = self.monotonic()
        if cached is not None and (cached.record is not None or now - cached.at < NEGATIVE_TTL):
            self._tokens.move_to_end(digest)
            return cached.record
        pending = self._lookups.get(digest)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[dict[str, Any] | None] = asyncio.get_running_loop().create_future()
        self._lookups[digest] = future
        epoch = self._token_epoch
        try:
            record = await self._fetch_token(digest)
            if epoch == self._token_epoch:
                self._tokens[digest] = _Cached(record, now)
                self._tokens.move_to_end(digest)
                while len(self._tokens) > TOKEN_CACHE_SIZE:
                    self._tokens.popitem(last=False)
            future.set_result(record)
            return record
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody else waited
            raise
        finally:
            del self._lookups[digest]

    async def _fetch_token(self, digest: str) -> dict[str, Any] | None:
        record = await self.store.tokens.find_by_hash(digest)
        if record is None:
            return None
        user = await self.store.users.get(record["user_id"])
        if user is None:
            return None
        return {**record, "_username": user["username"], "_role": user["role"]}

    def _forget_token(self, token_id: str) -> None:
        self._token_epoch += 1
        for digest in [d for d, c in self._tokens.items() if c.record is not None and c.record["id"] == token_id]:
            del self._tokens[digest]
        self._touched.pop(token_id, None)

    def _maybe_poll(self) -> None:
        """Notice, off the request path, keys revoked by another process."""
        now = self.monotonic()
        if self._polling or now - self._last_poll < CHANGE_POLL_INTERVAL:
            return
        self._last_poll = now
        self._polling = True
        self._spawn(self._poll_changes())

    async def _poll_changes(self) -> None:
        try:
            current = await self.store.changes.current()
            if self._seen_changes is not None and current == self._seen_changes:
                return
            self._seen_changes = current
            epoch = self._token_epoch
            known = [d for d, c in self._tokens.items() if c.record is not None]
            fresh = {d: await self._fetch_token(d) for d in known}
            if epoch != self._token_epoch:
                return  # a local revocation raced us; the next poll starts over
            now = self.monotonic()
            for digest, record in fresh.items():
                if digest in self._tokens:
                    self._tokens[digest] = _Cached(record, now)
        except StoreUnavailable:
            self._seen_changes = None  # check everything again once the store is back
        finally:
            self._polling = False

    def _touch(self, token_id: str) -> None:
        now = self.monotonic()
        if now - self._touched.get(token_id, float("-inf")) < TOUCH_INTERVAL:
            return
        self._touched[token_id] = now
        self._spawn(self.store.tokens.touch(token_id, datetime.now(UTC)))

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            app_log().warning("background auth write failed: %s", type(exc).__name__)

    # ----------------------------------------------------------------------- internals: passwords

    def _throttled(self, username: str, address: str) -> None:
        wait = self.throttle.retry_after(username, address)
        if wait:
            raise ApiError(429, f"too many failed logins; try again in {wait} s",
                           headers={"Retry-After": str(wait)}, retry_after=wait)

    def _begin(self, username: str, address: str) -> bool:
        user, addr = "u:" + username.strip().lower(), "a:" + address
        if self._pending.get(user, 0) >= MAX_PENDING_PER_USER or \
                self._pending.get(addr, 0) >= MAX_PENDING_PER_ADDRESS:
            return False
        self._pending[user] = self._pending.get(user, 0) + 1
        self._pending[addr] = self._pending.get(addr, 0) + 1
        return True

    def _end(self, username: str, address: str) -> None:
        for key in ("u:" + username.strip().lower(), "a:" + address):
            left = self._pending.get(key, 0) - 1
            if left > 0:
                self._pending[key] = left
            else:
                self._pending.pop(key, None)

    async def _check_password(self, password: str, password_hash: str | None) -> bool:
        """bcrypt in a worker thread (it takes ~0.25 s); an unknown user costs the same time."""
        if password_hash is None:
            if self._dummy_hash is None:
                self._dummy_hash = await _in_thread(passwords.hash_password, secrets.token_urlsafe(16))
            await _in_thread(passwords.verify_password, password, self._dummy_hash)
            return False
        return bool(await _in_thread(passwords.verify_password, password, password_hash))


# --------------------------------------------------------------------------- helpers


def bearer_token(header: str) -> str:
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        raise ApiError(401, "unsupported authorization scheme; use Authorization: Bearer <token>",
                       headers={"WWW-Authenticate": "Bearer"})
    token = token.strip()
    if not token:
        raise unauthorized("empty bearer token")
    return token


def check_xsrf(handler: Any, principal: Principal) -> None:
    sent = handler.request.headers.get(XSRF_HEADER, "")
    if not principal.xsrf or not hmac.compare_digest(sent.encode(), principal.xsrf.encode()):
        raise ApiError(403, f"XSRF token missing or incorrect: send the {XSRF_COOKIE} cookie's value "
                            f"in the {XSRF_HEADER} header")


def _dt(epoch: int) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


