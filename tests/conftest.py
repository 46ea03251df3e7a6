"""Shared fixtures: real proxies in front of real simulated Ollama nodes, on loopback.

``env`` starts simulated nodes and proxies on ephemeral ports inside the test's
IOLoop (pytest-tornasync) and stops everything afterwards. Each proxy uses the
embedded store in the test's own temporary directory.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from tornado import httpclient
from tornado.httpclient import AsyncHTTPClient, HTTPResponse

from app.config import Settings
from app.server import build_application, listen, start_services, stop_services
from app.services import Services
from app.simulator import SimulatedNode, SimulatorOptions, start_simulator

ADMIN_PASSWORD = "test-admin-password"
JWT_SECRET = "test-jwt-secret-that-is-long-enough-for-hs256"


class Proxy:
    """A running proxy: its URL, its services, and helpers to call it."""

    def __init__(self, services: Services, server: Any, port: int):
        self.services = services
        self.server = server
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    @property
    def fleet(self):
        return self.services.fleet

    async def refresh(self) -> None:
        """Probe every node now (instead of waiting for the health tick)."""
        await self.services.monitor.tick()

    async def request(self, method: str, path: str, body: Any = None, *, headers: dict[str, str] | None = None,
                      raw: bytes | None = None, timeout: float = 30, **kwargs: Any) -> HTTPResponse:
        """One HTTP call; never raises for an HTTP status (tests assert on it)."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        if data is None and method in ("POST", "PUT", "PATCH"):
            data = b""
        request = httpclient.HTTPRequest(
            self.url + path, method=method, body=data, headers=headers or {}, request_timeout=timeout,
            allow_nonstandard_methods=True, follow_redirects=False, **kwargs)
        return await AsyncHTTPClient().fetch(request, raise_error=False)

    async def json(self, method: str, path: str, body: Any = None, **kwargs: Any) -> tuple[int, Any]:
        response = await self.request(method, path, body, **kwargs)
        text = response.body.decode() if response.body else ""
        try:
            return response.code, json.loads(text) if text else None
        except ValueError:
            return response.code, text

    def in_flight(self) -> int:
        return self.services.fleet.total_in_flight()


class Env:
    """Starts nodes and proxies for one test and tears all of them down after it."""

    def __init__(self, tmp_path: Path):
        self.tmp_path = tmp_path
        self.nodes: list[SimulatedNode] = []
        self.proxies: list[Proxy] = []
        self._count = 0

    async def node(self, models: Iterable[str] = ("llama3:latest",), **options: Any) -> SimulatedNode:
        options.setdefault("fast", True)
        node = await start_simulator(SimulatorOptions(models=list(models), **options))
        self.nodes.append(node)
        return node

    async def proxy(self, nodes: Iterable[SimulatedNode] = (), *, config: dict[str, Any] | None = None,
                    data_dir: Path | None = None, probe: bool = True, store: Any = None, **settings: Any) -> Proxy:
        """A proxy over ``nodes``. ``store``: a shared Store (several proxies on one database)."""
        self._count += 1
        base = self.tmp_path / f"proxy{self._count}"
        settings.setdefault("admin_password", ADMIN_PASSWORD)
        settings.setdefault("jwt_secret", JWT_SECRET)
        settings.setdefault("health_interval", 3600.0)
        merged = Settings(host="127.0.0.1", port=0, data_dir=data_dir or base / "data", log_dir=base / "logs",
                          node=tuple(n.url for n in nodes), **settings)
        services = await start_services(merged, store=store, monitor=False)
        if config:
            await services.update_config(config)
        server, port = listen(build_application(services), merged)
        proxy = Proxy(services, server, port)
        self.proxies.append(proxy)
        if probe:
            await proxy.refresh()
        services.monitor.reschedule()
        return proxy

    async def close(self) -> None:
        for proxy in self.proxies:
            proxy.server.stop()
            await proxy.server.close_all_connections()
            await stop_services(proxy.services)
        for node in self.nodes:
            await node.stop()


@pytest.fixture(autouse=True)
def fast_bcrypt(monkeypatch):
    """Cheap password hashes in tests (production uses 12 rounds; hashing is not what tests measure)."""
    from app.auth import passwords

    monkeypatch.setattr(passwords, "BCRYPT_ROUNDS", 4)


@pytest.fixture
def env(io_loop, tmp_path):
    environment = Env(tmp_path)
    yield environment
    io_loop.run_sync(environment.close, timeout=30)


def ndjson(body: bytes) -> list[dict[str, Any]]:
    """Parse an NDJSON body strictly: every line one JSON object, no blank lines."""
    text = body.decode()
    assert text.endswith("\n"), "an NDJSON stream ends with a newline"
    lines = text[:-1].split("\n")
    assert all(line.strip() for line in lines), "no blank lines in NDJSON"
    return [json.loads(line) for line in lines]


def sse(body: bytes) -> list[str]:
    """The ``data:`` payloads of an SSE body, in order."""
    events = [e for e in body.decode().split("\n\n") if e.strip()]
    assert all(e.startswith("data: ") for e in events), events
    return [e[len("data: "):] for e in events]
