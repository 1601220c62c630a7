"""The storage contract: the same tests against SQLite and PostgreSQL.

Every test gets `backend`, once per implementation. SQLite uses a file in tmp_path;
PostgreSQL uses a fresh schema on the server at PAYGATE_TEST_POSTGRES_URL (dropped at the
end of the module) and is skipped, with the reason, when that server is not reachable.
The ledger tests run ledger.py's rules through each store, several at once, the way the
bank's servicer does.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import pathlib
import re
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest
from paygate.bank import holds, ledger
from paygate.bank import store as sqlite_ledger
from paygate.bank import store_postgres as postgres_ledger
from paygate.bank.store import LedgerStore
from paygate.common.database_url import DatabaseLocation, PostgresUrl
from paygate.common.money import MAX_AMOUNT_MINOR
from paygate.common.postgres import drop_schema
from paygate.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from paygate.gateway import store as sqlite_gateway
from paygate.gateway import store_postgres as postgres_gateway
from paygate.gateway.main import prune_in_batches
from paygate.gateway.models import Payment, PaymentStatus, TxnState, User
from paygate.gateway.store import BeginOutcome, GatewayStore, Lease, SqliteGatewayStore
from paygate.gateway.store_postgres import PostgresGatewayStore
from pgtest import Schemas, require_postgres

S = TypeVar("S", GatewayStore, LedgerStore)
T = TypeVar("T")

# PostgreSQL's default deadlock_timeout: a deadlock is only broken after this long.
DEADLOCK_TIMEOUT_S = 1.0
CREATED = re.compile(r"(CREATE TABLE|CREATE INDEX|ADD COLUMN) (\w+)")


@dataclasses.dataclass
class Backend:
    name: str
    fresh: Callable[[str], DatabaseLocation]  # a new, empty database for a process name

    def gateway(self, location: DatabaseLocation) -> GatewayStore:
        if isinstance(location, PostgresUrl):
            return PostgresGatewayStore(location, schema=location.schema_or("gateway"))
        return SqliteGatewayStore(location)

    def ledger(self, location: DatabaseLocation) -> LedgerStore:
        if isinstance(location, PostgresUrl):
            return postgres_ledger.PostgresLedgerStore(location, schema=location.schema_or("b"))
        return sqlite_ledger.SqliteLedgerStore(location)


@pytest.fixture(scope="module")
def pg_schemas() -> Iterator[Schemas]:
    schemas = Schemas(require_postgres())
    try:
        yield schemas
    finally:
        schemas.close()


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> Backend:
    if request.param == "sqlite":
        return Backend("sqlite", lambda name: tmp_path / f"{name}-{uuid.uuid4().hex[:6]}.db")
    schemas: Schemas = request.getfixturevalue("pg_schemas")
    return Backend("postgres", schemas.url_for)


def run(store: S, body: Callable[[S], Awaitable[T]]) -> T:
    """Open the store in a new event loop, run body(store), close the store."""

    async def main() -> T:
        await store.open()
        try:
            return await body(store)
        finally:
            await store.close()

    return asyncio.run(main())


# Gateway ------------------------------------------------------------------------------------


def user(name: str, account: str = "") -> User:
    return User(
        user_id=f"id-{name}",
        username=name,
        bank_id="bank-a",
        account_number=account or f"acc-{name}",
        currency="USD",
    )


def payment(payer: User, payee: User, amount_minor: int = 100) -> Payment:
    return Payment(
        payment_id=uuid.uuid4().hex,
        status=PaymentStatus.PENDING,
        txn_state=TxnState.PREPARING,
        payer_user_id=payer.user_id,
        payer_username=payer.username,
        payer_bank_id=payer.bank_id,
        payer_account=payer.account_number,
        payee_user_id=payee.user_id,
        payee_username=payee.username,
        payee_bank_id=payee.bank_id,
        payee_account=payee.account_number,
        amount_minor=amount_minor,
        currency="USD",
        description="d",
        create_time_us=int(time.time() * 1e6),
    )


ALICE, BOB, CAROL = user("alice"), user("bob"), user("carol")


async def with_users(store: GatewayStore) -> None:
    for u in (ALICE, BOB, CAROL):
        await store.create_user(u, b"\x00hash\xff")


def test_usernames_and_linked_accounts_are_unique(backend: Backend) -> None:
    async def body(store: GatewayStore) -> None:
        await with_users(store)
        with pytest.raises(AlreadyExists, match="username 'alice' is taken"):
            await store.create_user(user("alice", "other"), b"h")
        with pytest.raises(AlreadyExists, match="account acc-bob at bank-a is already linked"):
            await store.create_user(user("bobby", "acc-bob"), b"h")
        assert await store.user_by_username("alice") == (ALICE, b"\x00hash\xff")
        assert await store.user_by_username("bobby") is None

    run(backend.gateway(backend.fresh("gateway")), body)


def test_sessions_are_found_until_revoked(backend: Backend) -> None:
    async def body(store: GatewayStore) -> None:
        await with_users(store)
        await store.insert_session("t1", ALICE.user_id, 1234.5)
        found = await store.session("t1")
        assert found is not None and (found.user, found.expire_at_s, found.revoked) == (
            ALICE, 1234.5, False
        )
        await store.revoke_session("t1")
        found = await store.session("t1")
        assert found is not None and found.revoked
        assert await store.session("t2") is None

    run(backend.gateway(backend.fresh("gateway")), body)


def test_prune_sessions_deletes_only_sessions_expired_before_the_cutoff(backend: Backend) -> None:
    async def body(store: GatewayStore) -> None:
        await with_users(store)
        for token, expire_at_s in [("old-1", 10.0), ("old-2", 20.0), ("old-3", 30.0),
                                   ("live", 100.0)]:
            await store.insert_session(token, ALICE.user_id, expire_at_s)
        await store.revoke_session("live")
        assert await store.prune_sessions(older_than_s=25.0, limit=1) == 1
        assert await store.prune_sessions(older_than_s=25.0, limit=10) == 1
        assert await store.prune_sessions(older_than_s=25.0, limit=10) == 0
        assert [await store.session(t) is None for t in ("old-1", "old-2", "old-3", "live")] == [
            True, True, False, False
        ]

    run(backend.gateway(backend.fresh("gateway")), body)


def test_begin_payment_outcomes(backend: Backend) -> None:
    async def body(store: GatewayStore) -> None:
        await with_users(store)
        first = payment(ALICE, BOB)
        started = await store.begin_payment("k", "h1", first)
        assert (started.outcome, started.payment_id) == (BeginOutcome.STARTED, first.payment_id)
        assert await store.get_payment(first.payment_id) == first
        in_use = await store.begin_payment("k", "h1", payment(ALICE, BOB))
        assert (in_use.outcome, in_use.payment_id) == (BeginOutcome.IN_USE, first.payment_id)
        mismatch = await store.begin_payment("k", "h2", payment(ALICE, BOB))
        assert mismatch.outcome == BeginOutcome.MISMATCH
        assert await store.decide_commit(first.payment_id) == TxnState.COMMITTING
        replay = await store.begin_payment("k", "h1", payment(ALICE, BOB))
        assert (replay.outcome, replay.payment_id) == (BeginOutcome.REPLAY, first.payment_id)
        # Keys belong to the payer: another user's "k" is a new payment.
        other = await store.begin_payment("k", "h1", payment(CAROL, BOB))
        assert other.outcome == BeginOutcome.STARTED

    run(backend.gateway(backend.fresh("gateway")), body)


def test_a_final_refusal_is_kept_by_the_key_and_a_transient_one_releases_it(
    backend: Backend,
) -> None:
    async def body(store: GatewayStore) -> None:
        await with_users(store)
        refused = payment(ALICE, BOB)
        await store.begin_payment("final", "h", refused)
        state = await store.decide_abort(
            refused.payment_id, "INSUFFICIENT_FUNDS", "not enough", release_key=False
        )
        assert state == TxnState.ABORTING
        replay = await store.begin_payment("final", "h", payment(ALICE, BOB))
        assert (replay.outcome, replay.payment_id, replay.error_reason, replay.error_message) == (
            BeginOutcome.REPLAY, refused.payment_id, "INSUFFICIENT_FUNDS", "not enough"
        )
        failed = await store.get_payment(refused.payment_id)
        assert failed is not None
        assert (failed.status, failed.failure_reason) == (
            PaymentStatus.FAILED, "INSUFFICIENT_FUNDS"
        )

        timed_out = payment(ALICE, BOB)
        await store.begin_payment("transient", "h", timed_out)
        await store.decide_abort(timed_out.payment_id, "BANK_TIMEOUT", "slow", release_key=True)
        retry = payment(ALICE, BOB)
        again = await store.begin_payment("transient", "h", retry)
        assert (again.outcome, again.payment_id) == (BeginOutcome.STARTED, retry.payment_id)

    run(backend.gateway(backend.fresh("gateway")), body)


def test_commit_and_abort_racing_leave_exactly_one_decision(backend: Backend) -> None:
    async def body(store: GatewayStore) -> None:
        await with_users(store)
        payments = [payment(ALICE, BOB) for _ in range(20)]
        for i, p in enumerate(payments):
            await store.begin_payment(f"race-{i}", "h", p)
        for p in payments:
            commit, abort = await asyncio.gather(
                store.decide_commit(p.payment_id),
                store.decide_abort(p.payment_id, "PRESUMED_ABORT", "m", release_key=True),
            )
            stored = await store.get_payment(p.payment_id)
            assert stored is not None
            assert commit == abort == stored.txn_state, "both callers see the one decision"
            expected = {
                TxnState.COMMITTING: PaymentStatus.SUCCEEDED,
                TxnState.ABORTING: PaymentStatus.FAILED,
            }
            assert stored.status == expected[stored.txn_state]
        # A decision, once written, is what every later decide_* returns.
        decided = payments[0].payment_id
        before = await store.get_payment(decided)
        assert before is not None
        assert await store.decide_commit(decided) == before.txn_state
        assert await store.decide_abort(decided, "X", "m", release_key=True) == before.txn_state

    run(backend.gateway(backend.fresh("gateway")), body)


def test_concurrent_begins_with_one_key_start_one_payment(backend: Backend) -> None:
    async def body(store: GatewayStore) -> None:
        await with_users(store)
        results = await asyncio.gather(
            *(store.begin_payment("same", "h", payment(ALICE, BOB)) for _ in range(20))
        )
        outcomes = sorted(r.outcome.value for r in results)
        assert outcomes == ["in_use"] * 19 + ["started"]
        assert len({r.payment_id for r in results}) == 1
        assert len(await store.list_payments(ALICE.user_id, before_seq=None, limit=50)) == 1

    run(backend.gateway(backend.fresh("gateway")), body)


def test_two_stores_on_one_database_share_keys_and_decisions(backend: Backend) -> None:
    location = backend.fresh("gateway")

    async def body(first: GatewayStore) -> None:
        await with_users(first)
        second = backend.gateway(location)
        await second.open()
        try:
            p = payment(ALICE, BOB)
            await first.begin_payment("k", "h", p)
            assert (await second.begin_payment("k", "h", payment(ALICE, BOB))).outcome == (
                BeginOutcome.IN_USE
            )
            assert await second.decide_abort(p.payment_id, "X", "m", release_key=True) == (
                TxnState.ABORTING
            )
            assert await first.decide_commit(p.payment_id) == TxnState.ABORTING
        finally:
            await second.close()

    run(backend.gateway(location), body)


def test_finish_moves_only_a_decided_payment_to_its_end(backend: Backend) -> None:
    async def body(store: GatewayStore) -> None:
        await with_users(store)
        undecided, committing = payment(ALICE, BOB), payment(ALICE, BOB)
        await store.begin_payment("a", "h", undecided)
        await store.begin_payment("b", "h", committing)
        await store.decide_commit(committing.payment_id)
        await store.finish(undecided.payment_id, TxnState.ABORTED)
        await store.finish(committing.payment_id, TxnState.ABORTED)  # not its decision
        states = [await store.get_payment(p.payment_id) for p in (undecided, committing)]
        assert [s.txn_state for s in states if s] == [TxnState.PREPARING, TxnState.COMMITTING]
        await store.finish(committing.payment_id, TxnState.COMMITTED)
        done = await store.get_payment(committing.payment_id)
        assert done is not None and done.txn_state == TxnState.COMMITTED

    run(backend.gateway(backend.fresh("gateway")), body)


def test_a_one_phase_commit_is_recorded_finished_in_one_write(backend: Backend) -> None:
    async def body(store: GatewayStore) -> None:
        await with_users(store)
        posted = dataclasses.replace(payment(ALICE, BOB), one_phase=True)
        asked = dataclasses.replace(payment(ALICE, BOB), one_phase=True)
        aborted = payment(ALICE, BOB)
        await store.begin_payment("posted", "h", posted)
        await store.begin_payment("asked", "h", asked)
        await store.begin_payment("aborted", "h", aborted)
        await store.decide_abort(aborted.payment_id, "X", "m", release_key=True)
        assert await store.decide_commit(posted.payment_id, finished=True) == TxnState.COMMITTED
        # Only from PREPARING, as every decision.
        assert await store.decide_commit(aborted.payment_id, finished=True) == TxnState.ABORTING
        done = await store.get_payment(posted.payment_id)
        assert done is not None
        assert (done.status, done.txn_state) == (PaymentStatus.SUCCEEDED, TxnState.COMMITTED)
        replay = await store.begin_payment("posted", "h", payment(ALICE, BOB))
        assert (replay.outcome, replay.payment_id) == (BeginOutcome.REPLAY, posted.payment_id)
        assert done.one_phase and await store.get_payment(asked.payment_id) == asked
        # Finished: nothing for recovery to claim; the unfinished come with their flag.
        claimed = await store.claim_unfinished("g", now_s=10**10, lease_s=5, limit=10)
        flags = {p.payment_id: p.one_phase for p in claimed}
        assert posted.payment_id not in flags
        assert (flags[asked.payment_id], flags[aborted.payment_id]) == (True, False)

    run(backend.gateway(backend.fresh("gateway")), body)


def test_finish_many_ends_each_decided_payment_in_one_call(backend: Backend) -> None:
    async def body(store: GatewayStore) -> None:
        await with_users(store)
        ps = [payment(ALICE, BOB) for _ in range(4)]
        for i, p in enumerate(ps):
            await store.begin_payment(f"k{i}", "h", p)
        await store.decide_commit(ps[0].payment_id)
        await store.decide_abort(ps[1].payment_id, "INSUFFICIENT_FUNDS", "no", release_key=False)
        await store.decide_commit(ps[2].payment_id)
        # ps[2] is told the wrong end and ps[3] has no decision: both stay as they are.
        await store.finish_many([
            (ps[0].payment_id, TxnState.COMMITTED), (ps[1].payment_id, TxnState.ABORTED),
            (ps[2].payment_id, TxnState.ABORTED), (ps[3].payment_id, TxnState.COMMITTED),
        ])
        states = [await store.get_payment(p.payment_id) for p in ps]
        assert [s.txn_state for s in states if s] == [
            TxnState.COMMITTED, TxnState.ABORTED, TxnState.COMMITTING, TxnState.PREPARING,
        ]

    run(backend.gateway(backend.fresh("gateway")), body)


def test_list_payments_pages_newest_first_for_both_parties(backend: Backend) -> None:
    async def body(store: GatewayStore) -> None:
        await with_users(store)
        ids = []
        for i in range(5):
            p = payment(ALICE, BOB, 100 + i)
            await store.begin_payment(f"k{i}", "h", p)
            ids.append(p.payment_id)
        for party in (ALICE, BOB):
            seen, before = [], None
            while page := await store.list_payments(party.user_id, before_seq=before, limit=2):
                assert len(page) <= 2
                seen += [p.payment_id for _, p in page]
                before = page[-1][0]
            assert seen == list(reversed(ids))
        assert await store.list_payments(CAROL.user_id, before_seq=None, limit=10) == []

    run(backend.gateway(backend.fresh("gateway")), body)


def test_count_unfinished_counts_only_unfinished_payments_created_before_the_cutoff(
    backend: Backend,
) -> None:
    async def body(store: GatewayStore) -> None:
        await with_users(store)
        created_us = []
        for n, final in enumerate([False, False, True]):
            p = dataclasses.replace(payment(ALICE, BOB), create_time_us=1_000_000 * (n + 1))
            await store.begin_payment(f"count-{n}", "h", p)
            if final:
                await store.decide_commit(p.payment_id)
                await store.finish(p.payment_id, TxnState.COMMITTED)
            created_us.append(p.create_time_us)
        assert await store.count_unfinished(created_before_us=created_us[0]) == 0
        assert await store.count_unfinished(created_before_us=created_us[1]) == 1
        assert await store.count_unfinished(created_before_us=10_000_000) == 2  # not the third

    run(backend.gateway(backend.fresh("gateway")), body)


def test_claim_unfinished_oldest_first_up_to_the_limit(backend: Backend) -> None:
    async def body(store: GatewayStore) -> None:
        await with_users(store)
        ps = [payment(ALICE, BOB) for _ in range(4)]
        for i, p in enumerate(ps):
            await store.begin_payment(f"k{i}", "h", p)
        await store.decide_commit(ps[1].payment_id)
        await store.decide_abort(ps[2].payment_id, "X", "m", release_key=False)
        await store.decide_commit(ps[3].payment_id)
        await store.finish(ps[3].payment_id, TxnState.COMMITTED)
        now_s = time.time()
        unfinished = await store.claim_unfinished("g1", now_s=now_s, lease_s=10, limit=10)
        assert [(p.payment_id, p.txn_state) for p in unfinished] == [
            (ps[0].payment_id, TxnState.PREPARING),
            (ps[1].payment_id, TxnState.COMMITTING),
            (ps[2].payment_id, TxnState.ABORTING),
        ]
        # Its own leases are claimed again (renewed); at most `limit` of them.
        again = await store.claim_unfinished("g1", now_s=now_s, lease_s=10, limit=2)
        assert [p.payment_id for p in again] == [ps[0].payment_id, ps[1].payment_id]

    run(backend.gateway(backend.fresh("gateway")), body)


def test_claims_go_round_the_unfinished_payments_not_back_to_the_oldest(
    backend: Backend,
) -> None:
    # Payments a bank cannot take (it is down) stay unfinished, and recovery claims them again
    # every pass: the ones it tried last must come last, or a few hundred of them would fill
    # every claim and the payments behind them would wait for the dead bank.
    async def body(store: GatewayStore) -> None:
        await with_users(store)
        ps = [payment(ALICE, BOB) for _ in range(3)]
        for i, p in enumerate(ps):
            await store.begin_payment(f"k{i}", "h", p)
            await store.decide_commit(p.payment_id)
        now_s = time.time()
        await store.claim_unfinished("g1", now_s=now_s, lease_s=10, limit=10)
        turns = []
        for turn in range(1, 5):
            [claimed] = await store.claim_unfinished(
                "g1", now_s=now_s + turn, lease_s=10, limit=1
            )
            turns.append(claimed.payment_id)
        assert turns == [p.payment_id for p in (*ps, ps[0])]

    run(backend.gateway(backend.fresh("gateway")), body)


def test_a_live_lease_is_kept_and_an_expired_one_taken_over(backend: Backend) -> None:
    async def body(store: GatewayStore) -> None:
        await with_users(store)
        now_s = time.time()
        p = payment(ALICE, BOB)
        await store.begin_payment("k", "h", p, Lease("g1", now_s + 10))
        assert await store.claim_unfinished("g2", now_s=now_s, lease_s=10, limit=10) == []
        assert await store.renew_lease(p.payment_id, Lease("g1", now_s + 20))
        later_s = now_s + 15  # g1's first lease would have expired, its renewal has not
        assert await store.claim_unfinished("g2", now_s=later_s, lease_s=10, limit=10) == []
        expired_s = now_s + 21
        taken = await store.claim_unfinished("g2", now_s=expired_s, lease_s=10, limit=10)
        assert [t.payment_id for t in taken] == [p.payment_id]
        # The old owner learns that it lost the transaction; the new one keeps it.
        assert not await store.renew_lease(p.payment_id, Lease("g1", expired_s + 10))
        assert await store.renew_lease(p.payment_id, Lease("g2", expired_s + 10))
        assert await store.claim_unfinished("g1", now_s=expired_s, lease_s=10, limit=10) == []
        # A finished transaction is nobody's to renew or claim.
        await store.decide_abort(p.payment_id, "X", "m", release_key=True)
        await store.finish(p.payment_id, TxnState.ABORTED)
        assert not await store.renew_lease(p.payment_id, Lease("g2", expired_s + 10))
        far_s = expired_s + 100
        assert await store.claim_unfinished("g3", now_s=far_s, lease_s=10, limit=10) == []

    run(backend.gateway(backend.fresh("gateway")), body)


def test_two_owners_claiming_at_once_never_take_the_same_row(backend: Backend) -> None:
    location = backend.fresh("gateway")
    count = 40

    async def body(first: GatewayStore) -> None:
        await with_users(first)
        ps = [payment(ALICE, BOB) for _ in range(count)]
        for i, p in enumerate(ps):
            await first.begin_payment(f"k{i}", "h", p)  # no lease: free for anyone
        second = backend.gateway(location)
        await second.open()
        try:

            async def claim_all(store: GatewayStore, owner: str) -> list[str]:
                """Claim and finish batches, the way recovery does, until none is left."""
                mine: list[str] = []
                for _ in range(count):
                    batch = await store.claim_unfinished(
                        owner, now_s=time.time(), lease_s=60, limit=3
                    )
                    if not batch:
                        return mine
                    for b in batch:
                        mine.append(b.payment_id)
                        await store.decide_abort(b.payment_id, "X", "m", release_key=True)
                        await store.finish(b.payment_id, TxnState.ABORTED)
                return mine

            got = await asyncio.gather(
                claim_all(first, "g1"), claim_all(second, "g2"),
                claim_all(first, "g1b"), claim_all(second, "g2b"),
            )
        finally:
            await second.close()
        claimed = [payment_id for owner in got for payment_id in owner]
        assert sorted(claimed) == sorted(p.payment_id for p in ps), "each row claimed once"
        assert sum(1 for owner in got if owner) >= 2, "the claims were not concurrent"

    run(backend.gateway(location), body)


def test_prune_removes_only_old_completed_keys(backend: Backend) -> None:
    async def body(store: GatewayStore) -> None:
        await with_users(store)
        done, running = payment(ALICE, BOB), payment(ALICE, BOB)
        await store.begin_payment("done", "h", done)
        await store.begin_payment("running", "h", running)
        await store.decide_commit(done.payment_id)
        assert await store.prune_idempotency_keys(older_than_s=time.time() - 3600, limit=10) == 0
        assert await store.prune_idempotency_keys(older_than_s=time.time() + 1, limit=10) == 1
        again = await store.begin_payment("done", "h", payment(ALICE, BOB))
        assert again.outcome == BeginOutcome.STARTED, "a pruned key is free again"
        still = await store.begin_payment("running", "h", payment(ALICE, BOB))
        assert still.outcome == BeginOutcome.IN_USE, "a key in flight is never pruned"

    run(backend.gateway(backend.fresh("gateway")), body)


def test_prune_deletes_at_most_its_limit_per_call(backend: Backend) -> None:
    """Housekeeping deletes in bounded transactions (paygate.gateway.main.prune_in_batches)."""

    async def body(store: GatewayStore) -> None:
        await with_users(store)
        for i in range(5):
            done = payment(ALICE, BOB)
            await store.begin_payment(f"done-{i}", "h", done)
            await store.decide_commit(done.payment_id)
        cutoff = time.time() + 1
        deleted = [await store.prune_idempotency_keys(older_than_s=cutoff, limit=2) for _ in "1234"]
        assert deleted == [2, 2, 1, 0]
        await store.record_login_failure(["user:a", "address:x", "user:b"], 10.0)
        assert await store.prune_login_failures(older_than_s=20.0, limit=2) == 2
        assert await store.prune_login_failures(older_than_s=20.0, limit=2) == 1
        assert await prune_in_batches(store.prune_login_failures, 20.0) == 0
        for i in range(5):
            again = await store.begin_payment(f"done-{i}", "h", payment(ALICE, BOB))
            assert again.outcome == BeginOutcome.STARTED, "every pruned key is free again"

    run(backend.gateway(backend.fresh("gateway")), body)


def test_login_failures_per_key_cleared_and_pruned(backend: Backend) -> None:
    async def body(store: GatewayStore) -> None:
        await store.record_login_failure(["user:a", "address:x"], 10.0)
        await store.record_login_failure(["user:a", "address:x"], 20.0)
        await store.record_login_failure(["user:b", "address:x"], 30.0)
        assert await store.login_failures(["user:a", "address:x", "user:c"], since_s=15.0) == [
            [20.0], [20.0, 30.0], []
        ]
        await store.clear_login_failures("user:a")
        assert await store.login_failures(["user:a"], since_s=0.0) == [[]]
        assert await store.prune_login_failures(older_than_s=25.0, limit=10) == 2
        assert await store.login_failures(["address:x"], since_s=0.0) == [[30.0]]

    run(backend.gateway(backend.fresh("gateway")), body)


def test_a_removed_database_is_unhealthy(backend: Backend) -> None:
    location = backend.fresh("gateway")

    async def body(store: GatewayStore) -> None:
        assert await store.healthy()
        if isinstance(location, PostgresUrl):
            drop_schema(location, location.schema_or(""))
        else:
            location.unlink()
        assert not await store.healthy()

    run(backend.gateway(location), body)


# Ledger -------------------------------------------------------------------------------------


def debit(account: str, amount_minor: int) -> ledger.Leg:
    return ledger.Leg(
        account_number=account, direction=ledger.DEBIT, amount_minor=amount_minor, currency="USD"
    )


def credit(account: str, amount_minor: int) -> ledger.Leg:
    return ledger.Leg(
        account_number=account, direction=ledger.CREDIT, amount_minor=amount_minor, currency="USD"
    )


async def open_accounts(store: LedgerStore, *balances: int) -> list[str]:
    return [
        (await store.transaction(lambda tx, b=b: ledger.open_account(tx, "USD", b))).account_number
        for b in balances
    ]


async def account(store: LedgerStore, number: str) -> tuple[int, int, int]:
    row = await store.read(lambda tx: ledger.get_account(tx, number))
    return row.balance, row.pending_debit, row.pending_credit


def test_concurrent_prepares_never_overspend(backend: Backend) -> None:
    async def body(store: LedgerStore) -> None:
        [payer] = await open_accounts(store, 100_00)
        legs = [debit(payer, 15_00)]
        prepares = [lambda tx, t=f"t{i}": ledger.prepare(tx, t, legs) for i in range(20)]
        votes = await asyncio.gather(*(store.transaction(fn) for fn in prepares))
        assert sum(v.yes for v in votes) == 6  # 6 x 15.00 fits in 100.00, a seventh would not
        assert {v.reason for v in votes if not v.yes} == {"INSUFFICIENT_FUNDS"}
        assert await account(store, payer) == (100_00, 90_00, 0)
        held = [f"t{i}" for i, v in enumerate(votes) if v.yes]
        await asyncio.gather(
            *(store.transaction(lambda tx, t=t: ledger.commit(tx, t)) for t in held[:3]),
            *(store.transaction(lambda tx, t=t: ledger.abort(tx, t)) for t in held[3:]),
        )
        assert await account(store, payer) == (55_00, 0, 0)
        totals, journal = await store.read(ledger.audit)
        assert (totals.balance, journal.total, totals.pending_debit) == (55_00, 55_00, 0)
        assert totals.prepared_transactions == 0

    run(backend.ledger(backend.fresh("bank")), body)


def test_opposite_payments_between_two_accounts_do_not_deadlock(backend: Backend) -> None:
    async def body(store: LedgerStore) -> None:
        a, b = await open_accounts(store, 1000_00, 1000_00)
        plans = [
            [debit(a, 1_00), credit(b, 1_00)] if i % 2 else [debit(b, 1_00), credit(a, 1_00)]
            for i in range(20)
        ]
        start = time.monotonic()
        votes = await asyncio.gather(
            *(
                store.transaction(lambda tx, i=i, legs=legs: ledger.prepare(tx, f"x{i}", legs))
                for i, legs in enumerate(plans)
            )
        )
        await asyncio.gather(
            *(store.transaction(lambda tx, i=i: ledger.commit(tx, f"x{i}")) for i in range(20))
        )
        elapsed_s = time.monotonic() - start
        assert all(v.yes for v in votes)
        # A deadlock is only detected after deadlock_timeout; none must have happened.
        assert elapsed_s < DEADLOCK_TIMEOUT_S, f"took {elapsed_s:.2f} s: a lock wait cycle?"
        assert await account(store, a) == await account(store, b) == (1000_00, 0, 0)
        await store.read(ledger.audit)

    run(backend.ledger(backend.fresh("bank")), body)


def test_commit_and_abort_racing_resolve_a_hold_once(backend: Backend) -> None:
    async def body(store: LedgerStore) -> None:
        payer, payee = await open_accounts(store, 50_00, 0)
        legs = [debit(payer, 1_00), credit(payee, 1_00)]
        for i in range(10):
            vote = await store.transaction(lambda tx, i=i: ledger.prepare(tx, f"r{i}", legs))
            assert vote.yes
            results = await asyncio.gather(
                store.transaction(lambda tx, i=i: ledger.commit(tx, f"r{i}")),
                store.transaction(lambda tx, i=i: ledger.abort(tx, f"r{i}")),
                return_exceptions=True,
            )
            assert [r for r in results if r is True] == [True], results
            assert all(isinstance(r, FailedPrecondition) for r in results if r is not True)
        totals, _ = await store.read(ledger.audit)
        assert totals.balance == 50_00 and totals.pending_debit == totals.pending_credit == 0

    run(backend.ledger(backend.fresh("bank")), body)


def test_two_legs_at_one_bank_must_balance(backend: Backend) -> None:
    async def body(store: LedgerStore) -> None:
        a, b = await open_accounts(store, 10_00, 10_00)
        unbalanced = [
            [credit(a, 5_00), credit(b, 5_00)],  # money from nothing
            [debit(a, 5_00), debit(b, 5_00)],  # money into nothing
            [debit(a, 5_00), credit(b, 4_00)],
            [debit(a, 5_00), dataclasses.replace(credit(b, 5_00), currency="EUR")],
            [debit(a, 5_00), credit(a, 5_00)],
        ]
        for i, legs in enumerate(unbalanced):
            with pytest.raises(InvalidArgument, match="one debit and one credit"):
                await store.transaction(
                    lambda tx, i=i, legs=legs: ledger.prepare(tx, f"u{i}", legs)
                )
        assert await account(store, a) == await account(store, b) == (10_00, 0, 0)
        assert await store.read(lambda tx: tx.get_transaction("u0")) is None
        # A single leg is half of a transfer whose other half is at another bank: fine.
        assert (await store.transaction(lambda tx: ledger.prepare(tx, "one", [credit(a, 1)]))).yes

    run(backend.ledger(backend.fresh("bank")), body)


def test_two_phase_steps_are_idempotent(backend: Backend) -> None:
    async def body(store: LedgerStore) -> None:
        payer, payee = await open_accounts(store, 10_00, 0)
        legs = [debit(payer, 4_00), credit(payee, 4_00)]

        def tx_(fn: Callable[[Any], T]) -> Awaitable[T]:
            return store.transaction(fn)

        assert (await tx_(lambda tx: ledger.prepare(tx, "p", legs))).yes
        assert (await tx_(lambda tx: ledger.prepare(tx, "p", legs))).yes
        assert await tx_(lambda tx: ledger.commit(tx, "p")) is True
        assert await tx_(lambda tx: ledger.commit(tx, "p")) is False
        with pytest.raises(FailedPrecondition):
            await tx_(lambda tx: ledger.abort(tx, "p"))
        assert await tx_(lambda tx: ledger.abort(tx, "early")) is True
        late = await tx_(lambda tx: ledger.prepare(tx, "early", legs))
        assert (late.yes, late.reason) == (False, "TRANSACTION_ABORTED")
        assert await account(store, payer) == (6_00, 0, 0)
        assert await account(store, payee) == (4_00, 0, 0)

    run(backend.ledger(backend.fresh("bank")), body)


def test_concurrent_deposits_and_openings_happen_once_each(backend: Backend) -> None:
    async def body(store: LedgerStore) -> None:
        [target] = await open_accounts(store, 0)
        deposits = await asyncio.gather(
            *(
                store.transaction(lambda tx: ledger.deposit(tx, target, 7_00, "USD", "ref-1"))
                for _ in range(10)
            )
        )
        assert sorted(replay for _, replay in deposits) == [False] + [True] * 9
        assert await account(store, target) == (7_00, 0, 0)
        opened = await asyncio.gather(
            *(store.transaction(lambda tx: ledger.open_account(tx, "USD", 1_00)) for _ in range(10))
        )
        assert len({a.account_number for a in opened}) == 10
        totals, journal = await store.read(ledger.audit)
        assert (totals.balance, journal.total) == (17_00, 17_00)

    run(backend.ledger(backend.fresh("bank")), body)


async def holds_in_pages(
    store: LedgerStore, number: str, page_size: int
) -> list[list[tuple[str, str, int]]]:
    """Every page of an account's open holds: (transaction id, direction, amount) each."""
    pages, token = [], ""
    while True:
        read = functools.partial(holds.list_holds, account_number=number, page_size=page_size,
                                 page_token=token)
        page = await store.read(lambda tx, read=read: read(tx))
        pages.append([(h.transaction_id, h.direction, h.amount_minor) for h in page.holds])
        token = page.next_page_token
        if not token:
            return pages


def test_an_accounts_open_holds_are_listed_oldest_first_page_by_page(backend: Backend) -> None:
    async def body(store: LedgerStore) -> None:
        payer, payee, other = await open_accounts(store, 100_00, 0, 100_00)
        # Ids in the reverse order of their Prepares: the list follows the time of each.
        ids = [f"pay_{n:024x}" for n in (5, 4, 3, 2, 1)]
        started_s = time.time()
        for amount, transaction_id in enumerate(ids, start=1):
            legs = [debit(payer, amount * 1_00), credit(payee, amount * 1_00)]
            vote = await store.transaction(
                lambda tx, t=transaction_id, legs=legs: ledger.prepare(tx, t, legs)
            )
            assert vote.yes
            await asyncio.sleep(0.002)  # SQLite keeps the time of a write in milliseconds
        refused = await store.transaction(
            lambda tx: ledger.prepare(tx, "too-much", [debit(payer, 1000_00)])
        )
        assert not refused.yes
        assert (await store.transaction(lambda tx: ledger.prepare(tx, "x", [debit(other, 1)]))).yes
        assert await store.transaction(lambda tx: ledger.commit(tx, ids[1])) is True
        assert await store.transaction(lambda tx: ledger.abort(tx, ids[3])) is True

        # Neither committed, aborted nor refused transactions hold anything; pages of two.
        assert await holds_in_pages(store, payer, 2) == [
            [(ids[0], "debit", 1_00), (ids[2], "debit", 3_00)],
            [(ids[4], "debit", 5_00)],
        ]
        assert await holds_in_pages(store, payee, 0) == [
            [(ids[0], "credit", 1_00), (ids[2], "credit", 3_00), (ids[4], "credit", 5_00)]
        ]
        assert await holds_in_pages(store, other, 1) == [[("x", "debit", 1)]]
        page = await store.read(lambda tx: holds.list_holds(tx, payee, 0, ""))
        assert [h.payment_id for h in page.holds] == [ids[0], ids[2], ids[4]]
        assert {h.currency for h in page.holds} == {"USD"}
        times_s = [h.created_at_us / 1e6 for h in page.holds]
        assert times_s == sorted(times_s) and started_s - 5 < times_s[0] < time.time() + 5
        other_page = await store.read(lambda tx: holds.list_holds(tx, other, 0, ""))
        assert [h.payment_id for h in other_page.holds] == [""]  # not named by the gateway

        # A token names its page's last transaction: resolved since, the next page follows.
        first = await store.read(lambda tx: holds.list_holds(tx, payer, 1, ""))
        assert await store.transaction(lambda tx: ledger.commit(tx, ids[0])) is True
        rest = await store.read(lambda tx: holds.list_holds(tx, payer, 0, first.next_page_token))
        assert [h.transaction_id for h in rest.holds] == [ids[2], ids[4]]
        assert await holds_in_pages(store, payer, 0) == [[(ids[2], "debit", 3_00),
                                                         (ids[4], "debit", 5_00)]]

    run(backend.ledger(backend.fresh("bank")), body)


@pytest.mark.parametrize(
    ("number", "page_size", "page_token", "error"),
    [
        ("OWN", -1, "", InvalidArgument),
        ("OWN", 0, "not-a-token", InvalidArgument),
        ("OWN", 0, holds.encode_page_token("never-prepared"), InvalidArgument),
        ("999999999", 0, "", NotFound),
        ("", 0, "", InvalidArgument),
    ],
)
def test_listing_holds_refuses_bad_input(
    backend: Backend, number: str, page_size: int, page_token: str, error: type[Exception]
) -> None:
    async def body(store: LedgerStore) -> None:
        [own] = await open_accounts(store, 0)
        account = own if number == "OWN" else number
        with pytest.raises(error):
            await store.read(lambda tx: holds.list_holds(tx, account, page_size, page_token))

    run(backend.ledger(backend.fresh("bank")), body)


def test_credits_pending_or_posted_stop_at_the_balance_limit(backend: Backend) -> None:
    limit = ledger.MAX_BALANCE_MINOR

    async def body(store: LedgerStore) -> None:
        with pytest.raises(InvalidArgument, match="0 to 1000000000000000 minor units"):
            await store.transaction(lambda tx: ledger.open_account(tx, "USD", MAX_AMOUNT_MINOR + 1))
        payer, payee = await open_accounts(store, 10_00, MAX_AMOUNT_MINOR)
        for i in range(limit // MAX_AMOUNT_MINOR - 2):
            await store.transaction(
                lambda tx, i=i: ledger.deposit(tx, payee, MAX_AMOUNT_MINOR, "USD", f"f{i}")
            )
        await store.transaction(
            lambda tx: ledger.deposit(tx, payee, MAX_AMOUNT_MINOR - 5_00, "USD", "last")
        )
        assert await account(store, payee) == (limit - 5_00, 0, 0)
        # A pending credit counts: 3.00 held for the payee leaves room for 2.00 more.
        held = await store.transaction(
            lambda tx: ledger.prepare(tx, "held", [debit(payer, 3_00), credit(payee, 3_00)])
        )
        assert held.yes
        refused = await store.transaction(
            lambda tx: ledger.prepare(tx, "over", [debit(payer, 2_01), credit(payee, 2_01)])
        )
        assert (refused.yes, refused.reason) == (False, "BALANCE_LIMIT_EXCEEDED")
        with pytest.raises(FailedPrecondition) as info:
            await store.transaction(lambda tx: ledger.deposit(tx, payee, 2_01, "USD", "over"))
        assert info.value.reason == "BALANCE_LIMIT_EXCEEDED"
        # Nothing of the refusals was written: the reference is still free, nothing is held.
        assert await account(store, payer) == (10_00, 3_00, 0)
        assert await account(store, payee) == (limit - 5_00, 0, 3_00)
        assert await store.read(lambda tx: tx.get_deposit("over")) is None
        await store.transaction(lambda tx: ledger.deposit(tx, payee, 2_00, "USD", "fits"))
        assert await store.transaction(lambda tx: ledger.commit(tx, "held")) is True
        assert await account(store, payee) == (limit, 0, 0)
        totals, journal = await store.read(ledger.audit)
        assert totals.balance == journal.total == limit + 7_00

    run(backend.ledger(backend.fresh("bank")), body)


def test_bank_wide_sums_are_exact_past_a_64_bit_integer(backend: Backend) -> None:
    # 93 accounts at the balance limit hold more than 2**63 - 1 together: the audit and the
    # metrics must still add them up exactly (SQLite's SUM would fail; a float would round).
    limit, count = ledger.MAX_BALANCE_MINOR, 93
    assert count * limit > 2**63 - 1

    async def body(store: LedgerStore) -> None:
        numbers = await open_accounts(store, *[0] * count)

        def fill(tx: Any) -> None:
            # Straight to the store, as the ledger would after 100 deposits to each account.
            for number in numbers:
                tx.add_to_account(number, balance=limit, pending_debit=0, pending_credit=0)
                tx.insert_entry(number, limit, "deposit", f"fill-{number}")

        await store.transaction(fill)
        legs = [debit(numbers[0], 5), credit(numbers[1], 5)]
        refused = await store.transaction(lambda tx: ledger.prepare(tx, "t", legs))
        assert (refused.yes, refused.reason) == (False, "BALANCE_LIMIT_EXCEEDED")
        assert (await store.transaction(lambda tx: ledger.prepare(tx, "u", legs[:1]))).yes
        totals, journal = await store.read(ledger.audit)
        assert totals.balance == journal.total == count * limit
        assert totals.pending_debit == totals.prepared_debit_holds == 5
        assert await store.read(lambda tx: tx.money_by_currency()) == {"USD": (count * limit, 5)}
        # An incremental pass from that mark adds the debit's negative entry exactly.
        assert await store.transaction(lambda tx: ledger.commit(tx, "u")) is True
        following = await store.read(lambda tx: tx.journal(journal))
        assert following.total == count * limit - 5
        totals, _ = await store.read(ledger.audit)
        assert totals.balance == count * limit - 5

    run(backend.ledger(backend.fresh("bank")), body)


def test_link_code_hashes_are_kept_and_replaced(backend: Backend) -> None:
    async def body(store: LedgerStore) -> list[str | None]:
        [number] = await open_accounts(store, 0)
        coded = await store.transaction(
            lambda tx: ledger.open_account(tx, "USD", 0, None, "h1")
        )
        before = await store.read(lambda tx: [
            tx.get_link_code_hash(number), tx.get_link_code_hash(coded.account_number),
            tx.get_link_code_hash("no-such-account"),
        ])
        await store.transaction(lambda tx: ledger.set_link_code(tx, number, "h2"))
        after = await store.read(lambda tx: tx.get_link_code_hash(number))
        return [*before, after]

    assert run(backend.ledger(backend.fresh("bank")), body) == [None, "h1", None, "h2"]


def test_money_is_summed_per_currency(backend: Backend) -> None:
    async def body(store: LedgerStore) -> None:
        payer, payee = await open_accounts(store, 30_00, 5_00)
        await store.transaction(lambda tx: ledger.open_account(tx, "EUR", 7_00))
        await store.transaction(lambda tx: ledger.open_account(tx, "JPY", 900))
        legs = [debit(payer, 12_00), credit(payee, 12_00)]
        assert (await store.transaction(lambda tx: ledger.prepare(tx, "h1", legs))).yes
        money = await store.read(lambda tx: tx.money_by_currency())
        assert money == {"USD": (35_00, 12_00), "EUR": (7_00, 0), "JPY": (900, 0)}

    run(backend.ledger(backend.fresh("bank")), body)


def test_the_audit_carries_the_journal_from_one_pass_to_the_next(backend: Backend) -> None:
    async def body(store: LedgerStore) -> None:
        payer, payee = await open_accounts(store, 30_00, 0)
        _, first = await store.read(ledger.audit)
        assert first.total == 30_00 and first.entry_id > 0
        legs = [debit(payer, 12_00), credit(payee, 12_00)]
        assert (await store.transaction(lambda tx: ledger.prepare(tx, "m1", legs))).yes
        assert await store.transaction(lambda tx: ledger.commit(tx, "m1")) is True
        # The next pass starts from the first one's mark and ends at the whole journal.
        _, second = await store.read(lambda tx: ledger.audit(tx, first))
        assert second.total == 30_00 and second.entry_id > first.entry_id
        _, whole = await store.read(ledger.audit)
        assert whole == second
        # Nothing posted since: the mark stays where it was.
        _, third = await store.read(lambda tx: ledger.audit(tx, second))
        assert third == second

    run(backend.ledger(backend.fresh("bank")), body)


# PostgreSQL only: SQLite has one writer, whose entries become visible in id order.
@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_an_entry_committed_after_a_later_one_is_audited(backend: Backend) -> None:
    """PostgreSQL hands out entry ids at insert, not at commit: an entry with a lower id
    can become visible after an audit saw a higher one. The next audit must count it."""

    async def body(store: LedgerStore) -> None:
        slow, fast = await open_accounts(store, 0, 0)
        inserted, release = threading.Event(), threading.Event()

        def deposit_and_wait(tx: Any) -> object:
            result = ledger.deposit(tx, slow, 5_00, "USD", "slow")
            inserted.set()  # its entry has an id now, and is not committed
            assert release.wait(10), "the test never released the slow deposit"
            return result

        slow_deposit = asyncio.ensure_future(store.transaction(deposit_and_wait))
        try:
            assert await asyncio.to_thread(inserted.wait, 10)
            await store.transaction(lambda tx: ledger.deposit(tx, fast, 7_00, "USD", "fast"))
            _, seen = await store.read(ledger.audit)  # sees the fast entry, not the slow one
            assert seen.total == 7_00
        finally:
            release.set()
            await slow_deposit
        totals, after = await store.read(lambda tx: ledger.audit(tx, seen))
        # The slow entry's id is below the mark, and it is counted.
        assert after.entry_id == seen.entry_id
        assert totals.balance == after.total == 12_00

    run(backend.ledger(backend.fresh("bank")), body)


def test_a_removed_ledger_database_is_unhealthy(backend: Backend) -> None:
    location = backend.fresh("bank")

    async def body(store: LedgerStore) -> None:
        assert await store.healthy()
        if isinstance(location, PostgresUrl):
            drop_schema(location, location.schema_or(""))
        else:
            location.unlink()
        assert not await store.healthy()

    run(backend.ledger(location), body)


# Both dialects --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sqlite", "postgres"),
    [
        (sqlite_gateway.MIGRATIONS, postgres_gateway.MIGRATIONS),
        (sqlite_ledger.MIGRATIONS, postgres_ledger.MIGRATIONS),
    ],
    ids=["gateway", "bank"],
)
def test_both_dialects_have_the_same_numbered_migrations(
    sqlite: list[str], postgres: list[str]
) -> None:
    assert len(sqlite) == len(postgres)
    for number, (lite, pg) in enumerate(zip(sqlite, postgres, strict=True), start=1):
        assert CREATED.findall(lite) == CREATED.findall(pg), f"step {number} differs"
        assert CREATED.findall(lite), f"step {number} creates or adds nothing"
