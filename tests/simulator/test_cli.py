"""The simulate command's flags and its run-until-signalled loop."""

from __future__ import annotations

import argparse
import json
import math
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from app.simulator import add_arguments, run
from app.simulator.cli import options_from_args

ROOT = Path(__file__).resolve().parents[2]
LAUNCH = (
    "import argparse, sys\n"
    "from app.simulator import add_arguments, run\n"
    "parser = argparse.ArgumentParser()\n"
    "add_arguments(parser)\n"
    "sys.exit(run(parser.parse_args(sys.argv[1:])))\n"
)


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_defaults_match_simulator_options():
    args = parse()
    options = options_from_args(args)
    assert (args.host, args.port) == ("127.0.0.1", 11434)
    assert options.models == ["llama3.2:latest"] and options.version == "0.33.0"
    assert options.num_parallel == 1 and options.max_queue == 512 and options.keep_alive == 300


def test_flags_reach_the_options():
    args = parse("--models", "a, b:7b ,c", "--version", "0.9.1", "--tokens-per-second", "20",
                 "--load-time", "0.5", "--num-parallel", "4", "--max-queue", "2", "--max-loaded", "1",
                 "--keep-alive", "-1", "--seed", "7", "--fast", "--tokens", "5", "--digest-salt", "x",
                 "--pullable", "a,b", "--strict-host", "--fault", "busy:count=1", "--fault", "slow_tags:delay=2")
    options = options_from_args(args)
    assert options.models == ["a", "b:7b", "c"] and options.version == "0.9.1"
    assert (options.tokens_per_second, options.load_time, options.num_parallel) == (20, 0.5, 4)
    assert (options.max_queue, options.max_loaded, options.seed, options.default_tokens) == (2, 1, 7, 5)
    assert math.isinf(options.keep_alive) and options.fast and options.strict_host
    assert options.digest_salt == "x" and options.pullable == ["a", "b"]
    assert [f["mode"] for f in options.faults] == ["busy", "slow_tags"]
    assert options_from_args(parse("--keep-alive", "5m")).keep_alive == 300


@pytest.mark.parametrize("argv", [["--fault", "explode"], ["--keep-alive", "soon"], ["--port", "x"]])
def test_bad_flags_are_rejected(argv):
    with pytest.raises(SystemExit):
        parse(*argv)


def test_invalid_option_values_exit_2(capsys):
    assert run(parse("--num-parallel", "0", "--port", "0")) == 2
    assert "num_parallel" in capsys.readouterr().err


def test_run_serves_until_sigterm():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-c", LAUNCH, "--port", str(port), "--fast", "--models", "a,b"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        banner = process.stdout.readline()
        assert f"127.0.0.1:{port}" in banner
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/tags", timeout=5) as response:
            names = [m["name"] for m in json.load(response)["models"]]
        assert names == ["a:latest", "b:latest"]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_run_reports_a_port_in_use():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run([sys.executable, "-c", LAUNCH, "--port", str(port)], cwd=ROOT,
                                capture_output=True, text=True, timeout=20)
    assert result.returncode == 1 and "cannot listen" in result.stderr
