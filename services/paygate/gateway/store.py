"""The gateway's storage: users, sessions, payments with their 2PC state, idempotency keys.

GatewayStore is the narrow interface the domain modules use; every method is one
database transaction. SqliteGatewayStore implements it on one SQLite file.
"""

from __future__ import annotations

import dataclasses
import enum
import pathlib
import sqlite3
import time
from collections.abc import Sequence
from typing import Protocol

from paygate.common.sqlite import Database
from paygate.errors import AlreadyExists
from paygate.gateway.models import (
    UNFINISHED,
    UNFINISHED_SQL,
    Payment,
    PaymentStatus,
    TxnState,
    User,
)
from paygate.gateway.schema import SQLITE_MIGRATIONS as MIGRATIONS

_PAYMENT_COLUMNS = (
    "payment_id, status, txn_state, payer_user_id, payer_username, payer_bank_id, payer_account,"
    " payee_user_id, payee_username, payee_bank_id, payee_account, amount, currency, description,"
    " failure_reason, create_time_us, one_phase"
)
_USER_COLUMNS = "user_id, username, bank_id, account_number, currency, role"

# Recovery's claim: the unfinished payments that are free or already the owner's, those
# leased longest ago first (oldest first among equals). Not simply the oldest: payments
# stuck at a dead bank, which recovery tries again and again (and so leases again and
# again), would then fill every claim and starve the ones behind them. Through a partial
# index of unfinished payments, so its cost does not grow with the number of finished
# payments (tests/unit/test_gateway_store_plans.py checks the plan).
CLAIM_SQL = (
    "UPDATE payments SET lease_owner = ?, lease_expires_at_s = ?"
    f" WHERE seq IN (SELECT seq FROM payments WHERE txn_state IN {UNFINISHED_SQL}"
    " AND (lease_owner IS NULL OR lease_expires_at_s <= ? OR lease_owner = ?)"
    " ORDER BY lease_expires_at_s NULLS FIRST, seq LIMIT ?)"
    f" RETURNING seq, {_PAYMENT_COLUMNS}"
)


class BeginOutcome(enum.Enum):
    STARTED = "started"  # the key is new: the payment was recorded and is ours to run
    REPLAY = "replay"  # the key finished before: answer as the first time
    MISMATCH = "mismatch"  # the key was used with other parameters
    IN_USE = "in_use"  # the key's first request is still running


@dataclasses.dataclass(frozen=True)
class BeginResult:
    outcome: BeginOutcome
    payment_id: str = ""
    error_reason: str = ""
    error_message: str = ""


@dataclasses.dataclass(frozen=True)
class Lease:
    """A gateway's claim on driving a transaction: `owner` (an instance id) until a time."""

    owner: str
    expires_at_s: float


@dataclasses.dataclass(frozen=True)
class Session:
    user: User
    expire_at_s: float
    revoked: bool


class GatewayStore(Protocol):
    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def healthy(self) -> bool: ...
    async def create_user(self, user: User, password_hash: bytes) -> None: ...
    async def user_by_username(self, username: str) -> tuple[User, bytes] | None: ...
    async def insert_session(self, token_hash: str, user_id: str, expire_at_s: float) -> None: ...
    async def session(self, token_hash: str) -> Session | None: ...
    async def revoke_session(self, token_hash: str) -> None: ...
    async def prune_sessions(self, *, older_than_s: float, limit: int) -> int: ...
    async def begin_payment(
        self, key: str, request_hash: str, payment: Payment, lease: Lease | None = None
    ) -> BeginResult: ...
    async def decide_commit(self, payment_id: str, *, finished: bool = False) -> TxnState: ...
    async def decide_abort(
        self, payment_id: str, reason: str, message: str, *, release_key: bool
    ) -> TxnState: ...
    async def finish(self, payment_id: str, state: TxnState) -> None: ...
    async def finish_many(self, finished: Sequence[tuple[str, TxnState]]) -> None:
        """finish() for several transactions, in one database transaction."""
        ...

    async def get_payment(self, payment_id: str) -> Payment | None: ...
    async def list_payments(
        self, user_id: str, *, before_seq: int | None, limit: int
    ) -> list[tuple[int, Payment]]: ...
    async def claim_unfinished(
        self, owner: str, *, now_s: float, lease_s: float, limit: int
    ) -> list[Payment]: ...
    async def renew_lease(self, payment_id: str, lease: Lease) -> bool: ...
    async def count_unfinished(self, *, created_before_us: int) -> int: ...
    async def prune_idempotency_keys(self, *, older_than_s: float, limit: int) -> int: ...
    async def login_failures(self, keys: list[str], *, since_s: float) -> list[list[float]]: ...
    async def record_login_failure(self, keys: list[str], at_s: float) -> None: ...
    async def clear_login_failures(self, key: str) -> None: ...
    async def prune_login_failures(self, *, older_than_s: float, limit: int) -> int: ...


def _payment(row: tuple[object, ...]) -> Payment:
    (
        payment_id,
        status,
        txn_state,
        payer_user_id,
        payer_username,
        payer_bank_id,
        payer_account,
        payee_user_id,
        payee_username,
        payee_bank_id,
        payee_account,
        amount,
        currency,
        description,
        failure_reason,
        create_time_us,
        one_phase,
    ) = row
    return Payment(
        payment_id=str(payment_id),
        status=PaymentStatus(str(status)),
        txn_state=TxnState(str(txn_state)),
        payer_user_id=str(payer_user_id),
        payer_username=str(payer_username),
        payer_bank_id=str(payer_bank_id),
        payer_account=str(payer_account),
        payee_user_id=str(payee_user_id),
        payee_username=str(payee_username),
        payee_bank_id=str(payee_bank_id),
        payee_account=str(payee_account),
        amount_minor=int(amount),  # type: ignore[call-overload]
        currency=str(currency),
        description=str(description),
        failure_reason=str(failure_reason),
        create_time_us=int(create_time_us),  # type: ignore[call-overload]
        one_phase=bool(one_phase),
    )


def _user(row: tuple[object, ...]) -> User:
    user_id, username, bank_id, account_number, currency, role = row
    return User(
        user_id=str(user_id),
        username=str(username),
        bank_id=str(bank_id),
        account_number=str(account_number),
        currency=str(currency),
        role=str(role),
    )


def payment_row(payment: Payment, lease: Lease | None) -> tuple[object, ...]:
    """The values of a new payments row: _PAYMENT_COLUMNS, then lease_owner, lease_expires_at_s."""
    return (
        payment.payment_id,
        str(payment.status),
        str(payment.txn_state),
        payment.payer_user_id,
        payment.payer_username,
        payment.payer_bank_id,
        payment.payer_account,
        payment.payee_user_id,
        payment.payee_username,
        payment.payee_bank_id,
        payment.payee_account,
        payment.amount_minor,
        payment.currency,
        payment.description,
        payment.failure_reason,
        payment.create_time_us,
        payment.one_phase,
        lease.owner if lease else None,
        lease.expires_at_s if lease else None,
    )


class SqliteGatewayStore:
    def __init__(self, path: pathlib.Path) -> None:
        self._db = Database(path, MIGRATIONS)

    async def open(self) -> None:
        await self._db.open()

    async def close(self) -> None:
        await self._db.close()

    async def healthy(self) -> bool:
        return await self._db.healthy()

    # Users and sessions ------------------------------------------------------------

    async def create_user(self, user: User, password_hash: bytes) -> None:
        def insert(conn: sqlite3.Connection) -> None:
            if conn.execute("SELECT 1 FROM users WHERE username = ?", (user.username,)).fetchone():
                raise AlreadyExists(f"username {user.username!r} is taken")
            if conn.execute(
                "SELECT 1 FROM users WHERE bank_id = ? AND account_number = ?",
                (user.bank_id, user.account_number),
            ).fetchone():
                raise AlreadyExists(
                    f"account {user.account_number} at {user.bank_id} is already linked to a user"
                )
            conn.execute(
                f"INSERT INTO users ({_USER_COLUMNS}, password_hash, created_at_s)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    user.user_id,
                    user.username,
                    user.bank_id,
                    user.account_number,
                    user.currency,
                    user.role,
                    password_hash,
                    time.time(),
                ),
            )

        await self._db.transaction(insert)

    async def user_by_username(self, username: str) -> tuple[User, bytes] | None:
        def select(conn: sqlite3.Connection) -> tuple[User, bytes] | None:
            row = conn.execute(
                f"SELECT {_USER_COLUMNS}, password_hash FROM users WHERE username = ?", (username,)
            ).fetchone()
            return (_user(row[:6]), bytes(row[6])) if row else None

        return await self._db.read(select)

    async def insert_session(self, token_hash: str, user_id: str, expire_at_s: float) -> None:
        await self._db.transaction(
            lambda conn: conn.execute(
                "INSERT INTO sessions (token_hash, user_id, expire_at_s, created_at_s)"
                " VALUES (?, ?, ?, ?)",
                (token_hash, user_id, expire_at_s, time.time()),
            )
        )

    async def session(self, token_hash: str) -> Session | None:
        def select(conn: sqlite3.Connection) -> Session | None:
            row = conn.execute(
                "SELECT u.user_id, u.username, u.bank_id, u.account_number, u.currency, u.role,"
                " s.expire_at_s, s.revoked FROM sessions s JOIN users u ON u.user_id = s.user_id"
                " WHERE s.token_hash = ?",
                (token_hash,),
            ).fetchone()
            return Session(_user(row[:6]), float(row[6]), bool(row[7])) if row else None

        return await self._db.read(select)

    async def revoke_session(self, token_hash: str) -> None:
        await self._db.transaction(
            lambda conn: conn.execute(
                "UPDATE sessions SET revoked = 1 WHERE token_hash = ?", (token_hash,)
            )
        )

    async def prune_sessions(self, *, older_than_s: float, limit: int) -> int:
        """Delete up to `limit` sessions that expired before `older_than_s`; how many."""
        return await self._delete_some("sessions", "expire_at_s < ?", older_than_s, limit)

    # Payments and their idempotency keys -------------------------------------------

    async def begin_payment(
        self, key: str, request_hash: str, payment: Payment, lease: Lease | None = None
    ) -> BeginResult:
        """Record the key and the new payment together, or say why the key is taken.

        With a lease, the payment is its owner's to drive until the lease expires; without
        one, any gateway's recovery may claim it at once.
        """

        def begin(conn: sqlite3.Connection) -> BeginResult:
            row = conn.execute(
                "SELECT request_hash, state, payment_id, error_reason, error_message"
                " FROM idempotency_keys WHERE user_id = ? AND idempotency_key = ?",
                (payment.payer_user_id, key),
            ).fetchone()
            if row is not None:
                stored_hash, state, payment_id, error_reason, error_message = row
                if stored_hash != request_hash:
                    return BeginResult(BeginOutcome.MISMATCH, payment_id)
                if state == "in_progress":
                    return BeginResult(BeginOutcome.IN_USE, payment_id)
                return BeginResult(BeginOutcome.REPLAY, payment_id, error_reason, error_message)
            cursor = conn.execute(
                f"INSERT INTO payments ({_PAYMENT_COLUMNS}, lease_owner, lease_expires_at_s)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                payment_row(payment, lease),
            )
            seq = cursor.lastrowid
            conn.executemany(
                "INSERT INTO payment_parties (user_id, seq) VALUES (?, ?)",
                [(payment.payer_user_id, seq), (payment.payee_user_id, seq)],
            )
            conn.execute(
                "INSERT INTO idempotency_keys (user_id, idempotency_key, request_hash, state,"
                " payment_id, created_at_s) VALUES (?, ?, ?, 'in_progress', ?, ?)",
                (payment.payer_user_id, key, request_hash, payment.payment_id, time.time()),
            )
            return BeginResult(BeginOutcome.STARTED, payment.payment_id)

        return await self._db.transaction(begin)

    async def decide_commit(self, payment_id: str, *, finished: bool = False) -> TxnState:
        """Write the commit decision, unless a decision exists; return the decided state.

        `finished`: the only bank has already committed (a one-phase commit), so the
        transaction goes straight to COMMITTED.
        """
        state, finished_at_s = ("committed", time.time()) if finished else ("committing", None)

        def decide(conn: sqlite3.Connection) -> TxnState:
            updated = conn.execute(
                "UPDATE payments SET txn_state = ?, status = 'succeeded',"
                " decided_at_s = ?, finished_at_s = ?"
                " WHERE payment_id = ? AND txn_state = 'preparing'",
                (state, time.time(), finished_at_s, payment_id),
            ).rowcount
            if updated:
                conn.execute(
                    "UPDATE idempotency_keys SET state = 'completed' WHERE payment_id = ?",
                    (payment_id,),
                )
            return _txn_state(conn, payment_id)

        return await self._db.transaction(decide)

    async def decide_abort(
        self, payment_id: str, reason: str, message: str, *, release_key: bool
    ) -> TxnState:
        """Write the abort decision, unless a decision exists; return the decided state.

        A final business refusal (insufficient funds) completes the key with that error, so a
        retry gets the same answer; a transient failure releases the key, so a retry runs anew.
        """

        def decide(conn: sqlite3.Connection) -> TxnState:
            updated = conn.execute(
                "UPDATE payments SET txn_state = 'aborting', status = 'failed',"
                " failure_reason = ?, decided_at_s = ? WHERE payment_id = ?"
                " AND txn_state = 'preparing'",
                (reason, time.time(), payment_id),
            ).rowcount
            if updated and release_key:
                conn.execute("DELETE FROM idempotency_keys WHERE payment_id = ?", (payment_id,))
            elif updated:
                conn.execute(
                    "UPDATE idempotency_keys SET state = 'completed', error_reason = ?,"
                    " error_message = ? WHERE payment_id = ?",
                    (reason, message, payment_id),
                )
            return _txn_state(conn, payment_id)

        return await self._db.transaction(decide)

    async def finish(self, payment_id: str, state: TxnState) -> None:
        await self.finish_many([(payment_id, state)])

    async def finish_many(self, finished: Sequence[tuple[str, TxnState]]) -> None:
        now = time.time()
        rows = [
            (str(state), now, payment_id, str(decided_before(state)))
            for payment_id, state in finished
        ]
        await self._db.transaction(
            lambda conn: conn.executemany(
                "UPDATE payments SET txn_state = ?, finished_at_s = ?"
                " WHERE payment_id = ? AND txn_state = ?",
                rows,
            )
        )

    async def get_payment(self, payment_id: str) -> Payment | None:
        def select(conn: sqlite3.Connection) -> Payment | None:
            row = conn.execute(
                f"SELECT {_PAYMENT_COLUMNS} FROM payments WHERE payment_id = ?", (payment_id,)
            ).fetchone()
            return _payment(row) if row else None

        return await self._db.read(select)

    async def list_payments(
        self, user_id: str, *, before_seq: int | None, limit: int
    ) -> list[tuple[int, Payment]]:
        def select(conn: sqlite3.Connection) -> list[tuple[int, Payment]]:
            rows = conn.execute(
                f"SELECT p.seq, {', '.join('p.' + c.strip() for c in _PAYMENT_COLUMNS.split(','))}"
                " FROM payment_parties pp JOIN payments p ON p.seq = pp.seq"
                " WHERE pp.user_id = ? AND pp.seq < ? ORDER BY pp.seq DESC LIMIT ?",
                (user_id, before_seq if before_seq is not None else 2**62, limit),
            ).fetchall()
            return [(int(row[0]), _payment(row[1:])) for row in rows]

        return await self._db.read(select)

    async def count_unfinished(self, *, created_before_us: int) -> int:
        """How many payments created before `created_before_us` have no final state yet."""
        return await self._db.read(
            lambda conn: int(
                conn.execute(
                    f"SELECT COUNT(*) FROM payments WHERE txn_state IN {UNFINISHED_SQL}"
                    " AND create_time_us < ?",
                    (created_before_us,),
                ).fetchone()[0]
            )
        )

    async def claim_unfinished(
        self, owner: str, *, now_s: float, lease_s: float, limit: int
    ) -> list[Payment]:
        """Lease to `owner` the unfinished payments that are free or already its own, those
        leased longest ago first (CLAIM_SQL).

        Free: no lease, or one that expired by `now_s`. SQLite serializes writers, so the
        conditional UPDATE alone makes two claimers take disjoint rows.
        """

        def claim(conn: sqlite3.Connection) -> list[Payment]:
            rows = conn.execute(CLAIM_SQL, (owner, now_s + lease_s, now_s, owner, limit)).fetchall()
            return [_payment(row[1:]) for row in sorted(rows, key=lambda row: int(row[0]))]

        return await self._db.transaction(claim)

    async def renew_lease(self, payment_id: str, lease: Lease) -> bool:
        """Extend the owner's lease of an unfinished payment; False when it is not theirs."""

        def renew(conn: sqlite3.Connection) -> bool:
            return (
                conn.execute(
                    "UPDATE payments SET lease_expires_at_s = ? WHERE payment_id = ?"
                    " AND lease_owner = ? AND txn_state IN (?, ?, ?)",
                    (lease.expires_at_s, payment_id, lease.owner, *UNFINISHED),
                ).rowcount
                == 1
            )

        return await self._db.transaction(renew)

    async def prune_idempotency_keys(self, *, older_than_s: float, limit: int) -> int:
        """Delete up to `limit` completed keys created before `older_than_s`; how many."""
        return await self._delete_some(
            "idempotency_keys", "created_at_s < ? AND state = 'completed'", older_than_s, limit
        )

    # Login throttle -----------------------------------------------------------------

    async def login_failures(self, keys: list[str], *, since_s: float) -> list[list[float]]:
        """For each key, the times of its failures since `since_s`, oldest first."""

        def select(conn: sqlite3.Connection) -> list[list[float]]:
            return [
                [
                    float(row[0])
                    for row in conn.execute(
                        "SELECT failed_at_s FROM login_failures WHERE throttle_key = ?"
                        " AND failed_at_s >= ? ORDER BY failed_at_s",
                        (key, since_s),
                    )
                ]
                for key in keys
            ]

        return await self._db.read(select)

    async def record_login_failure(self, keys: list[str], at_s: float) -> None:
        await self._db.transaction(
            lambda conn: conn.executemany(
                "INSERT INTO login_failures (throttle_key, failed_at_s) VALUES (?, ?)",
                [(key, at_s) for key in keys],
            )
        )

    async def clear_login_failures(self, key: str) -> None:
        await self._db.transaction(
            lambda conn: conn.execute("DELETE FROM login_failures WHERE throttle_key = ?", (key,))
        )

    async def prune_login_failures(self, *, older_than_s: float, limit: int) -> int:
        """Delete up to `limit` failures older than `older_than_s`; how many."""
        return await self._delete_some("login_failures", "failed_at_s < ?", older_than_s, limit)

    async def _delete_some(self, table: str, where: str, before: float, limit: int) -> int:
        """Housekeeping's bounded delete: up to `limit` rows of `table` matching `where`
        (one `?`, bound to `before`), in one transaction; how many. Table and condition
        are this module's constants, never input."""
        return await self._db.transaction(
            lambda conn: conn.execute(
                f"DELETE FROM {table} WHERE rowid IN"
                f" (SELECT rowid FROM {table} WHERE {where} LIMIT ?)",
                (before, limit),
            ).rowcount
        )


def _txn_state(conn: sqlite3.Connection, payment_id: str) -> TxnState:
    row = conn.execute(
        "SELECT txn_state FROM payments WHERE payment_id = ?", (payment_id,)
    ).fetchone()
    return TxnState(row[0])


def decided_before(final: TxnState) -> TxnState:
    """The decision a transaction had before it finished in `final`."""
    return TxnState.COMMITTING if final == TxnState.COMMITTED else TxnState.ABORTING
