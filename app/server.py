"""Build the application (one route table) and run the proxy's life cycle.

Start: logs → store → routing config → first-start secrets and admin → fleet
from the store (+ ``--node``) → health monitor → listen. Stop (SIGTERM/SIGINT):
stop accepting, let in-flight requests finish within ``shutdown_grace``, stop
the monitor, close the store.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
import time
from typing import Any

from tornado import httpserver, netutil, web

from app import __version__
from app.api import (
    auth,
    docs,
    fleet_config,
    keys,
    metrics,
    model_ops,
    models,
    nodes,
    ollama,
    openai,
    state,
    ui,
    usage,
    users,
)
from app.api.base import NotFoundHandler
from app.auth import bootstrap
from app.auth.service import AuthService
from app.config import ConfigError, RoutingConfig, Settings, validate_routing
from app.fleet.health import HealthMonitor
from app.fleet.limits import KeyLimiter
from app.fleet.node_spec import NodeInvalid, parse_node
from app.fleet.pool import Fleet
from app.fleet.relay import Relay
from app.fleet.sync import SyncWatcher
from app.fleet.upstream import UpstreamClient
from app.fleet.usage import UsageRecorder
from app.logs import app_log, setup_logging, stop_logging
from app.metrics import ProxyMetrics
from app.services import Services
from app.store import DuplicateKey, Store, StoreError, connect

# Hard ceiling for request bodies at the socket; the live limit (config max_body_size) is per handler.
SERVER_BODY_CEILING = 4 * 1024**3
ROUTE_MODULES = [ollama, openai, models, nodes, fleet_config, state, model_ops, auth, users, keys, usage, metrics, ui,
                 docs]


class StartupError(Exception):
    """The proxy cannot start; the message says what to fix."""


def build_application(services: Services) -> web.Application:
    routes: list[Any] = []
    for module in ROUTE_MODULES:
        for pattern, handler, *rest in module.ROUTES:
            kwargs = {"services": services, **(rest[0] if rest else {})}
            routes.append(web.url(pattern, handler, kwargs))
    return web.Application(
        routes,
        default_handler_class=NotFoundHandler,
        default_handler_args={"services": services},
        xsrf_cookies=False,
        autoreload=False,
        serve_traceback=False,
        services=services,
    )


async def load_routing_config(store: Store, settings: Settings) -> RoutingConfig:
    """Stored config; a start-up flag given explicitly wins and is saved."""
    stored = await store.config.load()
    try:
        config = validate_routing(stored)
    except ConfigError as exc:
        app_log().warning("ignoring invalid stored settings: %s", exc)
        config = validate_routing({k: v for k, v in stored.items() if k not in exc.errors})
    if "health_interval" in settings.explicit and config.health_interval != settings.health_interval:
        config = validate_routing({"health_interval": settings.health_interval}, config)
        await store.config.save(config.to_json())
    return config


async def register_start_nodes(store: Store, urls: tuple[str, ...]) -> None:
    """``--node URL``: register each node unless its address is registered already."""
    for url in urls:
        try:
            fields = parse_node({"url": url})
        except NodeInvalid as exc:
            raise StartupError(f"--node {url}: {exc}") from None
        if await store.nodes.get_by_url(fields["url"]) is not None:
            continue
        base, suffix = fields["name"], 1
        while True:
            try:
                record = await store.nodes.create(fields)
                app_log().info("registered node %s at %s", record["name"], record["url"])
                break
            except DuplicateKey as exc:
                if exc.field != "name" or suffix > 50:
                    raise StartupError(f"--node {url}: cannot register ({exc})") from None
                suffix += 1
                fields["name"] = f"{base}-{suffix}"


async def start_services(settings: Settings, *, store: Store | None = None, monitor: bool = True) -> Services:
    """Everything but the listening socket. ``store`` may be injected by tests."""
    if store is None:
        try:
            store = await connect(settings.mongo_url, settings.db_name, settings.data_dir,
                                  settings.mongo_connect_timeout)
        except StoreError as exc:
            raise StartupError(str(exc)) from None
    app_log().info("store: %s", store.describe())
    try:
        config = await load_routing_config(store, settings)
        await register_start_nodes(store, settings.node)
        secret = await bootstrap.jwt_secret(store, settings.jwt_secret)
        await bootstrap.ensure_admin(store, settings.admin_password)
        fleet = Fleet(config)
        for record in await store.nodes.list():
            fleet.upsert(record)
    except BaseException:
        await store.close()
        raise
    upstream = UpstreamClient()
    services = Services(settings=settings, store=store, fleet=fleet, upstream=upstream,
                        relay=Relay(fleet, upstream))
    services.extras["jwt_secret"] = secret
    services.auth = AuthService(store, secret, lambda: fleet.config)
    await start_accounting(services)
    services.monitor = HealthMonitor(fleet, upstream)
    if monitor:
        services.monitor.start()
    # Follows changes other proxy instances make to the shared store (tests shorten the interval).
    sync = services.extras["sync"] = SyncWatcher(store, fleet, services.apply_config, services.monitor.check)
    sync.start()
    return services


async def start_accounting(services: Services) -> None:
    """Usage records, per-key limits and metrics; the tpd counters start from today's stored usage."""
    fleet = services.fleet
    recorder = services.usage = UsageRecorder(services.store.usage, lambda: fleet.config.usage_retention_days)
    limiter = services.limits = KeyLimiter()
    services.metrics = ProxyMetrics(fleet, usage=recorder)
    services.metrics.start()
    fleet.subscribe(lambda kind, _data: recorder.config_changed() if kind == "config" else None)
    await recorder.start()
    now = time.time()
    try:
        today = await services.store.usage.summary(now - now % 86400, now + 1, "key")
    except StoreError as exc:
        app_log().warning("cannot read today's usage per key (tokens-per-day limits start at 0): %s", exc)
        return
    for group in today["groups"]:
        if group["id"]:
            limiter.seed(group["id"], group["tokens_in"] + group["tokens_out"])


async def stop_services(services: Services) -> None:
    sync = services.extras.get("sync")
    if sync is not None:
        await sync.stop()
    if services.monitor is not None:
        services.monitor.stop()
    if services.usage is not None:
        await services.usage.close()  # pending usage records
    if services.metrics is not None:
        services.metrics.stop()
    if services.auth is not None:
        await services.auth.close()  # pending last_used_at writes
    services.upstream.close()
    await services.store.close()


def listen(app: web.Application, settings: Settings) -> tuple[httpserver.HTTPServer, int]:
    sockets = netutil.bind_sockets(settings.port, settings.host, family=socket.AF_UNSPEC)
    server = httpserver.HTTPServer(
        app,
        xheaders=settings.xheaders,
        max_body_size=SERVER_BODY_CEILING,
        # Slow clients: headers (and an idle keep-alive connection) and bodies are bounded in time.
        idle_connection_timeout=settings.client_header_timeout,
        body_timeout=settings.client_body_timeout,
    )
    server.add_sockets(sockets)
    return server, sockets[0].getsockname()[1]


async def wait_for_idle(services: Services, grace: float) -> bool:
    """True when every in-flight request finished within ``grace`` seconds."""
    deadline = time.monotonic() + grace
    while services.fleet.total_in_flight() or services.fleet.total_queued():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def serve(settings: Settings) -> int:
    """Run until SIGTERM/SIGINT; the exit code for the CLI."""
    setup_logging(settings.log_dir, settings.log_level)
    try:
        try:
            services = await start_services(settings)
        except StartupError as exc:
            print(f"aivonx-proxy: {exc}", file=sys.stderr)
            app_log().error("cannot start: %s", exc)
            return 2
        app = build_application(services)
        server, port = listen(app, settings)
        services.extras["port"] = port
        app_log().info("aivonx-proxy %s listening on http://%s:%d", __version__, settings.host, port)
        print(f"aivonx-proxy {__version__} listening on http://{settings.host}:{port} "
              f"(store: {services.store.kind}, {len(services.fleet.nodes)} node(s))", flush=True)

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()

        grace = services.config.shutdown_grace
        app_log().info("shutting down: waiting up to %gs for %d request(s)", grace,
                       services.fleet.total_in_flight())
        server.stop()
        finished = await wait_for_idle(services, grace)
        if not finished:
            app_log().warning("grace period over with %d request(s) still running",
                              services.fleet.total_in_flight())
        if finished:
            await server.close_all_connections()
        await stop_services(services)
        app_log().info("stopped")
        return 0
    finally:
        stop_logging()
