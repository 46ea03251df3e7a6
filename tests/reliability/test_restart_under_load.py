"""SIGTERM during 200 streams: the proxy stops accepting, lets every stream finish, exits 0."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import time

from tests.api.test_cli import processes, start_node_and_proxy  # noqa: F401 (processes: a fixture)

STREAMS = 200


async def _read_chunk(reader: asyncio.StreamReader) -> bytes:
    size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
    data = await reader.readexactly(size + 2)
    return data[:-2]


async def _stream(port: int, started: asyncio.Event, ready: list[int]) -> list[dict]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    body = json.dumps({"model": "llama3", "prompt": "x"}).encode()
    writer.write(b"POST /api/generate HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"chunked" in head.lower(), head
    data = await _read_chunk(reader)
    ready.append(1)
    await started.wait()  # every stream is running when the signal comes
    while chunk := await _read_chunk(reader):
        data += chunk
    writer.close()
    return [json.loads(line) for line in data.decode().splitlines()]


async def _load(proxy_port: int, on_all_started) -> list[list[dict]]:
    started = asyncio.Event()
    ready: list[int] = []
    tasks = [asyncio.ensure_future(_stream(proxy_port, started, ready)) for _ in range(STREAMS)]
    deadline = time.monotonic() + 20
    while len(ready) < STREAMS:
        assert time.monotonic() < deadline, f"only {len(ready)} streams started"
        done = [t for t in tasks if t.done() and t.exception()]
        assert not done, done[0].exception()
        await asyncio.sleep(0.01)
    on_all_started()
    started.set()
    return await asyncio.wait_for(asyncio.gather(*tasks), 30)


def test_sigterm_during_200_streams_lets_every_one_finish_then_exits_zero(processes, tmp_path):  # noqa: F811
    # The node shares 1000 tokens/s among its busy slots (as a GPU does): with 200 streams of 60 tokens
    # each runs about 3 s, and the signal comes within the first second. The model's 1 s cold load
    # lines every stream up, so that they all start together.
    node, proxy, proxy_port = start_node_and_proxy(
        processes, tmp_path, "--models", "llama3", "--load-time", "1", "--tokens-per-second", "1000",
        "--tokens", "60", "--num-parallel", str(STREAMS + 10))

    signalled: list[float] = []

    def terminate() -> None:
        proxy.proc.send_signal(signal.SIGTERM)
        signalled.append(time.monotonic())

    results = asyncio.run(_load(proxy_port, terminate))
    finished = time.monotonic()
    code, _, err = proxy.wait(timeout=30)
    assert code == 0, err
    assert len(results) == STREAMS
    for lines in results:
        assert lines[-1]["done"] is True, lines[-1]
        assert not any("error" in line for line in lines)
        assert sum(1 for line in lines if not line["done"]) == 60
    # The streams outlived the signal: they were finished, not cut.
    assert finished - signalled[0] > 1.0
    logs = (tmp_path / "l" / "app.json").read_text()
    running = int(re.search(r"waiting up to 30s for (\d+) request", logs).group(1))
    assert running >= STREAMS * 0.9 and "grace period over" not in logs
    node.stop()
