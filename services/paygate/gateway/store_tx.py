"""One database transaction as the gateway store's bodies see it, and what they share.

Every GatewayStore method is a body over a `Tx` (store_sql.py, store_refunds.py); the
SQLite and PostgreSQL stores only say how a body is run.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterable
from typing import Any, Protocol, TypeVar

from paygate.common.sql import NO_VALUES, Row, Statement, Values
from paygate.gateway.models import BeginOutcome, BeginResult, Payment

T = TypeVar("T")

# A key released by a transient failure between our insert and our read (by a concurrent
# request on PostgreSQL) is retried this many times before the caller is told it is in use.
BEGIN_ATTEMPTS = 3

class Tx(Protocol):
    """One database transaction, as SqlGatewayStore's bodies run statements in it."""

    async def run(self, statement: Statement, values: Values = NO_VALUES) -> int:
        """Execute the statement; how many rows it changed."""
        ...

    async def one(self, statement: Statement, values: Values = NO_VALUES) -> Row | None: ...
    async def all(self, statement: Statement, values: Values = NO_VALUES) -> list[Row]: ...
    async def many(self, statement: Statement, rows: Iterable[Values]) -> None: ...
    async def insert(self, statement: Statement, values: Values) -> int:
        """Insert one row (with Dialect.returning); its generated id."""
        ...


Body = Callable[[Tx], Coroutine[Any, Any, T]]


async def key_owner(tx: Tx, statement: Statement, values: Values) -> BeginResult | None:
    """Why a key that is taken is taken; None when it was released meanwhile."""
    row = await tx.one(statement, values)
    if row is None:
        return None
    stored_hash, state, payment_id, error_reason, error_message = row
    if stored_hash != values["request_hash"]:
        return BeginResult(BeginOutcome.MISMATCH, payment_id)
    if state == "in_progress":
        return BeginResult(BeginOutcome.IN_USE, payment_id)
    return BeginResult(BeginOutcome.REPLAY, payment_id, error_reason, error_message)


async def frozen_parties(tx: Tx, statement: Statement, payment: Payment) -> tuple[str, ...]:
    """The ids of the payment's parties who are frozen (Payment.parties: two at a time)."""
    parties, frozen = payment.parties, []
    for others in (parties[i : i + 2] for i in range(0, len(parties), 2)):
        pair = {"payer_user_id": others[0], "payee_user_id": others[-1]}
        frozen += [str(row[0]) for row in await tx.all(statement, pair)]
    return tuple(dict.fromkeys(frozen))
