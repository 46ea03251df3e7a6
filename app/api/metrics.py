"""``GET /metrics``: this proxy process's Prometheus metrics (see :mod:`app.metrics`).

Protected like ``/api/proxy/state`` (it names nodes and models): a viewer login (Bearer
or the console's session) unless the ``public_metrics`` setting is on. Prometheus can
scrape with an API token (``authorization: {credentials: avx_…}`` in its scrape config).
"""

from __future__ import annotations

from app.api.base import ManagementHandler


class MetricsHandler(ManagementHandler):
    def required_role(self) -> str | None:
        if self.request.method in ("GET", "HEAD") and self.services.config.public_metrics:
            return None
        return super().required_role()

    def get(self) -> None:
        """Prometheus metrics: requests, latencies, tokens, retries, node health and load, process.
        ---
        summary: Prometheus metrics
        tags: [usage]
        responses:
          "200":
            description: >
              The Prometheus text format (version 0.0.4), or OpenMetrics when the Accept header asks for it;
              gzip when accepted. Requests by route, model, node and status; time to first byte and duration
              histograms and tokens in and out per node and model; retries, failovers, client disconnects,
              rate-limited requests; per-node health, in-flight, queued and last health-check duration; pool
              sizes; the usage pipeline (written, dropped, pending); process and Python basics.
            content:
              text/plain:
                schema: {type: string}
          "401": {description: Not logged in (and public_metrics is off)}
        """
        body, headers = self.services.metrics.render(self.request.headers.get("Accept"),
                                                     self.request.headers.get("Accept-Encoding"))
        for name, value in headers.items():
            self.set_header(name, value)
        self.finish(body)


ROUTES: list[tuple[str, type]] = [
    (r"/metrics", MetricsHandler),
]
