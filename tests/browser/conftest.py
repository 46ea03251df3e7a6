"""A real proxy with simulated nodes, driven by headless Chromium.

The proxy and the nodes run as subprocesses (``python -m app serve`` / ``simulate``),
exactly as an operator starts them, and the tests use Playwright's sync API, so no
event loop is shared with pytest-tornasync. The browser is Debian's Chromium: a
Playwright browser download does not work on these machines.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic"]
ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
ADMIN_PASSWORD = "browser-admin-password"
XSS = "<img src=x onerror=window.__xss=1>"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http(method: str, url: str, body: Any = None, token: str | None = None, timeout: float = 10,
         headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """One JSON call; (status, parsed body). Never raises for an HTTP status."""
    data = json.dumps(body).encode() if body is not None else (b"" if method in ("POST", "PUT", "PATCH") else None)
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    text = raw.decode() if raw else ""
    try:
        return status, json.loads(text) if text else None
    except ValueError:
        return status, text


def wait_until(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@dataclass
class Stack:
    """The running proxy (``url``), its simulated nodes (``nodes``: name → URL) and an admin session."""

    url: str
    nodes: dict[str, str]
    procs: list[subprocess.Popen] = field(default_factory=list)
    # One admin session, shared by the tests' API calls and by the browser tabs that do not test
    # logging in (a login costs a bcrypt check, slow on purpose).
    admin_cookies: list[dict[str, Any]] = field(default_factory=list)
    # Stop the proxy, and start it again on the same data directory (users, sessions and nodes survive).
    stop_proxy: Any = None
    start_proxy: Any = None

    def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """A call as the admin, with the session cookie and its XSRF token (like the console)."""
        cookies = {c["name"]: c["value"] for c in self.admin_cookies}
        return http(method, self.url + path, body, headers={
            "Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items()), "X-XSRFToken": cookies["aivonx_xsrf"]})

    def session_cookies(self, username: str, password: str) -> list[dict[str, Any]]:
        """A console session made through the API, as cookies for a browser context."""
        request = urllib.request.Request(self.url + "/api/auth/login", method="POST", data=json.dumps(
            {"username": username, "password": password, "session": True}).encode(),
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            jar = SimpleCookie()
            for header in response.headers.get_all("Set-Cookie"):
                jar.load(header)
        return [{"name": name, "value": morsel.value, "url": self.url} for name, morsel in jar.items()]

    def node_id(self, url: str) -> str:
        status, answer = self.api("GET", "/api/proxy/nodes")
        assert status == 200, answer
        return next(n["id"] for n in answer["nodes"] if n["url"] == url)


def _start(args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "app", *args], cwd=ROOT, env={**os.environ, **(env or {})},
                            stdout=log.open("wb"), stderr=subprocess.STDOUT)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Proxy + nodes: ``alpha`` and ``beta`` registered at start, ``gamma`` left for a test to add.

    Not --fast: pulls take 1.2 s so their progress can be watched; answers are quick anyway.
    ``beta`` uses other digests (digest drift) and has a model only it serves (``mistral``).
    """
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium); .ci/run installs it")
    tmp = tmp_path_factory.mktemp("console")
    procs: list[subprocess.Popen] = []
    nodes = {}
    quick = ["--tokens-per-second", "500", "--load-time", "0.05", "--pull-time", "1.2", "--num-parallel", "4",
             "--tokens", "8"]
    for name, models, extra in (("alpha", "llama3.2,qwen2.5:7b", []),
                                ("beta", "llama3.2,mistral", ["--digest-salt", "beta"]),
                                ("gamma", "llama3.2", [])):
        port = free_port()
        procs.append(_start(["simulate", "--port", str(port), "--models", models, *quick, *extra],
                            tmp / f"{name}.log"))
        nodes[name] = f"http://127.0.0.1:{port}"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # A short health interval: loaded models and versions show up on the cards quickly.
    serve = ["serve", "--port", str(port), "--data-dir", str(tmp / "data"), "--log-dir", str(tmp / "logs"),
             "--health-interval", "2", "--node", nodes["alpha"], "--node", nodes["beta"]]
    procs.append(_start(serve, tmp / "proxy.log", {"AIVONX_ADMIN_PASSWORD": ADMIN_PASSWORD}))
    running = Stack(url=url, nodes=nodes, procs=procs)

    def stop_proxy() -> None:
        procs[-1].terminate()
        procs[-1].wait(10)

    def start_proxy() -> None:
        procs[-1] = _start(serve, tmp / "proxy-2.log")
        wait_until(lambda: http("GET", url + "/api/proxy/health")[0] == 200, 20, "the restarted proxy")

    running.stop_proxy, running.start_proxy = stop_proxy, start_proxy
    try:
        for name, node_url in nodes.items():
            wait_until(lambda u=node_url: http("GET", u + "/api/version")[0] == 200, 20, f"node {name}")
        wait_until(lambda: http("GET", url + "/api/proxy/health")[0] == 200, 20, "the proxy")
        running.admin_cookies = running.session_cookies("admin", ADMIN_PASSWORD)
        # Friendlier names than host-port, so screenshots read well.
        for name in ("alpha", "beta"):
            status, answer = running.api("PATCH", f"/api/proxy/nodes/{running.node_id(nodes[name])}", {"name": name})
            assert status == 200, answer
        wait_until(lambda: http("GET", url + "/api/proxy/health")[1].get("active") == 2, 20, "two active nodes")
        yield running
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture(scope="module")
def browser():
    # Module scope, not session: while Playwright's sync API is active it owns an event loop, and the
    # asyncio-based tests that run after this directory must not find it still running.
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium); .ci/run installs it")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


class Console:
    """One browser tab on the console, with the helpers the tests share."""

    def __init__(self, page: Any, stack: Stack):
        self.page = page
        self.stack = stack
        self.errors: list[str] = []
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))
        page.on("console", self._console)

    def _console(self, message: Any) -> None:
        text = message.text
        # Failed API calls (401 after logout, 404 of an optional route) are logged by Chromium as
        # resource errors; those are expected. Script errors and CSP violations are not.
        if message.type == "error" and "Failed to load resource" not in text:
            self.errors.append(text)

    def open(self, route: str = "") -> None:
        self.page.goto(f"{self.stack.url}/ui/#/{route}")

    def go(self, label: str) -> None:
        """Navigate with the main menu, as a user does (no reload)."""
        self.page.get_by_role("navigation", name="Main").get_by_role("link", name=label, exact=True).click()
        self.page.wait_for_selector(f"h1.page-title:text-is('{label}')")

    def login(self, route: str = "") -> None:
        """Open the console as the admin, with the shared session (no login form)."""
        self.page.context.add_cookies(self.stack.admin_cookies)
        self.open(route)
        self.page.wait_for_selector("#topbar:not([hidden])")

    def login_with_form(self, username: str = "admin", password: str = ADMIN_PASSWORD) -> None:
        self.page.goto(f"{self.stack.url}/ui/")
        self.page.get_by_label("Username").fill(username)
        self.page.get_by_label("Password").fill(password)
        self.page.get_by_role("button", name="Log in").click()
        self.page.wait_for_selector("#topbar:not([hidden])")

    def shot(self, name: str, *, full_page: bool = True) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=full_page)
        return path


@pytest.fixture
def console(browser, stack: Stack) -> Iterator[Console]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(10_000)
    page = context.new_page()
    tab = Console(page, stack)
    yield tab
    context.close()
    assert not tab.errors, tab.errors
