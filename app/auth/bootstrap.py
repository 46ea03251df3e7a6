"""First start: the JWT signing secret and the first admin user.

No default password exists anywhere: the admin's password is either given
(``AIVONX_ADMIN_PASSWORD``) or generated and shown once on the console — it is
never written to a log file.
"""

from __future__ import annotations

import secrets
import sys
from typing import TextIO

from app.auth.passwords import generate_password, hash_password
from app.logs import app_log

JWT_SECRET_NAME = "jwt_secret"
ADMIN_USERNAME = "admin"


async def jwt_secret(store, configured: str | None) -> str:  # type: ignore[no-untyped-def]
    """The configured secret, else one generated once and kept in the store (shared by all instances)."""
    if configured:
        return configured
    return await store.secrets.get_or_create(JWT_SECRET_NAME, lambda: secrets.token_urlsafe(48))


async def ensure_admin(store, password: str | None, console: TextIO = sys.stdout) -> bool:  # type: ignore[no-untyped-def]
    """Create user ``admin`` when there are no users at all. True when one was created."""
    if await store.users.count() > 0:
        return False
    generated = password is None
    secret = password if password is not None else generate_password()
    await store.users.create(ADMIN_USERNAME, hash_password(secret), "admin")
    app_log().info("created the first admin user %r", ADMIN_USERNAME)
    if generated:
        console.write(
            "\n  First start: created user 'admin' with the generated password\n\n"
            f"      {secret}\n\n"
            "  It is shown only this once. Change it after logging in "
            "(or set AIVONX_ADMIN_PASSWORD before the first start).\n\n")
        console.flush()
    return True
