"""StreamLimitInterceptor: streaming calls may hold only a few of a server's call slots.

Health `Watch` and server reflection are streaming calls that anyone who can reach the port
may open, without a token or a client certificate, and that last as long as the caller
keeps them. Each holds one of the server's `max_concurrent_rpcs` slots, so enough of them
would leave none for payments. At most MAX_OPEN_STREAMS run at once; one more is refused at
once with RESOURCE_EXHAUSTED, and unary calls are not counted or slowed.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from paygate.common.handlers import STREAM_KINDS, Context, Handler

# A few load balancers' health watches and operators' grpcurl sessions; far below the 256
# call slots a server has by default.
MAX_OPEN_STREAMS = 32


class StreamLimitInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, max_open: int = MAX_OPEN_STREAMS) -> None:
        self._max_open = max_open
        self._open = 0

    @property
    def open_streams(self) -> int:
        return self._open

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is not None:
            return handler
        for kind in STREAM_KINDS:
            behavior = getattr(handler, kind)
            if behavior is not None:
                # At run time a handler is a namedtuple; the stubs declare only its base.
                return handler._replace(**{kind: self._limited(behavior)})  # type: ignore[attr-defined,no-any-return]
        return handler

    def _limited(self, behavior: Callable[..., Any]) -> Callable[..., Any]:
        """The behaviour, counted from its start to the end of its call and refused past the
        limit. grpc.aio runs an async generator function and a coroutine function
        differently: keep its kind (a synchronous one is left as it is)."""
        if inspect.isasyncgenfunction(behavior):

            async def limited_generator(request: Any, context: Context) -> AsyncIterator[Any]:
                await self._enter(context)
                async for response in behavior(request, context):
                    yield response

            return limited_generator
        if not inspect.iscoroutinefunction(behavior):
            return behavior

        async def limited(request: Any, context: Context) -> Any:
            await self._enter(context)
            return await behavior(request, context)

        return limited

    async def _enter(self, context: Context) -> None:
        if self._open >= self._max_open:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"this server has {self._max_open} streaming calls open, the most it allows;"
                " close one or retry later",
            )
        self._open += 1
        # Released when the call ends however it ends: a cancelled generator's `finally`
        # would run only when the generator is collected.
        # (The stubs type the callback as a class of their own, which no function matches.)
        context.add_done_callback(self._release)  # type: ignore[arg-type]

    def _release(self, context: Context) -> None:
        self._open -= 1
