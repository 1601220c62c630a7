"""The coordinator's choice between one and two phases for a payment within one bank.

The real coordinator and SQLite store, with a bank that records what it is asked: it
stands in for a bank of an older version (one that ignores one_phase and only holds),
which the suite's banks cannot be. The suite tests (test_one_phase.py,
test_crash_points.py) show the one-phase commit against real banks.
"""

from __future__ import annotations

import asyncio
import pathlib
import uuid

from paygate.common.faults import FaultInjector
from paygate.gateway.coordinator import Coordinator, CoordinatorSettings
from paygate.gateway.models import Leg, Payment, PaymentStatus, TxnState, User, Vote
from paygate.gateway.store import SqliteGatewayStore

ALICE = User(user_id="usr_alice", username="alice", bank_id="bank-a",
             account_number="acc-alice", currency="USD")
BOB = User(user_id="usr_bob", username="bob", bank_id="bank-a",
           account_number="acc-bob", currency="USD")


class RecordingBank:
    """Answers yes to every Prepare; `posts` says whether a one-phase yes is a commit."""

    def __init__(self, *, posts: bool) -> None:
        self.posts = posts
        self.calls: list[tuple[str, bool]] = []

    async def prepare(
        self, bank_id: str, transaction_id: str, legs: list[Leg], *, timeout_s: float,
        one_phase: bool = False,
    ) -> Vote:
        self.calls.append(("prepare", one_phase))
        return Vote(True, committed=one_phase and self.posts)

    async def commit(self, bank_id: str, transaction_id: str, *, timeout_s: float) -> None:
        self.calls.append(("commit", False))

    async def abort(self, bank_id: str, transaction_id: str, *, timeout_s: float) -> None:
        self.calls.append(("abort", False))


def within_one_bank() -> Payment:
    return Payment(
        payment_id=uuid.uuid4().hex, status=PaymentStatus.PENDING, txn_state=TxnState.PREPARING,
        payer_user_id=ALICE.user_id, payer_username=ALICE.username, payer_bank_id="bank-a",
        payer_account=ALICE.account_number, payee_user_id=BOB.user_id,
        payee_username=BOB.username, payee_bank_id="bank-a", payee_account=BOB.account_number,
        amount_minor=100, currency="USD", description="", create_time_us=0,
    )


def run_payment(
    tmp_path: pathlib.Path, bank: RecordingBank, *, one_phase: bool
) -> tuple[TxnState, TxnState]:
    """Run one payment within bank-a; (the decision's state, the stored state after)."""

    async def scenario() -> tuple[TxnState, TxnState]:
        store = SqliteGatewayStore(tmp_path / "gateway.db")
        await store.open()
        coordinator = Coordinator(
            store,
            bank,
            CoordinatorSettings(
                prepare_timeout_s=2.0, bank_call_timeout_s=2.0, recovery_interval_s=2.0,
                one_phase=one_phase,
            ),
            FaultInjector(enabled=False, var_dir=tmp_path, process="gateway"),
        )
        try:
            await store.create_user(ALICE, b"h")
            await store.create_user(BOB, b"h")
            payment = within_one_bank()
            await store.begin_payment("key", "hash", payment, coordinator.new_lease())
            decision = await coordinator.run(payment)
            stored = await store.get_payment(payment.payment_id)
            assert stored is not None and stored.status == PaymentStatus.SUCCEEDED
            return decision.state, stored.txn_state
        finally:
            await coordinator.close()
            await store.close()

    return asyncio.run(scenario())


def test_a_bank_that_posts_makes_it_one_call_and_one_write(tmp_path: pathlib.Path) -> None:
    bank = RecordingBank(posts=True)
    assert run_payment(tmp_path, bank, one_phase=True) == (TxnState.COMMITTED,) * 2
    assert bank.calls == [("prepare", True)]


def test_a_yes_that_only_held_is_committed_in_a_second_phase(tmp_path: pathlib.Path) -> None:
    bank = RecordingBank(posts=False)  # a bank that does not know one_phase
    assert run_payment(tmp_path, bank, one_phase=True) == (
        TxnState.COMMITTING, TxnState.COMMITTED
    )
    assert bank.calls == [("prepare", True), ("commit", False)]


def test_switched_off_a_payment_within_one_bank_has_two_phases(tmp_path: pathlib.Path) -> None:
    bank = RecordingBank(posts=True)
    assert run_payment(tmp_path, bank, one_phase=False) == (
        TxnState.COMMITTING, TxnState.COMMITTED
    )
    assert bank.calls == [("prepare", False), ("commit", False)]
