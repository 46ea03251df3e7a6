#!/usr/bin/env python3
"""Aivonx Proxy benchmark: the proxy against direct access and nginx, in one run, on loopback.

    python scripts/bench.py [--quick] [--out DIR] [--no-nginx] [--sections 1,2,3,4,5] [--profile]

Baselines it needs beyond the proxy: ``pip install -e '.[bench]'`` (pycurl for the bare curl relay,
py-spy for ``--profile``) and Debian's ``nginx``; a missing one is skipped and reported.

Writes ``DIR/bench.json`` and ``DIR/bench.md`` (default ``bench-results/``) and prints the table.
``--quick`` is a tiny configuration (seconds) for the test suite: it checks that everything runs,
its numbers mean nothing.

Sections
  1. small non-streaming ``/api/generate`` (~400-byte reply, fast simulated node) at concurrency
     1, 32, 256: req/s, latency p50/p99, CPU of the proxy per request — direct, proxy, nginx
     (when installed), and the issue's baselines run here too: a bare Tornado relay on the curl
     client (when pycurl is installed) and on the simple client;
  2. streaming relay, 64 and 512 concurrent streams of 200 tokens (and 1, for the TTFT overhead):
     tokens/s, time to first token, CPU per token; every stream must end with its done line;
  3. 1,000 concurrent streams of 100 tokens paced at 20 tokens/s: client-side gaps between tokens
     against the node's own pacing (measured direct as well), proxy RSS, errors. The node is a
     minimal paced NDJSON server in this script: the simulator cannot pace 20,000 lines/s on the
     core it shares with the load generator;
  4. routing quality: a heterogeneous fleet of paced nodes (speeds, slots, loaded models, seconds-long
     cold loads), one Poisson workload replayed for every strategy, and for "blind random" (each
     request sent straight to a node picked uniformly, no proxy: no load or loaded-model knowledge);
  5. memory per idle streaming connection and per registered node.

Processes and cores. Everything is a separate process in its own process group (all killed at the
end, also on errors). With two or more CPUs the script pins with ``taskset``: the proxy (and nginx,
which is measured in its place) alone on the first CPU, the simulated node(s) on the second, the load
generator on the third when there is one, else next to the node. The node and the generator then
share a core, equally for every path, and the "added" figures are differences to the direct path.

Load generator. A small asyncio ``Protocol`` HTTP/1.1 client (keep-alive, incremental parsing,
no per-request coroutine) in one or more worker processes (this script with ``--worker``). Its own
CPU time per request is measured and reported, and the script checks that the direct figures exceed
the proxied ones — if they do not, the generator or the node may be the limit, and it says so loudly.
When ``wrk`` is installed, small-request throughput at the middle concurrency is cross-checked with it.
"CPU wait" (from /proc/PID/schedstat) tells how long the measured process was runnable but had no CPU:
high values mean the machine was busy with other work and the figures are pessimistic.
``--profile`` also records py-spy profiles of the proxy (small requests and streams, separate runs).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import math
import os
import random
import re
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
HOST = "127.0.0.1"


# ----------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------


@dataclass
class RouteNode:
    name: str
    tokens_per_second: float
    num_parallel: int
    max_loaded: int
    preload: tuple[str, ...]


@dataclass
class Plan:
    # 1. small requests
    small_concurrency: tuple[int, ...] = (1, 32, 256)
    small_num_predict: int = 10  # → a ~400-byte reply
    warmup: float = 1.0
    duration: float = 5.0
    # 2. streaming relay (fast node)
    stream_concurrency: tuple[int, ...] = (1, 64, 512)
    stream_tokens: int = 200
    # 3. many long streams (paced node)
    long_streams: int = 1000
    long_tokens: int = 100
    long_tps: float = 20.0
    long_ramp: float = 1.0  # request starts spread over this many seconds
    # 4. routing quality
    # Time runs twice as fast as on a real fleet (speeds ×2, loads and probe interval ÷2, twice the
    # arrival rate): the same utilisation and relative costs, and ~270 requests per strategy in
    # 90 s. A run of ~100 requests left the p95 of the random baseline (one unlucky queue on the
    # slowest node) varying by 2× between runs.
    route_nodes: tuple[RouteNode, ...] = (
        RouteNode("fast", 120, 4, 2, ("alpha", "beta")),
        RouteNode("mid", 60, 2, 2, ("alpha", "gamma")),
        RouteNode("slow", 30, 2, 1, ("beta",)),
        RouteNode("tiny", 20, 1, 1, ("gamma",)),
    )
    route_models: tuple[tuple[str, float], ...] = (("alpha", 0.5), ("beta", 0.3), ("gamma", 0.2))
    route_rate: float = 3.0  # Poisson arrivals per second
    route_duration: float = 90.0
    route_tokens: tuple[int, int] = (20, 80)  # num_predict, uniform
    route_load_time: float = 1.25
    route_health_interval: float = 2.5
    route_strategies: tuple[str, ...] = ("least_active", "lowest_latency", "round_robin", "random")
    # 5. memory
    idle_streams: int = 1000
    idle_tps: float = 0.25  # first token after 4 s, the next after 8 s: idle in between
    mem_nodes: int = 200
    mem_settle: float = 3.5  # seconds of health rounds (1 s apart) before reading RSS
    # cross-check with wrk (when installed) at this small-request concurrency
    wrk_concurrency: int = 32


QUICK = Plan(
    small_concurrency=(4,), warmup=0.1, duration=0.4,
    stream_concurrency=(4,), stream_tokens=20,
    long_streams=20, long_tokens=10, long_tps=20.0, long_ramp=0.2,
    route_nodes=(RouteNode("fast", 200, 2, 1, ("alpha",)), RouteNode("slow", 100, 1, 1, ("beta",))),
    route_models=(("alpha", 0.6), ("beta", 0.4)),
    route_rate=10.0, route_duration=1.0, route_tokens=(5, 10), route_load_time=0.2,
    route_health_interval=1.0, route_strategies=("least_active",),
    idle_streams=20, idle_tps=2.0, mem_nodes=5, mem_settle=1.2, wrk_concurrency=8,
)

# Targets of issue 7; every one is a ratio to, or a difference from, a figure measured in the same run
# (the bare curl relay's ~450 µs/request is the one external figure, from the measurement).
CURL_RELAY_CPU_US = 450.0


# ----------------------------------------------------------------------------------------------
# Small helpers
# ----------------------------------------------------------------------------------------------


def pct(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile of ``values`` (sorted or not)."""
    if not values:
        return None
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1))
    return ordered[k]


def mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def r(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def ms(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value * 1000, digits)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of the processes (all their threads), in seconds."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
    return total


def run_wait(pids: list[int]) -> float:
    """Seconds the processes' main threads were runnable but waiting for a CPU (/proc/PID/schedstat):
    what other processes on the machine (or the process's own other threads) took from them."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            total += int(Path(f"/proc/{pid}/schedstat").read_text().split()[1])
    return total / 1e9


def children_of(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if int(entry.joinpath("stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(entry.name))
    return out


def http_raw(port: int, method: str, path: str, body: Any = None, timeout: float = 30.0,
             token: str | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def http_json(port: int, method: str, path: str, body: Any = None, timeout: float = 30.0,
              token: str | None = None) -> tuple[int, Any]:
    status, raw = http_raw(port, method, path, body, timeout, token)
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode("utf-8", "replace")


def raise_nofile() -> None:
    """Thousands of sockets: lift the soft limit to the hard one (inherited by every child)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


# ----------------------------------------------------------------------------------------------
# Load generator (runs in worker processes: ``bench.py --worker`` reads a JSON spec on stdin)
# ----------------------------------------------------------------------------------------------

_HEAD, _CL, _CHUNKED, _EOF = range(4)
_SIZE, _DATA, _DATA_END, _LAST = range(4)


def build_request(port: int, path: str, body: str) -> bytes:
    data = body.encode()
    return (f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n").encode() + data


class HttpConn(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; parses answers incrementally and calls its handler:
    ``on_head(conn, status, head)``, ``on_body(conn, piece)``, ``on_end(conn)``, ``on_lost(conn, busy)``."""

    def __init__(self, handler: Any):
        self.h = handler
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.state = _HEAD
        self.remaining = 0
        self.cstate = _SIZE
        self.busy = False
        self.close_after = False
        self.closed = False
        self.ctx: Any = None  # the handler's per-request state

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, data: bytes) -> None:
        self.busy = True
        self.state = _HEAD
        self.buf = b""
        assert self.transport is not None
        self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        if self.state == _HEAD:
            buf = self.buf + data if self.buf else data
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buf = buf
                return
            head = buf[:end].lower()
            data = buf[end + 4:]
            self.buf = b""
            self.close_after = b"\r\nconnection: close" in head
            if b"\r\ntransfer-encoding: chunked" in head:
                self.state, self.cstate = _CHUNKED, _SIZE
            else:
                i = head.find(b"\r\ncontent-length:")
                if i >= 0:
                    j = head.find(b"\r\n", i + 2)
                    self.remaining = int(head[i + 17:j if j >= 0 else len(head)])
                    self.state = _CL
                else:
                    self.state = _EOF
            self.h.on_head(self, int(head[9:12]), head)
            if self.state == _CL and self.remaining == 0:
                self._end()
                return
            if not data:
                return
        if self.state == _CL:
            if len(data) > self.remaining:
                data = data[:self.remaining]
            self.remaining -= len(data)
            self.h.on_body(self, data)
            if self.remaining == 0:
                self._end()
        elif self.state == _CHUNKED:
            self._chunked(data)
        elif self.state == _EOF:
            self.h.on_body(self, data)

    def _chunked(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        self.buf = b""
        pos, n = 0, len(buf)
        while pos < n or self.cstate == _DATA_END:
            if self.cstate == _DATA:
                take = min(self.remaining, n - pos)
                self.h.on_body(self, buf[pos:pos + take] if (pos or take != n) else buf)
                pos += take
                self.remaining -= take
                if self.remaining == 0:
                    self.cstate = _DATA_END
                continue
            if n - pos < 2:
                break
            if self.cstate == _DATA_END:
                pos += 2
                self.cstate = _SIZE
                continue
            if self.cstate == _LAST:
                # No trailers from any of our servers: the blank line ends the message.
                pos += 2
                self._end()
                return
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                break
            size = int(buf[pos:eol].split(b";", 1)[0], 16)
            pos = eol + 2
            if size == 0:
                self.cstate = _LAST
            else:
                self.remaining, self.cstate = size, _DATA
        self.buf = buf[pos:]

    def _end(self) -> None:
        self.busy = False
        self.state = _HEAD
        self.h.on_end(self)
        if self.close_after and not self.closed and self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.busy and self.state == _EOF:
            self._end()
            return
        self.h.on_lost(self, self.busy)


async def _connect(loop: asyncio.AbstractEventLoop, handler: Any, port: int) -> HttpConn:
    _, conn = await loop.create_connection(lambda: HttpConn(handler), HOST, port)
    return conn


async def _connect_many(loop: asyncio.AbstractEventLoop, handler: Any, port: int, count: int) -> list[HttpConn]:
    """Open ``count`` connections in batches (a listen backlog of 128 must not overflow)."""
    conns: list[HttpConn] = []
    while len(conns) < count:
        batch = min(64, count - len(conns))
        conns += await asyncio.gather(*(_connect(loop, handler, port) for _ in range(batch)))
    return conns


def _cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _sleep_until(t: float) -> None:
    delay = t - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


class SmallLoad:
    """Closed loop: every connection sends the next request as soon as the last answer ended."""

    def __init__(self, spec: dict[str, Any]):
        self.spec = spec
        self.request = build_request(spec["port"], spec["path"], spec["body"])
        self.win_start = spec["t0"] + spec["warmup"]
        self.win_end = self.win_start + spec["duration"]
        self.latencies: list[float] = []
        self.errors: Counter[str] = Counter()
        self.requests = 0
        self.open = 0
        self.all_done: asyncio.Future[None] | None = None
        self.loop = asyncio.get_running_loop()

    def start(self, conn: HttpConn) -> None:
        conn.ctx = [time.monotonic(), 0, b""]
        conn.send(self.request)

    def on_head(self, conn: HttpConn, status: int, head: bytes) -> None:
        conn.ctx[1] = status

    def on_body(self, conn: HttpConn, piece: bytes) -> None:
        conn.ctx[2] += piece

    def on_end(self, conn: HttpConn) -> None:
        now = time.monotonic()
        sent, status, body = conn.ctx
        self.requests += 1
        if status != 200 or b'"done":true' not in body:
            self.errors[f"status {status}" if status != 200 else "no done"] += 1
        if self.win_start <= now <= self.win_end:
            self.latencies.append(now - sent)
        if now >= self.win_end:
            self._retire(conn)
        elif conn.close_after:
            self.loop.create_task(self._reopen())
        else:
            self.start(conn)

    def on_lost(self, conn: HttpConn, busy: bool) -> None:
        if busy:
            self.errors["connection lost"] += 1
            self._retire(conn)

    def _retire(self, conn: HttpConn) -> None:
        if conn.ctx is not None:
            conn.ctx = None
            if not conn.closed and conn.transport is not None:
                conn.transport.close()
            self.open -= 1
            if self.open == 0 and self.all_done is not None and not self.all_done.done():
                self.all_done.set_result(None)

    async def _reopen(self) -> None:
        self.open -= 1
        try:
            conn = await _connect(self.loop, self, self.spec["port"])
        except OSError:
            self.errors["connect failed"] += 1
            if self.open == 0 and self.all_done is not None and not self.all_done.done():
                self.all_done.set_result(None)
            return
        self.open += 1
        self.start(conn)

    async def run(self) -> dict[str, Any]:
        conns = await _connect_many(self.loop, self, self.spec["port"], self.spec["conns"])
        self.all_done = self.loop.create_future()
        await _sleep_until(self.spec["t0"])
        self.open = len(conns)
        for conn in conns:
            self.start(conn)
        await _sleep_until(self.win_start)
        cpu0 = _cpu_self()
        await _sleep_until(self.win_end)
        cpu1 = _cpu_self()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.all_done), 30)
        return {"requests": self.requests, "latencies": [round(x, 7) for x in self.latencies],
                "window_requests": len(self.latencies), "errors": dict(self.errors), "cpu": cpu1 - cpu0}


class _Stream:
    __slots__ = ("first", "gaps", "last_at", "last_line", "lines", "sent", "status", "tail")

    def __init__(self) -> None:
        self.sent = time.monotonic()
        self.status = 0
        self.first: float | None = None
        self.last_at = 0.0
        self.lines = 0
        self.tail = b""
        self.last_line = b""
        self.gaps: list[float] | None = None


class StreamLoad:
    """Streams (NDJSON): closed loop for a duration (``duration`` set) or one stream per connection
    started over ``ramp`` seconds. Records TTFT, token lines (in the window), gaps, done lines."""

    def __init__(self, spec: dict[str, Any]):
        self.spec = spec
        port = spec["port"]
        bodies = spec["bodies"]
        self.requests = [build_request(port, spec["path"], b) for b in bodies]
        self.repeat = spec.get("duration") is not None
        self.want_gaps = spec.get("gaps", False)
        t0 = spec["t0"]
        self.win_start = t0 + spec.get("warmup", 0.0)
        self.win_end = self.win_start + spec["duration"] if self.repeat else float("inf")
        self.loop = asyncio.get_running_loop()
        self.ttft: list[float] = []
        self.first_at: list[float] = []
        self.gaps: list[float] = []
        self.durations: list[float] = []
        self.window_lines = 0
        self.window_done = 0
        self.streams = 0
        self.ok = 0
        self.failures: Counter[str] = Counter()
        self.open = 0
        self.all_done: asyncio.Future[None] | None = None

    def start(self, conn: HttpConn) -> None:
        conn.ctx = _Stream()
        if self.want_gaps:
            conn.ctx.gaps = []
        conn.send(self.requests[conn.index % len(self.requests)])  # type: ignore[attr-defined]

    def on_head(self, conn: HttpConn, status: int, head: bytes) -> None:
        conn.ctx.status = status

    def on_body(self, conn: HttpConn, piece: bytes) -> None:
        st: _Stream = conn.ctx
        k = piece.count(b"\n")
        if not k:
            st.tail += piece
            return
        now = time.monotonic()
        if st.first is None:
            st.first = now
            if st.gaps is not None and k > 1:
                st.gaps.extend([0.0] * (k - 1))
        elif st.gaps is not None:
            st.gaps.append(now - st.last_at)
            if k > 1:
                st.gaps.extend([0.0] * (k - 1))
        st.last_at = now
        st.lines += k
        if self.win_start <= now <= self.win_end:
            self.window_lines += k
        end = piece.rfind(b"\n")
        prev = piece.rfind(b"\n", 0, end)
        st.last_line = st.tail + piece[:end] if prev < 0 else piece[prev + 1:end]
        st.tail = piece[end + 1:]

    def on_end(self, conn: HttpConn) -> None:
        now = time.monotonic()
        st: _Stream = conn.ctx
        self.streams += 1
        line = st.last_line
        if st.status != 200:
            self.failures[f"status {st.status}"] += 1
        elif st.tail.strip() or b'"done":true' not in line or b'"error"' in line:
            self.failures["no done line"] += 1
        else:
            self.ok += 1
        if self.win_start <= now <= self.win_end:
            self.window_done += 1
        if st.sent >= self.win_start and st.sent <= self.win_end:
            self.durations.append(now - st.sent)
            if st.first is not None:
                self.ttft.append(st.first - st.sent)
                self.first_at.append(st.first)
            if st.gaps:
                self.gaps.extend(st.gaps[:-1])  # the last entry is the done line's
        if self.repeat and now < self.win_end and not conn.close_after:
            self.start(conn)
        elif self.repeat and now < self.win_end:
            conn.ctx = None  # the server closes this one: carry on on a new connection
            self.loop.create_task(self._reopen(conn.index))  # type: ignore[attr-defined]
            self.open -= 1
        else:
            self._retire(conn)

    def on_lost(self, conn: HttpConn, busy: bool) -> None:
        if busy:
            self.streams += 1
            self.failures["connection lost"] += 1
            self._retire(conn)

    def _retire(self, conn: HttpConn) -> None:
        if conn.ctx is not None:
            conn.ctx = None
            if not conn.closed and conn.transport is not None:
                conn.transport.close()
            self.open -= 1
            if self.open <= 0 and self.all_done is not None and not self.all_done.done():
                self.all_done.set_result(None)

    async def _reopen(self, index: int) -> None:
        try:
            conn = await _connect(self.loop, self, self.spec["port"])
        except OSError:
            self.failures["connect failed"] += 1
            if self.open <= 0 and self.all_done is not None and not self.all_done.done():
                self.all_done.set_result(None)
            return
        conn.index = index  # type: ignore[attr-defined]
        self.open += 1
        self.start(conn)

    async def _start_later(self, conn: HttpConn, at: float) -> None:
        await _sleep_until(at)
        self.start(conn)

    async def run(self) -> dict[str, Any]:
        spec = self.spec
        conns = await _connect_many(self.loop, self, spec["port"], spec["conns"])
        for i, conn in enumerate(conns):
            conn.index = spec.get("offset", 0) + i  # type: ignore[attr-defined]
        self.all_done = self.loop.create_future()
        t0 = spec["t0"]
        await _sleep_until(t0)
        self.open = len(conns)
        ramp, total = spec.get("ramp", 0.0), spec.get("total", len(conns))
        tasks = []
        for conn in conns:
            if ramp > 0:
                tasks.append(self.loop.create_task(self._start_later(conn, t0 + ramp * conn.index / total)))  # type: ignore[attr-defined]
            else:
                self.start(conn)
        cpu0 = _cpu_self()
        if self.repeat:
            await _sleep_until(self.win_start)
            cpu0 = _cpu_self()
            await _sleep_until(self.win_end)
            cpu1 = _cpu_self()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.all_done), spec.get("timeout", 120))
        if not self.repeat:
            cpu1 = _cpu_self()
        unfinished = sum(1 for c in conns if c.ctx is not None)
        if unfinished:
            self.failures["unfinished"] += unfinished
        return {
            "streams": self.streams + unfinished, "ok": self.ok, "failures": dict(self.failures),
            "window_tokens": self.window_lines - self.window_done, "ttft": [round(x, 7) for x in self.ttft],
            "first_at": [round(x, 4) for x in self.first_at], "durations": [round(x, 5) for x in self.durations],
            "gaps": [round(x, 6) for x in self.gaps], "cpu": cpu1 - cpu0,
        }


class _OneShot:
    """Handler for one streamed request on its own connection (the routing workload)."""

    def __init__(self) -> None:
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.status = 0
        self.node = ""
        self.first: float | None = None
        self.last_line = b""
        self.tail = b""
        self.error: str | None = None

    def on_head(self, conn: HttpConn, status: int, head: bytes) -> None:
        self.status = status
        m = re.search(rb"\r\nx-aivonx-node: *([^\r]*)", head)
        if m:
            self.node = m.group(1).decode()

    def on_body(self, conn: HttpConn, piece: bytes) -> None:
        if b"\n" not in piece:
            self.tail += piece
            return
        if self.first is None:
            self.first = time.monotonic()
        end = piece.rfind(b"\n")
        prev = piece.rfind(b"\n", 0, end)
        self.last_line = self.tail + piece[:end] if prev < 0 else piece[prev + 1:end]
        self.tail = piece[end + 1:]

    def on_end(self, conn: HttpConn) -> None:
        if not self.done.done():
            self.done.set_result(None)

    def on_lost(self, conn: HttpConn, busy: bool) -> None:
        if busy:
            self.error = "connection lost"
        if not self.done.done():
            self.done.set_result(None)


async def run_schedule(spec: dict[str, Any]) -> dict[str, Any]:
    """Open loop: each request at its time, on its own connection, to its target port."""
    loop = asyncio.get_running_loop()
    t0 = spec["t0"]
    results: list[dict[str, Any]] = []

    async def one(item: dict[str, Any]) -> None:
        await _sleep_until(t0 + item["at"])
        port = item["port"]
        handler = _OneShot()
        sent = time.monotonic()
        try:
            conn = await _connect(loop, handler, port)
            conn.send(build_request(port, "/api/generate", item["body"]))
            await asyncio.wait_for(handler.done, spec.get("timeout", 600))
        except (OSError, TimeoutError) as exc:
            handler.error = f"{type(exc).__name__}"
        else:
            if conn.transport is not None:
                conn.transport.close()
        end = time.monotonic()
        ok = (handler.error is None and handler.status == 200 and b'"done":true' in handler.last_line
              and b'"error"' not in handler.last_line)
        results.append({
            "i": item["i"], "model": item["model"], "ok": ok, "status": handler.status, "node": handler.node,
            "error": handler.error or (None if ok else handler.last_line[-200:].decode("utf-8", "replace")),
            "ttft": None if handler.first is None else round(handler.first - sent, 5),
            "total": round(end - sent, 5), "lateness": round(sent - (t0 + item["at"]), 5),
        })

    await asyncio.gather(*(one(item) for item in spec["schedule"]))
    return {"results": sorted(results, key=lambda x: x["i"])}


class _PacerConn(asyncio.Protocol):
    """A minimal paced Ollama node: ``/api/generate`` streams ``tokens`` NDJSON lines, the k-th at
    k/``tps`` seconds (fixed schedule, no drift), then the done line; probes get tags/version/ps.

    Section 3 needs 20,000 separately written lines per second; the full simulator costs tens of
    µs per paced line and cannot do that on the core it shares with the load generator (its own
    direct gaps then reach hundreds of ms), so the pacing here is one timer and one send per line.
    """

    def __init__(self, spec: dict[str, Any], lines: list[bytes], final: bytes, info: dict[str, bytes]):
        self.spec = spec
        self.lines = lines
        self.final = final
        self.info = info
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].lower()
            i = head.find(b"\r\ncontent-length:")
            length = int(head[i + 17:head.find(b"\r\n", i + 2) if head.find(b"\r\n", i + 2) > 0 else len(head)]) \
                if i >= 0 else 0
            if len(self.buf) < end + 4 + length:
                return
            self.buf = self.buf[end + 4 + length:]
            path = head.split(b" ", 2)[1]
            self.answer(head.split(b" ", 1)[0], path)

    def answer(self, method: bytes, path: bytes) -> None:
        assert self.transport is not None
        if method == b"post" and path == b"/api/generate":
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n"
                                 b"Transfer-Encoding: chunked\r\n\r\n")
            self.start = self.loop.time()
            self.timer = self.loop.call_at(self.start + 1 / self.spec["tps"], self.tick, 0)
            return
        body = self.info.get(path.decode(), b'{"error":"404 page not found"}')
        status = b"200 OK" if path.decode() in self.info else b"404 Not Found"
        self.transport.write(b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json; charset=utf-8\r\n"
                             b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)

    def tick(self, k: int) -> None:
        self.timer = None
        if self.transport is None:
            return
        if k + 1 < len(self.lines):
            self.transport.write(self.lines[k])
            self.timer = self.loop.call_at(self.start + (k + 2) / self.spec["tps"], self.tick, k + 1)
        else:
            # The done line follows the last token at once, as on a real node.
            self.transport.write(self.lines[k] + self.final)


async def run_pacer(spec: dict[str, Any]) -> None:
    model, tokens = spec["model"], spec["tokens"]

    def chunk(obj: dict[str, Any]) -> bytes:
        data = json.dumps(obj, separators=(",", ":")).encode() + b"\n"
        return f"{len(data):x}\r\n".encode() + data + b"\r\n"

    words = ("The", " sky", " is", " blue", " because", " of", " Rayleigh", " scattering", ".")
    lines = [chunk({"model": model, "created_at": "2026-01-01T00:00:00Z", "response": words[k % len(words)],
                    "done": False}) for k in range(tokens)]
    final = chunk({"model": model, "created_at": "2026-01-01T00:00:00Z", "response": "", "done": True,
                   "done_reason": "stop", "prompt_eval_count": 6, "eval_count": tokens}) + b"0\r\n\r\n"
    entry = {"name": model, "model": model, "modified_at": "2026-01-01T00:00:00Z", "size": 1,
             "digest": "0" * 64, "details": {}}
    info = {"/api/version": b'{"version":"0.33.0"}', "/api/ps": b'{"models":[]}',
            "/api/tags": json.dumps({"models": [entry]}).encode(), "/": b'"Ollama is running"'}
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _PacerConn(spec, lines, final, info), HOST, spec["port"], backlog=4096)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()


async def run_bare_relay(spec: dict[str, Any]) -> None:
    """The issue's baseline: a bare Tornado relay (no routing, auth, accounting or logging) on
    ``CurlAsyncHTTPClient`` or ``SimpleAsyncHTTPClient``, every answer streamed through as it arrives."""
    from tornado import httpclient, httpserver, netutil, web

    if spec["client"] == "curl":
        httpclient.AsyncHTTPClient.configure("tornado.curl_httpclient.CurlAsyncHTTPClient", max_clients=4096)
    else:
        httpclient.AsyncHTTPClient.configure(None, max_clients=4096)
    client = httpclient.AsyncHTTPClient()
    upstream = spec["upstream"]

    class Relay(web.RequestHandler):
        async def post(self) -> None:
            held: list[bytes] = []
            headers_done = False

            def on_header(line: str) -> None:
                nonlocal headers_done
                if line.startswith("HTTP/"):
                    self.set_status(int(line.split()[1]))
                elif line.strip() == "":
                    # curl hands over header lines via callbacks: the body may come first; hold it.
                    headers_done = True
                    for chunk in held:
                        self.write(chunk)
                    held.clear()
                elif line.lower().startswith("content-type:"):
                    self.set_header("Content-Type", line.split(":", 1)[1].strip())

            def on_chunk(chunk: bytes) -> None:
                if not headers_done:
                    held.append(chunk)
                    return
                self.write(chunk)
                self.flush()

            request = httpclient.HTTPRequest(
                upstream + self.request.path, method="POST", body=self.request.body,
                headers={"Content-Type": "application/json"}, header_callback=on_header,
                streaming_callback=on_chunk, connect_timeout=5, request_timeout=3600)
            await client.fetch(request, raise_error=False)
            for chunk in held:
                self.write(chunk)
            self.finish()

    sockets = netutil.bind_sockets(spec["port"], HOST)
    for sock in sockets:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    server = httpserver.HTTPServer(web.Application([(r"/.*", Relay)]))
    server.add_sockets(sockets)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def run_multisim(spec: dict[str, Any]) -> None:
    """Many tiny fast simulated nodes in one process (memory per registered node)."""
    sys.path.insert(0, str(REPO))
    from app.simulator import SimulatorOptions, start_simulator

    nodes = [await start_simulator(SimulatorOptions(models=["tiny"], fast=True), HOST, 0)
             for _ in range(spec["count"])]
    print(json.dumps({"ports": [n.port for n in nodes]}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def worker_main() -> int:
    raise_nofile()
    spec = json.loads(sys.stdin.read())
    mode = spec["mode"]
    if mode == "multisim":
        asyncio.run(run_multisim(spec))
        return 0
    if mode == "relay":
        asyncio.run(run_bare_relay(spec))
        return 0
    if mode == "pacer":
        asyncio.run(run_pacer(spec))
        return 0

    async def main() -> dict[str, Any]:
        if mode == "small":
            return await SmallLoad(spec).run()
        if mode == "stream":
            return await StreamLoad(spec).run()
        if mode == "schedule":
            return await run_schedule(spec)
        raise ValueError(mode)

    result = asyncio.run(main())
    # A file, not stdout: results can be megabytes, more than a pipe holds while nobody reads it.
    Path(spec["result"]).write_text(json.dumps(result))
    return 0


# ----------------------------------------------------------------------------------------------
# Orchestrator: processes, cores, services
# ----------------------------------------------------------------------------------------------


class Layout:
    """Which CPU each kind of process runs on (``None``: not pinned)."""

    def __init__(self) -> None:
        cpus = sorted(os.sched_getaffinity(0))
        self.taskset = shutil.which("taskset") is not None
        if len(cpus) >= 2 and self.taskset:
            self.proxy: str | None = str(cpus[0])
            self.node: str | None = str(cpus[1])
            self.loadgen: list[str | None] = [str(c) for c in cpus[2:]] or [str(cpus[1])]
            self.note = (f"proxy/nginx alone on CPU {cpus[0]}, simulated node(s) on CPU {cpus[1]}, "
                         f"load generator on CPU {', '.join(c for c in self.loadgen if c)}")
        else:
            self.proxy = self.node = None
            self.loadgen = [None]
            self.note = ("not pinned (" + ("one CPU" if len(cpus) < 2 else "no taskset") +
                         "): proxy, node and load generator compete for the same CPU")
        self.cpus = len(cpus)

    def describe(self) -> dict[str, Any]:
        return {"cpus": self.cpus, "proxy": self.proxy, "node": self.node, "loadgen": self.loadgen,
                "note": self.note}


class Service:
    def __init__(self, name: str, proc: subprocess.Popen[Any], port: int, pids: list[int] | None = None):
        self.name = name
        self.proc = proc
        self.port = port
        self.pids = pids or [proc.pid]
        self.password: str | None = None
        self._token: str | None = None

    def state(self) -> dict[str, Any] | None:
        """The proxy's ``/api/proxy/state`` as admin; ``None`` when the management API is not there."""
        if self._token is None and self.password:
            status, body = http_json(self.port, "POST", "/api/auth/login",
                                     {"username": "admin", "password": self.password}, timeout=10)
            self._token = body.get("access") if status == 200 and isinstance(body, dict) else ""
        if not self._token:
            return None
        status, body = http_json(self.port, "GET", "/api/proxy/state", timeout=10, token=self._token)
        return body if status == 200 and isinstance(body, dict) else None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"


class Bench:
    def __init__(self, plan: Plan, out: Path, quick: bool, use_nginx: bool, profile: bool):
        self.plan = plan
        self.out = out
        self.quick = quick
        self.layout = Layout()
        self.tmp = Path(tempfile.mkdtemp(prefix="aivonx-bench-"))
        self.procs: list[subprocess.Popen[Any]] = []
        self.nginx = shutil.which("nginx") if use_nginx else None
        self.wrk = shutil.which("wrk")
        self.pyspy = shutil.which("py-spy") if profile else None
        self.results: dict[str, Any] = {}
        self.warnings: list[str] = []
        self.waits: list[float] = []
        self.cpu_of: dict[int, str | None] = {}
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("AIVONX_")}
        self.env["PYTHONPATH"] = str(REPO) + os.pathsep + self.env.get("PYTHONPATH", "")
        self.env["PYTHONUNBUFFERED"] = "1"

    # -- processes ------------------------------------------------------------------------------

    def spawn(self, name: str, argv: list[str], *, cpu: str | None, env: dict[str, str] | None = None,
              stdin: Any = subprocess.DEVNULL, stdout: Any = None) -> subprocess.Popen[Any]:
        if cpu is not None:
            argv = ["taskset", "-c", cpu, *argv]
        log = open(self.tmp / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
        try:
            proc = subprocess.Popen(argv, cwd=REPO, env=env or self.env, stdin=stdin,
                                    stdout=log if stdout is None else stdout, stderr=log,
                                    start_new_session=True)
        finally:
            log.close()
        self.procs.append(proc)
        self.cpu_of[proc.pid] = cpu
        return proc

    def stop(self, proc: subprocess.Popen[Any], grace: float = 10.0) -> None:
        """SIGTERM to the process group, then SIGKILL after ``grace`` seconds."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        # Children that outlived their leader (nginx workers) share its group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self) -> None:
        for proc in list(reversed(self.procs)):
            with contextlib.suppress(Exception):
                self.stop(proc, grace=5.0)

    def log_tail(self, name: str, lines: int = 15) -> str:
        path = self.tmp / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def wait_ready(self, svc: Service, check: Any, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if svc.proc.poll() is not None:
                raise RuntimeError(f"{svc.name} exited ({svc.proc.returncode}):\n{self.log_tail(svc.name)}")
            try:
                if check():
                    return
            except (OSError, http.client.HTTPException, ValueError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{svc.name} not ready after {timeout:g}s:\n{self.log_tail(svc.name)}")
            time.sleep(0.1)

    def start_node(self, name: str, *, models: list[str], fast: bool = False, tokens: int = 20,
                   tps: float = 50.0, parallel: int = 1, max_loaded: int = 3, load_time: float = 1.0,
                   max_queue: int = 512) -> Service:
        port = free_port()
        argv = [sys.executable, "-m", "app", "simulate", "--host", HOST, "--port", str(port),
                "--models", ",".join(models), "--tokens", str(tokens), "--tokens-per-second", str(tps),
                "--num-parallel", str(parallel), "--max-loaded", str(max_loaded), "--load-time", str(load_time),
                "--max-queue", str(max_queue), "--prompt-tokens-per-second", "1000000"]
        if fast:
            argv.append("--fast")
        svc = Service(name, self.spawn(name, argv, cpu=self.layout.node), port)
        self.wait_ready(svc, lambda: http_json(port, "GET", "/api/version", timeout=2)[0] == 200)
        return svc

    def start_proxy(self, name: str, nodes: list[str], *, models: int = 1, config: dict[str, Any] | None = None,
                    env: dict[str, str] | None = None) -> Service:
        port = free_port()
        data, logs = self.tmp / name / "data", self.tmp / name / "logs"
        data.mkdir(parents=True, exist_ok=True)
        password = secrets.token_urlsafe(16)
        asyncio.run(_prepare_store(data, config, password))
        penv = {**self.env, "AIVONX_ADMIN_PASSWORD": password, "AIVONX_NODE": ",".join(nodes), **(env or {})}
        argv = [sys.executable, "-m", "app", "serve", "--host", HOST, "--port", str(port),
                "--data-dir", str(data), "--log-dir", str(logs)]
        svc = Service(name, self.spawn(name, argv, cpu=self.layout.proxy, env=penv), port)
        svc.password = password

        def ready() -> bool:
            status, body = http_json(port, "GET", "/api/tags", timeout=5)
            return status == 200 and len(body.get("models", [])) >= models

        self.wait_ready(svc, ready, timeout=90)
        return svc

    def start_nginx(self, name: str, upstream: Service) -> Service | None:
        if not self.nginx:
            return None
        port = free_port()
        root = self.tmp / name
        for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        conf = root / "nginx.conf"
        conf.write_text(NGINX_CONF.format(root=root, port=port, upstream=upstream.port, host=HOST))
        argv = [self.nginx, "-p", str(root), "-c", str(conf), "-e", str(root / "error.log")]
        proc = self.spawn(name, argv, cpu=self.layout.proxy)
        svc = Service(name, proc, port)
        try:
            self.wait_ready(svc, lambda: http_json(port, "GET", "/api/version", timeout=2)[0] == 200, timeout=15)
        except RuntimeError as exc:
            self.warn(f"nginx did not start, skipped: {exc}")
            self.stop(proc)
            return None
        svc.pids = [proc.pid, *children_of(proc.pid)]
        return svc

    def start_pacer(self, name: str, *, tokens: int, tps: float) -> Service:
        port = free_port()
        proc = self.spawn(name, [sys.executable, str(Path(__file__).resolve()), "--worker"], cpu=self.layout.node,
                          stdin=subprocess.PIPE)
        assert proc.stdin is not None
        proc.stdin.write(json.dumps({"mode": "pacer", "port": port, "tokens": tokens, "tps": tps,
                                     "model": "pace"}).encode())
        proc.stdin.close()
        svc = Service(name, proc, port)
        self.wait_ready(svc, lambda: http_json(port, "GET", "/api/version", timeout=2)[0] == 200, timeout=20)
        return svc

    def start_bare_relay(self, client: str, upstream: Service) -> Service | None:
        """The issue's bare relay baseline (curl needs pycurl; skipped without it)."""
        if client == "curl":
            try:
                import pycurl  # noqa: F401
            except ImportError:
                if not self.quick:
                    self.warn("pycurl is not installed: no bare curl relay baseline in this run "
                              "(pip install -e '.[bench]')")
                return None
        port = free_port()
        name = f"{client}-relay"
        proc = self.spawn(name, [sys.executable, str(Path(__file__).resolve()), "--worker"], cpu=self.layout.proxy,
                          stdin=subprocess.PIPE)
        assert proc.stdin is not None
        proc.stdin.write(json.dumps({"mode": "relay", "client": client, "port": port,
                                     "upstream": upstream.url}).encode())
        proc.stdin.close()
        svc = Service(name, proc, port)
        body = {"model": "bench", "prompt": "hi", "stream": False, "options": {"num_predict": 1}}
        self.wait_ready(svc, lambda: http_json(port, "POST", "/api/generate", body, timeout=2)[0] == 200, timeout=20)
        return svc

    def warn(self, text: str) -> None:
        self.warnings.append(text)
        print(f"\n!!! WARNING: {text}\n", flush=True)

    # -- running the load generator ------------------------------------------------------------

    def run_workers(self, spec: dict[str, Any], conns: int, *, watch: list[int], rss_pid: int | None = None,
                    setup: float | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Run the generator in one process per load-generator CPU; measure ``watch`` CPU over the window."""
        nproc = max(1, min(len(self.layout.loadgen), conns))
        t0 = time.monotonic() + (setup if setup is not None else 0.5 + conns * 0.003)
        spec = {**spec, "t0": t0, "total": conns}
        workers = []
        offset = 0
        for i in range(nproc):
            share = conns // nproc + (1 if i < conns % nproc else 0)
            result = self.tmp / f"loadgen-{i}.json"
            result.unlink(missing_ok=True)
            wspec = {**spec, "conns": share, "offset": offset, "result": str(result)}
            offset += share
            proc = self.spawn(f"loadgen-{i}", [sys.executable, str(Path(__file__).resolve()), "--worker"],
                              cpu=self.layout.loadgen[i % len(self.layout.loadgen)], stdin=subprocess.PIPE)
            assert proc.stdin is not None
            proc.stdin.write(json.dumps(wspec).encode())
            proc.stdin.close()
            workers.append(proc)
        closed_loop = spec.get("duration") is not None
        start = t0 + spec.get("warmup", 0.0) if closed_loop else t0
        _sleep_to(start)
        cpu0 = cpu_seconds(watch)
        wait0 = run_wait(watch)
        rss: list[int] = []
        if closed_loop:
            end = start + spec["duration"]
            while time.monotonic() < end:
                if rss_pid:
                    rss.append(rss_bytes([rss_pid]))
                time.sleep(min(0.2, max(0.0, end - time.monotonic())))
            cpu1 = cpu_seconds(watch)
            elapsed = spec["duration"]
        else:
            while any(w.poll() is None for w in workers):
                if rss_pid:
                    rss.append(rss_bytes([rss_pid]))
                time.sleep(0.1)
            cpu1 = cpu_seconds(watch)
            elapsed = time.monotonic() - start
        waited = r((run_wait(watch) - wait0) / elapsed, 3) if watch else None
        outputs = []
        for i, proc in enumerate(workers):
            try:
                proc.wait(timeout=900)
            finally:
                self.stop(proc)
            result = self.tmp / f"loadgen-{i}.json"
            if proc.returncode != 0 or not result.exists():
                raise RuntimeError(f"load generator failed ({proc.returncode}):\n{self.log_tail(f'loadgen-{i}')}")
            outputs.append(json.loads(result.read_text()))
        if waited is not None and self.cpu_of.get(watch[0], "-") == self.layout.proxy:
            self.waits.append(waited)  # a path through the proxy's CPU
        return outputs, {"cpu": cpu1 - cpu0, "elapsed": elapsed, "rss": rss, "cpu_wait": waited}

    # -- section 1 --------------------------------------------------------------------------------

    def section_small(self) -> None:
        plan = self.plan
        print("\n== 1. small requests ==", flush=True)
        node = self.start_node("node-fast", models=["bench"], fast=True, tokens=plan.stream_tokens)
        proxy = self.start_proxy("proxy-1", [node.url])
        nginx = self.start_nginx("nginx-1", node)
        relays = [self.start_bare_relay("curl", node)]
        if not self.quick or relays[0] is None:
            relays.append(self.start_bare_relay("simple", node))
        self.fast_services = (node, proxy, nginx, *relays)
        self.fast_paths = [("direct", node), ("proxy", proxy)] + ([("nginx", nginx)] if nginx else []) + [
            (svc.name, svc) for svc in relays if svc is not None]
        body = json.dumps({"model": "bench", "prompt": "Why is the sky blue?", "stream": False,
                           "options": {"num_predict": plan.small_num_predict}})
        status, reply = http_raw(proxy.port, "POST", "/api/generate", json.loads(body))
        if status != 200:
            raise RuntimeError(f"proxy answered {status}: {reply[:300]!r}")
        size = len(reply)
        paths = self.fast_paths
        rows = []
        for c in plan.small_concurrency:
            for label, svc in paths:
                spec = {"mode": "small", "port": svc.port, "path": "/api/generate", "body": body,
                        "warmup": plan.warmup, "duration": plan.duration}
                outs, m = self.run_workers(spec, c, watch=svc.pids)
                lat = [x for o in outs for x in o["latencies"]]
                n = sum(o["window_requests"] for o in outs)
                errors: Counter[str] = Counter()
                for o in outs:
                    errors.update(o["errors"])
                gen_cpu = sum(o["cpu"] for o in outs)
                row = {
                    "path": label, "concurrency": c, "requests": n, "rps": r(n / m["elapsed"], 1),
                    "p50_ms": ms(pct(lat, 50), 3), "p99_ms": ms(pct(lat, 99), 3),
                    "cpu_us_per_req": None if label == "direct" or not n else r(m["cpu"] / n * 1e6, 1),
                    "cpu_util": None if label == "direct" else r(m["cpu"] / m["elapsed"], 3),
                    "loadgen_cpu_us_per_req": r(gen_cpu / n * 1e6, 1) if n else None,
                    "loadgen_util": r(gen_cpu / m["elapsed"], 3),
                    "errors": sum(errors.values()), "error_kinds": dict(errors),
                    "cpu_wait": None if label == "direct" else m["cpu_wait"],
                }
                rows.append(row)
                print(f"  c={c:<4} {label:<7} {row['rps']:>9} req/s  p50 {row['p50_ms']} ms  p99 {row['p99_ms']} ms  "
                      f"cpu {row['cpu_us_per_req']} µs/req  gen {row['loadgen_cpu_us_per_req']} µs/req  "
                      f"errors {row['errors']}", flush=True)
        for row in rows:
            direct = next(x for x in rows if x["path"] == "direct" and x["concurrency"] == row["concurrency"])
            if row["path"] != "direct":
                row["added_p50_ms"] = r(row["p50_ms"] - direct["p50_ms"], 3) if row["p50_ms"] is not None else None
                if row["rps"] >= direct["rps"]:
                    self.warn(f"small c={row['concurrency']}: {row['path']} {row['rps']} req/s >= direct "
                              f"{direct['rps']} req/s — the load generator or the node may be the limit")
        self.results["small"] = {"reply_bytes": size, "request": json.loads(body), "rows": rows}
        if self.wrk and not self.quick:
            self.results["small"]["wrk"] = self.wrk_check(body, [(k, v) for k, v in paths if k != "simple-relay"])

    def wrk_check(self, body: str, paths: list[tuple[str, Service]]) -> list[dict[str, Any]]:
        """The same small request with wrk (C), as a check on the Python generator."""
        c = self.plan.wrk_concurrency
        lua = self.tmp / "post.lua"
        lua.write_text(WRK_LUA.format(body=body.replace("\\", "\\\\").replace("'", "\\'")))
        rows = []
        for label, svc in paths:
            cpu = self.layout.loadgen[0]
            argv = [self.wrk, "-t1", f"-c{c}", f"-d{max(1, round(self.plan.duration))}s", "--latency", "-s", str(lua),
                    f"{svc.url}/api/generate"]
            if cpu is not None:
                argv = ["taskset", "-c", cpu, *argv]
            cpu0 = cpu_seconds(svc.pids)
            t = time.monotonic()
            out = subprocess.run(argv, capture_output=True, text=True, timeout=self.plan.duration + 60).stdout
            elapsed = time.monotonic() - t
            cpu1 = cpu_seconds(svc.pids)
            row = _parse_wrk(out)
            row.update({"path": label, "concurrency": c})
            if label != "direct" and row.get("requests"):
                row["cpu_us_per_req"] = r((cpu1 - cpu0) / row["requests"] * 1e6, 1)
                row["cpu_window_s"] = r(elapsed, 2)
            rows.append(row)
            print(f"  wrk c={c} {label:<7} {row.get('rps')} req/s  p50 {row.get('p50_ms')} ms  "
                  f"p99 {row.get('p99_ms')} ms  cpu {row.get('cpu_us_per_req')} µs/req", flush=True)
        return rows

    # -- section 2 --------------------------------------------------------------------------------

    def section_streams(self) -> None:
        plan = self.plan
        print("\n== 2. streaming relay ==", flush=True)
        body = json.dumps({"model": "bench", "prompt": "Tell me a story.", "stream": True})
        paths = self.fast_paths
        rows = []
        for c in plan.stream_concurrency:
            for label, svc in paths:
                spec = {"mode": "stream", "port": svc.port, "path": "/api/generate", "bodies": [body],
                        "warmup": plan.warmup, "duration": plan.duration}
                outs, m = self.run_workers(spec, c, watch=svc.pids)
                ttft = [x for o in outs for x in o["ttft"]]
                tokens = sum(o["window_tokens"] for o in outs)
                failures: Counter[str] = Counter()
                for o in outs:
                    failures.update(o["failures"])
                streams = sum(o["streams"] for o in outs)
                gen_cpu = sum(o["cpu"] for o in outs)
                row = {
                    "path": label, "streams": c, "tokens_per_s": r(tokens / m["elapsed"], 0),
                    "ttft_p50_ms": ms(pct(ttft, 50), 3), "ttft_p99_ms": ms(pct(ttft, 99), 3),
                    "cpu_us_per_token": None if label == "direct" or not tokens else r(m["cpu"] / tokens * 1e6, 2),
                    "cpu_util": None if label == "direct" else r(m["cpu"] / m["elapsed"], 3),
                    "loadgen_cpu_us_per_token": r(gen_cpu / tokens * 1e6, 2) if tokens else None,
                    "streams_total": streams, "streams_done": sum(o["ok"] for o in outs),
                    "failures": sum(failures.values()), "failure_kinds": dict(failures),
                    "cpu_wait": None if label == "direct" else m["cpu_wait"],
                }
                rows.append(row)
                print(f"  {c:>4} streams {label:<7} {row['tokens_per_s']:>9} tok/s  TTFT p50 {row['ttft_p50_ms']} ms "
                      f"p99 {row['ttft_p99_ms']} ms  cpu {row['cpu_us_per_token']} µs/tok  "
                      f"done {row['streams_done']}/{streams}", flush=True)
        for row in rows:
            direct = next(x for x in rows if x["path"] == "direct" and x["streams"] == row["streams"])
            if row["path"] != "direct":
                if row["ttft_p50_ms"] is not None and direct["ttft_p50_ms"] is not None:
                    row["ttft_added_p50_ms"] = r(row["ttft_p50_ms"] - direct["ttft_p50_ms"], 3)
                if row["tokens_per_s"] >= direct["tokens_per_s"]:
                    self.warn(f"streams c={row['streams']}: {row['path']} {row['tokens_per_s']} tok/s >= direct "
                              f"{direct['tokens_per_s']} tok/s — the load generator or the node may be the limit")
        self.results["streams"] = {"tokens_per_stream": plan.stream_tokens, "rows": rows}

    # -- profiling ---------------------------------------------------------------------------------

    def profile_proxy(self) -> None:
        """py-spy on the proxy under small-request and streaming load (separate, unmeasured runs)."""
        if not self.pyspy:
            return
        print("\n== profile (py-spy) ==", flush=True)
        proxy = self.fast_services[1]
        plan = self.plan
        runs = {
            "small": ({"mode": "small", "port": proxy.port, "path": "/api/generate",
                       "body": json.dumps({"model": "bench", "prompt": "Why is the sky blue?", "stream": False,
                                           "options": {"num_predict": plan.small_num_predict}})},
                      max(plan.small_concurrency[:2])),
            "stream": ({"mode": "stream", "port": proxy.port, "path": "/api/generate",
                        "bodies": [json.dumps({"model": "bench", "prompt": "Tell me a story.", "stream": True})]},
                       plan.stream_concurrency[min(1, len(plan.stream_concurrency) - 1)]),
        }
        report = {}
        for name, (spec, c) in runs.items():
            raw = self.out / f"profile-{name}.txt"
            seconds = plan.duration + plan.warmup
            spy = subprocess.Popen([self.pyspy, "record", "--pid", str(proxy.proc.pid), "--duration",
                                    str(math.ceil(seconds)), "--rate", "200", "--format", "raw", "--output", str(raw),
                                    "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   start_new_session=True)
            self.procs.append(spy)
            try:
                self.run_workers({**spec, "warmup": 0.0, "duration": seconds}, c, watch=[])  # py-spy pauses it
                spy.wait(30)
            finally:
                self.stop(spy)
            report[name] = summarise_profile(raw) if raw.exists() else {"error": "py-spy wrote nothing"}
            report[name]["concurrency"] = c
            report[name]["raw"] = raw.name
            print(f"  {name} (c={c}): top self time:", flush=True)
            for entry in report[name].get("self", [])[:8]:
                print(f"    {entry['share']:6.1%}  {entry['frame']}", flush=True)
        self.results["profile"] = report

    # -- section 3 --------------------------------------------------------------------------------

    def section_long(self) -> None:
        plan = self.plan
        print("\n== 3. many long streams ==", flush=True)
        n = plan.long_streams
        node = self.start_pacer("node-paced", tokens=plan.long_tokens, tps=plan.long_tps)
        proxy = self.start_proxy("proxy-3", [node.url])
        nginx = self.start_nginx("nginx-3", node)
        pacing = 1.0 / plan.long_tps
        bodies = [json.dumps({"model": "pace", "prompt": "Tell me a long story."})]
        rows = []
        paths = [("direct", node), ("proxy", proxy)] + ([("nginx", nginx)] if nginx else [])
        for label, svc in paths:
            rss_before = rss_bytes([svc.pids[0]]) if label == "proxy" else None
            spec = {"mode": "stream", "port": svc.port, "path": "/api/generate", "bodies": bodies, "gaps": True,
                    "ramp": plan.long_ramp, "timeout": plan.long_tokens * pacing * 4 + 60}
            outs, m = self.run_workers(spec, n, watch=svc.pids, rss_pid=svc.pids[0] if label == "proxy" else None,
                                       setup=1.0 + n * 0.004)
            gaps = [x for o in outs for x in o["gaps"]]
            ttft = [x for o in outs for x in o["ttft"]]
            failures: Counter[str] = Counter()
            for o in outs:
                failures.update(o["failures"])
            tokens = sum(o["window_tokens"] for o in outs)
            row = {
                "path": label, "streams": n, "pacing_ms": ms(pacing, 1),
                "gap_p50_ms": ms(pct(gaps, 50), 2), "gap_p99_ms": ms(pct(gaps, 99), 2),
                "gap_max_ms": ms(max(gaps) if gaps else None, 2),
                "ttft_p50_ms": ms(pct(ttft, 50), 2), "ttft_p99_ms": ms(pct(ttft, 99), 2),
                "tokens": tokens, "elapsed_s": r(m["elapsed"], 2),
                "cpu_us_per_token": None if label == "direct" or not tokens else r(m["cpu"] / tokens * 1e6, 2),
                "cpu_util": None if label == "direct" else r(m["cpu"] / m["elapsed"], 3),
                "streams_done": sum(o["ok"] for o in outs), "errors": sum(failures.values()),
                "error_kinds": dict(failures), "cpu_wait": None if label == "direct" else m["cpu_wait"],
            }
            if label == "proxy":
                row["rss_before_mb"] = r(rss_before / 2**20, 1)
                row["rss_peak_mb"] = r(max(m["rss"]) / 2**20, 1) if m["rss"] else None
            rows.append(row)
            print(f"  {label:<7} gap p50 {row['gap_p50_ms']} ms  p99 {row['gap_p99_ms']} ms  max {row['gap_max_ms']} ms"
                  f"  cpu {row['cpu_us_per_token']} µs/tok  rss {row.get('rss_peak_mb')} MB  "
                  f"done {row['streams_done']}/{n}  errors {row['errors']}", flush=True)
        for svc in filter(None, (nginx, proxy, node)):
            self.stop(svc.proc)
        self.results["long"] = {"tokens_per_stream": plan.long_tokens, "tokens_per_second": plan.long_tps,
                                "ramp_s": plan.long_ramp, "node": "minimal paced node (bench.py)", "rows": rows}

    # -- section 4 --------------------------------------------------------------------------------

    def section_routing(self) -> None:
        plan = self.plan
        print("\n== 4. routing quality ==", flush=True)
        rng = random.Random(7)
        names = [m for m, _ in plan.route_models]
        weights = [w for _, w in plan.route_models]
        schedule = []
        t = 0.0
        while True:
            t += rng.expovariate(plan.route_rate)
            if t > plan.route_duration:
                break
            model = rng.choices(names, weights)[0]
            schedule.append({"i": len(schedule), "at": round(t, 4), "model": model,
                             "num_predict": rng.randint(*plan.route_tokens), "pick": rng.random()})
        capacity = sum(n.num_parallel * n.tokens_per_second / (1 + 0.25 * (n.num_parallel - 1))
                       for n in plan.route_nodes)
        demand = plan.route_rate * sum(plan.route_tokens) / 2
        runs = {}
        for strategy in (*plan.route_strategies, "blind_random"):
            runs[strategy] = self._routing_run(strategy, schedule)
            s = runs[strategy]
            print(f"  {strategy:<15} mean {s['mean_s']} s  p95 {s['p95_s']} s  TTFT mean {s['ttft_mean_s']} s  "
                  f"cold loads {s['cold_loads']}  failed {s['failed']}/{s['requests']}", flush=True)
        base = runs["random"] if "random" in runs else runs["blind_random"]
        for s in runs.values():
            s["mean_vs_random"] = r(s["mean_s"] / base["mean_s"], 3) if base["mean_s"] else None
            s["p95_vs_random"] = r(s["p95_s"] / base["p95_s"], 3) if base["p95_s"] else None
            s["mean_vs_blind"] = r(s["mean_s"] / runs["blind_random"]["mean_s"], 3)
            s["p95_vs_blind"] = r(s["p95_s"] / runs["blind_random"]["p95_s"], 3)
        self.results["routing"] = {
            "fleet": [asdict(n) for n in plan.route_nodes], "models": dict(plan.route_models),
            "load_time_s": plan.route_load_time, "arrival_rate": plan.route_rate, "requests": len(schedule),
            "tokens": list(plan.route_tokens), "health_interval_s": plan.route_health_interval,
            "utilisation": r(demand / capacity, 2), "runs": runs,
        }

    def _routing_run(self, strategy: str, schedule: list[dict[str, Any]]) -> dict[str, Any]:
        plan = self.plan
        models = [m for m, _ in plan.route_models]
        nodes = []
        proxy = None
        try:
            for spec in plan.route_nodes:
                nodes.append(self.start_node(f"route-{spec.name}", models=models, tokens=max(plan.route_tokens),
                                             tps=spec.tokens_per_second, parallel=spec.num_parallel,
                                             max_loaded=spec.max_loaded, load_time=plan.route_load_time))
            _preload(nodes, plan.route_nodes)
            for node in nodes:
                http_json(node.port, "DELETE", "/_sim/stats")
            if strategy != "blind_random":
                config = {"strategy": strategy, "health_interval": plan.route_health_interval}
                proxy = self.start_proxy(f"proxy-route-{strategy}", [n.url for n in nodes], models=len(models),
                                         config=config)
                want = sum(len(n.preload) for n in plan.route_nodes)

                def loaded_known() -> bool:
                    body = proxy.state()
                    if body is None:  # no management API: give the first probe time instead
                        time.sleep(1.0)
                        return True
                    return sum(len(n.get("loaded_models", [])) for n in body.get("nodes", [])) >= want

                self.wait_ready(proxy, loaded_known, timeout=30)
            items = []
            for item in schedule:
                port = proxy.port if proxy else nodes[int(item["pick"] * len(nodes))].port
                body = json.dumps({"model": item["model"], "prompt": f"Request {item['i']}: tell me something.",
                                   "options": {"num_predict": item["num_predict"]}})
                items.append({"i": item["i"], "at": item["at"], "model": item["model"], "port": port, "body": body})
            spec = {"mode": "schedule", "schedule": items, "timeout": 900}
            outs, m = self.run_workers(spec, 1, watch=[], setup=1.0)
            results = outs[0]["results"]
            loads = sum(http_json(n.port, "GET", "/_sim/stats")[1]["loads"] for n in nodes)
        finally:
            if proxy:
                self.stop(proxy.proc)
            for node in nodes:
                self.stop(node.proc)
        ok = [x for x in results if x["ok"]]
        totals = [x["total"] for x in ok]
        ttfts = [x["ttft"] for x in ok if x["ttft"] is not None]
        names = {f"127.0.0.1-{n.port}": spec.name for n, spec in zip(nodes, plan.route_nodes, strict=True)}
        per_node = Counter(names.get(x["node"], x["node"] or "?") for x in ok) if proxy else None
        failed = [x for x in results if not x["ok"]]
        if failed:
            self.warn(f"routing {strategy}: {len(failed)} request(s) failed, e.g. {failed[0]['error']}")
        return {
            "requests": len(results), "failed": len(failed), "mean_s": r(mean(totals), 3),
            "p95_s": r(pct(totals, 95), 3), "p50_s": r(pct(totals, 50), 3), "ttft_mean_s": r(mean(ttfts), 3),
            "ttft_p95_s": r(pct(ttfts, 95), 3), "cold_loads": loads, "elapsed_s": r(m["elapsed"], 1),
            "served_by": dict(per_node) if per_node is not None else None,
        }

    # -- section 5 --------------------------------------------------------------------------------

    def section_memory(self) -> None:
        plan = self.plan
        print("\n== 5. memory ==", flush=True)
        n = plan.idle_streams
        node = self.start_pacer("node-idle", tokens=2, tps=plan.idle_tps)
        proxy = self.start_proxy("proxy-5", [node.url])
        body = json.dumps({"model": "pace", "prompt": "Say something, slowly."})
        for _ in range(3):
            http_json(proxy.port, "GET", "/api/tags")
        time.sleep(0.5)
        base = rss_bytes([proxy.proc.pid])
        interval = 1.0 / plan.idle_tps
        ramp = min(0.5, interval * 0.3)  # all first tokens in before the first second token is due
        spec = {"mode": "stream", "port": proxy.port, "path": "/api/generate", "gaps": False, "ramp": ramp,
                "bodies": [body],
                "timeout": interval * 4 + 60}
        # Read RSS while every stream has had its first token and waits for the next one.
        sample_at = time.monotonic() + 1.0 + n * 0.004 + ramp + interval * 1.4
        holder: dict[str, Any] = {}

        def sampler() -> None:
            _sleep_to(sample_at)
            readings = []
            for _ in range(5):
                readings.append(rss_bytes([proxy.proc.pid]))
                time.sleep(0.02)
            holder["rss"] = readings
            holder["at"] = time.monotonic()

        thread = threading.Thread(target=sampler, daemon=True)
        thread.start()
        outs, _ = self.run_workers(spec, n, watch=[], setup=1.0 + n * 0.004)
        thread.join()
        first = [x for o in outs for x in o["first_at"]]
        idle_ok = sum(1 for x in first if x <= holder["at"])
        during = sorted(holder["rss"])[len(holder["rss"]) // 2]
        per_stream = (during - base) / n
        failures = sum(sum(o["failures"].values()) for o in outs)
        self.stop(proxy.proc)
        self.stop(node.proc)
        if idle_ok < n:
            self.warn(f"memory: only {idle_ok}/{n} streams had their first token when RSS was read")

        # Per registered node: the same proxy build with 1 node and with 1 + K nodes, after a few probes.
        k = plan.mem_nodes
        sims = self.spawn("multisim", [sys.executable, str(Path(__file__).resolve()), "--worker"],
                          cpu=self.layout.node, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert sims.stdin is not None and sims.stdout is not None
        sims.stdin.write(json.dumps({"mode": "multisim", "count": k + 1}).encode())
        sims.stdin.close()
        ports = json.loads(sims.stdout.readline())["ports"]
        interval_env = {"AIVONX_HEALTH_INTERVAL": "1"}
        rss_nodes = {}
        for label, count in (("one", 1), ("many", k + 1)):
            p = self.start_proxy(f"proxy-nodes-{label}", [f"http://{HOST}:{port}" for port in ports[:count]],
                                 env=interval_env)
            self.wait_ready(p, lambda p=p, count=count: _active_nodes(p) in (count, -1), timeout=60)
            time.sleep(self.plan.mem_settle)  # a few health rounds: pooled probe connections, learnt state
            rss_nodes[label] = rss_bytes([p.proc.pid])
            self.stop(p.proc)
        self.stop(sims)
        sims.stdout.close()
        per_node = (rss_nodes["many"] - rss_nodes["one"]) / k
        self.results["memory"] = {
            "idle_streams": n, "idle_stream_failures": failures, "idle_streams_with_first_token": idle_ok,
            "rss_base_mb": r(base / 2**20, 1), "rss_with_idle_streams_mb": r(during / 2**20, 1),
            "kb_per_idle_stream": r(per_stream / 1024, 1),
            "nodes": k, "rss_one_node_mb": r(rss_nodes["one"] / 2**20, 1),
            "rss_many_nodes_mb": r(rss_nodes["many"] / 2**20, 1), "kb_per_node": r(per_node / 1024, 1),
        }
        mem = self.results["memory"]
        print(f"  idle streams: {mem['kb_per_idle_stream']} KB each ({n} streams, RSS {mem['rss_base_mb']} → "
              f"{mem['rss_with_idle_streams_mb']} MB)", flush=True)
        print(f"  registered nodes: {mem['kb_per_node']} KB each ({k} nodes, RSS {mem['rss_one_node_mb']} → "
              f"{mem['rss_many_nodes_mb']} MB)", flush=True)

    # -- whole run ----------------------------------------------------------------------------------

    def run(self, sections: set[int]) -> dict[str, Any]:
        started = time.time()
        print(f"aivonx benchmark ({'quick' if self.quick else 'full'}): {self.layout.note}", flush=True)
        print(f"nginx: {self.nginx or 'not installed, skipped'}; wrk: {self.wrk or 'not installed'}", flush=True)
        timings: dict[str, float] = {}

        def timed(name: str, fn: Any) -> None:
            t = time.monotonic()
            fn()
            timings[name] = round(time.monotonic() - t, 1)

        if sections & {1, 2}:
            timed("small", self.section_small)
            if 2 in sections:
                timed("streams", self.section_streams)
            if self.pyspy:
                timed("profile", self.profile_proxy)
            for svc in reversed([s for s in self.fast_services if s]):
                self.stop(svc.proc)
        if 3 in sections:
            timed("long", self.section_long)
        if 4 in sections:
            timed("routing", self.section_routing)
        if 5 in sections:
            timed("memory", self.section_memory)
        if self.waits:
            self.results["cpu_wait"] = {"mean": r(mean(self.waits), 3), "max": r(max(self.waits), 3)}
            if max(self.waits) > 0.1:
                self.warn(f"the measured process waited for its CPU up to {max(self.waits):.0%} of a measurement "
                          f"window (mean {mean(self.waits):.0%}): the machine was not quiet, figures are pessimistic")
        self.results["targets"] = evaluate_targets(self.results)
        for target in self.results["targets"]:
            if target["pass"] is False and target.get("kind") == "check":
                self.warn(target["name"])
        self.results["meta"] = {
            "quick": self.quick, "layout": self.layout.describe(), "python": sys.version.split()[0],
            "nginx": self.nginx, "wrk": self.wrk,
            "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)),
            "seconds": round(time.time() - started, 1), "plan": _plan_json(self.plan), "warnings": self.warnings,
            "loadgen": "python asyncio Protocol client (bench.py --worker)", "section_seconds": timings,
        }
        return self.results


def _sleep_to(t: float) -> None:
    delay = t - time.monotonic()
    if delay > 0:
        time.sleep(delay)


def _active_nodes(proxy: Service) -> int:
    body = proxy.state()
    if body is None:
        return -1  # no management API: rely on the sleep after the wait
    return sum(1 for n in body.get("nodes", []) if n.get("status") == "active")


def _preload(nodes: list[Service], specs: tuple[RouteNode, ...]) -> None:
    """Load each node's starting models (Ollama's empty-prompt load), all nodes at once."""
    def load(node: Service, models: tuple[str, ...]) -> None:
        for model in models:
            http_json(node.port, "POST", "/api/generate", {"model": model}, timeout=120)

    threads = [threading.Thread(target=load, args=(n, s.preload)) for n, s in zip(nodes, specs, strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


async def _prepare_store(data_dir: Path, config: dict[str, Any] | None, password: str) -> None:
    """Routing settings before the first start, and the admin user with a cheap hash: every proxy
    start would otherwise spend a second of CPU on bcrypt (12 rounds)."""
    sys.path.insert(0, str(REPO))
    from app.auth.passwords import hash_password
    from app.store import connect

    store = await connect(None, "aivonx", data_dir)
    try:
        if config:
            await store.config.save(config)
        await store.users.create("admin", hash_password(password, rounds=4), "admin")
    finally:
        await store.close()


def _plan_json(plan: Plan) -> dict[str, Any]:
    data = asdict(plan)
    data["route_nodes"] = [asdict(n) for n in plan.route_nodes]
    return data


def _parse_wrk(text: str) -> dict[str, Any]:
    def to_ms(value: str) -> float:
        m = re.match(r"([\d.]+)(us|ms|s)", value)
        if not m:
            return float("nan")
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]

    out: dict[str, Any] = {}
    if m := re.search(r"Requests/sec:\s+([\d.]+)", text):
        out["rps"] = float(m.group(1))
    if m := re.search(r"(\d+) requests in", text):
        out["requests"] = int(m.group(1))
    for p in ("50", "99"):
        if m := re.search(rf"^\s+{p}%\s+(\S+)", text, re.M):
            out[f"p{p}_ms"] = round(to_ms(m.group(1)), 3)
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    out["errors"] = int(m.group(1)) if m else 0
    return out


def summarise_profile(raw: Path, top: int = 15) -> dict[str, Any]:
    """py-spy raw (collapsed) stacks → the top frames by self and by inclusive samples."""
    self_count: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_short_frame(f) for f in stack.split(";") if f and not f.startswith("process ")
                  and not f.startswith("thread ")]
        if not frames:
            continue
        total += n
        self_count[frames[-1]] += n
        for frame in set(frames):
            incl[frame] += n

    def rows(counter: Counter[str]) -> list[dict[str, Any]]:
        return [{"frame": f, "samples": c, "share": round(c / total, 4)} for f, c in counter.most_common(top)]

    return {"samples": total, "self": rows(self_count), "inclusive": rows(incl)}


def _short_frame(frame: str) -> str:
    # "write (tornado/iostream.py:123)" with site-packages paths shortened.
    frame = re.sub(r"\(.*?/(site-packages|lib/python3\.\d+)/", "(", frame)
    return frame.replace(str(REPO) + "/", "")


# ----------------------------------------------------------------------------------------------
# Targets and report
# ----------------------------------------------------------------------------------------------


def _row(rows: list[dict[str, Any]], **match: Any) -> dict[str, Any] | None:
    return next((x for x in rows if all(x.get(k) == v for k, v in match.items())), None)


def evaluate_targets(res: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def add(name: str, measured: Any, limit: str, ok: bool | None, kind: str = "target") -> None:
        out.append({"name": name, "measured": measured, "limit": limit, "pass": ok, "kind": kind})

    small = res.get("small", {}).get("rows", [])
    if small:
        p1 = _row(small, path="proxy", concurrency=1)
        n1 = _row(small, path="nginx", concurrency=1)
        if p1:
            add("small c=1: added p50 latency (ms)", p1.get("added_p50_ms"), "≤ 1.0",
                p1.get("added_p50_ms") is not None and p1["added_p50_ms"] <= 1.0)
            cpu = p1.get("cpu_us_per_req")
            curl = _row(small, path="curl-relay", concurrency=1)
            if curl and curl.get("cpu_us_per_req"):
                base, where = curl["cpu_us_per_req"], "the bare curl relay in this run"
            else:
                base, where = CURL_RELAY_CPU_US, "the issue's bare curl relay figure"
            add("small c=1: proxy CPU per request (µs)", cpu, f"≤ {1.25 * base:.0f} (1.25× {where})",
                cpu is not None and cpu <= 1.25 * base)
            if curl and curl.get("cpu_us_per_req") and cpu:
                add("small c=1: proxy CPU per request ÷ bare curl relay's", r(cpu / curl["cpu_us_per_req"], 2),
                    "≤ 1.25", cpu / curl["cpu_us_per_req"] <= 1.25)
            if n1 and n1.get("cpu_us_per_req"):
                add("small c=1: proxy CPU per request ÷ nginx's", r(cpu / n1["cpu_us_per_req"], 1), "≈ ≤ 10 (info)",
                    None)
        p32 = _row(small, path="proxy", concurrency=32)
        if p32:
            add("small c=32: proxy throughput (req/s)", p32["rps"], "≥ 1500 (50× Django's ~30)", p32["rps"] >= 1500)
        for row in small:
            if row["path"] != "direct":
                direct = _row(small, path="direct", concurrency=row["concurrency"])
                add(f"check: direct > {row['path']} req/s at c={row['concurrency']}",
                    f"{direct['rps']} vs {row['rps']}" if direct else None, "direct higher",
                    bool(direct and direct["rps"] > row["rps"]), kind="check")
        errors = sum(x["errors"] for x in small)
        add("check: small requests without errors", errors, "0", errors == 0, kind="check")
    streams = res.get("streams", {}).get("rows", [])
    if streams:
        conc = sorted({x["streams"] for x in streams})
        mid = conc[1] if len(conc) > 1 else conc[0]
        p = _row(streams, path="proxy", streams=mid)
        n = _row(streams, path="nginx", streams=mid)
        if p and n and p.get("cpu_us_per_token") and n.get("cpu_us_per_token"):
            ratio = r(p["cpu_us_per_token"] / n["cpu_us_per_token"], 2)
            add(f"streams c={mid}: proxy CPU per token ÷ nginx's", ratio, "≤ 8", ratio <= 8)
        p1 = _row(streams, path="proxy", streams=conc[0])
        if p1 and p1.get("ttft_added_p50_ms") is not None:
            add(f"streams c={conc[0]}: TTFT overhead p50 (ms)", p1["ttft_added_p50_ms"], "≤ 1.0",
                p1["ttft_added_p50_ms"] <= 1.0)
        failures = sum(x["failures"] for x in streams)
        add("check: every stream ended with its done line", failures, "0 failures", failures == 0, kind="check")
        for row in streams:
            if row["path"] != "direct":
                direct = _row(streams, path="direct", streams=row["streams"])
                add(f"check: direct > {row['path']} tokens/s at {row['streams']} streams",
                    f"{direct['tokens_per_s']} vs {row['tokens_per_s']}" if direct else None, "direct higher",
                    bool(direct and direct["tokens_per_s"] > row["tokens_per_s"]), kind="check")
    long = res.get("long", {}).get("rows", [])
    if long:
        p = _row(long, path="proxy")
        if p:
            limit = 2 * p["pacing_ms"]
            add(f"long streams: gap p99 (ms), {p['streams']} streams", p["gap_p99_ms"], f"≤ {limit:g} (2× pacing)",
                p["gap_p99_ms"] is not None and p["gap_p99_ms"] <= limit)
            add("long streams: proxy RSS peak (MB)", p.get("rss_peak_mb"), "≤ 300",
                p.get("rss_peak_mb") is not None and p["rss_peak_mb"] <= 300)
        errors = sum(x["errors"] for x in long)
        add("long streams: errors (all paths)", errors, "0", errors == 0)
    routing = res.get("routing", {}).get("runs", {})
    if routing:
        sys.path.insert(0, str(REPO))
        from app.config import RoutingConfig

        default = RoutingConfig().strategy
        d = routing.get(default)
        if d and "random" in routing:
            add(f"routing: {default} mean ÷ random's", d["mean_vs_random"], "≤ 0.7",
                d["mean_vs_random"] is not None and d["mean_vs_random"] <= 0.7)
            add(f"routing: {default} p95 ÷ random's", d["p95_vs_random"], "≤ 0.6",
                d["p95_vs_random"] is not None and d["p95_vs_random"] <= 0.6)
        if d:
            add(f"routing: {default} mean ÷ blind random's", d["mean_vs_blind"], "≤ 0.7 (info)", None)
            blind = routing["blind_random"]["cold_loads"]
            add(f"routing: cold loads, {default} vs blind random", f"{d['cold_loads']} vs {blind}",
                "visibly fewer", d["cold_loads"] < blind)
        failed = sum(x["failed"] for x in routing.values())
        add("check: routing requests without failures", failed, "0", failed == 0, kind="check")
    mem = res.get("memory")
    if mem:
        add("memory per idle streaming connection (KB)", mem["kb_per_idle_stream"], "reported", None)
        add("memory per registered node (KB)", mem["kb_per_node"], "reported", None)
    return out


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if value >= 1000:
            return f"{value:,.0f}"
        return f"{value:g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return lines


def markdown(res: dict[str, Any]) -> str:
    meta = res["meta"]
    lines = [f"# Aivonx Proxy benchmark{' (quick: numbers meaningless)' if meta['quick'] else ''}", "",
             f"{meta['started']}, {meta['seconds']} s; Python {meta['python']}; {meta['layout']['note']}."]
    if res.get("cpu_wait"):
        wait = res["cpu_wait"]
        lines.append(f"\"CPU wait\": share of a measurement window in which the measured process was runnable but "
                     f"waited for its CPU (other processes on the machine, or its own other threads): "
                     f"{wait['mean']:.1%} on average, {wait['max']:.1%} at most.")
    lines.append("")
    small = res.get("small")
    if small:
        lines += [f"## 1. Small requests (non-streaming `/api/generate`, {small['reply_bytes']}-byte reply)", ""]
        lines += _table(
            ["path", "clients", "req/s", "p50 ms", "p99 ms", "added p50 ms", "CPU µs/req", "CPU ÷ nginx",
             "CPU ÷ curl relay", "errors", "CPU wait"],
            [[x["path"], x["concurrency"], x["rps"], x["p50_ms"], x["p99_ms"], x.get("added_p50_ms"),
              x["cpu_us_per_req"], _ratio(x, small["rows"], "cpu_us_per_req", concurrency=x["concurrency"]),
              _ratio(x, small["rows"], "cpu_us_per_req", ref="curl-relay", concurrency=x["concurrency"]),
              x["errors"], x.get("cpu_wait")] for x in small["rows"]])
        gen = [x["loadgen_cpu_us_per_req"] for x in small["rows"] if x["path"] == "direct"]
        lines += ["", f"Load generator cost: {', '.join(_fmt(g) for g in gen)} µs CPU per request (direct runs)."]
        if small.get("wrk"):
            lines += ["", "Cross-check with wrk:", ""]
            lines += _table(["path", "clients", "req/s", "p50 ms", "p99 ms", "CPU µs/req"],
                            [[x["path"], x["concurrency"], x.get("rps"), x.get("p50_ms"), x.get("p99_ms"),
                              x.get("cpu_us_per_req")] for x in small["wrk"]])
        lines.append("")
    streams = res.get("streams")
    if streams:
        lines += [f"## 2. Streaming relay ({streams['tokens_per_stream']} tokens per stream, fast node)", ""]
        lines += _table(
            ["path", "streams", "tokens/s", "TTFT p50 ms", "TTFT p99 ms", "TTFT added p50 ms", "CPU µs/token",
             "CPU ÷ nginx", "CPU ÷ curl relay", "done/streams", "CPU wait"],
            [[x["path"], x["streams"], x["tokens_per_s"], x["ttft_p50_ms"], x["ttft_p99_ms"],
              x.get("ttft_added_p50_ms"), x["cpu_us_per_token"],
              _ratio(x, streams["rows"], "cpu_us_per_token", streams=x["streams"]),
              _ratio(x, streams["rows"], "cpu_us_per_token", ref="curl-relay", streams=x["streams"]),
              f"{x['streams_done']}/{x['streams_total']}", x.get("cpu_wait")] for x in streams["rows"]])
        lines.append("")
    long = res.get("long")
    if long:
        n = long["rows"][0]["streams"]
        lines += [f"## 3. {n:,} long streams ({long['tokens_per_stream']} tokens at {long['tokens_per_second']:g} "
                  f"tokens/s, starts spread over {long['ramp_s']:g} s)", ""]
        lines += _table(
            ["path", "pacing ms", "gap p50 ms", "gap p99 ms", "gap max ms", "TTFT p99 ms", "CPU µs/token", "RSS MB",
             "done", "errors", "CPU wait"],
            [[x["path"], x["pacing_ms"], x["gap_p50_ms"], x["gap_p99_ms"], x["gap_max_ms"], x["ttft_p99_ms"],
              x["cpu_us_per_token"],
              f"{_fmt(x.get('rss_before_mb'))} → {_fmt(x.get('rss_peak_mb'))}" if x.get("rss_peak_mb") else None,
              f"{x['streams_done']}/{x['streams']}", x["errors"], x.get("cpu_wait")] for x in long["rows"]])
        lines.append("")
    routing = res.get("routing")
    if routing:
        node_names = [n["name"] for n in routing["fleet"]]
        fleet = ", ".join(f"{n['name']} {n['tokens_per_second']:g} tok/s×{n['num_parallel']} "
                          f"(max {n['max_loaded']} loaded, starts with {'+'.join(n['preload'])})"
                          for n in routing["fleet"])
        lines += ["## 4. Routing quality", "",
                  f"Fleet: {fleet}; cold load {routing['load_time_s']:g} s; {routing['requests']} Poisson arrivals at "
                  f"{routing['arrival_rate']:g}/s over models {routing['models']}, {routing['tokens'][0]}–"
                  f"{routing['tokens'][1]} tokens each (≈{routing['utilisation']:.0%} of the fleet's capacity); "
                  f"health probes every {routing['health_interval_s']:g} s. \"blind random\": each request sent "
                  "straight to a uniformly chosen node.", ""]
        lines += _table(
            ["strategy", "mean s", "p95 s", "mean TTFT s", "cold loads", "mean ÷ random", "p95 ÷ random",
             "failed", f"served by {' / '.join(node_names)}"],
            [[name, x["mean_s"], x["p95_s"], x["ttft_mean_s"], x["cold_loads"], x["mean_vs_random"],
              x["p95_vs_random"], f"{x['failed']}/{x['requests']}",
              " / ".join(str(x["served_by"].get(n, 0)) for n in node_names) if x["served_by"] else "–"]
             for name, x in routing["runs"].items()])
        lines.append("")
    mem = res.get("memory")
    if mem:
        lines += ["## 5. Memory", ""]
        lines += _table(["what", "value"], [
            [f"per idle streaming connection ({mem['idle_streams']:,} open streams)",
             f"{_fmt(mem['kb_per_idle_stream'])} KB (RSS {_fmt(mem['rss_base_mb'])} → "
             f"{_fmt(mem['rss_with_idle_streams_mb'])} MB)"],
            [f"per registered node ({mem['nodes']:,} nodes)",
             f"{_fmt(mem['kb_per_node'])} KB (RSS {_fmt(mem['rss_one_node_mb'])} → "
             f"{_fmt(mem['rss_many_nodes_mb'])} MB)"],
        ])
        lines.append("")
    targets = res.get("targets")
    if targets:
        lines += ["## Targets and checks", ""]
        lines += _table(["", "measured", "target", "result"],
                        [[t["name"], t["measured"], t["limit"],
                          "–" if t["pass"] is None else ("pass" if t["pass"] else "**FAIL**")] for t in targets])
        lines.append("")
    if meta["warnings"]:
        lines += ["## Warnings", ""] + [f"- {w}" for w in meta["warnings"]] + [""]
    return "\n".join(lines)


def _ratio(row: dict[str, Any], rows: list[dict[str, Any]], key: str, ref: str = "nginx",
           **match: Any) -> float | None:
    """``row[key]`` ÷ the same figure of path ``ref`` (for the proxy, and the relays against nginx)."""
    base = _row(rows, path=ref, **match)
    if row["path"] in ("direct", ref) or (ref != "nginx" and row["path"] != "proxy"):
        return None
    if not base or not base.get(key) or not row.get(key):
        return None
    return r(row[key] / base[key], 2)


# ----------------------------------------------------------------------------------------------

NGINX_CONF = """\
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile 65536;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 16384; }}
http {{
    access_log off;
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    upstream node {{
        server {host}:{upstream};
        keepalive 1024;
        keepalive_requests 1000000;
    }}
    server {{
        listen {host}:{port} backlog=4096;
        location / {{
            proxy_pass http://node;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host {host}:{upstream};
            proxy_buffering off;
            proxy_read_timeout 600s;
        }}
    }}
}}
"""

WRK_LUA = """\
wrk.method = "POST"
wrk.body = '{body}'
wrk.headers["Content-Type"] = "application/json"
"""


def main() -> int:
    if "--worker" in sys.argv[1:]:
        return worker_main()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny configuration (seconds), for the test suite")
    parser.add_argument("--out", type=Path, default=REPO / "bench-results", help="output directory")
    parser.add_argument("--no-nginx", action="store_true", help="skip nginx even when installed")
    parser.add_argument("--sections", default="1,2,3,4,5", help="comma-separated sections to run (default all)")
    parser.add_argument("--profile", action="store_true", help="also record py-spy profiles of the proxy")
    args = parser.parse_args()
    sections = {int(s) for s in args.sections.split(",") if s.strip()}
    raise_nofile()
    args.out.mkdir(parents=True, exist_ok=True)
    plan = QUICK if args.quick else Plan()
    bench = Bench(plan, args.out, args.quick, use_nginx=not args.no_nginx, profile=args.profile)
    if args.profile and not bench.pyspy:
        print("--profile: py-spy not found (pip install py-spy); no profile", file=sys.stderr)

    def on_signal(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    try:
        results = bench.run(sections)
    except BaseException:
        print(f"benchmark failed; process logs kept in {bench.tmp}", file=sys.stderr)
        raise
    else:
        shutil.rmtree(bench.tmp, ignore_errors=True)
    finally:
        bench.stop_all()
    (args.out / "bench.json").write_text(json.dumps(results, indent=1))
    text = markdown(results)
    (args.out / "bench.md").write_text(text)
    print("\n" + text)
    print(f"written: {args.out / 'bench.json'}, {args.out / 'bench.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
