"""The store's refund bodies: reserving a refund with its key, and a page of refunds.

A refund's amount is reserved on the payment it refunds by the refund's own row: every
refund of a payment that is not aborted counts against what is left to refund, so two
refunds sent together never pass the amount captured (the payment's row is read with a
write lock first on PostgreSQL; SQLite has one writer). A refund that fails is aborted,
which gives its amount back; one decided to commit adds to the payment's `amount_refunded`
in the same database transaction as the decision (store_sql.decide_commit).

A split payment's refund takes back from every payee in proportion to what each has not
given back yet (`shares`), in the same reservation: its row's `splits` are the parts, and
every refund not aborted counts against each payee's part, so no payee ever gives back
more than they were paid.
"""

from __future__ import annotations

import dataclasses

from paygate.common.invariants import check
from paygate.common.sql import Values
from paygate.errors import AMOUNT_EXCEEDS_REFUNDABLE, PAYMENT_NOT_REFUNDABLE
from paygate.gateway.models import BeginOutcome, BeginResult, Payment, PaymentStatus
from paygate.gateway.statements import PAYMENTS, GatewaySql, load_splits
from paygate.gateway.store_tx import BEGIN_ATTEMPTS, Tx, frozen_parties, key_owner


async def begin_refund(
    tx: Tx, sql: GatewaySql, refund: Payment, values: Values
) -> tuple[BeginResult, Payment | None]:
    """Record `refund` (amount 0: all that is left) with its key, or say why not."""
    frozen = await frozen_parties(tx, sql.frozen_parties, refund)
    if frozen:  # a refund pays its payers' money to the payee: none may be frozen
        return BeginResult(BeginOutcome.FROZEN, frozen=frozen), None
    for _ in range(BEGIN_ATTEMPTS):
        taken = await key_owner(tx, sql.key, values)
        if taken is not None:
            return taken, None
        row = await tx.one(sql.refunded_payment, values)
        check(row is not None, f"refund of {refund.refund_of}: the payment vanished")
        assert row is not None
        payment = PAYMENTS.from_row(row)
        if payment.status != PaymentStatus.SUCCEEDED:
            message = f"payment {payment.payment_id} did not succeed: nothing of it moved"
            if await _refused_key(tx, sql, values, PAYMENT_NOT_REFUNDABLE, message):
                return _refused(PAYMENT_NOT_REFUNDABLE, message), None
            continue  # a concurrent request took the key: answer what it holds
        reserved_row = await tx.one(sql.refunds_reserved, values)
        reserved = int(reserved_row[0]) if reserved_row else 0
        left = payment.captured_minor - reserved
        check(
            0 <= payment.amount_refunded_minor <= reserved <= payment.captured_minor,
            f"payment {payment.payment_id}: refunded {payment.amount_refunded_minor},"
            f" reserved {reserved}, captured {payment.captured_minor}",
        )
        amount = refund.amount_minor or left
        if amount <= 0 or amount > left:
            message = (
                f"cannot refund {amount}: {left} minor units of payment"
                f" {payment.payment_id} are left to refund"
            )
            if await _refused_key(tx, sql, values, AMOUNT_EXCEEDS_REFUNDABLE, message):
                return _refused(AMOUNT_EXCEEDS_REFUNDABLE, message), None
            continue
        recorded = dataclasses.replace(refund, amount_minor=amount)
        if payment.splits:
            recorded = await _with_parts(tx, sql, payment, recorded, left)
        values = {**values, **PAYMENTS.values(recorded)}
        if await tx.run(sql.claim_key, values) == 1:
            # No payment_parties rows: a refund is listed with its payment, not as one.
            await tx.insert(sql.insert_payment, values)
            return BeginResult(BeginOutcome.STARTED, refund.payment_id), recorded
    return BeginResult(BeginOutcome.IN_USE), None


async def _with_parts(
    tx: Tx, sql: GatewaySql, payment: Payment, refund: Payment, left: int
) -> Payment:
    """A split payment's refund with its parts: each payee's share of its amount."""
    given: dict[str, int] = {}
    for (text,) in await tx.all(sql.refund_parts, {"refund_of": payment.payment_id}):
        for part in load_splits(text):
            given[part.payee_user_id] = given.get(part.payee_user_id, 0) + part.amount_minor
    lefts = [split.amount_minor - given.get(split.payee_user_id, 0) for split in payment.splits]
    check(
        min(lefts) >= 0 and sum(lefts) == left,
        f"payment {payment.payment_id}: parts left {lefts}, {left} left in all",
    )
    parts = [
        dataclasses.replace(split, amount_minor=share)
        for split, share in zip(payment.splits, shares(refund.amount_minor, lefts), strict=True)
        if share > 0
    ]
    return dataclasses.replace(refund, splits=tuple(parts))


def shares(amount: int, lefts: list[int]) -> list[int]:
    """`amount` divided in proportion to `lefts` (its total at least `amount`), in whole
    minor units: each the floor of its exact share, and the units left over one each to the
    largest remainders (the first among equals). No share passes its `left`."""
    total = sum(lefts)
    check(0 < amount <= total, f"cannot share {amount} among {lefts}")
    result = [amount * left // total for left in lefts]
    by_remainder = sorted(range(len(lefts)), key=lambda i: (-(amount * lefts[i] % total), i))
    for i in by_remainder[: amount - sum(result)]:
        result[i] += 1
    return result


async def _refused_key(tx: Tx, sql: GatewaySql, values: Values, reason: str, message: str) -> bool:
    """Keep the refusal under the caller's key; False when a concurrent request took it."""
    refused = {**values, "reason": reason, "message": message}
    return await tx.run(sql.insert_refused_key, refused) == 1


def _refused(reason: str, message: str) -> BeginResult:
    return BeginResult(BeginOutcome.REFUSED, "", reason, message)
