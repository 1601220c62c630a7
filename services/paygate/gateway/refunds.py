"""Refunds: money of a payment that succeeded, sent back from its payee to its payer.

A refund is a transaction of its own, driven by the coordinator exactly as a payment is
(two phases, or one at a single bank; recovery; presumed abort): its row in the payments
table has the payment's payee as payer and the payment's payer as payee, and names the
payment in `refund_of`. So a refund has every guarantee a payment has, and the transition
function needs no state of its own for it.

What is particular to refunds is the amount (store_refunds.py): a refund is recorded
together with its idempotency key only if its amount is at most what is left to refund,
the amount captured less every refund not aborted, read under the payment's row lock; a
refund that fails gives its amount back by being aborted; a refund decided to commit adds
to the payment's `amount_refunded` in the same write. So refunds sent concurrently never
add up to more than was captured.

Who may refund: the payee (PERMISSION_DENIED for the payer, NOT_FOUND for anyone else, as
GetPayment). Refused, moving nothing: a payment that did not succeed
(PAYMENT_NOT_REFUNDABLE), more than is left (AMOUNT_EXCEEDS_REFUNDABLE); both are business
answers the key then keeps, as a payment's INSUFFICIENT_FUNDS: asked again, the key answers
the same, even once an earlier refund failed and gave its amount back (a new key may then
refund it). The payee short
of funds: the refund is FAILED (INSUFFICIENT_FUNDS) and its key keeps that answer, as a
payment's does. A refund neither party of which may be frozen: USER_FROZEN, nothing written,
as for a payment. Idempotency keys are the caller's, shared with CreatePayment's: a key
used for something else is IDEMPOTENCY_KEY_MISMATCH.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from collections.abc import Callable

from paygate.common.metrics import PaymentMetrics, new_registry
from paygate.errors import (
    OUTCOME_FAILED,
    OUTCOME_KEY,
    FailedPrecondition,
    InvalidArgument,
    PermissionDenied,
)
from paygate.gateway.authorizations import operation_key
from paygate.gateway.coordinator import Coordinator
from paygate.gateway.models import (
    REFUND_ID_PREFIX,
    BeginOutcome,
    BeginResult,
    Payment,
    PaymentStatus,
    TxnState,
    User,
)
from paygate.gateway.payments import (
    DEFAULT_PAGE_SIZE,
    DESCRIPTION_MAX_LENGTH,
    MAX_PAGE_SIZE,
    Payments,
    decode_page_token,
    encode_page_token,
    failed_payment_error,
    frozen_party,
    frozen_payee,
    has_control_characters,
    key_conflict,
)
from paygate.gateway.store import GatewayStore

REFUND_ID_KEY = "refund-id"  # the refund a failed RefundPayment made, in its metadata
# A deliberately broken refund path, for the chaos checker's test only (`[gateway]
# broken_protocol`, with fault injection): every request makes a new refund, so that a
# retried or replayed refund sends the money back again.
REFUNDS_TWICE = "refunds-twice"
BROKEN_VARIANTS = (REFUNDS_TWICE,)


class Refunds:
    def __init__(
        self,
        store: GatewayStore,
        payments: Payments,
        coordinator: Coordinator,
        metrics: PaymentMetrics | None = None,
        *,
        forget_keys: bool = False,
    ) -> None:
        self._forget_keys = forget_keys  # REFUNDS_TWICE
        self._store = store
        self._payments = payments
        self._coordinator = coordinator
        self._metrics = metrics or PaymentMetrics.build(new_registry())

    async def refund(
        self,
        user: User,
        payment_id: str,
        amount_minor: int,
        reason: str,
        idempotency_key: str,
        on_replay: Callable[[], None] | None = None,
    ) -> Payment:
        """Refund `amount_minor` (0: all that is left) of a payment the caller is the payee
        of; the refund as a Payment row (refund_of set)."""
        outcome = ["rejected"]
        try:
            return await self._refund(user, payment_id, amount_minor, reason, idempotency_key,
                                      outcome)  # fmt: skip
        finally:
            self._metrics.refunds.labels(outcome[0]).inc()
            if outcome[0] == "replayed" and on_replay is not None:
                on_replay()

    async def _refund(
        self,
        user: User,
        payment_id: str,
        amount_minor: int,
        reason: str,
        idempotency_key: str,
        outcome: list[str],
    ) -> Payment:
        if amount_minor < 0:
            raise InvalidArgument("amount must not be negative (0 refunds all that is left)")
        if len(reason) > DESCRIPTION_MAX_LENGTH or has_control_characters(reason):
            raise InvalidArgument(
                f"reason must be at most {DESCRIPTION_MAX_LENGTH} characters on one line"
            )
        key = operation_key(user, idempotency_key, "refund", payment_id, amount_minor, reason)
        if self._forget_keys:
            key = dataclasses.replace(key, key=f"{key.key[:200]}#{secrets.token_hex(6)}")
        payment = await self._payments.get(user, payment_id)  # NOT_FOUND unless a party
        if user.user_id != payment.payee_user_id:
            if payment.splits:
                raise PermissionDenied(
                    f"only {payment.payee_username}, the first payee of a split payment, may"
                    " refund it (taking back from every payee their share)"
                )
            raise PermissionDenied("only the payee of a payment may refund it")
        refund = self._new_refund(payment, amount_minor, reason)
        with self._coordinator.claim(refund.payment_id):
            begun, recorded = await self._store.begin_refund(
                key.key, key.request_hash, refund, self._coordinator.new_lease()
            )
            if begun.outcome == BeginOutcome.FROZEN:
                name = frozen_payee(refund, begun.frozen)
                giving = name != refund.payee_username  # a split payment's payee
                raise frozen_party(refund.payer_user_id, begun.frozen, name, giving=giving)
            if begun.outcome == BeginOutcome.STARTED:
                assert recorded is not None
                outcome[0] = "failed"
                self._coordinator.crash_point("gateway.after_refund_reserved")
                decision = await self._coordinator.run(recorded)
                if decision.failure is not None:
                    error = failed_payment_error(
                        decision.failure.error(), recorded.payment_id, decision.state
                    )
                    error.metadata[REFUND_ID_KEY] = recorded.payment_id
                    raise error
                outcome[0] = "succeeded"
                return await self._payments.load(recorded.payment_id)
        return await self._answer_again(begun, outcome)

    def _new_refund(self, payment: Payment, amount_minor: int, reason: str) -> Payment:
        """The refund's row: the payment turned around (amount 0: decided when recorded)."""
        return Payment(
            payment_id=f"{REFUND_ID_PREFIX}{secrets.token_hex(12)}",
            status=PaymentStatus.PENDING,
            txn_state=TxnState.PREPARING,
            payer_user_id=payment.payee_user_id,
            payer_username=payment.payee_username,
            payer_bank_id=payment.payee_bank_id,
            payer_account=payment.payee_account,
            payee_user_id=payment.payer_user_id,
            payee_username=payment.payer_username,
            payee_bank_id=payment.payer_bank_id,
            payee_account=payment.payer_account,
            amount_minor=amount_minor,
            currency=payment.currency,
            description=reason,
            create_time_us=time.time_ns() // 1000,
            # A split payment's refund takes back from every payee: at one bank only if
            # they all are (which of them give back is decided when it is recorded).
            one_phase=self._coordinator.one_phase_for(
                payment.payer_bank_id, *(split.payee_bank_id for split in payment.splits),
                payment.payee_bank_id,
            ),  # fmt: skip
            refund_of=payment.payment_id,
            splits=payment.splits,  # the parts it may take back from; store_refunds.py
        )

    async def _answer_again(self, begun: BeginResult, outcome: list[str]) -> Payment:
        if begun.outcome == BeginOutcome.REFUSED:
            raise FailedPrecondition(begun.error_message, reason=begun.error_reason)
        if begun.outcome in (BeginOutcome.MISMATCH, BeginOutcome.IN_USE):
            outcome[0] = "conflict"
        key_conflict(begun, "request")
        outcome[0] = "replayed"
        if begun.error_reason:
            made = begun.payment_id.startswith(REFUND_ID_PREFIX)  # else refused, none made
            raise FailedPrecondition(
                begun.error_message,
                reason=begun.error_reason,
                metadata={REFUND_ID_KEY: begun.payment_id, OUTCOME_KEY: OUTCOME_FAILED}
                if made
                else {},
            )
        return await self._payments.load(begun.payment_id)

    async def list(
        self, user: User, payment_id: str, page_size: int, page_token: str
    ) -> tuple[list[Payment], str]:
        """A page of a payment's refunds, oldest first, and the next page's token."""
        if page_size < 0:
            raise InvalidArgument("page_size must not be negative")
        size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        after = decode_page_token(page_token) or 0
        await self._payments.get(user, payment_id)  # NOT_FOUND unless a party
        rows = await self._store.list_refunds(payment_id, after_seq=after, limit=size + 1)
        page = rows[:size]
        next_token = encode_page_token(page[-1][0]) if len(rows) > size else ""
        return [refund for _, refund in page], next_token
