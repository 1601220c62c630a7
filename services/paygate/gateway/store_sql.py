"""The gateway's store, written once for SQLite and PostgreSQL.

Every GatewayStore method is written once, in SqlGatewayStore (with its parts for users,
store_accounts.py, and for operators, store_operators.py), as a body over a `Tx`: one
database transaction whose statements (statements.py) it awaits. SqliteGatewayStore
(store.py) and PostgresGatewayStore (store_postgres.py) only say how a body is run.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Sequence
from typing import TypeVar

from prometheus_client import Counter

from paygate.common.invariants import InvariantViolation, check
from paygate.common.sql import Database, OnDatabase, Statement, Values
from paygate.gateway import store_events, store_refunds
from paygate.gateway.models import (
    BeginOutcome,
    BeginResult,
    Event,
    Lease,
    OperationKey,
    Payment,
    Settled,
    TxnState,
)
from paygate.gateway.statements import PAYMENTS, GatewaySql
from paygate.gateway.store_accounts import SqlAccountStore
from paygate.gateway.store_operators import SqlOperatorStore
from paygate.gateway.store_tx import BEGIN_ATTEMPTS, Body, Tx, frozen_parties, key_owner

T = TypeVar("T")


class SqlGatewayStore(SqlAccountStore, SqlOperatorStore, OnDatabase):
    """GatewayStore, each method one transaction; a subclass runs the bodies (`_write`,
    `_read`) on its database."""

    def __init__(self, db: Database, sql: GatewaySql) -> None:
        OnDatabase.__init__(self, db)
        self._sql = sql
        # paygate_events_written_total{type}, counted once their transaction committed.
        self.events_written: Counter | None = None

    def _counted(self, result: T, written: list[str]) -> T:
        if self.events_written is not None:
            for kind in written:
                self.events_written.labels(kind).inc()
        return result

    def _write(self, body: Body[T]) -> Awaitable[T]:
        """Run the body in a transaction (the database's own awaitable: no coroutine of
        ours in between, on the hot path)."""
        raise NotImplementedError

    def _read(self, body: Body[T]) -> Awaitable[T]:
        """A body that only reads (by default, a transaction like any other)."""
        return self._write(body)

    # Payments and their idempotency keys -------------------------------------------

    async def begin_payment(
        self, key: str, request_hash: str, payment: Payment, lease: Lease | None = None
    ) -> BeginResult:
        """Record the key and the new payment together, or say why the key is taken.

        With a lease, the payment is its owner's to drive until the lease expires; without
        one, any gateway's recovery may claim it at once.
        """
        sql = self._sql
        values = PAYMENTS.values(payment)
        values.update(
            lease_owner=lease.owner if lease else None,
            lease_expires_at_s=lease.expires_at_s if lease else None,
            key=key,
            request_hash=request_hash,
            now_s=time.time(),
        )

        async def begin(tx: Tx) -> BeginResult:
            frozen = await frozen_parties(tx, sql.frozen_parties, payment)
            if frozen:
                return BeginResult(BeginOutcome.FROZEN, frozen=frozen)
            for _ in range(BEGIN_ATTEMPTS):
                if await tx.run(sql.claim_key, values) == 1:
                    await _insert_payment(tx, sql, payment, values)
                    return BeginResult(BeginOutcome.STARTED, payment.payment_id)
                taken = await key_owner(tx, sql.key, values)
                if taken is not None:
                    return taken
            return BeginResult(BeginOutcome.IN_USE)

        return await self._write(begin)

    async def frozen_parties(self, payer_user_id: str, payee_user_id: str) -> list[str]:
        """The ids of those of a payment's two parties who are frozen."""
        values = {"payer_user_id": payer_user_id, "payee_user_id": payee_user_id}

        async def select(tx: Tx) -> list[str]:
            return [str(row[0]) for row in await tx.all(self._sql.frozen_parties, values)]

        return await self._read(select)

    async def begin_refund(
        self, key: str, request_hash: str, refund: Payment, lease: Lease
    ) -> tuple[BeginResult, Payment | None]:
        """Record a refund (amount 0: all that is left) and its key together, reserving its
        amount on the payment it refunds, or say why not (store_refunds.py)."""
        values = {
            **PAYMENTS.values(refund),
            "lease_owner": lease.owner,
            "lease_expires_at_s": lease.expires_at_s,
            "key": key,
            "request_hash": request_hash,
            "now_s": time.time(),
        }
        return await self._write(
            lambda tx: store_refunds.begin_refund(tx, self._sql, refund, values)
        )

    async def list_refunds(
        self, payment_id: str, *, after_seq: int, limit: int
    ) -> list[tuple[int, Payment]]:
        """The refunds of a payment after `after_seq`, oldest first."""
        values = {"payment_id": payment_id, "after_seq": after_seq, "limit": limit}

        async def select(tx: Tx) -> list[tuple[int, Payment]]:
            rows = await tx.all(self._sql.refunds_of, values)
            return [(int(row[0]), PAYMENTS.from_row(row[1:])) for row in rows]

        return await self._read(select)

    async def decide_commit(
        self, payment_id: str, *, finished: bool = False, refund: Payment | None = None
    ) -> TxnState:
        """Write the commit decision, unless a decision exists; return the decided state.

        `finished`: the only bank has already committed (a one-phase commit), so the
        transaction goes straight to COMMITTED. `refund`: the transaction is this refund,
        whose amount the payment it refunds counts as refunded from the same write.
        """
        state, finished_at_s = ("committed", time.time()) if finished else ("committing", None)
        sql = self._sql
        written: list[str] = []

        async def decide(tx: Tx) -> TxnState:
            values = {
                "state": state,
                "now_s": time.time(),
                "finished_at_s": finished_at_s,
                "payment_id": payment_id,
            }
            if await tx.run(sql.decide_commit, values):
                await tx.run(sql.complete_key, values)
                await store_events.record(tx, sql, payment_id, store_events.COMMIT, written)
                if refund is not None:
                    refunded = {"refund_of": refund.refund_of, "amount": refund.amount_minor}
                    check(
                        await tx.run(sql.add_refunded, refunded) == 1,
                        f"refund {payment_id}: payment {refund.refund_of} is not there",
                    )
            return await _txn_state(tx, sql, values)

        return self._counted(await self._write(decide), written)

    async def decide_abort(
        self, payment_id: str, reason: str, message: str, *, release_key: bool
    ) -> TxnState:
        """Write the abort decision, unless a decision exists; return the decided state.

        A final business refusal (insufficient funds) completes the key with that error, so a
        retry gets the same answer; a transient failure releases the key, so a retry runs anew.
        """
        sql = self._sql
        written: list[str] = []

        async def decide(tx: Tx) -> TxnState:
            values = {
                "reason": reason,
                "message": message,
                "now_s": time.time(),
                "payment_id": payment_id,
            }
            if await tx.run(sql.decide_abort, values):
                await tx.run(sql.release_key if release_key else sql.refuse_key, values)
                await store_events.record(tx, sql, payment_id, store_events.ABORT, written)
            return await _txn_state(tx, sql, values)

        return self._counted(await self._write(decide), written)

    async def authorize(self, payment_id: str) -> TxnState:
        """Record that every bank holds an authorization's money (from PREPARING, as a
        decision), completing its key; return the state recorded."""
        sql = self._sql
        values = {"now_s": time.time(), "payment_id": payment_id}
        written: list[str] = []

        async def write(tx: Tx) -> TxnState:
            if await tx.run(sql.authorize, values):
                await tx.run(sql.complete_key, values)
                await store_events.record(tx, sql, payment_id, store_events.AUTHORIZE, written)
            return await _txn_state(tx, sql, values)

        return self._counted(await self._write(write), written)

    async def capture(
        self, payment_id: str, amount_minor: int, lease: Lease, key: OperationKey | None
    ) -> Settled:
        """Record the capture of `amount_minor` of an authorization, and its caller's key,
        in one transaction: only from AUTHORIZED (else not applied), and only if the key is
        new (else what the key holds)."""
        values = {"amount": amount_minor, "reason": ""}
        return await self._settle(
            self._sql.capture, store_events.CAPTURE, payment_id, lease, key, values
        )

    async def cancel(
        self, payment_id: str, reason: str, lease: Lease, key: OperationKey | None
    ) -> Settled:
        """Record the cancellation of an authorization (by its payee with `key`, or expired
        by recovery without one), as capture() does."""
        return await self._settle(
            self._sql.cancel, store_events.CANCEL, payment_id, lease, key, {"reason": reason}
        )

    async def _settle(
        self,
        statement: Statement,
        change: str,
        payment_id: str,
        lease: Lease,
        key: OperationKey | None,
        extra: Values,
    ) -> Settled:
        sql = self._sql
        values = {
            **extra,
            "payment_id": payment_id,
            "now_s": time.time(),
            "owner": lease.owner,
            "expires_at_s": lease.expires_at_s,
        }
        if key is not None:
            values.update(user_id=key.user_id, key=key.key, request_hash=key.request_hash)
        written: list[str] = []

        async def write(tx: Tx) -> Settled:
            if key is not None and (taken := await key_owner(tx, sql.operation_key, values)):
                return Settled(await _txn_state(tx, sql, values), False, taken)
            applied = bool(await tx.run(statement, values))
            if applied and key is not None:
                await tx.run(sql.insert_completed_key, values)
            if applied:
                await store_events.record(tx, sql, payment_id, change, written)
            return Settled(await _txn_state(tx, sql, values), applied)

        return self._counted(await self._write(write), written)

    async def claim_expired(
        self, owner: str, *, now_s: float, lease_s: float, limit: int
    ) -> list[Payment]:
        """Lease to `owner` the authorizations past their deadline, free or its own."""
        values = {
            "owner": owner,
            "expires_at_s": now_s + lease_s,
            "now_s": now_s,
            "now_us": int(now_s * 1e6),
            "limit": limit,
        }

        async def claim(tx: Tx) -> list[Payment]:
            rows = await tx.all(self._sql.claim_expired, values)
            return [PAYMENTS.from_row(row[1:]) for row in sorted(rows, key=lambda row: row[0])]

        return await self._write(claim)

    async def count_expired(self, *, now_s: float) -> int:
        """How many authorizations are past their deadline and not yet cancelled."""

        async def count(tx: Tx) -> int:
            row = await tx.one(self._sql.count_expired, {"now_us": int(now_s * 1e6)})
            return int(row[0]) if row else 0

        return await self._read(count)

    async def finish(self, payment_id: str, state: TxnState) -> None:
        await self.finish_many([(payment_id, state)])

    async def finish_many(self, finished: Sequence[tuple[str, TxnState]]) -> None:
        """finish() for several transactions, in one database transaction."""
        now_s = time.time()
        rows = [
            {
                "state": str(state),
                "finished_at_s": now_s,
                "payment_id": payment_id,
                "decided": str(decided_before(state)),
            }
            for payment_id, state in finished
        ]
        await self._write(lambda tx: tx.many(self._sql.finish, rows))

    async def get_payment(self, payment_id: str) -> Payment | None:
        async def select(tx: Tx) -> Payment | None:
            row = await tx.one(self._sql.payment, {"payment_id": payment_id})
            return PAYMENTS.from_row(row) if row else None

        return await self._read(select)

    async def list_payments(
        self, user_id: str, *, before_seq: int | None, limit: int
    ) -> list[tuple[int, Payment]]:
        values = {
            "user_id": user_id,
            "before_seq": before_seq if before_seq is not None else 2**62,
            "limit": limit,
        }

        async def select(tx: Tx) -> list[tuple[int, Payment]]:
            rows = await tx.all(self._sql.payments_of, values)
            return [(int(row[0]), PAYMENTS.from_row(row[1:])) for row in rows]

        return await self._read(select)

    async def count_unfinished(self, *, created_before_us: int) -> int:
        """How many payments created before `created_before_us` have no final state yet."""

        async def count(tx: Tx) -> int:
            values = {"created_before_us": created_before_us}
            row = await tx.one(self._sql.count_unfinished, values)
            return int(row[0]) if row else 0

        return await self._read(count)

    async def claim_unfinished(
        self, owner: str, *, now_s: float, lease_s: float, limit: int
    ) -> list[Payment]:
        """Lease to `owner` the unfinished payments that are free or already its own, those
        leased longest ago first (GatewaySql.claim).

        Free: no lease, or one that expired by `now_s`. Two claimers take disjoint rows:
        SQLite serializes writers, and PostgreSQL skips the rows another claimer locks.
        """
        values = {"owner": owner, "expires_at_s": now_s + lease_s, "now_s": now_s, "limit": limit}

        async def claim(tx: Tx) -> list[Payment]:
            rows = await tx.all(self._sql.claim, values)
            return [PAYMENTS.from_row(row[1:]) for row in sorted(rows, key=lambda row: row[0])]

        return await self._write(claim)

    async def renew_lease(self, payment_id: str, lease: Lease) -> bool:
        """Extend the owner's lease of an unfinished payment; False when it is not theirs."""
        values = {
            "expires_at_s": lease.expires_at_s,
            "payment_id": payment_id,
            "owner": lease.owner,
        }

        async def renew(tx: Tx) -> bool:
            return await tx.run(self._sql.renew_lease, values) == 1

        return await self._write(renew)

    # Events ------------------------------------------------------------------------------

    async def list_events(self, user_id: str, *, after: int, limit: int) -> list[Event]:
        """The user's events after sequence `after`, oldest first."""
        return await self._read(
            lambda tx: store_events.events_of(tx, self._sql, user_id, after=after, limit=limit)
        )

    async def event_bounds(self, user_id: str) -> tuple[int, int | None]:
        """The user's last event sequence (0: none yet) and the oldest one still kept."""

        async def select(tx: Tx) -> tuple[int, int | None]:
            row = await tx.one(self._sql.event_bounds, {"user_id": user_id})
            if row is None:
                return 0, None
            return int(row[0]), None if row[1] is None else int(row[1])

        return await self._read(select)

    async def prune_events(self, *, older_than_us: int, limit: int) -> int:
        return await self._delete_some(self._sql.prune_events, older_than_us, limit)

    async def prune_idempotency_keys(self, *, older_than_s: float, limit: int) -> int:
        """Delete up to `limit` completed keys created before `older_than_s`; how many."""
        return await self._delete_some(self._sql.prune_idempotency_keys, older_than_s, limit)

    # Login throttle -----------------------------------------------------------------

    async def _delete_some(self, statement: Statement, before: float, limit: int) -> int:
        """Housekeeping's bounded delete, in one transaction; how many rows it deleted."""
        return await self._write(lambda tx: tx.run(statement, {"before": before, "limit": limit}))


async def _insert_payment(tx: Tx, sql: GatewaySql, payment: Payment, values: Values) -> None:
    seq = await tx.insert(sql.insert_payment, values)
    parties = payment.parties
    await tx.many(sql.insert_party, [{"user_id": user_id, "seq": seq} for user_id in parties])


async def _txn_state(tx: Tx, sql: GatewaySql, values: Values) -> TxnState:
    row = await tx.one(sql.txn_state, values)
    if row is None:
        raise InvariantViolation(f"payment {values['payment_id']} vanished inside a transaction")
    return TxnState(row[0])


def decided_before(final: TxnState) -> TxnState:
    """The decision a transaction had before it finished in `final`."""
    return TxnState.COMMITTING if final == TxnState.COMMITTED else TxnState.ABORTING
