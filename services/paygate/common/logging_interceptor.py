"""LoggingInterceptor: one structured log line per call, with its outcome and duration."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from paygate.common.call_info import CALL_INFO, CallInfo
from paygate.common.handlers import Context, Handler, UnaryBehavior, wrap_unary
from paygate.common.logs import UNLOGGED_FIELDS, safe_fields

_log = logging.getLogger("paygate.rpc")

QUIET_METHODS = frozenset({"/grpc.health.v1.Health/Check"})


class LoggingInterceptor(grpc.aio.ServerInterceptor):
    """Logs every call: method, peer, user, status code (its name), duration, safe request
    and response fields, and what inner layers noted (call_info.note): an error's reason and
    its payment, a replayed answer.

    Health checks are logged at DEBUG so that a monitor polling them does not drown the log.
    """

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        method = handler_call_details.method
        handler = await continuation(handler_call_details)

        def wrapper(behavior: UnaryBehavior) -> UnaryBehavior:
            async def logged(request: Any, context: Context) -> Any:
                info = CallInfo(method=method, peer=context.peer())
                token = CALL_INFO.set(info)
                start = time.perf_counter()
                code = grpc.StatusCode.OK
                response = None
                try:
                    response = await behavior(request, context)
                    code = context.code() or grpc.StatusCode.OK
                    return response
                except BaseException:
                    code = context.code() or grpc.StatusCode.UNKNOWN
                    raise
                finally:
                    CALL_INFO.reset(token)
                    fields: dict[str, Any] = {
                        "method": method,
                        "peer": info.peer,
                        "code": code.name if isinstance(code, grpc.StatusCode) else str(code),
                        "duration_ms": round((time.perf_counter() - start) * 1000, 3),
                    }
                    if info.user:
                        fields["user"] = info.user
                    if info.peer_identity:
                        fields["peer_identity"] = info.peer_identity
                    fields["request"] = safe_fields(request, UNLOGGED_FIELDS)
                    if response is not None:
                        fields["response"] = safe_fields(response)
                    fields.update(info.fields)
                    details = context.details() if code != grpc.StatusCode.OK else None
                    if details:
                        fields["error"] = details
                    level = logging.DEBUG if method in QUIET_METHODS else logging.INFO
                    _log.log(level, "rpc", extra={"fields": fields})

            return logged

        return wrap_unary(handler, wrapper)
