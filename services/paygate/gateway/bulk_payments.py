"""Bulk payouts: BatchCreatePayments, up to MAX_ITEMS payments from one payer in one call.

Each item is a CreatePayment of its own (payments.py): its own idempotency key, its own
two-phase commit and its own answer, a payment or an error. The batch is not atomic (as
PayPal's and Adyen's payouts): what succeeded stays, whatever became of the other items.
The call as a whole is refused, nothing done, only for no items, more than MAX_ITEMS, or
two items with one key (the second would be a replay or a mismatch of the first: a caller's
mistake, which a whole refusal makes visible before any money moves).

Concurrency. Items run concurrently, at most CONCURRENCY at a time, so that their bank calls
leave together in the batch RPCs (batching.py) and their database writes share group
commits; the bound keeps one call from holding more than a quarter of the server's
concurrent requests (max_concurrent_rpcs, 256) in payments at once, so a payout of 1,000
items does not queue every other caller behind it, while 64 in flight are about half of a
bank batch (batch_max_size 128), enough to fill the batches that form.

Order. Funds are reserved as if the items ran one after another, in request order: an item
is never refused for money that a later item of the call took. The bank decides each
Prepare, and two items running at once could be refused in the other order, so the items
run in waves: the payer's available balance is read at their bank, and the longest run of
next items whose amounts it covers runs concurrently (whatever each of them becomes, none
can take money another needs); an item it does not cover runs alone, once every earlier
item has been answered, and its bank decides. Then the balance is read again. A payer with
the money for the whole batch costs one balance read. This holds while the payer's
available balance does not fall by other means during the call: another payment of theirs
at the same time, or the hold of an earlier item whose payment failed at the payee's bank,
which is released in the background as for any payment (then a lone item is refused as it
would be had the caller sent it alone after that item's answer).

Metrics: each item counts once in paygate_payments_total{outcome}, as a CreatePayment;
each call in paygate_payment_batches_total{outcome} (answered, refused, or failed: the
payer's bank could not be asked for the balance), and the items of an answered call in
paygate_payment_batch_items.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Sequence

from paygate.common.call_info import note
from paygate.common.metrics import PaymentMetrics
from paygate.errors import InvalidArgument, PaygateError
from paygate.gateway.models import Payment, PaymentRequest, User
from paygate.gateway.payments import Payments

MAX_ITEMS = 1000
CONCURRENCY = 64

# The payer's available balance, in minor units, as their bank says it now.
AvailableOf = Callable[[User], Awaitable[int]]


@dataclasses.dataclass(frozen=True)
class ItemResult:
    """What one item became: its payment or its error, and whether the answer was given
    again from its idempotency key (nothing moved now)."""

    payment: Payment | None = None
    error: PaygateError | None = None
    replayed: bool = False


def check_count(count: int) -> None:
    """INVALID_ARGUMENT for a call of no items or of more than MAX_ITEMS."""
    if not 0 < count <= MAX_ITEMS:
        raise InvalidArgument(
            f"requests must hold 1 to {MAX_ITEMS} payments, not {count}: send more in several calls"
        )


def check_keys(items: Sequence[PaymentRequest | PaygateError]) -> None:
    """INVALID_ARGUMENT when two items share an idempotency key (an empty key is the
    item's own error, not a duplicate)."""
    first: dict[str, int] = {}
    for index, item in enumerate(items):
        if isinstance(item, PaygateError) or not item.idempotency_key:
            continue
        earlier = first.setdefault(item.idempotency_key, index)
        if earlier != index:
            raise InvalidArgument(
                f"requests[{earlier}] and requests[{index}] have the same idempotency_key:"
                " each payment of a batch needs its own"
            )


def covered(
    payer: User,
    items: Sequence[PaymentRequest | PaygateError],
    available_minor: int,
    max_payment_minor: int,
) -> int:
    """How many of the next `items` the payer's available balance covers all together: the
    longest run that may reserve its funds concurrently. An item that cannot reserve
    anything (not translated, in another currency, an amount out of bounds) costs nothing;
    any other counts its whole amount, whatever it will become."""
    left = available_minor
    for index, item in enumerate(items):
        if isinstance(item, PaygateError) or item.currency != payer.currency:
            continue
        if not 0 < item.amount_minor <= max_payment_minor:
            continue
        if item.amount_minor > left:
            return index
        left -= item.amount_minor
    return len(items)


class BulkPayments:
    def __init__(
        self,
        payments: Payments,
        available_of: AvailableOf,
        metrics: PaymentMetrics,
        *,
        max_payment_minor: int,
        concurrency: int = CONCURRENCY,
    ) -> None:
        self._payments = payments
        self._available_of = available_of
        self._metrics = metrics
        self._max_payment_minor = max_payment_minor
        self._concurrency = concurrency

    async def create_many(
        self, payer: User, items: Sequence[PaymentRequest | PaygateError]
    ) -> list[ItemResult]:
        """One result per item, in order. An item given as a PaygateError (the servicer
        could not translate it) is answered with that error. Raises only for the call as a
        whole: INVALID_ARGUMENT (check_count, check_keys) before anything is done, or the
        error of reading the payer's balance (UNAVAILABLE when their bank is away), after
        which a retry of the same call answers every item that had run from its key."""
        try:
            check_count(len(items))
            check_keys(items)
        except InvalidArgument:
            self._metrics.batches.labels("refused").inc()
            raise
        results: list[ItemResult] = [ItemResult()] * len(items)
        start = 0
        while start < len(items):
            try:
                available = await self._available_of(payer)
            except PaygateError:
                self._metrics.batches.labels("failed").inc()
                raise
            count = covered(payer, items[start:], available, self._max_payment_minor)
            if count == 0:
                results[start] = await self._one(payer, items[start])
                start += 1
                continue
            await self._concurrently(payer, items, range(start, start + count), results)
            start += count
        self._metrics.batches.labels("answered").inc()
        self._metrics.batch_items.observe(len(items))
        note(items=len(items), items_failed=sum(r.error is not None for r in results))
        return results

    async def _concurrently(
        self,
        payer: User,
        items: Sequence[PaymentRequest | PaygateError],
        indexes: range,
        results: list[ItemResult],
    ) -> None:
        """Run the items at `indexes`, at most `concurrency` at a time, started in order."""
        slots = asyncio.Semaphore(self._concurrency)

        async def run(index: int) -> None:
            try:
                results[index] = await self._one(payer, items[index])
            finally:
                slots.release()

        async with asyncio.TaskGroup() as group:
            for index in indexes:
                await slots.acquire()
                group.create_task(run(index))

    async def _one(self, payer: User, item: PaymentRequest | PaygateError) -> ItemResult:
        if isinstance(item, PaygateError):
            self._metrics.payments.labels("rejected").inc()
            return ItemResult(error=item)
        replayed: list[bool] = []
        try:
            payment = await self._payments.create(
                payer, item, on_replay=lambda: replayed.append(True)
            )
        except PaygateError as error:
            return ItemResult(error=error, replayed=bool(replayed))
        return ItemResult(payment=payment, replayed=bool(replayed))
