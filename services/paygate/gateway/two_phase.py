"""What the coordinator's driver needs beside the transition function: its settings, the
banks as participants, a payment's legs at each bank, and the backoff between re-sends."""

from __future__ import annotations

import dataclasses
import random
from typing import Protocol

from paygate.gateway.models import Leg, Payment, Vote

PREPARE_TIMEOUT_MARGIN_S = 0.2
DEFAULT_LEASE_S = 6.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class CoordinatorSettings:
    prepare_timeout_s: float
    bank_call_timeout_s: float
    recovery_interval_s: float
    # How long a gateway owns a transaction it drives without renewing: more than the
    # prepare phase, plus the clock difference between the gateways sharing a database.
    lease_s: float = DEFAULT_LEASE_S
    # Phase-two rounds within one request or one recovery pass; recovery passes repeat forever.
    delivery_attempts: int = 3
    backoff_initial_s: float = 0.05
    backoff_max_s: float = 1.0
    recovery_batch: int = 100
    recovery_concurrency: int = 16
    # Payments within one bank as a one-phase commit (transitions.py); False while gateways
    # of an older version, which would presume abort for them, share the database.
    one_phase: bool = True

    @property
    def request_drive_s(self) -> float:
        """The longest a request drives its payment: the prepares, then the commit attempts
        with their backoffs. An unfinished payment older than this waits for recovery."""
        phase_two_s = self.delivery_attempts * (self.bank_call_timeout_s + self.backoff_max_s)
        return self.prepare_timeout_s + PREPARE_TIMEOUT_MARGIN_S + phase_two_s


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
        spans_banks: bool = False,
    ) -> Vote: ...
    async def commit(
        self, bank_id: str, transaction_id: str, *, timeout_s: float, amount_minor: int = 0
    ) -> None: ...
    async def abort(self, bank_id: str, transaction_id: str, *, timeout_s: float) -> None: ...


def legs_by_bank(payment: Payment) -> dict[str, list[Leg]]:
    """Each bank's legs of the payment (Payment.legs), in the payment's order."""
    legs: dict[str, list[Leg]] = {}
    for leg in payment.legs:
        legs.setdefault(leg.bank_id, []).append(
            Leg(account_number=leg.account, direction=leg.direction,
                amount_minor=leg.amount_minor, currency=payment.currency)
        )  # fmt: skip
    return legs


def backoff_s(attempt: int, initial_s: float, max_s: float) -> float:
    """Exponential backoff with full jitter."""
    return random.uniform(0, min(max_s, initial_s * 2**attempt))
