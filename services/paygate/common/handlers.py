"""Helpers for server interceptors that wrap the behaviour of unary-unary handlers."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias, cast

import grpc

# The one spelling of a server call's context and of a method handler. Our interceptors and
# servicers see every message type, so both are parameterised with Any. Quoted because
# grpc.RpcMethodHandler is generic only in the stubs: subscripting it at run time fails.
Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
UnaryBehavior = Callable[[Any, Context], Awaitable[Any]]
# The fields of a method handler that hold a streaming behaviour (health Watch, reflection).
STREAM_KINDS = ("unary_stream", "stream_unary", "stream_stream")


def wrap_unary(
    handler: Handler | None,
    wrapper: Callable[[UnaryBehavior], UnaryBehavior],
) -> Handler | None:
    """Return `handler` with its unary-unary behaviour wrapped; other kinds pass through."""
    if handler is None or handler.unary_unary is None:
        return handler
    # Under grpc.aio the behaviour is a coroutine function taking an aio context; the stubs
    # describe the synchronous server's handler, hence the cast.
    behavior = cast(UnaryBehavior, handler.unary_unary)
    # At run time a handler is a namedtuple; the stubs declare only its abstract base.
    return handler._replace(unary_unary=wrapper(behavior))  # type: ignore[attr-defined,no-any-return]


def wrap_stream(
    handler: Handler | None,
    before: Callable[[Any, Context], Awaitable[Any]],
) -> Handler | None:
    """Return `handler` with its streaming behaviour run after `before(request, context)`,
    whose result it is given as its request (the request, or the request iterator); other
    kinds pass through. grpc.aio runs an async generator function and a coroutine function
    differently, so the wrapper keeps the behaviour's kind; a synchronous one is left as is."""
    if handler is None or handler.unary_unary is not None:
        return handler
    kind = next(k for k in STREAM_KINDS if getattr(handler, k) is not None)
    behavior = getattr(handler, kind)
    if inspect.isasyncgenfunction(behavior):

        async def generator(request: Any, context: Context) -> AsyncIterator[Any]:
            async for response in behavior(await before(request, context), context):
                yield response

        wrapped: Callable[..., Any] = generator
    elif inspect.iscoroutinefunction(behavior):

        async def coroutine(request: Any, context: Context) -> Any:
            return await behavior(await before(request, context), context)

        wrapped = coroutine
    else:
        return handler
    # At run time a handler is a namedtuple; the stubs declare only its abstract base.
    return handler._replace(**{kind: wrapped})  # type: ignore[attr-defined,no-any-return]


class MalformedRequest:
    """Stands in for a request whose bytes did not parse, so that it can be refused politely.

    gRPC answers INTERNAL when a request cannot be deserialized; a caller can cause that, so
    ErrorInterceptor installs `tolerant_deserializer` and answers INVALID_ARGUMENT instead.
    """

    def __init__(self, error: Exception) -> None:
        self.error = error


def tolerant_deserializer(
    deserialize: Callable[[bytes], Any] | None,
) -> Callable[[bytes], Any] | None:
    if deserialize is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception as exc:  # protobuf raises DecodeError, and others on odd input
            return MalformedRequest(exc)

    return parse


def service_and_method(full_method: str) -> tuple[str, str]:
    """Split "/paygate.v1.GatewayService/Login" into ("paygate.v1.GatewayService", "Login")."""
    _, service, method = full_method.split("/", 2)
    return service, method
