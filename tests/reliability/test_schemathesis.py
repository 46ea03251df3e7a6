"""Property-based: schemathesis generates requests for every management operation of
``/api/openapi.json`` (``/api/proxy/*``, ``/api/auth/*``, ``/api/users*``), valid ones and invalid
ones, and sends them with an admin's token. No answer may be a 500, and every answer must be
documented: its status, its content type and its body's schema.

The proxy runs in a thread of this process (with a simulated node) so that the test can mint a
fresh admin token for every request — generated requests may well change the admin's password,
which ends older tokens — and so that nothing but loopback is ever contacted: generated node
addresses (``10.0.0.5``, ``example.com`` …) are refused at the upstream client, before any DNS.

Bounded for CI: a fixed number of examples per operation, derandomized (the same cases every
run), no shrinking. ``AIVONX_SCHEMATHESIS_EXAMPLES`` raises the count for a deeper local run.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.failures import Failure, FailureGroup  # noqa: E402

from app.config import Settings  # noqa: E402
from app.fleet import upstream  # noqa: E402
from app.server import build_application, listen, start_services, stop_services  # noqa: E402
from app.simulator import SimulatorOptions, start_simulator  # noqa: E402
from tests.conftest import ADMIN_PASSWORD, JWT_SECRET  # noqa: E402

EXAMPLES = int(os.environ.get("AIVONX_SCHEMATHESIS_EXAMPLES", "8"))
MANAGEMENT = r"^/api/(proxy|auth|users)"
# The event stream never ends by design: a generated request would wait for it until its timeout.
MIN_OPERATIONS = 25
SKIPPED = r"^/api/proxy/events$"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


class ThreadedProxy:
    """A proxy and a simulated node on their own event loop in a thread."""

    def __init__(self, tmp_path: Path):
        self.tmp_path = tmp_path
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.services: Any = None
        self.url = ""
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="proxy", daemon=True)

    def __enter__(self) -> ThreadedProxy:
        self._thread.start()
        if not self.ready.wait(30) or self.error is not None:
            raise RuntimeError(f"the proxy did not start: {self.error!r}")
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.loop is not None and self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 10) -> Any:
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:
            self.error = exc
            self.ready.set()

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        node = await start_simulator(SimulatorOptions(models=["llama3:latest", "nomic-embed-text"], fast=True))
        config = Settings(host="127.0.0.1", port=0, data_dir=self.tmp_path / "data", log_dir=self.tmp_path / "logs",
                          node=(node.url,), admin_password=ADMIN_PASSWORD, jwt_secret=JWT_SECRET,
                          health_interval=3600.0)
        services = self.services = await start_services(config)
        server, port = listen(build_application(services), config)
        self.url = f"http://127.0.0.1:{port}"
        await services.monitor.tick()
        self.ready.set()
        try:
            await self._stop.wait()
        finally:
            server.stop()
            await server.close_all_connections()
            await stop_services(services)
            await node.stop()

    async def admin_token(self) -> str:
        """A valid access token of an admin, whatever the generated requests did to the users."""
        for user in await self.services.store.users.list():
            if user["role"] == "admin":
                return self.services.auth.issue_tokens(user)["access"]
        raise AssertionError("no admin left")  # the API refuses to remove the last one


@pytest.fixture
def loopback_only(monkeypatch):
    connect = upstream.UpstreamClient._connect

    async def guarded(self, ep, timeout):
        if ep.host not in LOOPBACK:
            raise upstream.ConnectFailed(f"cannot connect to {ep.host}:{ep.port}: not contacted by this test")
        return await connect(self, ep, timeout)

    monkeypatch.setattr(upstream.UpstreamClient, "_connect", guarded)


def test_management_operations_never_answer_500_nor_break_their_documented_schema(tmp_path, loopback_only):
    with ThreadedProxy(tmp_path) as proxy:
        schema = schemathesis.openapi.from_url(f"{proxy.url}/api/openapi.json")
        schema = schema.include(path_regex=MANAGEMENT).exclude(path_regex=SKIPPED)
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= MIN_OPERATIONS, [op.label for op in operations]
        failures: dict[str, str] = {}
        counts = {"requests": 0}

        for operation in operations:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

                @settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
                          phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
                @given(case=operation.as_strategy(generation_mode=mode))
                def exercise(case: Any) -> None:
                    token = proxy.run(proxy.admin_token())
                    response = case.call(base_url=proxy.url, headers={"Authorization": f"Bearer {token}"},
                                         timeout=15)
                    counts["requests"] += 1
                    key = f"{case.operation.label}"
                    if response.status_code == 500:
                        failures.setdefault(f"{key} 500", f"{case.as_curl_command()}\n{response.text[:300]}")
                        return
                    try:
                        case.validate_response(response, checks=[status_code_conformance, content_type_conformance,
                                                                 response_schema_conformance])
                    except (FailureGroup, Failure) as exc:
                        failing = exc.exceptions if isinstance(exc, FailureGroup) else [exc]
                        for failure in failing:
                            title = getattr(failure, "title", type(failure).__name__)
                            failures.setdefault(f"{key} {response.status_code}: {title}",
                                                f"{case.as_curl_command()}\n{str(failure)[:600]}\n"
                                                f"{response.text[:300]}")

                try:
                    exercise()
                except Unsatisfiable:
                    assert mode is GenerationMode.NEGATIVE, operation.label  # nothing to make invalid

        assert counts["requests"] >= len(operations) * 2
        assert not failures, "\n\n".join(f"{k}\n{v}" for k, v in sorted(failures.items()))
        # Whatever was generated, the proxy is still whole: with default settings again (a generated
        # request may have turned require_api_key on), it serves, and its counts are back to zero.
        proxy.run(proxy.services.update_config({}, replace=True))
        answer = json.loads(proxy.run(_generate(proxy.url)))
        assert answer["done"] is True
        assert proxy.services.fleet.total_in_flight() == 0


async def _generate(url: str) -> str:
    from tornado.httpclient import AsyncHTTPClient

    response = await AsyncHTTPClient().fetch(f"{url}/api/generate", method="POST",
                                             body=json.dumps({"model": "llama3", "prompt": "x", "stream": False}))
    return response.body.decode()
