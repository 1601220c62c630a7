"""What the relay records, and the HTTP endpoint serving it with the relay's health.

The relay serves no gRPC, so its health is an HTTP endpoint beside /metrics on the same
address: GET /healthz answers 200 while the relay can do its work (the database answered
its last pass and the broker is connected) and 503 otherwise, with the parts as JSON. Any
other path serves the Prometheus metrics, as every Paygate process does.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app

from paygate.common.metrics import LATENCY_BUCKETS_S, MetricsServer

HEALTH_PATH = "/healthz"
FAILURE_KINDS = ("broker", "database")


@dataclasses.dataclass(frozen=True)
class RelayMetrics:
    published: Counter
    unpublished: Gauge
    oldest_unpublished_age: Gauge
    lease_held: Gauge
    broker_connected: Gauge
    failures: Counter
    batch_seconds: Histogram

    @classmethod
    def build(cls, registry: CollectorRegistry) -> RelayMetrics:
        failures = Counter(
            "paygate_relay_failures",
            "Passes of the relay that failed, by what failed (broker or database).",
            ("kind",),
            registry=registry,
        )
        for kind in FAILURE_KINDS:
            failures.labels(kind)  # every series from the start: rate() sees the first one
        return cls(
            published=Counter(
                "paygate_relay_events_published",
                "Events the broker confirmed (a redelivery after a crash counts again).",
                registry=registry,
            ),
            unpublished=Gauge(
                "paygate_relay_unpublished_events",
                "Events written by the gateway and not yet confirmed by the broker.",
                registry=registry,
            ),
            oldest_unpublished_age=Gauge(
                "paygate_relay_oldest_unpublished_age_seconds",
                "How long the oldest unpublished event has waited (0: none waits).",
                registry=registry,
            ),
            lease_held=Gauge(
                "paygate_relay_lease_held",
                "1 while this relay holds the lease (it alone publishes), else 0.",
                registry=registry,
            ),
            broker_connected=Gauge(
                "paygate_relay_broker_connected",
                "1 while this relay is connected to the broker, else 0.",
                registry=registry,
            ),
            failures=failures,
            batch_seconds=Histogram(
                "paygate_relay_batch_seconds",
                "Time to publish one batch and have the broker confirm it.",
                buckets=LATENCY_BUCKETS_S,
                registry=registry,
            ),
        )


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base's name)
        """Scrapes are not logged (prometheus_client's own server is quiet too)."""


def start_health_server(
    listen: str, registry: CollectorRegistry, health: Callable[[], dict[str, bool]]
) -> MetricsServer:
    """Serve /healthz (from `health`: every part true means healthy) and the metrics."""
    metrics_app = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != HEALTH_PATH:
            return metrics_app(environ, start_response)  # type: ignore[no-any-return]
        parts = health()
        status = "200 OK" if all(parts.values()) else "503 Service Unavailable"
        body = json.dumps({"healthy": all(parts.values()), **parts}).encode()
        start_response(status, [("Content-Type", "application/json")])
        return [body]

    host, _, port = listen.rpartition(":")
    httpd = make_server(host or "0.0.0.0", int(port), app, _Server, handler_class=_QuietHandler)
    thread = threading.Thread(target=httpd.serve_forever, name="relay-metrics", daemon=True)
    thread.start()
    return MetricsServer(httpd, thread)
