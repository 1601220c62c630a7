"""StreamLimitInterceptor: streaming calls may hold only a few of a server's call slots.

Health `Watch` and server reflection are streaming calls that anyone who can reach the port
may open, without a token or a client certificate, and that last as long as the caller
keeps them. Each holds one of the server's `max_concurrent_rpcs` slots, so enough of them
would leave none for payments. At most MAX_OPEN_STREAMS run at once; one more is refused at
once with RESOURCE_EXHAUSTED, and unary calls are not counted or slowed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from paygate.common.handlers import Context, Handler, wrap_stream

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
        return wrap_stream(await continuation(handler_call_details), self._enter)

    async def _enter(self, request: Any, context: Context) -> Any:
        """Count the call from its start to its end, or refuse it past the limit."""
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
        return request

    def _release(self, context: Context) -> None:
        self._open -= 1
