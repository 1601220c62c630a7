"""The gateway's calls to a bank without tracing installed: a bank's log line carries the
caller's trace id (and only when there is one), and every call is counted in the client's
grpc_client_* metrics by method and status code."""

from __future__ import annotations

import asyncio
import json
import logging
import pathlib
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from paygate.bank.servicer import SERVICE_NAME, BankServicer
from paygate.common import tracing
from paygate.common.config import TlsFiles
from paygate.common.interceptors import server_interceptors
from paygate.common.logs import JsonFormatter
from paygate.common.metrics import GrpcMetrics, new_registry
from paygate.common.server import build_server
from paygate.common.tls import server_credentials
from paygate.errors import NotFound, Unavailable
from paygate.gateway import batching
from paygate.gateway.banks import BankClients
from paygate.gen.paygate.bank.v1 import bank_pb2_grpc

CERTS = pathlib.Path(__file__).resolve().parents[2] / "certs"
TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
SPAN_ID = 0xB7AD6B7169203331


class FakeParticipant:
    """Commits everything; knows no account."""

    async def commit_batch(self, transactions: list[tuple[str, int]]) -> list[None]:
        return [None] * len(transactions)

    async def get_account(self, account_number: str) -> Any:
        raise NotFound(f"no account {account_number}", reason="ACCOUNT_NOT_FOUND")


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter())
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


@pytest.fixture
def rpc_lines(monkeypatch: pytest.MonkeyPatch) -> Iterator[Lines]:
    # Whatever another test installed, these calls run as in a process that exports nothing.
    monkeypatch.setattr(tracing, "recording", lambda: False)
    monkeypatch.setattr(batching, "_tracer", trace.NoOpTracer())  # the batch's span
    lines = Lines()
    logger = logging.getLogger("paygate.rpc")
    logger.addHandler(lines)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        logger.removeHandler(lines)
        logger.setLevel(level)


def test_a_bank_logs_the_callers_trace_and_the_gateway_counts_its_calls(
    rpc_lines: Lines,
) -> None:
    registry = new_registry()

    async def scenario() -> None:
        bank_tls = TlsFiles(
            ca=CERTS / "ca.pem", cert=CERTS / "bank-a.pem", key=CERTS / "bank-a-key.pem"
        )
        servicer = BankServicer(FakeParticipant())  # type: ignore[arg-type]
        server = await build_server(
            listen="127.0.0.1:0",
            credentials=server_credentials(bank_tls, require_client_cert=True),
            service_name=SERVICE_NAME,
            add_servicer=lambda s: bank_pb2_grpc.add_BankServiceServicer_to_server(servicer, s),  # type: ignore[no-untyped-call]
            interceptors=server_interceptors(GrpcMetrics.build(new_registry(), "server")),
            max_message_bytes=1 << 20,
            max_concurrent_rpcs=16,
        )
        gateway_tls = TlsFiles(
            ca=CERTS / "ca.pem", cert=CERTS / "gateway.pem", key=CERTS / "gateway-key.pem"
        )
        banks = BankClients(
            {"bank-a": f"127.0.0.1:{server.port}"},
            gateway_tls,
            interceptors=tracing.client_interceptors_if_recording(),
            metrics=GrpcMetrics.build(registry, "client"),
        )
        try:
            await banks.commit("bank-a", "pay_untraced", timeout_s=5)
            caller = trace.NonRecordingSpan(
                trace.SpanContext(TRACE_ID, SPAN_ID, is_remote=False,
                                  trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED))
            )  # fmt: skip
            with trace.use_span(caller):
                await banks.commit("bank-a", "pay_traced", timeout_s=5)
            with pytest.raises(NotFound):
                await banks.get_account("bank-a", "999999", timeout_s=5)
            await server.grpc_server.stop(None)
            with pytest.raises(Unavailable):
                await banks.commit("bank-a", "pay_down", timeout_s=0.3)
        finally:
            await banks.close()
            await server.grpc_server.stop(None)

    asyncio.run(scenario())
    commits = {
        line["request"]["transaction_ids"][0]: line
        for line in rpc_lines.lines
        if line.get("method", "").endswith("/CommitBatch")
    }
    assert commits["pay_traced"]["trace_id"] == format(TRACE_ID, "032x")
    assert commits["pay_traced"]["span_id"] == format(SPAN_ID, "016x")
    assert "trace_id" not in commits["pay_untraced"]

    def calls(method: str, code: str) -> float | None:
        return registry.get_sample_value(
            "grpc_client_handled_total",
            {"grpc_type": "unary", "grpc_service": SERVICE_NAME, "grpc_method": method,
             "grpc_code": code},
        )  # fmt: skip

    assert calls("CommitBatch", "OK") == 2
    assert calls("GetAccount", "NOT_FOUND") == 1
    # The call to the bank that was gone ended however its deadline and the batcher's
    # shutdown raced; it is counted, under a code other than OK.
    failed = sum(
        calls("CommitBatch", code) or 0
        for code in ("DEADLINE_EXCEEDED", "UNAVAILABLE", "CANCELLED")
    )
    assert failed == 1
    started = registry.get_sample_value(
        "grpc_client_started_total",
        {"grpc_type": "unary", "grpc_service": SERVICE_NAME, "grpc_method": "CommitBatch"},
    )
    assert started == 3
