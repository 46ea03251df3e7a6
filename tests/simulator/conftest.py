"""Fixtures for the simulated-node tests: nodes on the test's loop, and a time bound per test."""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from app.simulator import SimulatedNode, SimulatorOptions, start_simulator

HERE = Path(__file__).parent
TEST_TIMEOUT = 20.0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Bound every async test here: a hung stream must fail the test, not the whole run."""
    for item in items:
        obj = getattr(item, "obj", None)
        if HERE not in Path(item.path).parents or not inspect.iscoroutinefunction(obj):
            continue

        def bounded(fn: Callable[..., Any]) -> Callable[..., Any]:
            @functools.wraps(fn)
            async def wrapper(**kwargs: Any) -> Any:
                return await asyncio.wait_for(fn(**kwargs), TEST_TIMEOUT)

            return wrapper

        item.obj = bounded(obj)


class Nodes:
    """Starts nodes on the running loop; all are stopped after the test."""

    def __init__(self) -> None:
        self.started: list[SimulatedNode] = []

    async def start(self, **options: Any) -> SimulatedNode:
        options.setdefault("fast", True)
        node = await start_simulator(SimulatorOptions(**options))
        self.started.append(node)
        return node


@pytest.fixture
def nodes(io_loop):
    registry = Nodes()
    yield registry
    for node in registry.started:
        io_loop.run_sync(node.stop, timeout=10)
    # Client libraries (httpx under ollama/openai) leave async generators to finalise;
    # do it while the loop still runs instead of warning when pytest-tornasync closes it.
    io_loop.run_sync(lambda: asyncio.get_running_loop().shutdown_asyncgens(), timeout=10)
