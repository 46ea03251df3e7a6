"""Signed login tokens: HS256 JWTs for access, refresh and cookie sessions.

Every token carries ``sub`` (the user id, a string), ``iat``, ``exp``, ``jti``
(a random id, so one token can be revoked), ``typ`` (which of the three it is,
so a refresh token is never accepted as an access token) and ``gen`` (the
user's token generation: changing a password bumps it and ends every token
issued before). Verification pins the algorithm to HS256, which refuses
``alg: none`` and algorithm confusion, and checks expiry against an injectable
clock with a small leeway for clock skew between proxy instances.
"""

from __future__ import annotations

import contextlib
import secrets
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import jwt

ALGORITHM = "HS256"
ISSUER = "aivonx-proxy"
# Lifetimes in seconds. Access tokens are short because they are checked without the
# database (no revocation list); refresh tokens and cookie sessions are revocable.
ACCESS_TTL = 15 * 60
REFRESH_TTL = 7 * 24 * 3600
SESSION_TTL = 12 * 3600
# Clock skew tolerated between the proxy that signs and the one that verifies.
LEEWAY = 30
# A JWT is a few hundred bytes; anything far longer is not one of ours.
MAX_TOKEN_LENGTH = 4096
MIN_SECRET_BYTES = 32

ACCESS = "access"
REFRESH = "refresh"
SESSION = "session"
TYPES = (ACCESS, REFRESH, SESSION)
_TTL = {ACCESS: ACCESS_TTL, REFRESH: REFRESH_TTL, SESSION: SESSION_TTL}
_REQUIRED = ("sub", "iat", "exp", "jti", "typ")


class TokenInvalid(Exception):
    """The token cannot be used; the message is safe to show to the client."""


class TokenExpired(TokenInvalid):
    """A genuine token of ours whose lifetime is over."""


@dataclass(frozen=True)
class Claims:
    """What a verified token says."""

    sub: str
    typ: str
    jti: str
    iat: int
    exp: int
    gen: int = 0
    xsrf: str | None = None


class TokenSigner:
    """Issue and verify this proxy's JWTs with one secret."""

    def __init__(self, secret: str, *, clock: Callable[[], float] = time.time, leeway: float = LEEWAY):
        if not isinstance(secret, str) or not secret:
            raise ValueError("the JWT secret must be a non-empty string")
        self._key = secret
        # PyJWT warns on every call with a short HMAC key; the service logs it once instead.
        self.short_secret = len(secret.encode("utf-8")) < MIN_SECRET_BYTES
        self.clock = clock
        self.leeway = leeway

    def issue(self, user_id: str, typ: str, *, gen: int = 0, xsrf: str | None = None,
              ttl: int | None = None) -> tuple[str, Claims]:
        """A new signed token of kind ``typ`` for ``user_id``, and its claims."""
        if typ not in TYPES:
            raise ValueError(f"token type must be one of {TYPES}")
        now = int(self.clock())
        claims = Claims(sub=str(user_id), typ=typ, jti=secrets.token_urlsafe(16), iat=now,
                        exp=now + (ttl if ttl is not None else _TTL[typ]), gen=int(gen), xsrf=xsrf)
        payload: dict[str, Any] = {"iss": ISSUER, "sub": claims.sub, "typ": typ, "jti": claims.jti,
                                   "iat": claims.iat, "exp": claims.exp, "gen": claims.gen}
        if xsrf is not None:
            payload["xsrf"] = xsrf
        with self._quiet():
            token = jwt.encode(payload, self._key, algorithm=ALGORITHM)
        return token, claims

    def verify(self, token: object, typ: str) -> Claims:
        """The claims of a valid, unexpired token of kind ``typ``; :class:`TokenInvalid` otherwise."""
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH:
            raise TokenInvalid("malformed token")
        try:
            with self._quiet():
                payload = jwt.decode(
                    token, self._key, algorithms=[ALGORITHM], issuer=ISSUER,
                    # Expiry is checked below against our own clock (a seam for tests).
                    options={"require": [*_REQUIRED, "iss"], "verify_exp": False, "verify_iat": False,
                             "verify_nbf": False})
        except jwt.InvalidSignatureError:
            raise TokenInvalid("token signature is invalid") from None
        except jwt.InvalidAlgorithmError:
            raise TokenInvalid("token algorithm is not accepted") from None
        except jwt.InvalidTokenError:
            raise TokenInvalid("malformed token") from None
        claims = _claims(payload)
        now = self.clock()
        if claims.typ != typ:
            raise TokenInvalid(f"this is a {claims.typ} token, not a{'n' if typ == ACCESS else ''} {typ} token")
        if claims.exp + self.leeway < now:
            raise TokenExpired("token has expired")
        if claims.iat - self.leeway > now:
            raise TokenInvalid("token is not valid yet")
        return claims

    @contextlib.contextmanager
    def _quiet(self) -> Iterator[None]:
        if not self.short_secret:
            yield
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", jwt.InsecureKeyLengthWarning)
            yield


def _claims(payload: dict[str, Any]) -> Claims:
    sub, typ, jti = payload.get("sub"), payload.get("typ"), payload.get("jti")
    iat, exp, gen = payload.get("iat"), payload.get("exp"), payload.get("gen", 0)
    xsrf = payload.get("xsrf")
    if not (isinstance(sub, str) and sub and isinstance(jti, str) and jti and typ in TYPES):
        raise TokenInvalid("malformed token")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (iat, exp, gen)):
        raise TokenInvalid("malformed token")
    if xsrf is not None and not isinstance(xsrf, str):
        raise TokenInvalid("malformed token")
    return Claims(sub=sub, typ=typ, jti=jti, iat=iat, exp=exp, gen=gen, xsrf=xsrf)
