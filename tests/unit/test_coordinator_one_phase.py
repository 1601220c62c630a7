"""The coordinator's handling of a payment within one bank, against banks of other versions.

The real coordinator and SQLite store, with a bank that records what it is asked and
answers as told: it stands in for a bank of an older version (one that ignores one_phase
and only holds), or for a bank that another gateway has already asked, which the suite's
banks cannot be made into. The suite tests (test_one_phase.py, test_crash_points.py) show
the one-phase commit against real banks.
"""

from __future__ import annotations

import asyncio
import dataclasses
import pathlib
import time
import uuid

import pytest
from paygate.common.faults import FaultInjector
from paygate.errors import TRANSACTION_ABORTED, TRANSACTION_COMMITTED, FailedPrecondition
from paygate.gateway.coordinator import Coordinator, CoordinatorSettings
from paygate.gateway.models import Leg, Payment, PaymentStatus, TxnState, User, Vote
from paygate.gateway.store import BeginOutcome, Lease, SqliteGatewayStore

ALICE = User(
    user_id="usr_alice",
    username="alice",
    bank_id="bank-a",
    account_number="acc-alice",
    currency="USD",
)
BOB = User(
    user_id="usr_bob", username="bob", bank_id="bank-a", account_number="acc-bob", currency="USD"
)


class RecordingBank:
    """Answers yes to every Prepare (posting it when `posts`); refuses as told."""

    def __init__(self, *, posts: bool, commit_refused: str = "", abort_refused: str = "") -> None:
        self.posts = posts
        self.commit_refused = commit_refused
        self.abort_refused = abort_refused
        self.calls: list[tuple[str, bool]] = []
        self.store: SqliteGatewayStore | None = None
        self.state_at_commit: TxnState | None = None  # the payment's, when Commit came

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
        self.calls.append(("prepare", one_phase))
        return Vote(True, committed=one_phase and self.posts)

    async def commit(
        self, bank_id: str, transaction_id: str, *, timeout_s: float, amount_minor: int = 0
    ) -> None:
        self.calls.append(("commit", False))
        if self.store is not None:
            stored = await self.store.get_payment(transaction_id)
            self.state_at_commit = stored.txn_state if stored else None
        if self.commit_refused:
            raise FailedPrecondition("refused", reason=self.commit_refused)

    async def abort(self, bank_id: str, transaction_id: str, *, timeout_s: float) -> None:
        self.calls.append(("abort", False))
        if self.abort_refused:
            raise FailedPrecondition("refused", reason=self.abort_refused)


def within_one_bank(one_phase: bool) -> Payment:
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
        one_phase=one_phase,
    )


@dataclasses.dataclass
class Outcome:
    decided: TxnState | None  # the request's decision; None when only recovery ran
    stored: TxnState  # the payment's state at the end, once background work is done
    key: BeginOutcome  # what a retry with the same key and parameters finds


async def settled(store: SqliteGatewayStore, payment_id: str, wait_s: float) -> Payment:
    """The payment once background work has ended it, or as it is after wait_s."""
    deadline = time.monotonic() + wait_s
    while True:
        stored = await store.get_payment(payment_id)
        assert stored is not None
        if stored.txn_state in (TxnState.COMMITTED, TxnState.ABORTED):
            return stored
        if time.monotonic() > deadline:
            return stored
        await asyncio.sleep(0.02)


def run(
    tmp_path: pathlib.Path,
    bank: RecordingBank,
    *,
    one_phase: bool = True,
    recover_flagged: bool | None = None,
) -> Outcome:
    """Pay within bank-a through a coordinator (`one_phase` is its setting); or, with
    `recover_flagged` set, leave such a payment PREPARING with an expired lease, recorded
    with that one_phase flag, and run one recovery pass over it."""

    async def scenario() -> Outcome:
        store = SqliteGatewayStore(tmp_path / "gateway.db")
        await store.open()
        bank.store = store
        coordinator = Coordinator(
            store,
            bank,
            CoordinatorSettings(
                prepare_timeout_s=2.0,
                bank_call_timeout_s=2.0,
                recovery_interval_s=2.0,
                one_phase=one_phase,
            ),
            FaultInjector(enabled=False, var_dir=tmp_path, process="gateway"),
        )
        try:
            await store.create_user(ALICE, b"h")
            await store.create_user(BOB, b"h")
            decided = None
            if recover_flagged is None:
                payment = within_one_bank(coordinator.one_phase_for("bank-a", "bank-a"))
                await store.begin_payment("key", "hash", payment, coordinator.new_lease())
                decided = (await coordinator.run(payment)).state
            else:
                payment = within_one_bank(recover_flagged)
                expired = Lease("a-gateway-that-died", time.time() - 1)
                await store.begin_payment("key", "hash", payment, expired)
                assert await coordinator.recover_once() == 1
            # A request leaves an abort's finish to the background; recovery awaits its own.
            stored = await settled(store, payment.payment_id, 5.0 if decided else 0.0)
            assert stored.one_phase == payment.one_phase
            retry = await store.begin_payment("key", "hash", within_one_bank(False))
            return Outcome(decided, stored.txn_state, retry.outcome)
        finally:
            await coordinator.close()
            await store.close()

    return asyncio.run(scenario())


def test_a_bank_that_posts_makes_it_one_call_and_one_write(tmp_path: pathlib.Path) -> None:
    bank = RecordingBank(posts=True)
    assert run(tmp_path, bank) == Outcome(
        TxnState.COMMITTED, TxnState.COMMITTED, BeginOutcome.REPLAY
    )
    assert bank.calls == [("prepare", True)]


def test_a_yes_that_only_held_is_committed_before_anything_is_recorded(
    tmp_path: pathlib.Path,
) -> None:
    bank = RecordingBank(posts=False)  # a bank that does not know one_phase
    assert run(tmp_path, bank) == Outcome(
        TxnState.COMMITTED, TxnState.COMMITTED, BeginOutcome.REPLAY
    )
    assert bank.calls == [("prepare", True), ("commit", False)]
    assert bank.state_at_commit == TxnState.PREPARING  # no decision written before the bank's


def test_a_held_yes_whose_commit_lost_to_an_abort_is_recorded_aborted(
    tmp_path: pathlib.Path,
) -> None:
    # Another gateway's recovery asked the bank (an Abort) before this one's Commit came.
    bank = RecordingBank(posts=False, commit_refused=TRANSACTION_ABORTED)
    assert run(tmp_path, bank) == Outcome(
        TxnState.ABORTING,
        TxnState.ABORTED,
        BeginOutcome.STARTED,  # the key was released
    )


def test_switched_off_a_payment_within_one_bank_has_two_phases(tmp_path: pathlib.Path) -> None:
    bank = RecordingBank(posts=True)
    assert run(tmp_path, bank, one_phase=False) == Outcome(
        TxnState.COMMITTING, TxnState.COMMITTED, BeginOutcome.REPLAY
    )
    assert bank.calls == [("prepare", False), ("commit", False)]


@pytest.mark.parametrize("switched_on", [True, False])
def test_recovery_asks_the_bank_about_a_one_phase_payment(
    tmp_path: pathlib.Path, switched_on: bool
) -> None:
    # Whatever this gateway's own setting: the payment's record says how it was sent.
    bank = RecordingBank(posts=True, abort_refused=TRANSACTION_COMMITTED)
    assert run(tmp_path, bank, one_phase=switched_on, recover_flagged=True) == Outcome(
        None, TxnState.COMMITTED, BeginOutcome.REPLAY
    )
    assert bank.calls == [("abort", False)]


def test_recovery_presumes_abort_for_a_two_phase_payment_within_one_bank(
    tmp_path: pathlib.Path,
) -> None:
    # Sent in two phases (switched off, or by an older gateway): no bank commits without a
    # decision, so the abort is decided before it is sent, as for two banks.
    bank = RecordingBank(posts=True, abort_refused=TRANSACTION_COMMITTED)
    outcome = run(tmp_path, bank, recover_flagged=False)
    # Decided and the key released, though the (contrived) bank refuses the abort: the
    # decision came first, and the refusal is a protocol violation logged, never acted on.
    assert (outcome.stored, outcome.key) == (TxnState.ABORTING, BeginOutcome.STARTED)
    assert bank.calls[0] == ("abort", False)
