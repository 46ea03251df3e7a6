"""The upstream client's own reader of chunked bodies (every stream a node sends).

A raw TCP "node" writes hand-made answers in pieces, with pauses, so that chunk boundaries,
size lines and CRLFs arrive split in every way; the client must hand over exactly the body,
keep the connection for the next request only after a clean end, and fail a broken framing
the way it failed through Tornado's reader: as a connection lost mid-response.
"""

import asyncio

import pytest

from app.fleet.upstream import ConnectionLost, UpstreamClient

HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n"


def chunked(*parts: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


async def _serve(answers: list[list[bytes]], pause: float = 0.002) -> tuple[asyncio.Server, list[int]]:
    """A node answering the n-th request on any connection with ``answers[n]``, written piece by piece."""
    connections: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        try:
            while answers:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                await reader.readexactly(length)
                for piece in answers.pop(0):
                    writer.write(piece)
                    await writer.drain()
                    await asyncio.sleep(pause)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, connections


def _pieces(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


async def _fetch_twice(answers: list[list[bytes]]) -> tuple[list[bytes], list[int], int]:
    server, connections = await _serve(answers)
    port = server.sockets[0].getsockname()[1]
    client = UpstreamClient()
    try:
        bodies = []
        for _ in range(2):
            _, _, body = await client.fetch(f"http://127.0.0.1:{port}", "POST", "/api/generate", body=b"{}")
            bodies.append(body)
        return bodies, connections, client.idle_connections()
    finally:
        client.close()
        server.close()


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 64])
def test_a_body_split_anywhere_arrives_whole_and_the_connection_is_reused(size: int) -> None:
    lines = [b'{"response":"tok%d","done":false}\n' % i for i in range(12)] + [b'{"done":true}\n']
    answer = HEAD + chunked(*lines)
    bodies, connections, idle = asyncio.run(_fetch_twice([_pieces(answer, size), [answer]]))
    assert bodies == [b"".join(lines)] * 2
    assert len(connections) == 1 and idle == 1


def test_many_chunks_in_one_read_and_a_large_chunk() -> None:
    big = b"x" * 200_000
    answer = HEAD + chunked(*(b"%d\n" % i for i in range(500)), big)
    bodies, _, _ = asyncio.run(_fetch_twice([[answer], _pieces(answer, 4096)]))
    assert bodies == [b"".join(b"%d\n" % i for i in range(500)) + big] * 2


def test_bytes_after_the_last_chunk_cost_the_connection_not_the_answer() -> None:
    answer = HEAD + chunked(b"hello\n") + b"junk"
    bodies, connections, _ = asyncio.run(_fetch_twice([[answer], [HEAD + chunked(b"again\n")]]))
    assert bodies == [b"hello\n", b"again\n"]
    assert len(connections) == 2


@pytest.mark.parametrize("broken", [
    HEAD + b"5\r\nhello" + b"XX" + b"0\r\n\r\n",  # no CRLF after the data
    HEAD + b"zz\r\nhello\r\n0\r\n\r\n",  # not a hex size
    HEAD + b"5;ext=1\r\nhello\r\n0\r\n\r\n",  # chunk extensions: refused, as by Tornado
    HEAD + b"0\r\nX-Trailer: 1\r\n\r\n",  # trailers: refused, as by Tornado
    HEAD + b"1" * 70 + b"\r\n",  # a size line longer than 64 bytes
    HEAD + b"a\r\nhello",  # the node leaves mid-chunk
])
def test_a_broken_chunked_body_is_a_connection_lost_mid_response(broken: bytes) -> None:
    async def run() -> None:
        server, _ = await _serve([[broken]])
        port = server.sockets[0].getsockname()[1]
        client = UpstreamClient()
        try:
            with pytest.raises(ConnectionLost, match="closed the connection mid-response"):
                await client.fetch(f"http://127.0.0.1:{port}", "POST", "/api/generate", body=b"{}")
            assert client.idle_connections() == 0
        finally:
            client.close()
            server.close()

    asyncio.run(run())
