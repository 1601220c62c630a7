"""Prometheus metrics: one registry per process, the metric families, and their HTTP server.

Every process builds its metrics once at start on its own CollectorRegistry (never the
prometheus_client default registry, so that tests can build many side by side) and passes
the small objects below to the parts that record: the gRPC interceptors, the coordinator,
payments, the auth interceptor and the bank's participant. Names follow the Prometheus
conventions: base units, `_total` counters, `_seconds` histograms. The gRPC metrics use the
names and labels of go-grpc-prometheus so that existing dashboards and alerts apply.

Latency histograms carry the current trace id as an OpenMetrics exemplar, so a slow bucket
on a dashboard leads to one of its traces. Exemplars are served only when the scraper asks
for OpenMetrics (Prometheus does); the plain text format leaves them out.

No label ever holds a user, an account, a token or an amount: labels are bounded sets
(methods, codes, banks, reasons, outcomes).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from wsgiref.simple_server import WSGIServer

from opentelemetry import trace
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

# From a health check (a millisecond) to a prepare that times out (DEFAULT_PREPARE_TIMEOUT_S
# is 2 s) and a commit re-sent with backoff: payment latencies live between 5 ms and 10 s.
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 2.5, 5.0, 10.0)
GRPC_LABELS = ("grpc_type", "grpc_service", "grpc_method")


def new_registry() -> CollectorRegistry:
    return CollectorRegistry(auto_describe=True)


def trace_exemplar() -> dict[str, str] | None:
    """The current span's trace id as an exemplar label set, or None outside a sampled span."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid or not context.trace_flags.sampled:
        return None
    return {"trace_id": format(context.trace_id, "032x")}


def observe(histogram: Histogram, seconds: float) -> None:
    """Observe a latency, with the current trace as its exemplar when there is one."""
    histogram.observe(seconds, exemplar=trace_exemplar())


@dataclasses.dataclass(frozen=True)
class GrpcMetrics:
    """go-grpc-prometheus' server or client metrics: started, handled (by code), latency."""

    started: Counter
    handled: Counter
    handling_seconds: Histogram
    _methods: dict[str, MethodMetrics] = dataclasses.field(default_factory=dict, compare=False)

    def of_method(self, service: str, method: str) -> MethodMetrics:
        """The labelled children of one method, made once and then reused.

        `labels()` takes a lock and converts its values on every call; a call's metrics do
        not need that. Only methods a server serves, or a client calls, get here: a
        bounded set (an unknown method has no handler, so nothing is recorded for it).
        """
        key = f"{service}/{method}"
        found = self._methods.get(key)
        if found is None:
            found = self._methods[key] = MethodMetrics(self, ("unary", service, method))
        return found

    @classmethod
    def build(cls, registry: CollectorRegistry, side: str) -> GrpcMetrics:
        what = "RPCs started on the server" if side == "server" else "RPCs started by the client"
        return cls(
            started=Counter(
                f"grpc_{side}_started", f"Total number of {what}.", GRPC_LABELS, registry=registry
            ),
            handled=Counter(
                f"grpc_{side}_handled",
                f"Total number of RPCs completed on the {side}, regardless of success or failure.",
                (*GRPC_LABELS, "grpc_code"),
                registry=registry,
            ),
            handling_seconds=Histogram(
                f"grpc_{side}_handling_seconds",
                f"Histogram of response latency (seconds) of gRPC calls on the {side}.",
                GRPC_LABELS,
                buckets=LATENCY_BUCKETS_S,
                registry=registry,
            ),
        )


class MethodMetrics:
    """One method's children of a GrpcMetrics: started, latency, and handled by code."""

    def __init__(self, metrics: GrpcMetrics, labels: tuple[str, str, str]) -> None:
        self.started = metrics.started.labels(*labels)
        self.handling_seconds = metrics.handling_seconds.labels(*labels)
        self._handled = metrics.handled
        self._labels = labels
        self._handled_by_code: dict[str, Counter] = {}

    def handled(self, code_name: str) -> Counter:
        found = self._handled_by_code.get(code_name)
        if found is None:  # at most one per gRPC status code
            found = self._handled_by_code[code_name] = self._handled.labels(
                *self._labels, code_name
            )
        return found


@dataclasses.dataclass(frozen=True)
class CoordinatorMetrics:
    """What the 2PC coordinator records (paygate.gateway.coordinator)."""

    transactions: Counter
    phase_seconds: Histogram
    timeouts: Counter
    retries: Counter
    in_doubt: Gauge
    recovered: Counter
    batch_size: Histogram
    authorizations: Counter
    overdue: Gauge

    @classmethod
    def build(
        cls,
        registry: CollectorRegistry,
        *,
        banks: Iterable[str] = (),
        abort_reasons: Iterable[str] = (),
    ) -> CoordinatorMetrics:
        """The families, with a series at 0 for each bank and phase, outcome and reason.

        A labelled series that first appears at 1 has no earlier sample, so rate() and
        increase() miss that first count: after each restart, the first burst of timeouts at
        a bank would not raise PaygatePrepareTimeoutsRising. Series made at start do not.
        """
        metrics = cls._families(registry)
        for bank in banks:
            for phase in ("prepare", "commit", "abort"):
                metrics.timeouts.labels(bank, phase)
            for phase in ("commit", "abort"):
                metrics.retries.labels(bank, phase)
        metrics.transactions.labels("committed", "")
        for reason in abort_reasons:
            metrics.transactions.labels("aborted", reason)
        for decision in ("commit", "abort"):
            metrics.recovered.labels(decision)
        for outcome in ("authorized", "captured", "canceled", "expired"):
            metrics.authorizations.labels(outcome)
        return metrics

    @classmethod
    def _families(cls, registry: CollectorRegistry) -> CoordinatorMetrics:
        return cls(
            transactions=Counter(
                "paygate_2pc_transactions",
                "Two-phase-commit transactions decided by this gateway, by outcome and reason.",
                ("outcome", "reason"),
                registry=registry,
            ),
            phase_seconds=Histogram(
                "paygate_2pc_phase_seconds",
                "Duration of one phase of a transaction at all its banks.",
                ("phase",),
                buckets=LATENCY_BUCKETS_S,
                registry=registry,
            ),
            timeouts=Counter(
                "paygate_2pc_timeouts",
                "Bank calls of the two-phase commit that did not answer in time.",
                ("bank", "phase"),
                registry=registry,
            ),
            retries=Counter(
                "paygate_2pc_retries",
                "Phase-two messages re-sent to a bank that had not acknowledged.",
                ("bank", "phase"),
                registry=registry,
            ),
            in_doubt=Gauge(
                "paygate_2pc_in_doubt",
                "Unfinished transactions older than a request drives one (recovery's to"
                " finish), counted every recovery interval.",
                registry=registry,
            ),
            recovered=Counter(
                "paygate_2pc_recovered",
                "Transactions driven to their end by recovery, by the decision it delivered.",
                ("decision",),
                registry=registry,
            ),
            overdue=Gauge(
                "paygate_authorizations_overdue",
                "Authorizations past their deadline whose holds are not yet released (recovery"
                " expires them within an interval), counted every recovery interval.",
                registry=registry,
            ),
            authorizations=Counter(
                "paygate_authorizations",
                "Authorizations (payments with manual capture) by what became of them: placed"
                " (authorized), captured, canceled by the payee, or expired uncaptured.",
                ("outcome",),
                registry=registry,
            ),
            batch_size=Histogram(
                "paygate_bank_batch_size",
                "Calls carried by one batch RPC to a bank, by operation (prepare, commit, abort).",
                ("bank", "operation"),
                buckets=BATCH_SIZE_BUCKETS,
                registry=registry,
            ),
        )


@dataclasses.dataclass(frozen=True)
class PaymentMetrics:
    """What CreatePayment records (paygate.gateway.payments)."""

    payments: Counter
    replays: Counter
    conflicts: Counter
    refunds: Counter

    @classmethod
    def build(cls, registry: CollectorRegistry) -> PaymentMetrics:
        return cls(
            payments=Counter(
                "paygate_payments",
                "CreatePayment requests by outcome: succeeded, failed (aborted), rejected "
                "(invalid), replayed (idempotent answer) or conflict (key misuse).",
                ("outcome",),
                registry=registry,
            ),
            replays=Counter(
                "paygate_idempotent_replays",
                "CreatePayment requests answered again from their idempotency key.",
                registry=registry,
            ),
            conflicts=Counter(
                "paygate_idempotency_conflicts",
                "CreatePayment requests refused because of their idempotency key.",
                ("reason",),
                registry=registry,
            ),
            refunds=Counter(
                "paygate_refunds",
                "RefundPayment requests by outcome: succeeded, failed (aborted, for example "
                "the payee short of funds), rejected (refused, nothing written), replayed or "
                "conflict (key misuse).",
                ("outcome",),
                registry=registry,
            ),
        )


def auth_failures(registry: CollectorRegistry) -> Counter:
    return Counter(
        "paygate_auth_failures",
        "Calls refused as unauthenticated, by reason (never the token itself).",
        ("reason",),
        registry=registry,
    )


def event_metrics(
    registry: CollectorRegistry, types: Iterable[str], watchers: Callable[[], float]
) -> Counter:
    """paygate_events_written_total{type} (each series made at 0), and the gauge of the
    event streams open at this gateway; returns the counter, for the store to count with."""
    written = Counter(
        "paygate_events_written",
        "Events written (one per party of a change), by type, once their transaction committed.",
        ("type",),
        registry=registry,
    )
    for kind in types:
        written.labels(kind)
    Gauge(
        "paygate_event_watchers",
        "WatchEvents streams open at this gateway.",
        registry=registry,
    ).set_function(watchers)
    return written


def admin_actions(
    registry: CollectorRegistry, actions: Iterable[str] = (), outcomes: Iterable[str] = ()
) -> Counter:
    """Operators' calls to AdminService by action and outcome (never the user), each
    series made at 0 so that the first one counts in rate()."""
    counter = Counter(
        "paygate_admin_actions",
        "Operator actions on gateway users (AdminService), by action and outcome.",
        ("action", "outcome"),
        registry=registry,
    )
    outcomes = tuple(outcomes)
    for action in actions:
        for outcome in outcomes:
            counter.labels(action, outcome)
    return counter


@dataclasses.dataclass(frozen=True)
class BankMetrics:
    """What a bank records (paygate.bank.participant); the gauges come from ledger totals."""

    holds: Gauge
    holds_resolved: Counter
    money_minor: Gauge

    @classmethod
    def build(cls, registry: CollectorRegistry) -> BankMetrics:
        return cls(
            holds=Gauge(
                "paygate_bank_holds",
                "Two-phase transactions holding money at this bank, by state.",
                ("state",),
                registry=registry,
            ),
            holds_resolved=Counter(
                "paygate_bank_holds_resolved",
                "Prepared transactions resolved at this bank: posted (committed) or voided.",
                ("resolution",),
                registry=registry,
            ),
            money_minor=Gauge(
                "paygate_bank_money_minor",
                "Money at this bank in minor units of each currency: posted balances, and"
                " pending (held) debits.",
                ("kind", "currency"),
                registry=registry,
            ),
        )


class MetricsServer:
    """The /metrics HTTP endpoint of a process, served from a daemon thread."""

    def __init__(self, httpd: WSGIServer, thread: threading.Thread) -> None:
        self._httpd = httpd
        self._thread = thread

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5.0)


def start_metrics_server(listen: str, registry: CollectorRegistry) -> MetricsServer:
    """Serve `registry` on `listen` ("host:port"; port 0 picks a free one)."""
    host, _, port = listen.rpartition(":")
    httpd, thread = start_http_server(int(port), addr=host or "0.0.0.0", registry=registry)
    return MetricsServer(httpd, thread)


@contextmanager
def serving_metrics(listen: str, registry: CollectorRegistry) -> Iterator[MetricsServer]:
    server = start_metrics_server(listen, registry)
    try:
        yield server
    finally:
        server.close()
