"""ClientMetricsInterceptor: go-grpc-prometheus' client metrics for unary calls.

grpc_client_started_total, grpc_client_handled_total{grpc_code} and
grpc_client_handling_seconds for every call, timed in `finally` so that calls that fail or
time out are measured too. `measured` does the same for one call without an interceptor
(the gateway's calls to the banks, gateway/banks.py: grpc.aio runs every call of a channel
with interceptors through a task of its own, which costs a tenth of a bare call).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from paygate.common.handlers import service_and_method
from paygate.common.metrics import GrpcMetrics, MethodMetrics, observe

T = TypeVar("T")


async def measured(metrics: MethodMetrics, call: Awaitable[T]) -> T:
    """The answer of a unary call (a grpc.aio call object), measured in `metrics`."""
    metrics.started.inc()
    start = time.perf_counter()
    code_name = "UNKNOWN"
    try:
        response = await call
        code_name = "OK"
        return response
    except grpc.aio.AioRpcError as exc:
        code_name = exc.code().name
        raise
    except asyncio.CancelledError:
        code_name = "CANCELLED"
        raise
    finally:
        metrics.handled(code_name).inc()
        observe(metrics.handling_seconds, time.perf_counter() - start)


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
