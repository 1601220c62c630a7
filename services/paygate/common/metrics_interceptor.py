"""MetricsInterceptor: go-grpc-prometheus' server metrics for every unary call, and for
the services' own server streams (WatchEvents; not health Watch or reflection).

grpc_server_started_total when a call starts, then grpc_server_handled_total with its final
status code and grpc_server_handling_seconds with its duration, timed in `finally` so that
failed and cancelled calls are measured too. It sits outside the ErrorInterceptor, so the
code it records is the one the client receives.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from paygate.common.handlers import Context, Handler, UnaryBehavior, service_and_method, wrap_unary
from paygate.common.metrics import GrpcMetrics, observe


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, metrics: GrpcMetrics) -> None:
        self._metrics = metrics

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        service, method = service_and_method(handler_call_details.method)
        if _own_server_stream(handler, service):
            assert handler is not None
            return _measured_stream(handler, self._metrics.of_method(service, method))
        if handler is None or handler.unary_unary is None:
            # No such method (gRPC answers UNIMPLEMENTED), or a streaming one (health Watch,
            # reflection): nothing is recorded for either, so no series is made for them.
            return handler
        metrics = self._metrics.of_method(service, method)

        def wrapper(behavior: UnaryBehavior) -> UnaryBehavior:
            async def measured(request: Any, context: Context) -> Any:
                metrics.started.inc()
                start = time.perf_counter()
                code: grpc.StatusCode = grpc.StatusCode.UNKNOWN
                try:
                    response = await behavior(request, context)
                    code = context.code() or grpc.StatusCode.OK
                    return response
                except asyncio.CancelledError:
                    code = grpc.StatusCode.CANCELLED
                    raise
                except BaseException:
                    code = context.code() or grpc.StatusCode.UNKNOWN
                    raise
                finally:
                    metrics.handled(_code_name(code)).inc()
                    observe(metrics.handling_seconds, time.perf_counter() - start)

            return measured

        return wrap_unary(handler, wrapper)


HEALTH_SERVICE = "grpc.health.v1.Health"


def _own_server_stream(handler: Handler | None, service: str) -> bool:
    return (
        handler is not None
        and handler.unary_stream is not None
        and inspect.isasyncgenfunction(handler.unary_stream)
        and service != HEALTH_SERVICE
    )


def _measured_stream(handler: Handler, metrics: Any) -> Handler:
    """A server stream measured as a unary call is: started, then handled with its final
    code, and its whole duration."""
    behavior: Any = handler.unary_stream

    async def measured(request: Any, context: Context) -> AsyncIterator[Any]:
        metrics.started.inc()
        start = time.perf_counter()
        code: grpc.StatusCode = grpc.StatusCode.UNKNOWN
        try:
            async for response in behavior(request, context):
                yield response
            code = context.code() or grpc.StatusCode.OK
        except (asyncio.CancelledError, GeneratorExit):
            code = grpc.StatusCode.CANCELLED
            raise
        except BaseException:
            code = context.code() or grpc.StatusCode.UNKNOWN
            raise
        finally:
            metrics.handled(_code_name(code)).inc()
            observe(metrics.handling_seconds, time.perf_counter() - start)

    return handler._replace(unary_stream=measured)  # type: ignore[attr-defined,no-any-return]


def _code_name(code: object) -> str:
    return code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"
