"""Command line: ``serve`` (the default), ``simulate`` and ``create-user``."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from collections.abc import Sequence

from app import __version__
from app.config import ConfigError, Settings, add_settings_arguments, load_settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aivonx-proxy",
        description="One Ollama endpoint in front of a fleet of Ollama nodes. Every setting is also an "
                    "AIVONX_* environment variable and a key of the TOML file given with --config; "
                    "flags win over the environment, which wins over the file.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the proxy (the default)",
                                description="Run the proxy and its management API and console.")
    add_settings_arguments(serve)

    from app.simulator import cli as simulator_cli

    simulate = commands.add_parser("simulate", help="run a simulated Ollama node for tests and demos",
                                   description="Run a simulated Ollama node that speaks the Ollama API.")
    simulator_cli.add_arguments(simulate)

    create_user = commands.add_parser(
        "create-user", help="create a console/API user (password from a prompt or stdin)",
        description="Create a user in the store. The password is read from the terminal, or from the "
                    "first line of standard input when it is not a terminal.")
    create_user.add_argument("--username", required=True)
    create_user.add_argument("--role", choices=("admin", "viewer"), default="viewer")
    add_settings_arguments(create_user)
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    try:
        return load_settings(vars(args))
    except ConfigError as exc:
        print(f"aivonx-proxy: invalid settings: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version")):
        argv.insert(0, "serve")
    args = build_parser().parse_args(argv)
    if args.command == "simulate":
        from app.simulator import cli as simulator_cli

        return simulator_cli.run(args)
    if args.command == "create-user":
        return asyncio.run(_create_user(_settings(args), args.username, args.role))
    from app.server import serve

    return asyncio.run(serve(_settings(args)))


def _read_password() -> str:
    if sys.stdin.isatty():
        first = getpass.getpass("Password: ")
        if getpass.getpass("Repeat password: ") != first:
            raise SystemExit("aivonx-proxy: passwords do not match")
        return first
    return sys.stdin.readline().rstrip("\r\n")


async def _create_user(settings: Settings, username: str, role: str) -> int:
    from app.auth.passwords import WeakPassword, hash_password
    from app.store import DuplicateKey, StoreError, connect

    password = _read_password()
    try:
        hashed = hash_password(password)
    except WeakPassword as exc:
        print(f"aivonx-proxy: {exc}", file=sys.stderr)
        return 2
    try:
        store = await connect(settings.mongo_url, settings.db_name, settings.data_dir, settings.mongo_connect_timeout)
    except StoreError as exc:
        print(f"aivonx-proxy: {exc}", file=sys.stderr)
        return 2
    try:
        await store.users.create(username, hashed, role)
    except DuplicateKey:
        print(f"aivonx-proxy: user {username!r} exists already", file=sys.stderr)
        return 1
    finally:
        await store.close()
    print(f"created {role} {username!r}")
    return 0
