"""The console's static files at ``/ui/``: served with a strict CSP, never cached stale, nothing outside ``webui/``."""

from __future__ import annotations

import re

from app.api.ui import WEBUI_DIR


async def test_console_is_served_with_a_strict_content_security_policy(env):
    proxy = await env.proxy()
    response = await proxy.request("GET", "/ui/")
    assert response.code == 200
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert response.body == (WEBUI_DIR / "index.html").read_bytes()
    csp = response.headers["Content-Security-Policy"]
    for directive in ("default-src 'self'", "script-src 'self'", "img-src 'self' data:", "connect-src 'self'",
                      "frame-ancestors 'none'"):
        assert directive in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cache-Control"] == "no-cache"


def test_index_has_no_inline_script_or_style():
    html = (WEBUI_DIR / "index.html").read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)", html), "inline <script> would be blocked by the CSP"
    assert "style=" not in html and "<style" not in html
    for path in WEBUI_DIR.rglob("*.js"):
        assert "innerHTML" not in path.read_text(), f"{path.name}: render data as text, never as HTML"


async def test_modules_are_javascript_and_revalidated(env):
    proxy = await env.proxy()
    response = await proxy.request("GET", "/ui/js/main.js")
    assert response.code == 200
    assert response.headers["Content-Type"] == "text/javascript; charset=utf-8"
    etag = response.headers["Etag"]
    again = await proxy.request("GET", "/ui/js/main.js", headers={"If-None-Match": etag})
    assert again.code == 304


async def test_ui_redirects_and_unknown_or_outside_files_are_404(env):
    proxy = await env.proxy()
    response = await proxy.request("GET", "/ui")
    assert response.code == 302 and response.headers["Location"] == "/ui/"
    browser = await proxy.request("GET", "/", headers={"Accept": "text/html"})
    assert browser.code == 302 and browser.headers["Location"] == "/ui/"
    assert (await proxy.request("GET", "/ui/nope.js")).code == 404
    for path in ("/ui/../app/server.py", "/ui/%2e%2e/app/server.py", "/ui/..%2fREADME.md"):
        outside = await proxy.request("GET", path)
        assert outside.code in (403, 404), path
        assert b"ROUTE_MODULES" not in outside.body and b"Aivonx" not in outside.body
