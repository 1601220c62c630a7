"""Authorizations: capturing and cancelling a payment made with manual capture.

A payment created with `manual_capture` ends phase one with the money held at both banks
(AUTHORIZED, status REQUIRES_CAPTURE) until `capture_before`. Its payee then captures it,
all of it or less, once (the banks post that and release the rest), or cancels it (the
holds are voided); past the deadline, recovery cancels it as expired (transitions.py).

Who may act: the payee only. The payer is refused PERMISSION_DENIED (they can see the
payment, and learn that only its payee may act on it); anyone else NOT_FOUND, as for
GetPayment. What is refused changes nothing: a payment that is not awaiting capture
(PAYMENT_NOT_CAPTURABLE), more than was authorized (AMOUNT_EXCEEDS_CAPTURABLE).

Idempotency, as Stripe's: the caller's key is written in the same database transaction as
the capture or the cancellation it made, so a retry with it answers the payment again (as
it is now, with `idempotent-replayed`), and the key with other parameters is
IDEMPOTENCY_KEY_MISMATCH. A refusal writes nothing, the key included.

Frozen users (AdminService.FreezeUser): no capture moves money to or from one, whichever
party is frozen (USER_FROZEN): the payee asks, and the payer's money would leave. The
authorization is otherwise left alone: its payee may still cancel it (the payer's money is
released), recovery still expires it at its deadline, and it can be captured once the
user is unfrozen, before then. A capture already decided when the freeze is written runs
to its end.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from paygate.errors import (
    AMOUNT_EXCEEDS_CAPTURABLE,
    IDEMPOTENCY_KEY_MISMATCH,
    PAYMENT_NOT_CAPTURABLE,
    FailedPrecondition,
    InvalidArgument,
    PermissionDenied,
)
from paygate.gateway.coordinator import Coordinator
from paygate.gateway.models import (
    BeginOutcome,
    BeginResult,
    OperationKey,
    Payment,
    User,
)
from paygate.gateway.payments import KEY_MAX_LENGTH, Payments
from paygate.gateway.transitions import Decision

Replayed = Callable[[], None]


def operation_key(user: User, key: str, *parameters: object) -> OperationKey:
    if not key or len(key) > KEY_MAX_LENGTH or not key.isprintable():
        raise InvalidArgument(f"idempotency_key must be 1 to {KEY_MAX_LENGTH} printable characters")
    fingerprint = hashlib.sha256(repr(parameters).encode()).hexdigest()
    return OperationKey(user.user_id, key, fingerprint)


class Authorizations:
    def __init__(self, payments: Payments, coordinator: Coordinator) -> None:
        self._payments = payments
        self._coordinator = coordinator

    async def capture(
        self,
        user: User,
        payment_id: str,
        amount_minor: int,
        idempotency_key: str,
        on_replay: Replayed | None = None,
    ) -> Payment:
        """Capture `amount_minor` (0: all) of an authorization the caller is the payee of."""
        if amount_minor < 0:
            raise InvalidArgument("amount must not be negative (0 captures everything held)")
        key = operation_key(user, idempotency_key, "capture", payment_id, amount_minor)
        payment = await self._payee_of(user, payment_id)
        if amount_minor > payment.amount_minor:
            raise FailedPrecondition(
                f"cannot capture {amount_minor}: {payment.amount_minor} minor units were"
                " authorized",
                reason=AMOUNT_EXCEEDS_CAPTURABLE,
            )
        await self._payments.refuse_frozen(payment)
        decision, taken = await self._coordinator.capture(
            payment, amount_minor or payment.amount_minor, key
        )
        return await self._answer(payment, decision, taken, on_replay)

    async def cancel(
        self,
        user: User,
        payment_id: str,
        idempotency_key: str,
        on_replay: Replayed | None = None,
    ) -> Payment:
        """Cancel an authorization the caller is the payee of: its holds are released."""
        key = operation_key(user, idempotency_key, "cancel", payment_id)
        payment = await self._payee_of(user, payment_id)
        decision, taken = await self._coordinator.cancel(payment, key)
        return await self._answer(payment, decision, taken, on_replay)

    async def _payee_of(self, user: User, payment_id: str) -> Payment:
        payment = await self._payments.get(user, payment_id)  # NOT_FOUND unless a party
        if user.user_id != payment.payee_user_id:
            raise PermissionDenied("only the payee of a payment may capture or cancel it")
        if not payment.manual_capture:
            raise FailedPrecondition(
                f"payment {payment_id} was not made with manual capture: its money moved"
                " when it was made",
                reason=PAYMENT_NOT_CAPTURABLE,
            )
        return payment

    async def _answer(
        self,
        payment: Payment,
        decision: Decision,
        taken: BeginResult | None,
        on_replay: Replayed | None,
    ) -> Payment:
        if taken is not None:
            if taken.outcome == BeginOutcome.MISMATCH or taken.payment_id != payment.payment_id:
                raise FailedPrecondition(
                    "this idempotency key was used for another request",
                    reason=IDEMPOTENCY_KEY_MISMATCH,
                )
            if on_replay is not None:
                on_replay()
            return await self._payments.load(payment.payment_id)
        if decision.failure is not None and decision.failure.reason == PAYMENT_NOT_CAPTURABLE:
            raise FailedPrecondition(
                f"payment {payment.payment_id} is not awaiting capture any more",
                reason=PAYMENT_NOT_CAPTURABLE,
            )
        return await self._payments.load(payment.payment_id)
