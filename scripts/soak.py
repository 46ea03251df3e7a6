#!/usr/bin/env python3
"""Soak: mixed traffic for a long time against a proxy process, with faults, and a full account.

    python scripts/soak.py [--minutes 30] [--clients 300] [--nodes 4] [--quick] [--out DIR]

Starts ``--nodes`` simulated Ollama nodes and one proxy, each a separate process on loopback
(127.0.0.1 only), and runs ``--clients`` concurrent asyncio clients in this process: streamed and
unstreamed generate/chat, embeddings, ``/v1`` chat (SSE and not) and embeddings, listings, unknown
models and bad bodies. Meanwhile faults rotate on the nodes through their ``/_sim/faults`` control
endpoint (500s, busy 503s, hangs, garbage, error lines and dropped connections mid-stream, slow
probes) and, every few minutes, one node is killed and restarted on its port.

Every minute (every few seconds with ``--quick``) one progress line; at the end a table and
``DIR/soak.json`` (default ``soak-results/``) with:

* requests sent, answers by status, transport errors, hung requests (no answer within
  ``--deadline`` seconds), error lines (streams that ended with ``{"error"}`` after the first byte),
  bad streams (a 200 stream that ended with neither ``done`` nor an error line: must be 0);
* accounting: answers + errors == requests sent;
* leaks: the proxy's in-flight and queued counts (``/api/proxy/active-requests``) once the load has
  stopped, and the nodes' own active counts: all must reach 0;
* the proxy's RSS (``/proc/PID/status``) before the load, at its start, middle and end, after it;
* unhandled errors the proxy logged (``error.log``), and its exit code after SIGTERM.

``--quick`` (about 20 s, 40 clients) is what the test suite runs; its numbers mean nothing.
The exit status is 0 when every check holds, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
MODELS = ("llama3:latest", "mistral:7b", "nomic-embed-text:latest")
ADMIN_PASSWORD = "soak-admin-password"

# Faults applied in turn (one or two nodes at a time); counts keep each one short-lived.
FAULTS: list[dict[str, Any]] = [
    {"mode": "error_500", "count": 40, "routes": ["/api/*", "/v1/*"]},
    {"mode": "busy", "count": 60, "routes": ["/api/generate", "/api/chat", "/v1/*"]},
    {"mode": "hang", "count": 4, "routes": ["/api/generate", "/api/chat"]},
    {"mode": "garbage", "count": 20, "routes": ["/api/generate", "/api/chat", "/api/embed"]},
    {"mode": "error_midstream", "count": 20, "after_chunks": 2},
    {"mode": "drop_midstream", "count": 20, "after_chunks": 3},
    {"mode": "drop_midstream", "count": 10, "after_chunks": 0},
    {"mode": "slow_tags", "count": 6, "delay": 3.0},
]
ROUTING = {"first_byte_timeout": 5, "idle_timeout": 10, "connect_timeout": 2, "probe_timeout": 2,
           "fall": 3, "rise": 2, "health_interval": 5, "max_attempts": 3, "queue_timeout": 10,
           "shutdown_grace": 30}


# ----------------------------------------------------------------------------------------------
# A small HTTP/1.1 client (keep-alive, chunked), so the load generator is cheap and exact
# ----------------------------------------------------------------------------------------------


class ProtocolError(Exception):
    """The answer is not valid HTTP, or was cut short."""


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


class Connection:
    def __init__(self, port: int):
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.used = 0

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(HOST, self.port)
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    @property
    def usable(self) -> bool:
        return self.writer is not None and self.reader is not None and not self.reader.at_eof() \
            and not self.writer.is_closing()

    async def request(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
                      raw: bytes | None = None) -> Response:
        if not self.usable:
            self.close()
            await self.open()
        assert self.reader is not None and self.writer is not None
        data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
        lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}:{self.port}", "User-Agent: aivonx-soak"]
        if data or method in ("POST", "PUT", "PATCH", "DELETE"):
            lines += ["Content-Type: application/json", f"Content-Length: {len(data)}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + data)
        self.used += 1
        return await self._read(method)

    async def _read(self, method: str) -> Response:
        reader = self.reader
        assert reader is not None
        try:
            status_line = await reader.readuntil(b"\r\n")
            parts = status_line.decode("latin-1").split(" ", 2)
            if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
                raise ProtocolError(f"bad status line {status_line[:60]!r}")
            status = int(parts[1])
            headers: dict[str, str] = {}
            while True:
                line = await reader.readuntil(b"\r\n")
                if line == b"\r\n":
                    break
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
                body = b""
            elif "chunked" in headers.get("transfer-encoding", "").lower():
                chunks = []
                while True:
                    size_line = await reader.readuntil(b"\r\n")
                    size = int(size_line.split(b";")[0].strip(), 16)
                    if size == 0:
                        while await reader.readuntil(b"\r\n") != b"\r\n":
                            pass
                        break
                    chunks.append(await reader.readexactly(size))
                    if await reader.readexactly(2) != b"\r\n":
                        raise ProtocolError("bad chunk framing")
                body = b"".join(chunks)
            elif "content-length" in headers:
                body = await reader.readexactly(int(headers["content-length"]))
            else:
                body = await reader.read()
                self.close()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            self.close()
            raise ProtocolError(f"{type(exc).__name__}: {exc}") from None
        if headers.get("connection", "").lower() == "close":
            self.close()
        return Response(status, headers, body)


async def call(port: int, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
               timeout: float = 10) -> Response:
    """One request on a fresh connection (control calls)."""
    conn = Connection(port)
    try:
        return await asyncio.wait_for(conn.request(method, path, body, headers), timeout)
    finally:
        conn.close()


# ----------------------------------------------------------------------------------------------
# Processes
# ----------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIVONX_")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


class Child:
    """A process of ours, in its own process group; stopped by its own pid only."""

    def __init__(self, name: str, args: list[str], log: Path, env: dict[str, str]):
        self.name = name
        self.args = args
        self.log = log
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        out = self.log.open("ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "app", *self.args], cwd=REPO, env=self.env,
                                     stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        out.close()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def terminate(self, timeout: float) -> int | None:
        """SIGTERM, wait; the exit code (None if it had to be killed)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                return None
        return self.proc.returncode


def rss_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


async def wait_until(predicate: Any, timeout: float, step: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if await predicate():
                return True
        await asyncio.sleep(step)
    return False


# ----------------------------------------------------------------------------------------------
# Traffic
# ----------------------------------------------------------------------------------------------

# kind → weight
MIX = {
    "generate_stream": 22, "chat_stream": 14, "generate": 12, "chat": 8, "embed": 10, "embeddings": 3,
    "v1_chat_stream": 8, "v1_chat": 6, "v1_embeddings": 5, "tags": 4, "ps": 2, "version": 2,
    "unknown_model": 3, "bad_body": 1,
}
STREAMED = {"generate_stream", "chat_stream", "v1_chat_stream"}


def build(kind: str, rng: random.Random, n: int) -> tuple[str, str, Any, bytes | None]:
    model = rng.choice(("llama3", "mistral:7b", "Llama3:latest"))
    tokens = rng.choice((5, 10, 20, 40))
    messages = [{"role": "user", "content": f"question {n}"}]
    if kind == "generate_stream":
        return "POST", "/api/generate", {"model": model, "prompt": f"p{n}", "options": {"num_predict": tokens}}, None
    if kind == "generate":
        return "POST", "/api/generate", {"model": model, "prompt": f"p{n}", "stream": False,
                                         "options": {"num_predict": tokens}}, None
    if kind == "chat_stream":
        return "POST", "/api/chat", {"model": model, "messages": messages, "options": {"num_predict": tokens}}, None
    if kind == "chat":
        return "POST", "/api/chat", {"model": model, "messages": messages, "stream": False,
                                     "options": {"num_predict": tokens}}, None
    if kind == "embed":
        return "POST", "/api/embed", {"model": "nomic-embed-text", "input": [f"a{n}", "b"]}, None
    if kind == "embeddings":
        return "POST", "/api/embeddings", {"model": "nomic-embed-text", "prompt": f"a{n}"}, None
    if kind == "v1_chat_stream":
        return "POST", "/v1/chat/completions", {"model": model, "messages": messages, "stream": True,
                                                "max_tokens": tokens}, None
    if kind == "v1_chat":
        return "POST", "/v1/chat/completions", {"model": model, "messages": messages, "max_tokens": tokens}, None
    if kind == "v1_embeddings":
        return "POST", "/v1/embeddings", {"model": "nomic-embed-text", "input": f"x{n}"}, None
    if kind in ("tags", "ps", "version"):
        return "GET", f"/api/{kind}", None, None
    if kind == "unknown_model":
        return "POST", "/api/generate", {"model": f"nope-{n % 7}", "prompt": "x"}, None
    if kind == "bad_body":
        return "POST", rng.choice(("/api/chat", "/api/generate", "/v1/chat/completions")), None, \
            rng.choice((b"{not json", b"[1,2]", b'{"model": 5}', b'{"prompt": "no model"}'))
    raise ValueError(kind)


@dataclass
class Stats:
    sent: Counter[str] = field(default_factory=Counter)
    by_status: Counter[int] = field(default_factory=Counter)
    by_kind: dict[str, Counter[str]] = field(default_factory=dict)
    transport_errors: Counter[str] = field(default_factory=Counter)
    hung: int = 0
    error_lines: int = 0
    bad_streams: int = 0
    bad_bodies: int = 0
    unexpected_status: Counter[str] = field(default_factory=Counter)
    stale_retries: int = 0
    samples: list[str] = field(default_factory=list)
    latencies: dict[str, list[float]] = field(default_factory=dict)
    in_progress: int = 0

    @property
    def answers(self) -> int:
        return sum(self.by_status.values())

    @property
    def errors(self) -> int:
        return sum(self.transport_errors.values()) + self.hung

    def note(self, text: str) -> None:
        if len(self.samples) < 40:
            self.samples.append(text)

    def kind(self, kind: str, outcome: str) -> None:
        self.by_kind.setdefault(kind, Counter())[outcome] += 1


EXPECTED = {
    # kind → statuses a correct proxy may answer under the injected faults
    "default": {200, 500, 502, 503, 504},
    "unknown_model": {404},
    "bad_body": {400},
    "tags": {200}, "ps": {200}, "version": {200, 503},
}


def check_answer(kind: str, response: Response, stats: Stats) -> None:
    """Count an answer; flag streams that end with neither done nor an error line."""
    status = response.status
    stats.by_status[status] += 1
    stats.kind(kind, str(status))
    if status not in EXPECTED.get(kind, EXPECTED["default"]):
        stats.unexpected_status[f"{kind}:{status}"] += 1
        stats.note(f"{kind}: unexpected {status}: {response.body[:200]!r}")
    body = response.body
    if status != 200:
        try:
            value = json.loads(body)
            assert isinstance(value, dict) and "error" in value
        except (ValueError, AssertionError):
            stats.bad_bodies += 1
            stats.note(f"{kind}: {status} without a JSON error: {body[:200]!r}")
        return
    if kind in STREAMED:
        if kind == "v1_chat_stream":
            events = [e for e in body.decode("utf-8", "replace").split("\n\n") if e.strip()]
            last = events[-1] if events else ""
            if last.strip() == "data: [DONE]":
                return
            if '"error"' in last:
                stats.error_lines += 1
                return
        else:
            lines = body.decode("utf-8", "replace").rstrip("\n").split("\n")
            try:
                last_value = json.loads(lines[-1])
            except ValueError:
                last_value = {}
            if last_value.get("done") is True:
                return
            if "error" in last_value:
                stats.error_lines += 1
                return
        stats.bad_streams += 1
        stats.note(f"{kind}: stream ended without done or error: ...{body[-200:]!r}")
        return
    try:
        json.loads(body)
    except ValueError:
        stats.bad_bodies += 1
        stats.note(f"{kind}: 200 body is not JSON: {body[:200]!r}")


async def client(index: int, port: int, stop: asyncio.Event, stats: Stats, args: argparse.Namespace) -> None:
    rng = random.Random(args.seed * 100_003 + index)
    kinds, weights = list(MIX), list(MIX.values())
    conn = Connection(port)
    n = 0
    await asyncio.sleep(rng.uniform(0, min(2.0, args.think * 2)))  # spread the start
    while not stop.is_set():
        n += 1
        kind = rng.choices(kinds, weights)[0]
        method, path, body, raw = build(kind, rng, n)
        stats.sent[kind] += 1
        stats.in_progress += 1
        started = time.monotonic()
        try:
            for attempt in (1, 2):
                reused = conn.usable and conn.used > 0
                try:
                    response = await asyncio.wait_for(conn.request(method, path, body, raw=raw), args.deadline)
                    break
                except (ConnectionResetError, BrokenPipeError, ProtocolError) as exc:
                    # A kept-alive connection closed by the server while idle: real clients resend once.
                    # Only when nothing at all came back; counted, and it should stay at zero.
                    if attempt == 1 and reused and isinstance(exc, ConnectionResetError | BrokenPipeError
                                                              | ProtocolError) and "bad status" not in str(exc):
                        stats.stale_retries += 1
                        conn.close()
                        continue
                    raise
        except TimeoutError:
            stats.hung += 1
            stats.kind(kind, "hung")
            stats.note(f"{kind}: no answer within {args.deadline}s")
            conn.close()
        except (OSError, ProtocolError) as exc:
            name = type(exc).__name__
            stats.transport_errors[name] += 1
            stats.kind(kind, name)
            stats.note(f"{kind}: {name}: {exc}")
            conn.close()
        else:
            stats.latencies.setdefault(kind, []).append(time.monotonic() - started)
            check_answer(kind, response, stats)
        finally:
            stats.in_progress -= 1
        await asyncio.sleep(rng.expovariate(1 / args.think) if args.think > 0 else 0)
    conn.close()


# ----------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------


class Soak:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.work = Path(tempfile.mkdtemp(prefix="aivonx-soak-"))
        self.rng = random.Random(args.seed)
        self.nodes: list[tuple[Child, int]] = []
        self.proxy: Child | None = None
        self.proxy_port = 0
        self.auth: dict[str, str] = {}
        self.stats = Stats()
        self.faults_applied: Counter[str] = Counter()
        self.restarts = 0
        self.rss: dict[str, int | None] = {}
        self.progress: list[dict[str, Any]] = []

    # -- processes ------------------------------------------------------------------------------

    def node_child(self, index: int, port: int) -> Child:
        models = list(MODELS) if index % 4 != 3 else ["llama3:latest", "nomic-embed-text:latest"]
        args = ["simulate", "--port", str(port), "--models", ",".join(models), "--load-time", "0",
                "--tokens-per-second", "200", "--tokens", "20", "--num-parallel", "64", "--seed", str(index)]
        return Child(f"node{index}", args, self.work / f"node{index}.log", child_env())

    async def start(self) -> None:
        for index in range(self.args.nodes):
            port = free_port()
            child = self.node_child(index, port)
            child.start()
            self.nodes.append((child, port))
        for _, port in self.nodes:
            if not await wait_until(lambda p=port: self._ok(p, "/api/version"), 20):
                raise RuntimeError(f"simulated node on port {port} did not start")
        self.proxy_port = free_port()
        args = ["serve", "--port", str(self.proxy_port), "--data-dir", str(self.work / "data"),
                "--log-dir", str(self.work / "logs"), "--health-interval", "5"]
        for _, port in self.nodes:
            args += ["--node", f"http://{HOST}:{port}"]
        self.proxy = Child("proxy", args, self.work / "proxy.log", child_env(AIVONX_ADMIN_PASSWORD=ADMIN_PASSWORD))
        self.proxy.start()
        if not await wait_until(lambda: self._ok(self.proxy_port, "/api/version"), 30):
            raise RuntimeError(f"the proxy did not start; see {self.work / 'proxy.log'}")
        login = await call(self.proxy_port, "POST", "/api/auth/login",
                           {"username": "admin", "password": ADMIN_PASSWORD})
        token = json.loads(login.body)["access"]
        # An API token: unlike a login's access token it does not expire during a long run.
        key = await call(self.proxy_port, "POST", "/api/proxy/keys", {"name": "soak", "kind": "api"},
                         {"Authorization": f"Bearer {token}"})
        self.auth = {"Authorization": f"Bearer {json.loads(key.body)['secret']}"}
        answer = await call(self.proxy_port, "PATCH", "/api/proxy/config", ROUTING, self.auth)
        if answer.status != 200:
            raise RuntimeError(f"cannot configure the proxy: {answer.status} {answer.body[:200]!r}")
        if not await wait_until(self._all_active, 20):
            raise RuntimeError("the nodes did not all become active")

    async def _ok(self, port: int, path: str) -> bool:
        return (await call(port, "GET", path, timeout=2)).status == 200

    async def _all_active(self) -> bool:
        state = json.loads((await call(self.proxy_port, "GET", "/api/proxy/state", headers=self.auth)).body)
        return state["totals"]["active"] == len(self.nodes)

    def stop_all(self) -> int | None:
        code = self.proxy.terminate(40) if self.proxy is not None else None
        for child, _ in self.nodes:
            child.kill()
        return code

    # -- faults ---------------------------------------------------------------------------------

    async def rotate_faults(self, stop: asyncio.Event) -> None:
        every = self.args.fault_every
        restart_at = time.monotonic() + self.args.restart_every
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)
            if stop.is_set():
                break
            await self.clear_faults()
            if time.monotonic() >= restart_at:
                restart_at = time.monotonic() + self.args.restart_every
                await self.restart_node(stop)
                continue
            for port in self.rng.sample([p for _, p in self.nodes], self.rng.choice((1, 1, 2))):
                spec = self.rng.choice(FAULTS)
                with contextlib.suppress(Exception):
                    answer = await call(port, "POST", "/_sim/faults", spec, timeout=5)
                    if answer.status == 200:
                        self.faults_applied[spec["mode"]] += 1

    async def clear_faults(self) -> None:
        for _, port in self.nodes:
            with contextlib.suppress(Exception):
                await call(port, "DELETE", "/_sim/faults", timeout=5)

    async def restart_node(self, stop: asyncio.Event) -> None:
        """Kill one node (refused and reset connections), then start it again on its port."""
        index = self.rng.randrange(len(self.nodes))
        child, port = self.nodes[index]
        child.kill()
        self.faults_applied["node_killed"] += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), min(3.0, self.args.fault_every))
        fresh = self.node_child(index, port)
        fresh.start()
        self.nodes[index] = (fresh, port)
        if await wait_until(lambda: self._ok(port, "/api/version"), 20):
            self.restarts += 1

    # -- reports --------------------------------------------------------------------------------

    async def active_requests(self) -> dict[str, Any]:
        return json.loads((await call(self.proxy_port, "GET", "/api/proxy/active-requests",
                                      headers=self.auth)).body)

    async def report(self, started: float, label: str) -> dict[str, Any]:
        s = self.stats
        entry: dict[str, Any] = {
            "at_s": round(time.monotonic() - started, 1), "label": label, "sent": sum(s.sent.values()),
            "answers": s.answers, "errors": s.errors, "in_progress": s.in_progress, "hung": s.hung,
            "error_lines": s.error_lines, "bad_streams": s.bad_streams,
            "by_status": {str(k): v for k, v in sorted(s.by_status.items())},
            "rss_kb": rss_kb(self.proxy.pid) if self.proxy else None,
        }
        with contextlib.suppress(Exception):
            active = await self.active_requests()
            entry["proxy_in_flight"] = active["total"]
            entry["proxy_queued"] = active["queued"]
        self.progress.append(entry)
        statuses = " ".join(f"{k}:{v}" for k, v in entry["by_status"].items())
        print(f"[{entry['at_s']:>7.1f}s] sent {entry['sent']:>8} answers {entry['answers']:>8} "
              f"errors {entry['errors']:>4} hung {entry['hung']:>3} error-lines {entry['error_lines']:>5} "
              f"bad-streams {entry['bad_streams']} in-flight {entry.get('proxy_in_flight', '?'):>4} "
              f"rss {((entry['rss_kb'] or 0) / 1024):.1f} MiB  [{statuses}]", flush=True)
        return entry

    async def run(self) -> dict[str, Any]:
        args = self.args
        await self.start()
        assert self.proxy is not None
        self.rss["before_load"] = rss_kb(self.proxy.pid)
        stop = asyncio.Event()
        started = time.monotonic()
        duration = args.minutes * 60
        clients = [asyncio.ensure_future(client(i, self.proxy_port, stop, self.stats, args))
                   for i in range(args.clients)]
        faults = asyncio.ensure_future(self.rotate_faults(stop))
        next_report = started + args.report_every
        middle_done = start_done = False
        while (now := time.monotonic()) < started + duration:
            await asyncio.sleep(min(1.0, max(0.05, started + duration - now)))
            elapsed = time.monotonic() - started
            if not start_done and elapsed >= min(args.report_every, duration * 0.1):
                self.rss["start"] = rss_kb(self.proxy.pid)
                start_done = True
            if not middle_done and elapsed >= duration / 2:
                self.rss["middle"] = rss_kb(self.proxy.pid)
                middle_done = True
            if time.monotonic() >= next_report:
                next_report += args.report_every
                await self.report(started, "progress")
        self.rss["end"] = rss_kb(self.proxy.pid)
        stop.set()
        load_stopped = time.monotonic()
        await faults
        # Every client finishes its last request: answered, or counted hung at its deadline.
        await asyncio.wait(clients, timeout=args.deadline + 30)
        for task in clients:
            if not task.done():
                task.cancel()
        await self.clear_faults()
        # The nodes may be in standby after the last faults: wait for full service, then check leaks.
        full_service = await wait_until(self._all_active, 30, step=0.5)
        settled = await wait_until(self._idle, 30, step=0.2)
        active = {}
        with contextlib.suppress(Exception):
            active = await self.active_requests()
        node_active = {}
        for child, port in self.nodes:
            with contextlib.suppress(Exception):
                node_active[child.name] = json.loads((await call(port, "GET", "/_sim/stats")).body)["active"]
        served_after = False
        with contextlib.suppress(Exception):
            answer = await call(self.proxy_port, "POST", "/api/generate",
                                {"model": "llama3", "prompt": "after", "stream": False}, timeout=15)
            served_after = answer.status == 200
        self.rss["after"] = rss_kb(self.proxy.pid)
        await self.report(started, "final")
        exit_code = self.stop_all()
        return self.summary(duration, time.monotonic() - load_stopped, active, node_active, settled,
                            full_service, served_after, exit_code)

    async def _idle(self) -> bool:
        active = await self.active_requests()
        return active["total"] == 0 and active["queued"] == 0

    def unhandled_errors(self) -> tuple[int, list[str], int]:
        """Errors in error.log; Tornado's access lines for 5xx answers are counted apart (not errors)."""
        lines: list[str] = []
        access = 0
        for path in sorted((self.work / "logs").glob("error.log*")):
            for line in path.read_text(errors="replace").splitlines():
                if " tornado.access: " in line:
                    access += 1
                elif " ERROR " in line or " CRITICAL " in line:
                    lines.append(line)
        return len(lines), lines[:10], access

    def summary(self, duration: float, drain_s: float, active: dict[str, Any], node_active: dict[str, int],
                settled: bool, full_service: bool, served_after: bool, exit_code: int | None) -> dict[str, Any]:
        s = self.stats
        sent = sum(s.sent.values())
        errors_logged, error_samples, access_5xx = self.unhandled_errors()
        latency = {}
        for kind, values in sorted(s.latencies.items()):
            values.sort()
            latency[kind] = {"p50_ms": round(statistics.median(values) * 1000, 1),
                             "p99_ms": round(values[min(len(values) - 1, int(len(values) * 0.99))] * 1000, 1),
                             "max_ms": round(values[-1] * 1000, 1)}
        leaks = {
            "proxy_in_flight": active.get("total"),
            "proxy_queued": active.get("queued"),
            "nodes_in_flight_per_node": {n["name"]: n["in_flight"] for n in active.get("nodes", [])},
            "node_processes_active": node_active,
        }
        leaked = (not settled or active.get("total") != 0 or active.get("queued") != 0
                  or any(n["in_flight"] or n["queued"] for n in active.get("nodes", []))
                  or any(v != 0 for v in node_active.values()))
        checks = {
            "accounted (answers + errors == sent)": s.answers + s.errors == sent and s.in_progress == 0,
            "no hung requests": s.hung == 0,
            "no leaked counts": not leaked,
            "no bad streams (no silent truncation)": s.bad_streams == 0,
            "every error answer is JSON": s.bad_bodies == 0,
            "no unexpected status": not s.unexpected_status,
            "no transport errors": not s.transport_errors,
            "full service after the faults": full_service and served_after,
            "no unhandled errors logged": errors_logged == 0,
            "clean exit on SIGTERM": exit_code == 0,
        }
        return {
            "config": {"minutes": self.args.minutes, "clients": self.args.clients, "nodes": self.args.nodes,
                       "think_s": self.args.think, "deadline_s": self.args.deadline, "seed": self.args.seed,
                       "fault_every_s": self.args.fault_every, "restart_every_s": self.args.restart_every,
                       "routing": ROUTING, "cpus": os.cpu_count()},
            "duration_s": round(duration, 1),
            "drain_s": round(drain_s, 1),
            "requests_sent": sent,
            "answers": s.answers,
            "errors": s.errors,
            "accounting": {"sent": sent, "answers": s.answers, "transport_errors": sum(s.transport_errors.values()),
                           "hung": s.hung, "unaccounted": sent - s.answers - s.errors},
            "by_status": {str(k): v for k, v in sorted(s.by_status.items())},
            "by_kind": {k: dict(v) for k, v in sorted(s.by_kind.items())},
            "sent_by_kind": dict(sorted(s.sent.items())),
            "transport_errors": dict(s.transport_errors),
            "hung": s.hung,
            "error_lines": s.error_lines,
            "bad_streams": s.bad_streams,
            "bad_error_bodies": s.bad_bodies,
            "unexpected_status": dict(s.unexpected_status),
            "stale_connection_retries": s.stale_retries,
            "leaks": leaks,
            "rss_kb": self.rss,
            "faults_applied": dict(self.faults_applied),
            "node_restarts": self.restarts,
            "unhandled_errors_logged": errors_logged,
            "unhandled_error_samples": error_samples,
            "error_log_5xx_access_lines": access_5xx,
            "proxy_exit_code": exit_code,
            "latency": latency,
            "progress": self.progress,
            "samples": s.samples,
            "checks": checks,
            "ok": all(checks.values()),
            "work_dir": str(self.work),
        }


def print_table(summary: dict[str, Any]) -> None:
    rss = summary["rss_kb"]

    def mib(value: int | None) -> str:
        return "?" if value is None else f"{value / 1024:.1f} MiB"

    rows = [
        ("duration", f"{summary['duration_s']} s ({summary['config']['clients']} clients, "
                     f"{summary['config']['nodes']} nodes)"),
        ("requests sent", summary["requests_sent"]),
        ("answers", f"{summary['answers']}  {summary['by_status']}"),
        ("errors (transport + hung)", f"{summary['errors']}  {summary['transport_errors']} hung={summary['hung']}"),
        ("answers + errors == sent", summary["checks"]["accounted (answers + errors == sent)"]),
        ("error lines (after first byte)", summary["error_lines"]),
        ("bad streams", summary["bad_streams"]),
        ("in flight / queued after load",
         f"{summary['leaks']['proxy_in_flight']} / {summary['leaks']['proxy_queued']}"),
        ("node processes active after", summary["leaks"]["node_processes_active"]),
        ("RSS before / start / middle / end / after",
         " / ".join(mib(rss.get(k)) for k in ("before_load", "start", "middle", "end", "after"))),
        ("faults applied", summary["faults_applied"]),
        ("node restarts", summary["node_restarts"]),
        ("unhandled errors logged", summary["unhandled_errors_logged"]),
        ("proxy exit code", summary["proxy_exit_code"]),
    ]
    width = max(len(r[0]) for r in rows)
    print()
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    print()
    for name, ok in summary["checks"].items():
        print(f"  [{'ok' if ok else 'FAIL'}] {name}")
    print(f"\n  {'PASS' if summary['ok'] else 'FAIL'} — details in the summary JSON", flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="how long the load runs (default 30)")
    parser.add_argument("--clients", type=int, default=300, help="concurrent clients (default 300)")
    parser.add_argument("--nodes", type=int, default=4, help="simulated nodes (default 4)")
    parser.add_argument("--think", type=float, default=0.5,
                        help="mean pause of a client between its requests, seconds (default 0.5)")
    parser.add_argument("--deadline", type=float, default=60.0,
                        help="a request without an answer after this many seconds is hung (default 60)")
    parser.add_argument("--fault-every", type=float, default=10.0, help="seconds between fault changes")
    parser.add_argument("--restart-every", type=float, default=180.0, help="seconds between node kills")
    parser.add_argument("--report-every", type=float, default=60.0, help="seconds between progress lines")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="about 20 s with 40 clients (for the test suite)")
    parser.add_argument("--out", type=Path, default=REPO / "soak-results", help="directory of soak.json")
    parser.add_argument("--keep", action="store_true",
                        help="keep the work directory (logs, data) even when every check passed")
    args = parser.parse_args(argv)
    if args.quick:
        args.minutes, args.clients, args.think = 20 / 60, min(args.clients, 40), 0.1
        args.fault_every, args.restart_every, args.report_every = 2.0, 9.0, 5.0
    if args.minutes <= 0 or args.clients < 1 or args.nodes < 2:
        parser.error("--minutes must be > 0, --clients >= 1, --nodes >= 2")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    soak = Soak(args)
    print(f"soak: {args.minutes:g} min, {args.clients} clients, {args.nodes} nodes; work dir {soak.work}",
          flush=True)
    try:
        summary = asyncio.run(soak.run())
    except BaseException:
        soak.stop_all()
        raise
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "soak.json"
    path.write_text(json.dumps(summary, indent=2) + "\n")
    print_table(summary)
    print(f"  summary: {path}")
    if summary["ok"] and not args.keep:
        shutil.rmtree(soak.work, ignore_errors=True)
    else:
        print(f"  logs and data kept in {soak.work}")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
