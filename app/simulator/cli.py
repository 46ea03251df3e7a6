"""Command-line glue: ``python -m app simulate`` flags and the run-forever loop."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from app.simulator.faults import MODES, parse_fault_arg
from app.simulator.options import SimulatorOptions
from app.simulator.server import start_simulator
from app.simulator.wire import ApiError, parse_keep_alive


def _names(text: str) -> list[str]:
    return [n for n in (p.strip() for p in text.split(",")) if n]


def _keep_alive(text: str) -> float:
    try:
        value: float | str = float(text)
    except ValueError:
        value = text
    try:
        seconds = parse_keep_alive(value, None)
    except ApiError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None
    if seconds is None:
        raise argparse.ArgumentTypeError("keep-alive must not be empty")
    return seconds


def _fault(text: str) -> dict:
    try:
        return parse_fault_arg(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the simulator's flags to ``parser`` (defaults come from :class:`SimulatorOptions`)."""
    d = SimulatorOptions()
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    add("--port", type=int, default=11434, help="port to listen on (default 11434)")
    add("--models", type=_names, default=list(d.models), help="comma-separated model names on the node")
    add("--version", "--ollama-version", dest="ollama_version", default=d.version,
        help=f"version /api/version reports (default {d.version})")
    add("--tokens-per-second", type=float, default=d.tokens_per_second, help="generation speed")
    add("--prompt-tokens-per-second", type=float, default=d.prompt_tokens_per_second,
        help="prompt evaluation speed")
    add("--load-time", type=float, default=d.load_time, help="cold model load time, seconds")
    add("--num-parallel", type=int, default=d.num_parallel, help="slots per loaded model")
    add("--max-queue", type=int, default=d.max_queue, help="pending requests before 503")
    add("--max-loaded", type=int, default=d.max_loaded, help="models resident at once")
    add("--keep-alive", type=_keep_alive, default=d.keep_alive,
        help='default keep_alive: seconds or a duration ("5m"; negative = forever)')
    add("--seed", type=int, default=d.seed, help="seed of the deterministic output")
    add("--fast", action="store_true", help="no delays at all (benchmarks)")
    add("--tokens", type=int, default=d.default_tokens, help="tokens in a natural answer")
    add("--digest-salt", default=d.digest_salt, help="changes every digest (same tags, other weights)")
    add("--context-length", type=int, default=d.context_length, help="default num_ctx of a runner")
    add("--embedding-dim", type=int, default=d.embedding_dim, help="embedding vector length")
    add("--pullable", type=_names, default=None,
        help="comma-separated names the registry has (default: every valid name)")
    add("--unknown-models", type=_names, default=list(d.unknown_models),
        help="name substrings the registry never has (default doesnotexist)")
    add("--pull-time", type=float, default=d.pull_time, help="seconds a pull's download takes")
    add("--strict-host", action="store_true", help="403 to a non-local Host header, like real Ollama")
    add("--fault", type=_fault, action="append", default=[], metavar="MODE[:k=v,...]",
        help=f"inject a fault at start ({', '.join(MODES)}); "
             "options count=N, after_chunks=K, delay=S, routes=/a+/b, message=TEXT; repeatable")


def options_from_args(args: argparse.Namespace) -> SimulatorOptions:
    return SimulatorOptions(
        models=args.models, version=args.ollama_version, tokens_per_second=args.tokens_per_second,
        prompt_tokens_per_second=args.prompt_tokens_per_second, load_time=args.load_time,
        num_parallel=args.num_parallel, max_queue=args.max_queue, max_loaded=args.max_loaded,
        keep_alive=args.keep_alive, seed=args.seed, fast=args.fast, default_tokens=args.tokens,
        digest_salt=args.digest_salt, context_length=args.context_length,
        embedding_dim=args.embedding_dim, pullable=args.pullable, unknown_models=args.unknown_models,
        pull_time=args.pull_time, strict_host=args.strict_host, faults=args.fault,
    )


async def _serve(options: SimulatorOptions, host: str, port: int) -> None:
    node = await start_simulator(options, host, port)
    print(f"simulated Ollama node listening on {node.url} (models: {', '.join(options.models) or 'none'})",
          flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await node.stop()


def run(args: argparse.Namespace) -> int:
    """Run a node until SIGINT/SIGTERM; 0 on a clean stop, 2 for bad options, 1 if it cannot listen."""
    try:
        options = options_from_args(args)
    except ValueError as exc:
        print(f"simulate: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve(options, args.host, args.port))
    except OSError as exc:
        print(f"simulate: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0
