"""The command line as an operator uses it: real processes, real ports, a real data dir."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIVONX_")}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def _wait_http(url: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=1)
            return
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


class Running:
    def __init__(self, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None):
        self.proc = subprocess.Popen([sys.executable, "-m", "app", *args], env=env or _env(), cwd=cwd,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def wait(self, timeout: float = 30) -> tuple[int, str, str]:
        """For a process expected to exit by itself."""
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out, err

    def stop(self) -> tuple[int, str, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        out, err = self.proc.communicate(timeout=20)
        return self.proc.returncode, out, err


@pytest.fixture
def processes():
    started: list[Running] = []

    def start(*args: str, **kwargs) -> Running:
        proc = Running(*args, **kwargs)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.proc.poll() is None:
            proc.proc.kill()
            proc.proc.communicate()


def start_node_and_proxy(processes, tmp_path: Path, *node_args: str) -> tuple[Running, Running, int]:
    """A simulated node (``simulate`` with ``node_args``) and a proxy in front of it, both real
    processes; returns once the proxy lists the node's models. (node, proxy, the proxy's port)"""
    node_port, proxy_port = _free_port(), _free_port()
    node = processes("simulate", "--port", str(node_port), *node_args)
    _wait_http(f"http://127.0.0.1:{node_port}/")
    proxy = processes("serve", "--port", str(proxy_port), "--data-dir", str(tmp_path / "d"), "--log-dir",
                      str(tmp_path / "l"), "--node", f"http://127.0.0.1:{node_port}",
                      env=_env(AIVONX_ADMIN_PASSWORD="a-chosen-password"))
    _wait_http(f"http://127.0.0.1:{proxy_port}/")
    deadline = time.monotonic() + 10
    while not json.load(urllib.request.urlopen(f"http://127.0.0.1:{proxy_port}/api/tags"))["models"]:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    return node, proxy, proxy_port


def test_serve_answers_head_and_keeps_a_node_registered_with_node_across_restarts(processes, tmp_path):
    node_port, proxy_port = _free_port(), _free_port()
    node = processes("simulate", "--port", str(node_port), "--models", "llama3,mistral", "--fast")
    _wait_http(f"http://127.0.0.1:{node_port}/")
    args = ["serve", "--port", str(proxy_port), "--data-dir", str(tmp_path / "data"), "--log-dir",
            str(tmp_path / "logs")]
    first = processes(*args, "--node", f"http://127.0.0.1:{node_port}")
    _wait_http(f"http://127.0.0.1:{proxy_port}/")
    code, out, err = first.stop()
    assert code == 0, err
    assert "admin" in out  # the generated password is shown once, on the console...
    password = next(line.strip() for line in out.splitlines() if line.startswith("      "))
    logs = "".join(p.read_text() for p in (tmp_path / "logs").iterdir())
    assert password not in logs  # ...and never written to a log file
    assert "embedded store" in logs

    second = processes(*args)  # no --node this time
    _wait_http(f"http://127.0.0.1:{proxy_port}/")
    deadline = time.monotonic() + 10
    while True:
        tags = json.load(urllib.request.urlopen(f"http://127.0.0.1:{proxy_port}/api/tags"))
        if tags["models"] or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert sorted(m["name"] for m in tags["models"]) == ["llama3:latest", "mistral:latest"]
    code, out, _ = second.stop()
    assert code == 0 and "First start" not in out
    node.stop()


def test_a_second_process_on_the_same_data_dir_is_refused(processes, tmp_path):
    port = _free_port()
    first = processes("serve", "--port", str(port), "--data-dir", str(tmp_path / "d"), "--log-dir", str(tmp_path))
    _wait_http(f"http://127.0.0.1:{port}/")
    second = processes("serve", "--port", str(_free_port()), "--data-dir", str(tmp_path / "d"),
                       "--log-dir", str(tmp_path))
    code, _, err = second.wait()
    assert code != 0 and "in use by another aivonx-proxy process" in err
    assert first.stop()[0] == 0


def test_unreachable_mongodb_exits_non_zero_naming_the_url_without_its_password(processes, tmp_path):
    proc = processes("serve", "--port", str(_free_port()), "--log-dir", str(tmp_path),
                     "--mongo-url", "mongodb://fleet:hunter2@127.0.0.1:1/aivonx", "--mongo-connect-timeout", "1")
    code, _, err = proc.wait()
    assert code != 0
    assert "127.0.0.1:1" in err and "hunter2" not in err and "AIVONX_MONGO_URL" in err


def test_admin_password_from_the_environment_and_create_user_from_stdin(processes, tmp_path):
    port = _free_port()
    env = _env(AIVONX_ADMIN_PASSWORD="a-chosen-password", AIVONX_DATA_DIR=str(tmp_path / "d"),
               AIVONX_LOG_DIR=str(tmp_path / "logs"))
    proc = processes("serve", "--port", str(port), env=env)
    _wait_http(f"http://127.0.0.1:{port}/")
    code, out, _ = proc.stop()
    assert code == 0 and "a-chosen-password" not in out and "First start" not in out
    created = subprocess.run([sys.executable, "-m", "app", "create-user", "--username", "ops", "--role", "viewer"],
                             input="another-password\n", capture_output=True, text=True, env=env, timeout=60)
    assert created.returncode == 0, created.stderr
    again = subprocess.run([sys.executable, "-m", "app", "create-user", "--username", "OPS"],
                           input="another-password\n", capture_output=True, text=True, env=env, timeout=60)
    assert again.returncode == 1 and "exists" in again.stderr
    short = subprocess.run([sys.executable, "-m", "app", "create-user", "--username", "x"],
                           input="short\n", capture_output=True, text=True, env=env, timeout=60)
    assert short.returncode == 2 and "at least" in short.stderr


def test_help_documents_every_setting():
    out = subprocess.run([sys.executable, "-m", "app", "serve", "--help"], capture_output=True, text=True,
                         env=_env(), timeout=60).stdout
    for flag in ("--host", "--port", "--data-dir", "--log-dir", "--mongo-url", "--db-name", "--node",
                 "--health-interval", "--config"):
        assert flag in out
    assert "AIVONX_HEALTH_INTERVAL" in out


def test_sigterm_lets_running_streams_finish_then_exits_zero(processes, tmp_path):
    import http.client
    import threading

    node, proxy, proxy_port = start_node_and_proxy(
        processes, tmp_path, "--models", "llama3", "--load-time", "0", "--tokens-per-second", "20",
        "--tokens", "30", "--num-parallel", "32")

    results: list[str] = []
    started = threading.Barrier(21)

    def stream() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", proxy_port, timeout=30)
        conn.request("POST", "/api/generate", body=json.dumps({"model": "llama3", "prompt": "x"}))
        response = conn.getresponse()
        first = response.readline()
        started.wait()
        rest = response.read()
        results.append((first + rest).decode().strip().split("\n")[-1])

    threads = [threading.Thread(target=stream) for _ in range(20)]
    for thread in threads:
        thread.start()
    started.wait()  # every stream has its first line: all are in flight
    proxy.proc.send_signal(signal.SIGTERM)
    for thread in threads:
        thread.join(timeout=30)
    code, _, err = proxy.wait()
    assert code == 0, err
    assert len(results) == 20 and all(json.loads(last)["done"] is True for last in results)
    node.stop()
