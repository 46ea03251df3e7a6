"""The route table, and starting/stopping a node on the current event loop."""

from __future__ import annotations

import tornado.web
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from app.simulator import handlers_ollama as ollama
from app.simulator import handlers_openai as openai
from app.simulator.handlers_base import NotFoundHandler
from app.simulator.handlers_control import FaultsHandler, ModelsControlHandler, StatsHandler
from app.simulator.handlers_models import (
    BlobHandler,
    CopyHandler,
    CreateHandler,
    DeleteHandler,
    PullHandler,
    PushHandler,
    ShowHandler,
)
from app.simulator.options import SimulatorOptions
from app.simulator.state import SimulatorState

_ROUTES: list[tuple[str, type[tornado.web.RequestHandler]]] = [
    (r"/", ollama.RootHandler),
    (r"/api/version", ollama.VersionHandler),
    (r"/api/tags", ollama.TagsHandler),
    (r"/api/ps", ollama.PsHandler),
    (r"/api/show", ShowHandler),
    (r"/api/generate", ollama.GenerateHandler),
    (r"/api/chat", ollama.ChatHandler),
    (r"/api/embed", ollama.EmbedHandler),
    (r"/api/embeddings", ollama.EmbeddingsHandler),
    (r"/api/pull", PullHandler),
    (r"/api/push", PushHandler),
    (r"/api/create", CreateHandler),
    (r"/api/copy", CopyHandler),
    (r"/api/delete", DeleteHandler),
    (r"/api/blobs/([^/]+)", BlobHandler),
    (r"/v1/chat/completions", openai.ChatCompletionsHandler),
    (r"/v1/completions", openai.CompletionsHandler),
    (r"/v1/embeddings", openai.EmbeddingsHandler),
    (r"/v1/models", openai.ModelsHandler),
    (r"/v1/models/(.+)", openai.ModelHandler),
    (r"/_sim/faults", FaultsHandler),
    (r"/_sim/stats", StatsHandler),
    (r"/_sim/models", ModelsControlHandler),
]

# Blobs and create uploads can be large; Ollama accepts multi-GB blobs, we cap at 1 GiB.
MAX_BODY_SIZE = 1 << 30


def build_simulator_app(
    options: SimulatorOptions | None = None, state: SimulatorState | None = None
) -> tornado.web.Application:
    """A Tornado application that answers like one Ollama node.

    Its :class:`SimulatorState` is ``app.settings["simulator_state"]``.
    """
    state = state or SimulatorState(options or SimulatorOptions())
    args = {"state": state}
    return tornado.web.Application(
        [(pattern, handler, args) for pattern, handler in _ROUTES],
        default_handler_class=NotFoundHandler,
        default_handler_args=args,
        simulator_state=state,
    )


class SimulatedNode:
    """A running simulated node: ``url``, ``port``, ``state`` and :meth:`stop`."""

    def __init__(self, server: HTTPServer, state: SimulatorState, host: str, port: int) -> None:
        self.server = server
        self.state = state
        self.host = host
        self.port = port
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{port}"
        self._stopped = False

    async def stop(self) -> None:
        """Stop listening, close every open connection (cancelling their requests), stop timers."""
        if self._stopped:
            return
        self._stopped = True
        self.server.stop()
        await self.server.close_all_connections()
        self.state.scheduler.close()

    async def __aenter__(self) -> SimulatedNode:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def __repr__(self) -> str:
        return f"<SimulatedNode {self.url}>"


async def start_simulator(
    options: SimulatorOptions | None = None, host: str = "127.0.0.1", port: int = 0
) -> SimulatedNode:
    """Start a node on the running loop (``port=0`` picks a free port)."""
    state = SimulatorState(options or SimulatorOptions())
    app = build_simulator_app(state=state)
    sockets = bind_sockets(port, host)
    server = HTTPServer(app, max_body_size=MAX_BODY_SIZE)
    server.add_sockets(sockets)
    return SimulatedNode(server, state, host, sockets[0].getsockname()[1])
