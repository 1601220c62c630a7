"""The refunds of the chaos workload: a payee sends back parts of a payment, all at once.

A share of the fresh payments (`refund_p`) are refunded by their payee as soon as they
moved money (an automatic payment answered, an authorization's capture answered): one to
three refunds sent concurrently, each a random part of what moved, so that their sum
sometimes passes it and the gateway must refuse the rest (AMOUNT_EXCEEDS_REFUNDABLE), and
a payee who spent the money meanwhile is refused (INSUFFICIENT_FUNDS). Each refund has its
own key, `<key>/refund-<index>`, retried as a payment's; its reason is `chaos:<that key>`,
so that ListRefunds tells the checker whose refund each is. After the run, `resolve`
retries refunds without a definite answer, `replay` asks answered ones again.

A split payment is refunded the same way by its first payee (the intent's `payee`, the
gateway's payee_username); the gateway takes each refund back from every payee in
proportion to what each has not given back yet, and the Refund's `splits` say who gave
back what: they are recorded with the answer and with the listing, for the checker.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Awaitable, Callable, Iterable

import grpc

from paygate.chaos.connections import Connections
from paygate.chaos.history import GatewayRefund, History, Intent, Outcome, Phase, RefundCall
from paygate.common.rpc_errors import reason_from_metadata
from paygate.gen.paygate.v1 import gateway_pb2

REASON_PREFIX = "chaos:"
MAX_REFUNDS = 3
# Refunds asked again at once after the run: all of them at once would pass the gateway's
# limit of concurrent calls and be answered RESOURCE_EXHAUSTED, again and again.
AGAIN_CONCURRENCY = 16
REFUND_STATUS_NAMES = {
    gateway_pb2.REFUND_STATUS_PENDING: "PENDING",
    gateway_pb2.REFUND_STATUS_SUCCEEDED: "SUCCEEDED",
    gateway_pb2.REFUND_STATUS_FAILED: "FAILED",
}

Metadata = Callable[[str], Awaitable[list[tuple[str, str]]]]
Classify = Callable[[str, str], Outcome]
Backoff = Callable[[int], float]


def draw_refunds(rng: random.Random, moved_minor: int, refund_p: float) -> tuple[int, ...]:
    """The amounts of the refunds of a payment that will move `moved_minor` (none drawn,
    and no random number used, when refunds are off: a seed then pays as before)."""
    if refund_p <= 0 or moved_minor <= 0 or rng.random() >= refund_p:
        return ()
    count = rng.randint(1, MAX_REFUNDS)
    return tuple(rng.randint(1, max(1, moved_minor // 2)) for _ in range(count))


class Refunder:
    def __init__(
        self,
        conn: Connections,
        history: History,
        metadata: Metadata,
        now: Callable[[], float],
        classify: Classify,
        backoff_s: Backoff,
        call_timeout_s: float,
    ) -> None:
        self._conn = conn
        self._history = history
        self._metadata = metadata
        self._now = now
        self._classify = classify
        self._backoff_s = backoff_s
        self._timeout_s = call_timeout_s

    async def refund(self, intent: Intent, index: int, payment_id: str, phase: Phase) -> RefundCall:
        """One RefundPayment call by the intent's payee, recorded."""
        amount = intent.refund_minor[index]
        key = f"{intent.key}/refund-{index}"
        start_s = self._now()
        call = RefundCall(
            key=intent.key, index=index, phase=phase, start_s=start_s, end_s=start_s,
            outcome=Outcome.INDEFINITE, payment_id=payment_id, amount_minor=amount,
        )  # fmt: skip
        try:
            response: gateway_pb2.RefundPaymentResponse = await self._conn.gateway.RefundPayment(
                gateway_pb2.RefundPaymentRequest(
                    payment_id=payment_id,
                    amount=amount,
                    reason=REASON_PREFIX + key,
                    idempotency_key=key,
                ),  # fmt: skip
                metadata=await self._metadata(intent.payee),
                timeout=self._timeout_s,
            )
        except grpc.aio.AioRpcError as exc:
            code = exc.code().name
            reason = reason_from_metadata(exc.trailing_metadata()) or ""
            call = dataclasses.replace(
                call, end_s=self._now(), outcome=self._classify(code, reason), code=code,
                reason=reason,
            )  # fmt: skip
        else:
            status = REFUND_STATUS_NAMES.get(response.refund.status, str(response.refund.status))
            call = dataclasses.replace(
                call, end_s=self._now(),
                outcome=Outcome.SUCCEEDED if status == "SUCCEEDED" else Outcome.ERROR,
                refund_id=response.refund.refund_id, status=status, code="OK",
                splits=_splits(response.refund.splits),
            )  # fmt: skip
        self._history.refunds.append(call)
        return call

    async def refund_all(
        self, intent: Intent, payment_id: str, phase: Phase, attempts: int, stop: asyncio.Event
    ) -> None:
        """Every refund of the intent at once, each retried while its answer is indefinite."""

        async def one(index: int) -> None:
            for attempt in range(attempts + 1):
                call = await self.refund(intent, index, payment_id, phase)
                if call.outcome != Outcome.INDEFINITE or stop.is_set():
                    return
                await asyncio.sleep(self._backoff_s(attempt))

        await asyncio.gather(*(one(i) for i in range(len(intent.refund_minor))))

    async def again(self, phase: Phase, attempts: int, *, answered: bool) -> None:
        """After the run: each refund without a definite answer (`answered` False), or each
        with one, asked again with its key."""
        last: dict[tuple[str, int], RefundCall] = {}
        definite: set[tuple[str, int]] = set()
        for call in self._history.refunds:
            last[(call.key, call.index)] = call
            if call.outcome != Outcome.INDEFINITE:
                definite.add((call.key, call.index))
        chosen = [c for k, c in last.items() if (k in definite) == answered]
        limit = asyncio.Semaphore(AGAIN_CONCURRENCY)

        async def one(call: RefundCall) -> None:
            intent = self._history.intents[call.key]
            async with limit:
                for attempt in range(attempts):
                    again = await self.refund(intent, call.index, call.payment_id, phase)
                    if again.outcome != Outcome.INDEFINITE:
                        return
                    await asyncio.sleep(self._backoff_s(attempt))

        await asyncio.gather(*(one(c) for c in chosen))

    async def gateway_refunds(self, payments: list[tuple[str, str]]) -> list[GatewayRefund]:
        """The refunds the gateway lists for (payment_id, a party's username) pairs."""
        found: list[GatewayRefund] = []
        for payment_id, username in payments:
            token = ""
            while True:
                response: gateway_pb2.ListRefundsResponse = await self._conn.gateway.ListRefunds(
                    gateway_pb2.ListRefundsRequest(
                        payment_id=payment_id, page_size=100, page_token=token
                    ),
                    metadata=await self._metadata(username),
                    timeout=self._timeout_s,
                )
                found += [
                    GatewayRefund(
                        refund_id=r.refund_id,
                        payment_id=r.payment_id,
                        status=REFUND_STATUS_NAMES.get(r.status, str(r.status)),
                        amount_minor=r.amount,
                        refund_key=r.reason.removeprefix(REASON_PREFIX),
                        splits=_splits(r.splits),
                    )  # fmt: skip
                    for r in response.refunds
                ]
                token = response.next_page_token
                if not token:
                    break
        return found


def _splits(splits: Iterable[gateway_pb2.Split]) -> tuple[tuple[str, int], ...]:
    """A refund's shares as (payee, amount), in the gateway's order."""
    return tuple((split.payee_username, split.amount) for split in splits)
