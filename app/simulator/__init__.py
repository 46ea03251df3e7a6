"""A simulated Ollama node: a real Tornado HTTP server that speaks Ollama's wire protocol.

Tests and benchmarks of the proxy run against it, so it reproduces what matters of a real
node (shared/ollama-api.md): every route and its exact error texts, NDJSON/SSE framing,
per-model runners with slots, a bounded pending queue (503 when full), FIFO loads,
eviction, keep_alive, client-disconnect cancellation, and injectable faults.

Python API::

    from app.simulator import SimulatorOptions, start_simulator

    node = await start_simulator(SimulatorOptions(models=["llama3.2", "qwen2.5:7b"], fast=True))
    node.url                      # "http://127.0.0.1:PORT"; node.port
    node.state.set_fault("error_midstream", count=1, after_chunks=3, routes=["/api/chat"])
    node.state.clear_faults()
    node.state.stats()            # {"requests": {...}, "active", "queued", "cancelled", ...}
    node.state.add_model("phi3"); node.state.remove_model("phi3")
    await node.stop()             # stops listening and closes every open connection

* ``SimulatorOptions`` — dataclass of knobs (models, version, tokens_per_second,
  prompt_tokens_per_second, load_time, num_parallel, max_queue, max_loaded, keep_alive,
  seed, fast, default_tokens, digest_salt, context_length, embedding_dim, pullable,
  unknown_models, pull_time, pull_step, strict_host, faults, fast_flush_lines).
* ``build_simulator_app(options=None, state=None) -> tornado.web.Application`` — the app
  alone (its state is ``app.settings["simulator_state"]``), e.g. for ``http_server`` fixtures.
* ``async start_simulator(options=None, host="127.0.0.1", port=0) -> SimulatedNode`` — binds
  on the current loop; ``SimulatedNode`` has ``url``, ``host``, ``port``, ``state``,
  ``async stop()`` and works as ``async with``.
* ``SimulatorState`` — ``set_fault(mode, *, count=None, routes=None, after_chunks=0,
  delay=0.0, message=None)``, ``clear_faults()``, ``stats()``, ``reset_stats()``,
  ``add_model(name)``, ``remove_model(name)``; ``catalog``, ``scheduler``, ``faults``.
* CLI glue: ``add_arguments(parser)`` and ``run(args) -> int`` (see :mod:`app.simulator.cli`).

Control endpoints on the node (not Ollama's): ``GET|POST|DELETE /_sim/faults``,
``GET|DELETE /_sim/stats``, ``POST /_sim/models`` (see :mod:`app.simulator.handlers_control`;
fault modes in :mod:`app.simulator.faults`).

Pulls: every syntactically valid name is pullable, except names containing one of
``unknown_models`` (default ``["doesnotexist"]``), or only ``pullable`` names when given.
"""

from app.simulator.cli import add_arguments, run
from app.simulator.options import SimulatorOptions
from app.simulator.server import SimulatedNode, build_simulator_app, start_simulator
from app.simulator.state import SimulatorState

__all__ = [
    "SimulatedNode",
    "SimulatorOptions",
    "SimulatorState",
    "add_arguments",
    "build_simulator_app",
    "run",
    "start_simulator",
]
