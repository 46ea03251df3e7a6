"""Password hashing with bcrypt, and the rules a password must meet."""

from __future__ import annotations

import secrets

import bcrypt

MIN_LENGTH = 8
# bcrypt only reads 72 bytes and bcrypt 5 raises beyond them: refuse clearly instead.
MAX_BYTES = 72
# bcrypt cost for new hashes. Tests lower it (monkeypatch) to stay fast; production keeps 12.
BCRYPT_ROUNDS = 12


class WeakPassword(ValueError):
    """The password cannot be used; the message says why."""


def check_password_rules(password: object) -> str:
    if not isinstance(password, str):
        raise WeakPassword("password must be a string")
    if len(password) < MIN_LENGTH:
        raise WeakPassword(f"password must be at least {MIN_LENGTH} characters")
    if len(password.encode("utf-8")) > MAX_BYTES:
        raise WeakPassword(f"password must be at most {MAX_BYTES} bytes (bcrypt's limit)")
    return password


def hash_password(password: str, rounds: int | None = None) -> str:
    check_password_rules(password)
    salt = bcrypt.gensalt(rounds if rounds is not None else BCRYPT_ROUNDS)
    return bcrypt.hashpw(password.encode("utf-8"), salt).decode("ascii")


def verify_password(password: str, hashed: str) -> bool:
    """Constant-time check; ``False`` (never an exception) for any malformed input."""
    if not isinstance(password, str) or not isinstance(hashed, str):
        return False
    encoded = password.encode("utf-8")
    if len(encoded) > MAX_BYTES:
        return False
    try:
        return bcrypt.checkpw(encoded, hashed.encode("ascii"))
    except ValueError:
        return False


def generate_password() -> str:
    """A strong random password (about 144 bits), printable and unambiguous to copy."""
    return secrets.token_urlsafe(18)
