"""AsyncClient's calls after a payment: its refunds, and the events of the caller's money.

    refund = await client.refund(payment_id, 2_50, reason="one cup was cracked")
    refunds, next_token = await client.list_refunds(payment_id)
    events, after, more = await client.list_events(starting_after=0)
    async for event in client.iter_events(): ...                        # every page
    async for event in client.watch_events(starting_after=after): ...   # resumes by itself
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf.message import Message

from paygate.client import _events
from paygate.client._events import Event
from paygate.client._models import Refund
from paygate.client._request_checks import (
    DEFAULT_PAGE_SIZE,
    check_capture_fields,
    checked_next_page_token,
)
from paygate.common.rpc_errors import error_from_rpc
from paygate.errors import IDEMPOTENT_REPLAYED_HEADER
from paygate.gen.paygate.v1 import gateway_pb2


class AfterPaymentCalls:
    """Refund and event methods of AsyncClient, which supplies `_stub`, `_call` and
    `timeout_s`."""

    _stub: Any
    timeout_s: float

    async def _call(self, rpc: Any, request: Message) -> Any:
        raise NotImplementedError  # AsyncClient's

    async def refund(
        self,
        payment_id: str,
        amount_minor: int | None = None,
        *,
        reason: str = "",
        idempotency_key: str | None = None,
    ) -> Refund:
        """Send money of a payment you were paid back to its payer: all that is left to
        refund (amount_minor None) or part, as often as you like up to what was captured.
        Returns the refund, SUCCEEDED.

        Refusals: FailedPrecondition with reason PAYMENT_NOT_REFUNDABLE (the payment did
        not succeed), AMOUNT_EXCEEDS_REFUNDABLE, or INSUFFICIENT_FUNDS (you lack the money:
        the refund is recorded FAILED and nothing moved); PermissionDenied for its payer;
        NotFound for anyone else. Pass your own idempotency key to retry safely.
        """
        key = idempotency_key if idempotency_key is not None else str(uuid.uuid4())
        check_capture_fields(payment_id, amount_minor, key)
        request = gateway_pb2.RefundPaymentRequest(
            payment_id=payment_id, amount=amount_minor or 0, reason=reason, idempotency_key=key
        )
        call = self._stub.RefundPayment(request, timeout=self.timeout_s)
        try:
            response = await call
            metadata = await call.initial_metadata()
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from exc
        replayed = (IDEMPOTENT_REPLAYED_HEADER, "true") in list(metadata or ())
        return dataclasses.replace(Refund.from_proto(response.refund), replayed=replayed)

    async def list_refunds(
        self, payment_id: str, *, page_size: int = DEFAULT_PAGE_SIZE, page_token: str = ""
    ) -> tuple[list[Refund], str]:
        """One page of a payment's refunds, oldest first, and the next page's token."""
        request = gateway_pb2.ListRefundsRequest(
            payment_id=payment_id, page_size=page_size, page_token=page_token
        )
        response: gateway_pb2.ListRefundsResponse = await self._call(
            self._stub.ListRefunds, request
        )
        refunds = [Refund.from_proto(message) for message in response.refunds]
        return refunds, checked_next_page_token(page_token, response.next_page_token)

    async def list_events(
        self, *, starting_after: int = 0, page_size: int = 0, types: list[str] | None = None
    ) -> tuple[list[Event], int, bool]:
        """A page of your events after a sequence, oldest first: the events, the cursor of
        the next page, and whether more were stored. OutOfRange (EVENTS_EXPIRED) when the
        cursor is older than the events kept: list again from 0."""
        return await _events.list_page(
            self._stub, self.timeout_s, starting_after, page_size, list(types or ())
        )

    async def iter_events(
        self, *, starting_after: int = 0, types: list[str] | None = None
    ) -> AsyncIterator[Event]:
        """Your events after a sequence, oldest first, fetched a page at a time, until the
        last one stored (watch_events goes on with new ones)."""
        after = starting_after
        while True:
            events, after, more = await self.list_events(
                starting_after=after, page_size=100, types=types
            )
            for event in events:
                yield event
            if not more:
                return

    def watch_events(self, *, starting_after: int = 0) -> AsyncIterator[Event]:
        """Your events after a sequence, then each new one as it happens, each once and in
        order, reconnecting by itself when the gateway restarts or another takes over."""
        return _events.follow(self._stub, starting_after)
