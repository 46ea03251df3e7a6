"""Prometheus metrics of one proxy process, on its own registry (``GET /metrics``).

Top-level, next to :mod:`app.logs`, because it is the other sink of a finished request:
the handler hands it the request's outcome, and at scrape time a collector reads the
fleet, the usage recorder and the key limiter. It imports from :mod:`app.fleet`; nothing
in :mod:`app.fleet` imports it, so the domain stays free of any metrics library.

Every instance has its own ``CollectorRegistry`` (tests run several proxies in one
process; the library's global default registry would mix them). Label values are
bounded: routes are the gateway's fixed paths, models are canonical names known to the
fleet (anything else is ``"other"``), nodes are registered node names, statuses are
HTTP codes. Nothing per user, key or request is a label.

Counted per request. The handler's :meth:`ProxyMetrics.observe` only queues a tuple; the
queue is folded into the instruments once a second, at every scrape, and whenever it holds
:attr:`~ProxyMetrics.FOLD_AT` requests — so the request path never takes the library's locks
or walks histogram buckets, and the folding runs in one warm loop:

* ``aivonx_requests_total{route,model,node,status}``
* ``aivonx_ttfb_seconds{node,model}`` — the node's time to its response headers (last attempt)
* ``aivonx_request_duration_seconds{node,model}`` — the whole request, queueing included
* ``aivonx_tokens_in_total{node,model}``, ``aivonx_tokens_out_total{node,model}``
* ``aivonx_retries_total{node}`` (attempts that failed on ``node`` and went on elsewhere),
  ``aivonx_failovers_total{route}`` (requests served after such a retry),
  ``aivonx_client_disconnects_total{route}``
* ``aivonx_rate_limited_total{limit}`` — gateway requests refused by a key's rpm or tpd

Read at scrape time (no per-request cost):

* ``aivonx_node_up``, ``aivonx_node_routable``, ``aivonx_node_in_flight``, ``aivonx_node_queued``,
  ``aivonx_node_health_check_seconds``, ``aivonx_node_models``, ``aivonx_node_loaded_models`` — per node
* ``aivonx_pool_nodes{pool=active|standby|routable}``, ``aivonx_queued_requests``
* ``aivonx_usage_records_written_total``, ``aivonx_usage_records_dropped_total``,
  ``aivonx_usage_flush_failures_total``, ``aivonx_usage_records_pending``
* ``process_*``, ``python_info``, ``python_gc_*`` — the library's process collectors
"""

from __future__ import annotations

import gzip
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, GCCollector, Histogram, PlatformCollector, ProcessCollector
from prometheus_client.exposition import choose_encoder, gzip_accepted
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from tornado.ioloop import PeriodicCallback

from app.fleet.node import ACTIVE
from app.fleet.pool import Fleet

TTFB_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
OTHER = "other"
NONE = "none"


class ProxyMetrics:
    """The registry of one proxy and the per-request instruments on it."""

    FOLD_AT = 2000
    FOLD_INTERVAL = 1.0

    def __init__(self, fleet: Fleet, *, usage: Any = None) -> None:
        self.fleet = fleet
        self._queue: deque[tuple[Any, ...]] = deque()
        self._folder: PeriodicCallback | None = None
        registry = self.registry = CollectorRegistry()
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
        self.requests = Counter("aivonx_requests", "Proxied requests by route, model, node and status",
                                ("route", "model", "node", "status"), registry=registry)
        self.ttfb = Histogram("aivonx_ttfb_seconds", "Time from sending a request to a node to its response "
                              "headers (the attempt that answered)", ("node", "model"), buckets=TTFB_BUCKETS,
                              registry=registry)
        self.duration = Histogram("aivonx_request_duration_seconds", "Whole proxied requests, queueing and "
                                  "retries included", ("node", "model"), buckets=DURATION_BUCKETS, registry=registry)
        self.tokens_in = Counter("aivonx_tokens_in", "Prompt tokens (prompt_eval_count, usage.prompt_tokens)",
                                 ("node", "model"), registry=registry)
        self.tokens_out = Counter("aivonx_tokens_out", "Generated tokens (eval_count, usage.completion_tokens)",
                                  ("node", "model"), registry=registry)
        self.retries = Counter("aivonx_retries", "Attempts that failed on this node before the first byte and "
                               "were retried on another", ("node",), registry=registry)
        self.failovers = Counter("aivonx_failovers", "Requests served by another node after an attempt failed",
                                 ("route",), registry=registry)
        self.disconnects = Counter("aivonx_client_disconnects", "Clients that left before their answer ended",
                                   ("route",), registry=registry)
        self.rate_limited = Counter("aivonx_rate_limited", "Gateway requests refused by their key's limit "
                                    "(rpm: requests per minute, tpd: tokens per day)", ("limit",), registry=registry)
        registry.register(_StateCollector(fleet, usage))
        # Label children by label values: one dict lookup per request instead of labels()'s work.
        self._request_children: dict[tuple[str, str, str, int], Any] = {}
        self._node_model_children: dict[tuple[str, str], tuple[Any, Any, Any, Any]] = {}

    def model_label(self, key: str | None) -> str:
        """The canonical model name when the fleet knows it, else ``"other"`` (bounded labels)."""
        return key if key and self.fleet.known(key) else OTHER

    def start(self) -> None:
        """Fold the queued requests into the instruments every :attr:`FOLD_INTERVAL` seconds."""
        if self._folder is None:
            self._folder = PeriodicCallback(self.fold, self.FOLD_INTERVAL * 1000)
            self._folder.start()

    def stop(self) -> None:
        if self._folder is not None:
            self._folder.stop()
            self._folder = None
        self.fold()

    def observe(self, *, route: str, model: str | None, node: str | None, status: int, ttfb: float | None,
                duration: float, tokens_in: int | None, tokens_out: int | None, retried_on: Iterable[str] = (),
                client_gone: bool = False) -> None:
        """Count one finished proxied request (queued; see the module docstring)."""
        queue = self._queue
        queue.append((route, model, node, status, ttfb, duration, tokens_in, tokens_out, retried_on, client_gone))
        if len(queue) >= self.FOLD_AT:
            self.fold()

    def fold(self) -> None:
        """Apply the queued requests to the instruments."""
        queue = self._queue
        requests, node_model = self._request_children, self._node_model_children
        known: dict[str | None, str] = {}
        while queue:
            route, model, node, status, ttfb, duration, tokens_in, tokens_out, retried_on, client_gone = \
                queue.popleft()
            model_label = known.get(model)
            if model_label is None:
                model_label = known[model] = self.model_label(model)
            node_label = node or NONE
            key = (route, model_label, node_label, status)
            child = requests.get(key)
            if child is None:
                child = requests[key] = self.requests.labels(route, model_label, node_label, str(status))
            child.inc()
            pair = (node_label, model_label)
            children = node_model.get(pair)
            if children is None:
                children = node_model[pair] = (
                    self.ttfb.labels(*pair), self.duration.labels(*pair),
                    self.tokens_in.labels(*pair), self.tokens_out.labels(*pair))
            if ttfb is not None:
                children[0].observe(ttfb)
            children[1].observe(duration)
            if tokens_in:
                children[2].inc(tokens_in)
            if tokens_out:
                children[3].inc(tokens_out)
            retried = False
            for failed in retried_on:
                retried = True
                self.retries.labels(failed).inc()
            if retried and 0 < status < 400:
                self.failovers.labels(route).inc()
            if client_gone:
                self.disconnects.labels(route).inc()

    def refused(self, limit: str) -> None:
        self.rate_limited.labels(limit).inc()

    def render(self, accept: str | None = None, accept_encoding: str | None = None) -> tuple[bytes, dict[str, str]]:
        """The exposition (text format, or OpenMetrics when asked for) and its response headers."""
        self.fold()
        encoder, content_type = choose_encoder(accept or "")
        body = encoder(self.registry)
        headers = {"Content-Type": content_type}
        if accept_encoding and gzip_accepted(accept_encoding):
            body = gzip.compress(body)
            headers["Content-Encoding"] = "gzip"
        return body, headers


class _StateCollector:
    """Fleet and usage-pipeline state, read when Prometheus scrapes."""

    def __init__(self, fleet: Fleet, usage: Any) -> None:
        self.fleet = fleet
        self.usage = usage

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        nodes = sorted(self.fleet.nodes.values(), key=lambda n: n.name)
        gauges = {
            "up": GaugeMetricFamily("aivonx_node_up", "1 when the node is healthy (active pool), else 0",
                                    labels=["node"]),
            "routable": GaugeMetricFamily("aivonx_node_routable", "1 when the node takes new requests (healthy, "
                                          "enabled, not draining)", labels=["node"]),
            "in_flight": GaugeMetricFamily("aivonx_node_in_flight", "Requests running on the node",
                                           labels=["node"]),
            "queued": GaugeMetricFamily("aivonx_node_queued", "Requests waiting for a slot that this node could "
                                        "serve (one waiting request counts on each of its candidates)",
                                        labels=["node"]),
            "check": GaugeMetricFamily("aivonx_node_health_check_seconds", "Duration of the node's last health "
                                       "check", labels=["node"]),
            "models": GaugeMetricFamily("aivonx_node_models", "Models the node has", labels=["node"]),
            "loaded": GaugeMetricFamily("aivonx_node_loaded_models", "Models loaded in the node's memory",
                                        labels=["node"]),
        }
        for node in nodes:
            labels = [node.name]
            gauges["up"].add_metric(labels, 1.0 if node.status == ACTIVE else 0.0)
            gauges["routable"].add_metric(labels, 1.0 if node.routable else 0.0)
            gauges["in_flight"].add_metric(labels, node.in_flight)
            gauges["queued"].add_metric(labels, node.queued)
            if node.probe_duration is not None:
                gauges["check"].add_metric(labels, node.probe_duration)
            gauges["models"].add_metric(labels, len(node.models))
            gauges["loaded"].add_metric(labels, len(node.loaded))
        yield from gauges.values()
        pools = GaugeMetricFamily("aivonx_pool_nodes", "Nodes per pool", labels=["pool"])
        pools.add_metric(["active"], sum(1 for n in nodes if n.status == ACTIVE))
        pools.add_metric(["standby"], sum(1 for n in nodes if n.status != ACTIVE))
        pools.add_metric(["routable"], sum(1 for n in nodes if n.routable))
        yield pools
        yield GaugeMetricFamily("aivonx_queued_requests", "Requests waiting for a slot, fleet-wide",
                                value=self.fleet.total_queued())
        usage = self.usage
        if usage is not None:
            yield CounterMetricFamily("aivonx_usage_records_written", "Usage records written to the store",
                                      value=usage.written)
            yield CounterMetricFamily("aivonx_usage_records_dropped", "Usage records dropped because the buffer "
                                      "was full (store down) or the store refused them", value=usage.dropped)
            yield CounterMetricFamily("aivonx_usage_flush_failures", "Failed attempts to write usage records",
                                      value=usage.flush_failures)
            yield GaugeMetricFamily("aivonx_usage_records_pending", "Usage records waiting to be written",
                                    value=len(usage.pending))
