"""The web console: static files from ``webui/`` at ``/ui/``.

The console is a plain single-page app that talks to the same JSON API as any
script. Everything it needs is served from here (no asset comes from the
internet), so a strict Content-Security-Policy can forbid inline script and any
other origin: data from nodes and users can never become code, even if some view
slipped up while rendering it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from tornado import web

import app


def _webui_dir() -> Path:
    """The console's files: the checkout's ``webui/`` (editable install), else the installed copy."""
    checkout = Path(app.__file__).resolve().parent.parent / "webui"
    if checkout.is_dir():
        return checkout
    return Path(sys.prefix) / "share" / "aivonx-proxy" / "webui"


WEBUI_DIR = _webui_dir()

CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "connect-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
])

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".txt": "text/plain; charset=utf-8",
}


class ConsoleFileHandler(web.StaticFileHandler):
    """A file of the console, with security headers.

    Files have no content hash in their names (no build step), so every response
    is ``no-cache``: the browser keeps its copy but revalidates it (ETag → 304),
    and an upgrade of the proxy is seen on the next load.
    ---
    get:
      summary: Console file
      tags: [console]
      security: []
      parameters:
        - {name: path, in: path, required: true, schema: {type: string}, description: "empty: index.html"}
      responses:
        "200": {description: "The file (HTML, JavaScript, CSS or an image)."}
        "304": {description: Not modified (If-None-Match)}
        "404":
          description: No such file.
          content:
            text/plain: {schema: {type: string}}
    head:
      summary: Console file (headers only)
      tags: [console]
      security: []
      responses:
        "200": {description: The file exists.}
        "304": {description: Not modified (If-None-Match)}
        "404": {description: No such file.}
    """

    def initialize(self, services: Any = None, path: str = str(WEBUI_DIR),  # type: ignore[override]
                   default_filename: str | None = "index.html") -> None:
        super().initialize(path=path, default_filename=default_filename)

    def set_default_headers(self) -> None:
        self.set_header("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        self.set_header("X-Frame-Options", "DENY")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Referrer-Policy", "no-referrer")

    def set_extra_headers(self, path: str) -> None:
        self.set_header("Cache-Control", "no-cache")

    def get_content_type(self) -> str:
        # Module scripts must be served as JavaScript whatever the host's mimetypes table says.
        suffix = Path(self.absolute_path or "").suffix.lower()
        return CONTENT_TYPES.get(suffix) or super().get_content_type()

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(f"{status_code} {self._reason}")


class ConsoleRedirectHandler(web.RequestHandler):
    """``/ui`` → ``/ui/``, so the console's relative asset paths resolve."""

    def initialize(self, services: Any = None) -> None:
        pass

    def get(self) -> None:
        """The console's address without its slash.
        ---
        summary: Console (redirect)
        tags: [console]
        security: []
        responses:
          "302": {description: Redirect to /ui/.}
        """
        self.redirect("/ui/")

    head = get


ROUTES: list[tuple[str, type]] = [
    (r"/ui", ConsoleRedirectHandler),
    (r"/ui/(.*)", ConsoleFileHandler),
]
