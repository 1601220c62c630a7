"""paygate_2pc_in_doubt counts the unfinished payments older than a request drives one, and
keeps counting while a recovery pass waits on a bank that does not answer.

The real coordinator and SQLite store, with a bank whose Commit never returns: the suite's
banks can be stopped, but not made to hang on one call at a chosen moment.
"""

from __future__ import annotations

import asyncio
import dataclasses
import pathlib
import time
import uuid

from paygate.common.faults import FaultInjector
from paygate.common.metrics import CoordinatorMetrics, new_registry
from paygate.gateway.coordinator import Coordinator, CoordinatorSettings
from paygate.gateway.models import Leg, Payment, PaymentStatus, TxnState, User, Vote
from paygate.gateway.store import Lease, SqliteGatewayStore

ALICE = User(
    user_id="usr_alice", username="alice", bank_id="bank-a", account_number="1", currency="USD"
)
BOB = User(user_id="usr_bob", username="bob", bank_id="bank-b", account_number="2", currency="USD")
SETTINGS = CoordinatorSettings(
    prepare_timeout_s=2.0, bank_call_timeout_s=2.0, recovery_interval_s=2.0
)


class HangingCommits:
    """A bank that votes yes and never answers a Commit (as a frozen process)."""

    def __init__(self) -> None:
        self.commit_waiting = asyncio.Event()

    async def prepare(
        self,
        bank_id: str,
        transaction_id: str,
        legs: list[Leg],
        *,
        timeout_s: float,
        one_phase: bool = False,
        spans_banks: bool = False,
    ) -> Vote:
        return Vote(True)

    async def commit(
        self, bank_id: str, transaction_id: str, *, timeout_s: float, amount_minor: int = 0
    ) -> None:
        self.commit_waiting.set()
        await asyncio.Event().wait()

    async def abort(self, bank_id: str, transaction_id: str, *, timeout_s: float) -> None:
        await asyncio.Event().wait()


def payment(created_s_ago: float) -> Payment:
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
        payee_bank_id="bank-b",
        payee_account=BOB.account_number,
        amount_minor=100,
        currency="USD",
        description="",
        create_time_us=int((time.time() - created_s_ago) * 1e6),
    )


def test_the_gauge_counts_old_unfinished_payments_while_recovery_is_stuck(
    tmp_path: pathlib.Path,
) -> None:
    registry = new_registry()
    metrics = CoordinatorMetrics.build(registry)
    bank = HangingCommits()

    def gauge() -> float | None:
        return registry.get_sample_value("paygate_2pc_in_doubt")

    async def decided_long_ago(store: SqliteGatewayStore) -> None:
        """A payment whose gateway died after deciding commit, a minute ago."""
        old = payment(created_s_ago=60)
        await store.begin_payment(uuid.uuid4().hex, "h", old, Lease("a-dead-gateway", 0.0))
        assert await store.decide_commit(old.payment_id) == TxnState.COMMITTING

    async def scenario() -> list[float | None]:
        store = SqliteGatewayStore(tmp_path / "gateway.db")
        await store.open()
        coordinator = Coordinator(
            store,
            bank,
            SETTINGS,
            FaultInjector(enabled=False, var_dir=tmp_path, process="gateway"),
            metrics,
        )
        readings: list[float | None] = []
        try:
            for user in (ALICE, BOB):
                await store.create_user(user, b"h")
            await decided_long_ago(store)
            # One a request is driving right now: not in doubt.
            fresh = payment(created_s_ago=0)
            await store.begin_payment("fresh", "h", fresh, coordinator.new_lease())
            assert await coordinator.count_in_doubt() == 1
            readings.append(gauge())

            # Recovery takes the old one and waits on its Commit, which never returns...
            recovery = asyncio.create_task(coordinator.recover_once())
            await asyncio.wait_for(bank.commit_waiting.wait(), timeout=10)
            # ... while another is found undecided and old: the gauge still moves.
            await decided_long_ago(store)
            assert await coordinator.count_in_doubt() == 2
            readings.append(gauge())
            assert not recovery.done()
            recovery.cancel()
            await asyncio.gather(recovery, return_exceptions=True)
        finally:
            await coordinator.close()
            await store.close()
        return readings

    assert asyncio.run(scenario()) == [1.0, 2.0]


def test_a_request_may_drive_its_payment_through_every_commit_attempt() -> None:
    """Counting a payment sooner would show ordinary slow requests as in doubt."""
    settings = dataclasses.replace(SETTINGS, delivery_attempts=3, backoff_max_s=1.0)
    assert settings.request_drive_s == 2.0 + 0.2 + 3 * (2.0 + 1.0)
