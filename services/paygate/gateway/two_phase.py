"""What the coordinator's driver needs beside the transition function: the banks as
participants, a payment's legs at each bank, and the backoff between re-sends."""

from __future__ import annotations

import random
from typing import Protocol

from paygate.gateway.models import Leg, Payment, Vote


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
