"""StreamLimitInterceptor: streaming calls may hold only a few of a server's call slots.

Health `Watch` and server reflection are streaming calls that anyone who can reach the port
may open, without a token or a client certificate, and that last as long as the caller
keeps them. Each holds one of the server's `max_concurrent_rpcs` slots, so enough of them
would leave none for payments. At most MAX_OPEN_STREAMS run at once, and at most
MAX_OPEN_STREAMS_PER_PEER from one address (its IP, whatever the port), so that one caller
cannot take every place from the others; one more is refused at once with
RESOURCE_EXHAUSTED, and unary calls are not counted or slowed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from paygate.common.handlers import Context, Handler, wrap_stream

# A few load balancers' health watches and operators' grpcurl sessions; far below the 256
# call slots a server has by default.
MAX_OPEN_STREAMS = 32
# A load balancer watches health on one or two streams; an operator runs a grpcurl or two.
MAX_OPEN_STREAMS_PER_PEER = 8


def peer_address(peer: str) -> str:
    """The address of a gRPC peer without its port: "ipv4:10.0.0.7:51234" -> "ipv4:10.0.0.7",
    "ipv6:[::1]:51234" -> "ipv6:[::1]"; a peer with no port (unix:...) as it is."""
    kind, _, rest = peer.partition(":")
    if kind in ("ipv4", "ipv6"):
        host, _, port = rest.rpartition(":")
        if host and port.isdigit():
            return f"{kind}:{host}"
    return peer


class StreamLimitInterceptor(grpc.aio.ServerInterceptor):
    def __init__(
        self, max_open: int = MAX_OPEN_STREAMS, max_open_per_peer: int = MAX_OPEN_STREAMS_PER_PEER
    ) -> None:
        self._max_open = max_open
        self._max_open_per_peer = max_open_per_peer
        self._open = 0
        # Open streams by peer address; an address leaves when its last stream ends, so this
        # holds at most max_open entries.
        self._open_by_peer: dict[str, int] = {}

    @property
    def open_streams(self) -> int:
        return self._open

    def open_streams_of(self, peer: str) -> int:
        return self._open_by_peer.get(peer_address(peer), 0)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        return wrap_stream(await continuation(handler_call_details), self._enter)

    async def _enter(self, request: Any, context: Context) -> Any:
        """Count the call from its start to its end, or refuse it past the limit."""
        address = peer_address(context.peer())
        if self._open >= self._max_open:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"this server has {self._max_open} streaming calls open, the most it allows;"
                " close one or retry later",
            )
        if self._open_by_peer.get(address, 0) >= self._max_open_per_peer:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"your address has {self._max_open_per_peer} streaming calls open here, the"
                " most one address may; close one or retry later",
            )
        self._open += 1
        self._open_by_peer[address] = self._open_by_peer.get(address, 0) + 1

        def release(_: object) -> None:
            self._open -= 1
            left = self._open_by_peer[address] - 1
            if left:
                self._open_by_peer[address] = left
            else:
                del self._open_by_peer[address]

        # Released when the call ends however it ends: a cancelled generator's `finally`
        # would run only when the generator is collected.
        # (The stubs type the callback as a class of their own, which no function matches.)
        context.add_done_callback(release)  # type: ignore[arg-type]
        return request
