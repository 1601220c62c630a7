"""The gateway's Finisher (paygate.gateway.finisher): transactions that end together are
recorded in one database transaction, and a failed write never fails the payment."""

from __future__ import annotations

import asyncio
import logging
import pathlib
import sqlite3
import uuid
from collections.abc import Sequence

import pytest
from paygate.gateway.finisher import Finisher
from paygate.gateway.models import Payment, PaymentStatus, TxnState, User
from paygate.gateway.store import SqliteGatewayStore


def user(name: str) -> User:
    return User(
        user_id=f"usr_{name}",
        username=name,
        bank_id="bank-a",
        account_number=f"acc-{name}",
        currency="USD",
    )


ALICE, BOB = user("alice"), user("bob")


def payment() -> Payment:
    return Payment(
        payment_id=uuid.uuid4().hex,
        status=PaymentStatus.PENDING,
        txn_state=TxnState.PREPARING,
        payer_user_id=ALICE.user_id,
        payer_username=ALICE.username,
        payer_bank_id="bank-a",
        payer_account=ALICE.account_number,
        payee_user_id=BOB.user_id,
        payee_username=BOB.username,
        payee_bank_id="bank-a",
        payee_account=BOB.account_number,
        amount_minor=100,
        currency="USD",
        description="",
        create_time_us=0,
    )


class CountingStore(SqliteGatewayStore):
    """The real SQLite store, counting finish_many calls, or failing them like a full disk."""

    def __init__(self, path: pathlib.Path) -> None:
        super().__init__(path)
        self.batches: list[int] = []
        self.broken = False

    async def finish_many(self, finished: Sequence[tuple[str, TxnState]]) -> None:
        self.batches.append(len(finished))
        if self.broken:
            raise sqlite3.OperationalError("database or disk is full")
        await super().finish_many(finished)


async def decided_payments(store: CountingStore, n: int) -> list[Payment]:
    await store.create_user(ALICE, b"h")
    await store.create_user(BOB, b"h")
    ps = [payment() for _ in range(n)]
    for i, p in enumerate(ps):
        await store.begin_payment(f"k{i}", "h", p)
        await store.decide_commit(p.payment_id)
    return ps


def test_transactions_ending_together_are_finished_in_one_write(tmp_path: pathlib.Path) -> None:
    async def scenario() -> None:
        store = CountingStore(tmp_path / "g.db")
        await store.open()
        ps = await decided_payments(store, 30)
        finisher = Finisher(store, timeout_s=5.0)
        await asyncio.gather(*(finisher.finish(p.payment_id, TxnState.COMMITTED) for p in ps))
        states = {(await store.get_payment(p.payment_id)).txn_state for p in ps}  # type: ignore[union-attr]
        assert states == {TxnState.COMMITTED}
        assert sum(store.batches) == 30 and len(store.batches) < 30
        await finisher.close()
        await store.close()

    asyncio.run(scenario())


def test_a_failed_finish_is_logged_and_left_to_recovery(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        store = CountingStore(tmp_path / "g.db")
        await store.open()
        (p,) = await decided_payments(store, 1)
        store.broken = True
        finisher = Finisher(store, timeout_s=5.0)
        await finisher.finish(p.payment_id, TxnState.COMMITTED)  # does not raise
        found = await store.get_payment(p.payment_id)
        assert found is not None and found.txn_state == TxnState.COMMITTING  # recovery's job
        await finisher.close()
        await store.close()

    with caplog.at_level(logging.WARNING, logger="paygate.coordinator"):
        asyncio.run(scenario())
    assert "recovery will finish the transaction" in caplog.text
