"""Observability of a real suite: traces across every hop, Prometheus metrics, dashboards, alerts.

These tests start a suite of their own whose processes export spans over OTLP to a receiver
in this test process (the shared suite exports nothing). The Prometheus tests need Debian's
`prometheus` package; it is installed when missing if this runs as root with apt-get, and
the tests are skipped, saying why, only where it cannot be.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from paygate.client import AsyncClient
from paygate.common import tracing
from paygate.common.config import load_config
from suite import REPO, Suite, free_ports, started_suite
from users import PASSWORD, error_reason, new_user, unique_name

pytestmark = pytest.mark.suite

OPS = REPO / "ops"
DASHBOARD = REPO / "grafana" / "dashboards" / "paygate.json"
GATEWAY_SERVICE = "/paygate.v1.GatewayService/"
BANK_SERVICE = "/paygate.bank.v1.BankService/"
WAIT_S = 20.0
HTTP_TIMEOUT_S = 5.0
# Grafana macros in the dashboard's queries, and what they stand for when Prometheus is asked.
GRAFANA_MACROS = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "5m"}
PAYMENT_PANELS = (
    "Payment rate by outcome",
    "Payment latency (p50, p95, p99)",
    "2PC outcomes",
    "2PC phase duration (p99)",
    "2PC timeouts by bank",
    "Bank calls per batch RPC",
)


def eventually(check: Callable[[], Any], timeout_s: float = WAIT_S, what: str = "") -> Any:
    """Call check() until it returns something truthy; fail with its last error in time."""
    deadline = time.monotonic() + timeout_s
    last: object = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
            last = result
        except (AssertionError, OSError) as exc:
            last = exc
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout_s} s: {what or check} (last: {last!r})")


# An OTLP receiver and a traced suite -----------------------------------------------------


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    """Keeps every span exported to it, flattened to dicts with their service's name."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spans: list[dict[str, Any]] = []

    def Export(self, request: Any, context: Any) -> Any:  # noqa: N802 (gRPC's name)
        with self._lock:
            for resource_spans in request.resource_spans:
                service = _attributes(resource_spans.resource.attributes).get("service.name")
                for scope in resource_spans.scope_spans:
                    self._spans += [_flat(span, service) for span in scope.spans]
        return trace_service_pb2.ExportTraceServiceResponse()

    def spans(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._spans)


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    return getattr(value, kind) if kind else None


def _attributes(pairs: Any) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs}


def _flat(span: Any, service: str) -> dict[str, Any]:
    return {
        "service": service,
        "name": span.name,
        "trace_id": span.trace_id.hex(),
        "span_id": span.span_id.hex(),
        "parent_id": span.parent_span_id.hex(),
        "attributes": _attributes(span.attributes),
    }


@pytest.fixture(scope="module")
def receiver() -> Iterator[tuple[Receiver, str]]:
    spans = Receiver()
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(spans, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield spans, f"http://127.0.0.1:{port}"
    finally:
        server.stop(grace=None).wait(5)


@pytest.fixture(scope="module")
def traced_suite(
    receiver: tuple[Receiver, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Suite]:
    otel = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver[1],
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_BSP_SCHEDULE_DELAY": "200",  # milliseconds: spans arrive while the test waits
    }
    with started_suite(tmp_path_factory.mktemp("traced-suite"), extra_env=otel) as suite:
        yield suite


@pytest.fixture(scope="module")
def client_spans() -> InMemorySpanExporter:
    """This process as a traced client application: its spans are kept in memory."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "paygate-client"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    if trace.get_tracer_provider() is not provider:
        pytest.skip("another tracer provider was installed in this process first")
    return exporter


# Traces --------------------------------------------------------------------------------


def test_one_payment_is_one_trace_across_client_gateway_and_both_banks(
    traced_suite: Suite, receiver: tuple[Receiver, str], client_spans: InMemorySpanExporter
) -> None:
    suite, spans = traced_suite, receiver[0]
    with suite.gateway_channel_sync() as channel:
        bob = new_user(suite, channel, "bank-b", 0, "bob")
    alice, account = unique_name("alice"), suite.admin_open_account("bank-a", 50_00)

    async def pay() -> tuple[str, str]:
        ca = suite.config.certs_dir / "ca.pem"
        async with AsyncClient(suite.gateway_target, ca_cert=ca) as client:
            await client.register(alice, PASSWORD, "bank-a", account, link_code=account.link_code)
            session = await client.login(alice, PASSWORD)
            payment = await client.pay(bob.username, 12_34)
            return payment.payment_id, session.access_token

    payment_id, token = asyncio.run(pay())

    root = next(
        s for s in client_spans.get_finished_spans() if s.name == GATEWAY_SERVICE + "CreatePayment"
    )
    assert root.parent is None, "the client's span starts the trace"
    trace_id = format(root.context.trace_id, "032x")

    def hops() -> dict[tuple[str | None, str], dict[str, Any]] | None:
        found = {(s["service"], s["name"]): s for s in spans.spans() if s["trace_id"] == trace_id}
        wanted = {
            ("paygate-gateway", GATEWAY_SERVICE + "CreatePayment"),
            ("paygate-gateway", "2pc.prepare"),
            ("paygate-gateway", "2pc.commit"),
            ("paygate-gateway", "bank.batch"),
            *(
                (f"paygate-{b}", BANK_SERVICE + m)
                for b in ("bank-a", "bank-b")
                for m in ("PrepareBatch", "CommitBatch")
            ),
        }
        return found if wanted <= found.keys() else None

    found = eventually(hops, what=f"spans of trace {trace_id} from gateway and both banks")
    assert {service for service, _ in found} == {
        "paygate-gateway",
        "paygate-bank-a",
        "paygate-bank-b",
    }
    server = found[("paygate-gateway", GATEWAY_SERVICE + "CreatePayment")]
    assert server["parent_id"] == format(root.context.span_id, "016x")
    for phase in ("2pc.prepare", "2pc.commit"):
        attributes = found[("paygate-gateway", phase)]["attributes"]
        assert attributes["paygate.transaction_id"] == payment_id
        assert attributes["paygate.banks"] == ["bank-a", "bank-b"]
    assert found[("paygate-gateway", "2pc.prepare")]["attributes"]["paygate.outcome"] == "yes"
    assert found[("paygate-gateway", "2pc.commit")]["attributes"]["paygate.outcome"] == "finished"
    # The banks' calls travel in batches; a lone payment's batch carries just it.
    batches = [
        s for s in spans.spans() if s["trace_id"] == trace_id and s["name"] == "bank.batch"
    ]
    assert len(batches) == 4  # prepare and commit, at each of the two banks
    assert {b["attributes"]["paygate.batch"] for b in batches} == {
        f"{bank}.{op}" for bank in ("bank-a", "bank-b") for op in ("prepare", "commit")
    }
    assert all(b["attributes"]["paygate.batch.size"] == 1 for b in batches)
    finishes = [
        s for s in spans.spans() if s["trace_id"] == trace_id and s["name"] == "store.finish_batch"
    ]
    assert [f["attributes"]["paygate.batch"] for f in finishes] == ["gateway.finish"]

    everything = spans.spans()
    assert not [s for s in everything if "grpc.health.v1.Health" in s["name"]], (
        "health checks (the harness polls them) must make no spans"
    )
    dumped = json.dumps([s["attributes"] for s in everything])
    assert PASSWORD not in dumped and token not in dumped

    _assert_logged_with_trace(suite, "gateway", GATEWAY_SERVICE + "CreatePayment", trace_id)
    _assert_logged_with_trace(suite, "bank-a", BANK_SERVICE + "PrepareBatch", trace_id)
    assert f'trace_id="{trace_id}"' in _scrape(suite.config.gateway.metrics, openmetrics=True)


def _assert_logged_with_trace(suite: Suite, program: str, method: str, trace_id: str) -> None:
    def line() -> dict[str, Any] | None:
        for text in suite.log_path(program).read_text().splitlines():
            if text.startswith("{"):
                entry = json.loads(text)
                if entry.get("method") == method and entry.get("trace_id") == trace_id:
                    return dict(entry)
        return None

    entry = eventually(line, what=f"{program} logs {method} with trace_id {trace_id}")
    assert re.fullmatch(r"[0-9a-f]{16}", entry["span_id"])


def _scrape(listen: str, *, openmetrics: bool = False) -> str:
    host, _, port = listen.rpartition(":")
    request = urllib.request.Request(f"http://{host}:{port}/metrics")
    if openmetrics:
        request.add_header("Accept", "application/openmetrics-text; version=1.0.0")
    with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:
        return str(response.read().decode())


def test_the_2pc_counters_have_a_series_for_every_bank_from_the_start(suite: Suite) -> None:
    """A series that first appears at 1 has no earlier sample: rate() and increase() (and so
    the alerts) would miss the first timeout at a bank after each restart."""
    text = _scrape(suite.config.gateway.metrics)
    for bank in suite.config.banks:
        for phase in ("prepare", "commit", "abort"):
            assert f'paygate_2pc_timeouts_total{{bank="{bank}",phase="{phase}"}}' in text
        for phase in ("commit", "abort"):
            assert f'paygate_2pc_retries_total{{bank="{bank}",phase="{phase}"}}' in text
    for reason in ("BANK_TIMEOUT", "BANK_UNAVAILABLE", "COORDINATOR_RESTARTED"):
        assert f'paygate_2pc_transactions_total{{outcome="aborted",reason="{reason}"}}' in text


def test_a_banks_money_is_reported_per_currency(suite: Suite) -> None:
    """USD and EUR at one bank are two series: a sum of both would mean nothing."""
    suite.admin_open_account("bank-a", 12_34, currency="EUR")

    def eur_posted() -> float | None:
        text = _scrape(suite.config.banks["bank-a"].metrics)
        found = re.search(r'^paygate_bank_money_minor\{currency="EUR",kind="posted"\} (\S+)$',
                          text, re.M)
        return float(found.group(1)) if found and float(found.group(1)) >= 12_34 else None

    eventually(eur_posted, what="bank-a's EUR money in its metrics")
    usd = re.search(r'^paygate_bank_money_minor\{currency="USD",kind="posted"\} (\S+)$',
                    _scrape(suite.config.banks["bank-a"].metrics), re.M)
    assert usd is not None and float(usd.group(1)) > 0  # the demo accounts


def test_tracing_is_off_without_an_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*tracing.ENDPOINT_VARIABLES, "OTEL_TRACES_EXPORTER", "OTEL_SDK_DISABLED"):
        monkeypatch.delenv(name, raising=False)
    assert tracing.setup_tracing("paygate-test") is None
    assert tracing.exporter_name({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"}) == "otlp"
    assert tracing.exporter_name({"OTEL_TRACES_EXPORTER": "none"}) == "none"
    with pytest.raises(tracing.TracingConfigError, match="zipkin"):
        tracing.exporter_name({"OTEL_TRACES_EXPORTER": "zipkin"})


# Dashboards and rules ------------------------------------------------------------------


def test_grafana_provisioning_loads_the_dashboard_from_prometheus() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "paygate"
    provisioning = REPO / "grafana" / "provisioning"
    datasource = (provisioning / "datasources" / "paygate.yml").read_text()
    assert re.search(r"^\s+uid: prometheus$", datasource, re.M)
    assert re.search(r"^\s+type: prometheus$", datasource, re.M)
    sources = {t["datasource"]["uid"] for p in dashboard["panels"] for t in p["targets"]}
    assert sources == {"prometheus"}
    provider = (provisioning / "dashboards" / "paygate.yml").read_text()
    (path,) = re.findall(r"^\s+path: (\S+)$", provider, re.M)
    # The recipe in docs/observability.md sets GF_PATHS_PROVISIONING to grafana/provisioning.
    folder = pathlib.Path(path.replace("${GF_PATHS_PROVISIONING}", str(provisioning)))
    assert DASHBOARD.resolve() in [f.resolve() for f in folder.glob("*.json")]


# Prometheus ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def prometheus_bin() -> pathlib.Path:
    """The directory holding `prometheus` and `promtool`, installing Debian's package if needed."""
    if not (shutil.which("prometheus") and shutil.which("promtool")):
        if os.geteuid() != 0 or not shutil.which("apt-get"):
            pytest.skip(
                "Debian's `prometheus` package is missing and cannot be installed "
                "here (needs root and apt-get)"
            )
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for command in (
            ["apt-get", "update", "-qq"],
            ["apt-get", "install", "-y", "-qq", "prometheus"],
        ):
            done = subprocess.run(
                command, env=env, capture_output=True, text=True, timeout=600, check=False
            )
            if done.returncode != 0:
                pytest.skip(f"`{' '.join(command)}` failed: {done.stderr[-500:]}")
    promtool = shutil.which("promtool")
    assert promtool is not None
    return pathlib.Path(promtool).parent


@pytest.mark.parametrize(
    "args",
    [
        ("check", "config", "ops/prometheus.yml"),
        ("check", "config", "ops/prometheus-postgres.yml"),
        ("check", "rules", "ops/alerts.yml"),
        ("test", "rules", "ops/alerts_test.yml"),
    ],
    ids=["check-config", "check-config-postgres", "check-rules", "test-rules"],
)
def test_promtool_accepts_config_and_rules(
    prometheus_bin: pathlib.Path, args: tuple[str, ...]
) -> None:
    done = subprocess.run(
        [str(prometheus_bin / "promtool"), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


@pytest.mark.parametrize(
    ("prometheus_yml", "config_toml", "supervisord_conf"),
    [
        ("prometheus.yml", None, REPO / "supervisord.conf"),
        (
            "prometheus-postgres.yml",
            OPS / "paygate-postgres.toml",
            OPS / "supervisord-postgres.conf",
        ),
    ],
    ids=["sqlite", "postgres"],
)
def test_prometheus_scrapes_every_metrics_port_of_its_deployment(
    prometheus_yml: str, config_toml: pathlib.Path | None, supervisord_conf: pathlib.Path
) -> None:
    """Each program's metrics address (the config file's, or a --metrics flag in the
    supervisord.conf) is a target, and nothing else is: a process that is not scraped can
    be down without PaygateProcessDown firing."""
    config = load_config(config_toml)
    flags = re.findall(r"--metrics\s+(\S+)", supervisord_conf.read_text())
    served = {config.gateway.metrics, *flags, *(b.metrics for b in config.banks.values())}
    targets = set(re.findall(r'targets: \["([^"]+)"\]', (OPS / prometheus_yml).read_text()))
    assert targets == served


def derived_config(suite: Suite, folder: pathlib.Path) -> pathlib.Path:
    """ops/prometheus.yml with the suite's metrics ports, a 1 s scrape and absolute rule paths."""
    text = (OPS / "prometheus.yml").read_text()
    addresses = {"127.0.0.1:9151": suite.config.gateway.metrics}
    for number, bank in enumerate(("bank-a", "bank-b", "bank-c")):
        addresses[f"127.0.0.1:{9161 + number}"] = suite.config.banks[bank].metrics
    replacements = {
        **{f'"{default}"': f'"{ours}"' for default, ours in addresses.items()},
        "scrape_interval: 5s": "scrape_interval: 1s",
        "scrape_timeout: 4s": "scrape_timeout: 900ms",
        "evaluation_interval: 5s": "evaluation_interval: 1s",
        "  - alerts.yml": f"  - {OPS / 'alerts.yml'}",
    }
    for old, new in replacements.items():
        assert text.count(old) == 1, f"ops/prometheus.yml no longer holds {old!r} once"
        text = text.replace(old, new)
    path = folder / "prometheus.yml"
    path.write_text(text)
    return path


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def get(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=HTTP_TIMEOUT_S) as r:
            body = json.loads(r.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.get("/api/v1/query", query=expr)
        return list(data["result"])


@pytest.fixture
def prometheus(
    traced_suite: Suite, prometheus_bin: pathlib.Path, tmp_path: pathlib.Path
) -> Iterator[Prometheus]:
    port = free_ports(1)[0]
    log = (tmp_path / "prometheus.log").open("w")
    process = subprocess.Popen(
        [
            str(prometheus_bin / "prometheus"),
            f"--config.file={derived_config(traced_suite, tmp_path)}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--enable-feature=exemplar-storage",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    server = Prometheus(f"http://127.0.0.1:{port}")
    try:
        eventually(
            lambda: urllib.request.urlopen(f"{server.url}/-/ready", timeout=1).close() or True,
            what="prometheus ready",
        )
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()


def drive_payments(suite: Suite) -> None:
    """Payments that succeed, one replayed, one refused for lack of funds, one timed out."""
    with suite.gateway_channel_sync() as channel:
        alice = new_user(suite, channel, "bank-a", 100_00, "alice")
        bob = new_user(suite, channel, "bank-b", 0, "bob")
        carol = new_user(suite, channel, "bank-c", 0, "carol")
        key = uuid.uuid4().hex
        for _ in range(2):
            alice.pay(bob, 10_00, key=key)
        alice.pay(bob, 5_00)
        with pytest.raises(grpc.RpcError) as refused:
            alice.pay(bob, 1_000_00)
        assert error_reason(refused.value) == "INSUFFICIENT_FUNDS"
        # bank-c stopped for longer than the prepare timeout (2 s in tests).
        suite.kill("bank-c", signal.SIGSTOP)
        try:
            with pytest.raises(grpc.RpcError) as timed_out:
                alice.pay(carol, 1_00)
            time.sleep(1.0)
        finally:
            suite.kill("bank-c", signal.SIGCONT)
        assert timed_out.value.code() == grpc.StatusCode.UNAVAILABLE
        assert error_reason(timed_out.value) == "BANK_TIMEOUT"
        assert alice.balance().balance == 85_00


def dashboard_queries() -> dict[str, list[str]]:
    """Every PromQL expression of the dashboard by panel title, Grafana macros filled in."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    queries: dict[str, list[str]] = {}
    for panel in panels:
        for target in panel["targets"]:
            expr = target["expr"]
            for macro, value in GRAFANA_MACROS.items():
                expr = expr.replace(macro, value)
            assert "$" not in expr, f"unknown Grafana variable in {panel['title']!r}: {expr}"
            queries.setdefault(panel["title"], []).append(expr)
    return queries


def test_prometheus_scrapes_the_suite_and_every_panel_and_alert_evaluates(
    traced_suite: Suite, prometheus: Prometheus
) -> None:
    drive_payments(traced_suite)

    def all_up() -> bool:
        targets = prometheus.get("/api/v1/targets")["activeTargets"]
        health = {t["labels"]["process"]: t["health"] for t in targets}
        assert {t["labels"]["job"] for t in targets} == {"paygate-gateway", "paygate-bank"}
        return health == {p: "up" for p in ("gateway", "bank-a", "bank-b", "bank-c")}

    eventually(all_up, what="every target up")

    queries = dashboard_queries()
    assert set(PAYMENT_PANELS) <= queries.keys()
    for title, exprs in queries.items():
        for expr in exprs:
            prometheus.query(expr)  # fails the test on any PromQL error
            if title in PAYMENT_PANELS:
                eventually(lambda e=expr: prometheus.query(e), what=f"data for {title}: {expr}")

    rules = [r for g in prometheus.get("/api/v1/rules")["groups"] for r in g["rules"]]
    names = re.findall(r"- alert: (\w+)", (OPS / "alerts.yml").read_text())
    assert sorted(r["name"] for r in rules) == sorted(names) and len(names) == 7
    for rule in rules:
        prometheus.query(rule["query"])
        eventually(
            lambda r=rule["name"]: _rule_health(prometheus, r) == "ok",
            what=f"rule {rule['name']} evaluated without error",
        )

    def value(expr: str) -> float:
        result = prometheus.query(expr)
        return float(result[0]["value"][1]) if result else 0.0

    # At least: the other test of this module pays on the same suite.
    assert value('sum(paygate_payments_total{outcome="succeeded"})') >= 2
    assert value('sum(paygate_payments_total{outcome="replayed"})') >= 1
    assert value('sum(paygate_payments_total{outcome="failed"})') >= 2
    assert value('sum(paygate_2pc_transactions_total{reason="INSUFFICIENT_FUNDS"})') >= 1
    assert value('sum(paygate_2pc_timeouts_total{bank="bank-c",phase="prepare"})') >= 1
    exemplars = prometheus.get(
        "/api/v1/query_exemplars",
        query='grpc_server_handling_seconds_bucket{job="paygate-gateway"}',
        start=str(time.time() - 300),
        end=str(time.time()),
    )
    trace_ids = [e["labels"].get("trace_id") for s in exemplars for e in s["exemplars"]]
    assert trace_ids and all(re.fullmatch(r"[0-9a-f]{32}", t or "") for t in trace_ids)


def _rule_health(prometheus: Prometheus, name: str) -> str:
    for group in prometheus.get("/api/v1/rules")["groups"]:
        for rule in group["rules"]:
            if rule["name"] == name:
                return str(rule["health"]) + (
                    f": {rule.get('lastError')}" if rule.get("lastError") else ""
                )
    return "missing"
