"""Events in the client library: a page of them, and a watch that resumes by itself.

`follow` opens WatchEvents after a cursor and yields each event once, in sequence order.
When the stream breaks (the gateway restarted, another gateway took over behind the same
address, the connection dropped) or ends (a gateway shutting down ends its streams), it
opens a new one after the last sequence it yielded, after a short, growing pause; an
event it already yielded is never yielded again. Each stream has a deadline
(WATCH_DEADLINE_S, then it is simply reopened), so a watch is never a call without one.
An answer that retrying cannot change (an expired cursor: EVENTS_EXPIRED; a revoked
token) is raised.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
from collections.abc import AsyncIterator
from typing import Any

import grpc

from paygate.client._models import Payment, Refund, datetime_from_proto
from paygate.common.rpc_errors import error_from_rpc
from paygate.errors import Aborted, PaygateError, ResourceExhausted, Unavailable
from paygate.gen.paygate.v1 import gateway_pb2

WATCH_DEADLINE_S = 600.0
RECONNECT_BACKOFF_S = 0.2
RECONNECT_BACKOFF_MAX_S = 3.0
# What a watch retries: the gateway away or busy, or the stream cut by the network.
RETRIED = (Unavailable, Aborted, ResourceExhausted)
RETRIED_CODES = {grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Event:
    """One change to your money: `payment` or `refund` as it was just after it."""

    event_id: str
    sequence: int  # yours: 1, 2, 3, ... with no gap; the cursor to resume after
    type: str  # "payment.succeeded", "refund.failed", ...
    create_time: datetime.datetime
    payment: Payment | None = None
    refund: Refund | None = None

    @classmethod
    def from_proto(cls, message: gateway_pb2.Event) -> Event:
        which = message.WhichOneof("object")
        return cls(
            event_id=message.event_id,
            sequence=message.sequence,
            type=message.type,
            create_time=datetime_from_proto(message.create_time),
            payment=Payment.from_proto(message.payment) if which == "payment" else None,
            refund=Refund.from_proto(message.refund) if which == "refund" else None,
        )


async def list_page(
    stub: Any, timeout_s: float, starting_after: int, page_size: int, types: list[str]
) -> tuple[list[Event], int, bool]:
    request = gateway_pb2.ListEventsRequest(
        starting_after=starting_after, page_size=page_size, types=types
    )
    try:
        response: gateway_pb2.ListEventsResponse = await stub.ListEvents(request, timeout=timeout_s)
    except grpc.RpcError as exc:
        raise error_from_rpc(exc) from exc
    events = [Event.from_proto(message) for message in response.events]
    return events, response.next_starting_after, response.has_more


async def follow(stub: Any, starting_after: int) -> AsyncIterator[Event]:
    """Every event after `starting_after`, then each new one, for as long as iterated."""
    cursor, attempt = starting_after, 0
    while True:
        call = stub.WatchEvents(
            gateway_pb2.WatchEventsRequest(starting_after=cursor), timeout=WATCH_DEADLINE_S
        )
        try:
            async for response in call:
                attempt = 0
                event = Event.from_proto(response.event)
                if event.sequence <= cursor:
                    continue  # seen before this stream opened: never twice
                cursor = event.sequence
                yield event
        except grpc.RpcError as exc:
            error = error_from_rpc(exc)
            if not _retried(exc, error):
                raise error from exc
        finally:
            call.cancel()
        await asyncio.sleep(min(RECONNECT_BACKOFF_MAX_S, RECONNECT_BACKOFF_S * 2**attempt))
        attempt += 1


def _retried(exc: grpc.RpcError, error: PaygateError) -> bool:
    code = exc.code() if isinstance(exc, grpc.aio.AioRpcError) else None
    return isinstance(error, RETRIED) or code in RETRIED_CODES
