"""The values of a two-phase commit: the participants' interface, failures, decisions.

coordinator.py drives the protocol with these; they hold no state and do no I/O.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Protocol

from paygate.errors import (
    ACCOUNT_NOT_FOUND,
    BALANCE_LIMIT_EXCEEDED,
    BANK_UNAVAILABLE,
    CURRENCY_MISMATCH,
    INSUFFICIENT_FUNDS,
    FailedPrecondition,
    PaygateError,
    Unavailable,
)
from paygate.gateway.models import Leg, Payment, TxnState, Vote

# Votes of no that are final answers about the payment itself: the key keeps this answer.
BUSINESS_REFUSALS = {
    INSUFFICIENT_FUNDS: "insufficient funds in the payer's account",
    CURRENCY_MISMATCH: "the payment's currency does not match an account's currency",
    ACCOUNT_NOT_FOUND: "an account of this payment no longer exists at its bank",
    BALANCE_LIMIT_EXCEEDED: "the payee's account cannot hold that much more",
}


class Participants(Protocol):
    """The banks, as the coordinator sees them (implemented over gRPC by banks.BankClients)."""

    async def prepare(
        self,
        bank_id: str,
        transaction_id: str,
        legs: list[Leg],
        *,
        timeout_s: float,
        one_phase: bool = False,
    ) -> Vote: ...
    async def commit(self, bank_id: str, transaction_id: str, *, timeout_s: float) -> None: ...
    async def abort(self, bank_id: str, transaction_id: str, *, timeout_s: float) -> None: ...


@dataclasses.dataclass(frozen=True)
class Failure:
    """Why a transaction was aborted, and whether the cause was transient."""

    reason: str
    message: str
    transient: bool

    def error(self) -> PaygateError:
        if self.transient:
            return Unavailable(self.message, reason=self.reason)
        return FailedPrecondition(self.message, reason=self.reason)


@dataclasses.dataclass(frozen=True)
class Decision:
    state: TxnState
    failure: Failure | None = None

    @property
    def committed(self) -> bool:
        return self.state in (TxnState.COMMITTING, TxnState.COMMITTED)


def legs_by_bank(payment: Payment) -> dict[str, list[Leg]]:
    legs: dict[str, list[Leg]] = {}
    legs.setdefault(payment.payer_bank_id, []).append(
        Leg(
            account_number=payment.payer_account,
            direction="debit",
            amount_minor=payment.amount_minor,
            currency=payment.currency,
        )
    )
    legs.setdefault(payment.payee_bank_id, []).append(
        Leg(
            account_number=payment.payee_account,
            direction="credit",
            amount_minor=payment.amount_minor,
            currency=payment.currency,
        )
    )
    return legs


def backoff_s(attempt: int, initial_s: float, max_s: float) -> float:
    """Exponential backoff with full jitter."""
    return random.uniform(0, min(max_s, initial_s * 2**attempt))


def refusal(reason: str) -> Failure:
    if reason in BUSINESS_REFUSALS:
        return Failure(reason, BUSINESS_REFUSALS[reason], False)
    # A no for any other reason (a Prepare that arrived after an Abort) says nothing final
    # about the payment: release the key so that a retry can succeed.
    return Failure(BANK_UNAVAILABLE, f"a bank voted no ({reason or 'no reason given'})", True)
