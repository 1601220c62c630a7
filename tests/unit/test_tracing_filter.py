"""paygate.common.tracing.traced: the span filter says what the library's health filter says."""

from __future__ import annotations

import dataclasses

import grpc
import pytest
from opentelemetry.instrumentation.grpc.filters import health_check, negate
from paygate.common.tracing import traced

METHODS = [
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
    "/paygate.v1.GatewayService/CreatePayment",
    "/paygate.bank.v1.BankService/PrepareBatch",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
]


@dataclasses.dataclass
class ServerDetails(grpc.HandlerCallDetails):
    method: str
    invocation_metadata: tuple[tuple[str, str], ...] = ()


@dataclasses.dataclass
class ClientDetails:
    """grpc.aio hands its client interceptors the method as bytes."""

    method: bytes


@pytest.mark.parametrize("method", METHODS)
def test_traced_agrees_with_the_librarys_filter(method: str) -> None:
    library = negate(health_check())
    expected = "grpc.health.v1.Health" not in method
    assert traced(ServerDetails(method)) is expected
    assert library(ServerDetails(method)) is expected
    assert traced(ClientDetails(method.encode())) is expected
