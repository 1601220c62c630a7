"""ErrorInterceptor: the one place where domain errors become gRPC statuses.

Handlers raise PaygateError subclasses; this interceptor aborts the call with the code
from paygate.errors.STATUS_BY_ERROR and a google.rpc.ErrorInfo carrying the reason.
An InvariantViolation, or any other unexpected exception, is a bug: it is logged with
its traceback and answered INTERNAL with a message that reveals nothing.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from paygate.common.call_info import note
from paygate.common.handlers import (
    Context,
    Handler,
    MalformedRequest,
    UnaryBehavior,
    tolerant_deserializer,
    wrap_stream,
    wrap_unary,
)
from paygate.common.logs import safe_metadata
from paygate.errors import ERROR_DOMAIN, InvalidArgument, PaygateError, status_code_of

_log = logging.getLogger("paygate.errors")

MALFORMED = "the request is not a valid protobuf message"


def rich_status(error: PaygateError) -> grpc.Status:
    info = error_details_pb2.ErrorInfo(
        reason=error.reason, domain=ERROR_DOMAIN, metadata=error.metadata
    )
    detail = any_pb2.Any()
    detail.Pack(info)
    code = status_code_of(error)
    return rpc_status.to_status(
        status_pb2.Status(code=code.value[0], message=error.message, details=[detail])
    )


async def abort_with_error(context: Context, error: PaygateError) -> None:
    # The call's log line gets the reason, and the error's metadata that is safe to log
    # (a payment's id and outcome), so that a failed payment is found by its id.
    note(reason=error.reason, **safe_metadata(error.metadata))
    status = rich_status(error)
    await context.abort(status.code, status.details, status.trailing_metadata)


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)

        def wrapper(behavior: UnaryBehavior) -> UnaryBehavior:
            async def mapped(request: Any, context: Context) -> Any:
                try:
                    if isinstance(request, MalformedRequest):
                        raise InvalidArgument(MALFORMED)
                    return await behavior(request, context)
                except PaygateError as error:
                    await abort_with_error(context, error)
                except grpc.aio.AbortError:
                    raise
                except Exception:
                    _log.exception(
                        "unexpected error",
                        extra={"fields": {"method": handler_call_details.method}},
                    )
                    await context.abort(grpc.StatusCode.INTERNAL, "internal error")

            return mapped

        if handler is not None and handler.unary_unary is None:
            return _refusing_malformed_streams(handler)
        wrapped = wrap_unary(handler, wrapper)
        if wrapped is None or wrapped.unary_unary is None:
            return wrapped
        return wrapped._replace(  # type: ignore[attr-defined,no-any-return]
            request_deserializer=tolerant_deserializer(wrapped.request_deserializer)
        )


def _refusing_malformed_streams(handler: Handler) -> Handler | None:
    """A streaming handler (health Watch, reflection, WatchEvents) whose request messages
    that do not parse are INVALID_ARGUMENT too, not gRPC's UNKNOWN naming a Python
    exception; a server stream's domain errors are mapped as a unary call's are."""
    handler = _mapping_stream_errors(handler)
    one_request = handler.unary_stream is not None

    async def parsed(requests: AsyncIterator[Any], context: Context) -> AsyncIterator[Any]:
        async for request in requests:
            yield await _refused_if_malformed(request, context)

    async def checked(request: Any, context: Context) -> Any:
        if one_request:
            return await _refused_if_malformed(request, context)
        return parsed(request, context)  # a stream of requests, each checked as it comes

    wrapped = wrap_stream(handler, checked)
    if wrapped is handler:
        return handler  # a synchronous handler: grpc.aio runs it on a thread, as it is
    return wrapped._replace(  # type: ignore[union-attr,no-any-return]
        request_deserializer=tolerant_deserializer(handler.request_deserializer)
    )


def _mapping_stream_errors(handler: Handler) -> Handler:
    """A server stream written as an async generator, its PaygateError answered with its
    status and reason (before or between its messages)."""
    behavior: Any = handler.unary_stream  # the stubs know only synchronous streams
    if behavior is None or not inspect.isasyncgenfunction(behavior):
        return handler

    async def mapped(request: Any, context: Context) -> AsyncIterator[Any]:
        try:
            async for response in behavior(request, context):
                yield response
        except PaygateError as error:
            await abort_with_error(context, error)

    return handler._replace(unary_stream=mapped)  # type: ignore[attr-defined,no-any-return]


async def _refused_if_malformed(request: Any, context: Context) -> Any:
    if isinstance(request, MalformedRequest):
        await abort_with_error(context, InvalidArgument(MALFORMED))
    return request
