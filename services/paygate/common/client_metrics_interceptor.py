"""ClientMetricsInterceptor: go-grpc-prometheus' client metrics for unary calls.

grpc_client_started_total, grpc_client_handled_total{grpc_code} and
grpc_client_handling_seconds for every call the gateway makes to a bank, timed in `finally`
so that calls that fail or time out are measured too.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from paygate.common.handlers import service_and_method
from paygate.common.metrics import GrpcMetrics, observe


class ClientMetricsInterceptor(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, metrics: GrpcMetrics) -> None:
        self._metrics = metrics

    async def intercept_unary_unary(
        self,
        continuation: Callable[
            [grpc.aio.ClientCallDetails, Any], Awaitable[grpc.aio.UnaryUnaryCall[Any, Any]]
        ],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> grpc.aio.UnaryUnaryCall[Any, Any]:
        method = client_call_details.method
        # grpc.aio hands the method over as bytes although its type stubs say str.
        full_method = method.decode() if isinstance(method, bytes) else method
        metrics = self._metrics.of_method(*service_and_method(full_method))
        metrics.started.inc()
        start = time.perf_counter()
        code_name = "UNKNOWN"
        try:
            call = await continuation(client_call_details, request)
            # code() waits for the call to end without raising, so failures are timed too.
            code_name = (await call.code()).name
            return call
        except asyncio.CancelledError:
            code_name = "CANCELLED"
            raise
        finally:
            metrics.handled(code_name).inc()
            observe(metrics.handling_seconds, time.perf_counter() - start)
