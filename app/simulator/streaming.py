"""Writing one streamed answer: NDJSON lines or SSE events, with mid-stream faults.

Every line is one JSON object followed by ``\\n`` (SSE: ``data: …\\n\\n``) and is flushed
at once, like Ollama; in fast mode lines are flushed in small batches to keep the per-token
cost low (still one object per line). A mid-stream fault fires after ``after_chunks``
lines, and always before the line that would complete the stream.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.simulator.faults import Fault
from app.simulator.wire import dumps

if TYPE_CHECKING:
    from app.simulator.handlers_base import SimHandler

NDJSON = "application/x-ndjson"
SSE = "text/event-stream"
SIMULATED_STREAM_ERROR = "simulated error: the runner stopped mid-stream"


class StreamAborted(Exception):
    """A mid-stream fault ended the answer; nothing more may be written."""


class LineStream:
    def __init__(self, handler: SimHandler, *, sse: bool = False, fault: Fault | None = None) -> None:
        self.handler = handler
        self.sse = sse
        self.fault = fault
        options = handler.state.options
        self.batch = options.fast_flush_lines if options.fast else 1
        self.sent = 0
        self._pending: list[str] = []
        handler.set_status(200)
        handler.set_header("Content-Type", SSE if sse else NDJSON)
        if sse:
            handler.set_header("Cache-Control", "no-cache")
            handler.sse_stream = True
        stream = handler.request.connection.stream  # type: ignore[attr-defined]
        # Tornado only sets TCP_NODELAY when a response finishes; a stream of small lines
        # would otherwise meet Nagle + delayed ACK stalls (~40 ms).
        stream.set_nodelay(True)

    async def send(self, payload: str) -> None:
        """Write one JSON text as a line (or SSE event)."""
        if self.fault is not None and self.sent >= self.fault.after_chunks:
            await self._fire()
        self._pending.append(f"data: {payload}\n\n" if self.sse else payload + "\n")
        self.sent += 1
        # The first line goes out at once (first byte as early as possible, chunked framing).
        if len(self._pending) >= self.batch or self.sent == 1:
            await self._flush()

    async def _flush(self) -> None:
        if self._pending:
            self.handler.write("".join(self._pending))
            self._pending.clear()
        await self.handler.flush()

    async def send_final(self, *payloads: str) -> None:
        """Write the closing line(s) (``done:true``, SSE usage + ``[DONE]``) and end the answer."""
        if self.fault is not None:
            await self._fire()
        if self.sent == 0:
            await self.handler.flush()  # a stream is always chunked, even a one-line one
        for payload in payloads:
            self._pending.append(f"data: {payload}\n\n" if self.sse else payload + "\n")
        self.handler.write("".join(self._pending))
        self._pending.clear()
        await self.handler.finish()

    async def error_line(self, message: str) -> None:
        """End the stream with an error line, as Ollama does once the status is sent."""
        if self.sent == 0:
            await self.handler.flush()
        self._pending.append(self._error_payload(message))
        self.handler.write("".join(self._pending))
        self._pending.clear()
        await self.handler.finish()

    def _error_payload(self, message: str) -> str:
        if self.sse:
            error = {"error": {"message": message, "type": "api_error", "param": None, "code": None}}
            return f"data: {dumps(error)}\n\n"
        return dumps({"error": message}) + "\n"

    async def _fire(self) -> None:
        fault, self.fault = self.fault, None
        assert fault is not None
        if fault.mode == "error_midstream":
            await self.error_line(fault.message or SIMULATED_STREAM_ERROR)
        else:
            await self._flush()
            self.handler.drop_connection()
        raise StreamAborted
