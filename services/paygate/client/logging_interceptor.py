"""LoggingInterceptor (client side): one log line per call, with its outcome and duration.

Only the method, the status code and the duration are logged: never the request, the
metadata or the response, which hold passwords and access tokens.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

_log = logging.getLogger("paygate.client")


class LoggingInterceptor(grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(
        self,
        continuation: Callable[
            [grpc.aio.ClientCallDetails, Any], Awaitable[grpc.aio.UnaryUnaryCall[Any, Any]]
        ],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> grpc.aio.UnaryUnaryCall[Any, Any]:
        method = _method_name(client_call_details.method)
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
            duration_ms = round((time.perf_counter() - start) * 1000, 3)
            _log.info(
                "rpc %s %s %.3f ms",
                method,
                code_name,
                duration_ms,
                extra={"fields": {"method": method, "code": code_name, "duration_ms": duration_ms}},
            )


def _method_name(method: str | bytes) -> str:
    # grpc.aio hands the method over as bytes although its type stubs say str.
    return method.decode() if isinstance(method, bytes) else method
