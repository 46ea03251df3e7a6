"""The JWTs that carry a login: what verification accepts and what it refuses."""

from __future__ import annotations

import base64
import json
import warnings

import jwt
import pytest

from app.auth.jwt_tokens import (
    ACCESS,
    ACCESS_TTL,
    LEEWAY,
    REFRESH,
    REFRESH_TTL,
    SESSION,
    TokenInvalid,
    TokenSigner,
)

SECRET = "unit-test-secret-that-is-long-enough-for-hs256-signing"


class Clock:
    def __init__(self, now: float = 1_800_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def claims_for(signer: TokenSigner, **overrides):
    now = int(signer.clock())
    claims = {"iss": "aivonx-proxy", "sub": "user-1", "typ": ACCESS, "jti": "j1", "iat": now,
              "exp": now + 60, "gen": 0}
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def test_round_trip_carries_the_required_claims():
    clock = Clock()
    signer = TokenSigner(SECRET, clock=clock)
    token, issued = signer.issue("user-1", ACCESS, gen=3)
    claims = signer.verify(token, ACCESS)
    assert claims == issued
    assert claims.sub == "user-1" and claims.typ == ACCESS and claims.gen == 3
    assert claims.exp - claims.iat == ACCESS_TTL
    payload = jwt.decode(token, SECRET, algorithms=["HS256"], options={"verify_exp": False, "verify_iat": False})
    assert {"sub", "exp", "iat", "jti", "typ"} <= payload.keys()
    assert jwt.get_unverified_header(token)["alg"] == "HS256"


def test_each_token_gets_its_own_jti():
    signer = TokenSigner(SECRET)
    assert signer.issue("u", ACCESS)[1].jti != signer.issue("u", ACCESS)[1].jti


def test_refresh_lives_longer_than_access():
    signer = TokenSigner(SECRET, clock=Clock())
    _, claims = signer.issue("u", REFRESH)
    assert claims.exp - claims.iat == REFRESH_TTL > ACCESS_TTL


def test_expiry_has_a_small_leeway_then_refuses():
    clock = Clock()
    signer = TokenSigner(SECRET, clock=clock)
    token, claims = signer.issue("u", ACCESS)
    clock.now = claims.exp + LEEWAY - 1
    assert signer.verify(token, ACCESS).sub == "u"
    clock.now = claims.exp + LEEWAY + 1
    with pytest.raises(TokenInvalid, match="expired"):
        signer.verify(token, ACCESS)


def test_token_from_the_future_is_refused():
    clock = Clock()
    signer = TokenSigner(SECRET, clock=clock)
    token, _ = signer.issue("u", ACCESS)
    clock.now -= LEEWAY + 60
    with pytest.raises(TokenInvalid, match="not valid yet"):
        signer.verify(token, ACCESS)


def test_alg_none_is_refused():
    signer = TokenSigner(SECRET, clock=Clock())
    token = jwt.encode(claims_for(signer), None, algorithm="none")
    with pytest.raises(TokenInvalid):
        signer.verify(token, ACCESS)
    # The same, hand-made with an empty signature.
    header = base64.urlsafe_b64encode(json.dumps({"alg": "none", "typ": "JWT"}).encode()).rstrip(b"=")
    body = base64.urlsafe_b64encode(json.dumps(claims_for(signer)).encode()).rstrip(b"=")
    with pytest.raises(TokenInvalid):
        signer.verify(f"{header.decode()}.{body.decode()}.", ACCESS)


def test_other_hmac_algorithm_with_the_right_secret_is_refused():
    signer = TokenSigner(SECRET, clock=Clock())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # HS512 wants a 64-byte key; irrelevant to this test
        token = jwt.encode(claims_for(signer), SECRET, algorithm="HS512")
    with pytest.raises(TokenInvalid, match="algorithm"):
        signer.verify(token, ACCESS)


def test_wrong_secret_is_refused():
    clock = Clock()
    other = TokenSigner("another-secret-which-is-also-long-enough-for-hs256", clock=clock)
    token, _ = other.issue("u", ACCESS)
    with pytest.raises(TokenInvalid, match="signature"):
        TokenSigner(SECRET, clock=clock).verify(token, ACCESS)


def test_tampered_payload_is_refused():
    signer = TokenSigner(SECRET, clock=Clock())
    token, _ = signer.issue("user-1", ACCESS)
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = "someone-else"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(TokenInvalid, match="signature"):
        signer.verify(f"{header}.{forged}.{signature}", ACCESS)
    flipped = signature[:-3] + ("A" if signature[-3] != "A" else "B") + signature[-2:]
    with pytest.raises(TokenInvalid):
        signer.verify(f"{header}.{payload}.{flipped}", ACCESS)


@pytest.mark.parametrize("typ,expected", [(REFRESH, ACCESS), (ACCESS, REFRESH), (ACCESS, SESSION), (SESSION, ACCESS)])
def test_a_token_of_one_kind_is_not_another(typ, expected):
    signer = TokenSigner(SECRET)
    token, _ = signer.issue("u", typ, xsrf="x" if typ == SESSION else None)
    with pytest.raises(TokenInvalid, match="not a"):
        signer.verify(token, expected)


@pytest.mark.parametrize("missing", ["sub", "exp", "iat", "jti", "typ"])
def test_missing_claims_are_refused(missing):
    signer = TokenSigner(SECRET, clock=Clock())
    token = jwt.encode(claims_for(signer, **{missing: None}), SECRET, algorithm="HS256")
    with pytest.raises(TokenInvalid):
        signer.verify(token, ACCESS)


@pytest.mark.parametrize("bad", [{"sub": 42}, {"typ": "admin"}, {"gen": "0"}, {"exp": "soon"}, {"iss": "someone"}])
def test_malformed_claims_are_refused(bad):
    signer = TokenSigner(SECRET, clock=Clock())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        token = jwt.encode(claims_for(signer, **bad), SECRET, algorithm="HS256")
    with pytest.raises(TokenInvalid):
        signer.verify(token, ACCESS)


@pytest.mark.parametrize("junk", ["", "garbage", "a.b.c", "x" * 5000, None, 42])
def test_junk_is_refused(junk):
    with pytest.raises(TokenInvalid):
        TokenSigner(SECRET).verify(junk, ACCESS)


def test_a_short_secret_works_without_warning_noise():
    signer = TokenSigner("short")
    assert signer.short_secret
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        token, _ = signer.issue("u", ACCESS)
        assert signer.verify(token, ACCESS).sub == "u"


def test_long_secret_is_not_flagged():
    assert not TokenSigner(SECRET).short_secret
