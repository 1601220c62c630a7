"""RequestSizeInterceptor: each method's request at most its own number of bytes.

gRPC bounds the messages of a whole server (`grpc.max_receive_message_length`), not of one
method. The gateway's public port takes BatchCreatePayments' larger requests (1,000
payments in one call), so its server limit is that method's; this interceptor keeps every
other method at `max_bytes`, as before. A request over its method's limit is refused
RESOURCE_EXHAUSTED (reason REQUEST_TOO_LARGE), the code gRPC gives a message over the
server's limit, and is never parsed.

The check runs in the request's deserializer, which sees the message's bytes; it refuses
by raising the error there, which the ErrorInterceptor's tolerant deserializer hands on
(common/error_interceptor.py, `refusal_of`). It is a gate: innermost, after the errors.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import grpc

from paygate.common.handlers import Handler
from paygate.errors import REQUEST_TOO_LARGE, ResourceExhausted


class RequestSizeInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, max_bytes: int, larger: Mapping[str, int] | None = None) -> None:
        """`max_bytes` for every method, except the full method names in `larger`
        ("/paygate.v1.GatewayService/BatchCreatePayments"), which take their own."""
        self._max_bytes = max_bytes
        self._larger = dict(larger or {})

    def limit_of(self, method: str) -> int:
        return self._larger.get(method, self._max_bytes)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_deserializer is None:
            return handler
        limit = self.limit_of(handler_call_details.method)
        deserialize = handler.request_deserializer

        def sized(data: bytes) -> Any:
            if len(data) > limit:
                raise ResourceExhausted(
                    f"the request is {len(data)} bytes: this method takes at most {limit}",
                    reason=REQUEST_TOO_LARGE,
                )
            return deserialize(data)

        # At run time a handler is a namedtuple; the stubs declare only its abstract base.
        return handler._replace(request_deserializer=sized)  # type: ignore[attr-defined,no-any-return]
