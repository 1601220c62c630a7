"""Payments to many payees in the chaos workload: split payments and bulk payouts.

Split payments. A share of the fresh payments (`split_p`) divide their amount among two or
three payees: one at each bank other than the payer's first, so that the payment's one
two-phase commit spans every bank it can, then any other user; the parts are random and
add up to the amount. A split payment is automatic (never an authorization: the gateway
refuses splits with manual capture). Its payee, for the rest of the workload, is the first
split's, as the gateway's Payment says; that payee refunds a share of them (`refund_p`),
as a payee refunds an ordinary payment (chaos/refunds.py), and the gateway takes each
refund back from every payee in proportion to what each has not given back yet.

Bulk payouts. A share of a client's steps (`batch_p`) are one BatchCreatePayments of two to
four fresh payments of one payer (any kind: plain, split, authorization). Each item is
recorded as a Call of its own key, numbered with its batch, and classified as a
CreatePayment's answer would be: the item's payment, or its error's code and reason; when
the whole call fails (a bank away while the gateway reads the payer's balance, the
gateway killed) every item gets that answer. Items whose answer is indefinite are sent
again in a batch of their own, as a careful client would, and after the run `resolve` and
`replay` ask every key with a single CreatePayment of the same parameters: the gateway
treats an item's key exactly as a CreatePayment's (gateway/bulk_payments.py), so the
answers of a key must agree whichever way it was sent.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import random
from collections.abc import Awaitable, Callable, Sequence

import grpc

from paygate.chaos.calls import CODE_NAMES, answered_call, backoff_s, create_request, failed_call
from paygate.chaos.connections import Connections
from paygate.chaos.history import Call, History, Intent, Outcome, Phase, User
from paygate.chaos.refunds import draw_refunds
from paygate.common.rpc_errors import reason_from_metadata
from paygate.gen.paygate.v1 import gateway_pb2

SPLIT_PAYEES_MAX = 3
BATCH_ITEMS_MIN = 2
BATCH_ITEMS_MAX = 4

Metadata = Callable[[str], Awaitable[list[tuple[str, str]]]]


def split_intent(
    rng: random.Random,
    key: str,
    payer: User,
    users: Sequence[User],
    amount_max_minor: int,
    refund_p: float = 0.0,
) -> Intent:
    """A fresh split payment of `payer` to two or three of the other `users`, with its
    payees at as many banks as there are (needs at least two other users), and refunds
    drawn with `refund_p` (none drawn, and no random number used, when it is 0)."""
    others = sorted((u for u in users if u.username != payer.username), key=lambda u: u.username)
    count = rng.randint(2, min(SPLIT_PAYEES_MAX, len(others)))
    by_bank: dict[str, list[str]] = collections.defaultdict(list)
    for user in others:
        by_bank[user.bank_id].append(user.username)
    payees = [rng.choice(by_bank[bank]) for bank in sorted(by_bank) if bank != payer.bank_id]
    payees = payees[:count]
    rest = [u.username for u in others if u.username not in payees]
    payees += rng.sample(rest, count - len(payees))
    rng.shuffle(payees)
    amount_minor = rng.randint(count, max(count, amount_max_minor))
    cuts = sorted(rng.sample(range(1, amount_minor), count - 1))
    parts = [high - low for low, high in itertools.pairwise([0, *cuts, amount_minor])]
    return Intent(
        key=key,
        payer=payer.username,
        payee=payees[0],
        amount_minor=amount_minor,
        splits=tuple(zip(payees, parts, strict=True)),
        # Drawn last, so that the payment itself is what a seed made without refunds.
        refund_minor=draw_refunds(rng, amount_minor, refund_p),
    )


class Bulk:
    """The workload's BatchCreatePayments calls, each item recorded as a Call of its key."""

    def __init__(
        self,
        conn: Connections,
        history: History,
        metadata: Metadata,
        now: Callable[[], float],
        *,
        currency: str,
        call_timeout_s: float,
    ) -> None:
        self._conn = conn
        self._history = history
        self._metadata = metadata
        self._now = now
        self._currency = currency
        self._timeout_s = call_timeout_s
        self._numbers = itertools.count(1)

    async def pay(self, intents: Sequence[Intent], phase: Phase) -> list[Call]:
        """One BatchCreatePayments of the intents (all of one payer), one Call per item."""
        batch = next(self._numbers)
        request = gateway_pb2.BatchCreatePaymentsRequest(
            requests=[create_request(intent, self._currency) for intent in intents]
        )
        start_s = self._now()
        try:
            response: gateway_pb2.BatchCreatePaymentsResponse = (
                await self._conn.gateway.BatchCreatePayments(
                    request,
                    metadata=await self._metadata(intents[0].payer),
                    timeout=self._timeout_s,
                )
            )
        except grpc.aio.AioRpcError as exc:
            code = exc.code().name
            reason = reason_from_metadata(exc.trailing_metadata()) or ""
            end_s = self._now()
            calls = [failed_call(i, phase, start_s, end_s, code, reason, batch) for i in intents]
        else:
            calls = self._items(intents, phase, start_s, response, batch)
        self._history.calls.extend(calls)
        return calls

    def _items(
        self,
        intents: Sequence[Intent],
        phase: Phase,
        start_s: float,
        response: gateway_pb2.BatchCreatePaymentsResponse,
        batch: int,
    ) -> list[Call]:
        end_s = self._now()
        if len(response.results) != len(intents):  # one result per item, always
            return [
                failed_call(i, phase, start_s, end_s, "OK", "RESULTS_MISSING", batch)
                for i in intents
            ]
        calls = []
        for intent, result in zip(intents, response.results, strict=True):
            if result.WhichOneof("result") == "payment":
                calls.append(answered_call(intent, phase, start_s, end_s, result.payment, batch))
            else:
                code = CODE_NAMES.get(result.error.code, str(result.error.code))
                calls.append(
                    failed_call(intent, phase, start_s, end_s, code, result.error.reason, batch)
                )
        return calls

    async def pay_retrying(
        self, intents: Sequence[Intent], phase: Phase, retries: int, stop: asyncio.Event
    ) -> dict[str, Call]:
        """The batch, then a batch of the items still without a definite answer, up to
        `retries` more times; the last Call of each key."""
        last: dict[str, Call] = {}
        waiting = list(intents)
        for attempt in range(retries + 1):
            calls = await self.pay(waiting, phase)
            last.update((call.key, call) for call in calls)
            waiting = [i for i in waiting if last[i.key].outcome == Outcome.INDEFINITE]
            if not waiting or stop.is_set():
                break
            await asyncio.sleep(backoff_s(attempt))
        return last
