"""Hide credentials in MongoDB URLs before they reach a log line or an error message."""

from __future__ import annotations

import re
from urllib.parse import unquote

_SECRET_OPTION = re.compile(r"(?i)([?&][^=&]*(?:password|token|secret|authmechanismproperties)[^=&]*=)[^&]*")


def redact_url(url: str) -> str:
    """Return ``url`` with the password (and secret-looking options) replaced by ``***``.

    Errs on the side of hiding too much: everything before the last ``@`` is treated as
    credentials, so an unescaped ``@`` or ``/`` inside a password cannot leak part of it.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "***" if "@" in url else url
    userinfo, at, hostpart = rest.rpartition("@")
    if at:
        user, colon, _password = userinfo.partition(":")
        rest = f"{user}:***@{hostpart}" if colon else f"{user}@{hostpart}"
    return f"{scheme}://" + _SECRET_OPTION.sub(r"\1***", rest)


def scrub(text: str, url: str) -> str:
    """Remove the password of ``url`` from ``text`` (a driver message may quote the URL)."""
    for secret in _secrets(url):
        text = text.replace(secret, "***")
    return text.replace(url, redact_url(url))


def _secrets(url: str) -> list[str]:
    rest = url.partition("://")[2]
    userinfo = rest.rpartition("@")[0]
    password = userinfo.partition(":")[2]
    found = [s for s in {password, unquote(password)} if s]
    return sorted(found, key=len, reverse=True)
