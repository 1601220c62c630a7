"""The gateway's storage on PostgreSQL: GatewayStore over an asyncio connection pool.

The same tables as SqliteGatewayStore, in the PostgreSQL dialect; MIGRATIONS here and in
store.py have the same numbered steps (a test checks that the counts agree).

Isolation: every method is one READ COMMITTED transaction, and each is correct under
concurrency from any number of gateway processes because it decides with a single
conditional statement, never with a read followed by a write:

- begin_payment inserts the idempotency key first with ON CONFLICT DO NOTHING. Of two
  requests with one key, the second waits on the first's uncommitted row and then sees
  the conflict; only the winner records a payment. The loser reads the committed key.
- decide_commit and decide_abort update `WHERE txn_state = 'preparing'`: PostgreSQL
  re-checks that condition on the newest row version after waiting for a concurrent
  writer, so exactly one decision wins and the other sees the decided state.
- claim_unfinished takes the rows to lease with FOR UPDATE SKIP LOCKED: a row another
  gateway is claiming right now is skipped, not waited for, and a row it has just claimed
  fails the re-checked "free" condition; so two gateways never claim one row together.
- create_user relies on the unique constraints, named so that a violation maps back to
  the same AlreadyExists message SQLite gives.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import psycopg

from paygate.common.database_url import PostgresUrl
from paygate.common.invariants import check
from paygate.common.postgres import AsyncDatabase
from paygate.errors import AlreadyExists
from paygate.gateway.models import UNFINISHED, UNFINISHED_SQL, Payment, TxnState, User
from paygate.gateway.schema import POSTGRES_MIGRATIONS as MIGRATIONS
from paygate.gateway.store import (
    _PAYMENT_COLUMNS,
    _USER_COLUMNS,
    BeginOutcome,
    BeginResult,
    Lease,
    Session,
    _payment,
    _user,
    decided_before,
    payment_row,
)

DEFAULT_SCHEMA = "gateway"
# A key released by a transient failure between our insert and our read is retried this
# many times before the caller is told the key is in use.
BEGIN_ATTEMPTS = 3

Conn = psycopg.AsyncConnection


def _placeholders(count: int) -> str:
    return ", ".join(["%s"] * count)


class PostgresGatewayStore:
    def __init__(self, url: PostgresUrl, *, schema: str = DEFAULT_SCHEMA) -> None:
        self._db = AsyncDatabase(url, schema, MIGRATIONS)

    async def open(self) -> None:
        await self._db.open()

    async def close(self) -> None:
        await self._db.close()

    async def healthy(self) -> bool:
        return await self._db.healthy()

    # Users and sessions ------------------------------------------------------------

    async def create_user(self, user: User, password_hash: bytes) -> None:
        async def insert(conn: Conn) -> None:
            # The same checks in the same order as SQLite, for the same message; the unique
            # constraints catch the race between two concurrent sign-ups.
            if await _exists(conn, "username = %s", (user.username,)):
                raise AlreadyExists(f"username {user.username!r} is taken")
            if await _exists(
                conn, "bank_id = %s AND account_number = %s", (user.bank_id, user.account_number)
            ):
                raise _already_exists("users_account_unique", user)
            await conn.execute(
                f"INSERT INTO users ({_USER_COLUMNS}, password_hash, created_at_s)"
                f" VALUES ({_placeholders(8)})",
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

        try:
            await self._db.transaction(insert)
        except psycopg.errors.UniqueViolation as exc:
            raise _already_exists(exc.diag.constraint_name, user) from None

    async def user_by_username(self, username: str) -> tuple[User, bytes] | None:
        async def select(conn: Conn) -> tuple[User, bytes] | None:
            cursor = await conn.execute(
                f"SELECT {_USER_COLUMNS}, password_hash FROM users WHERE username = %s",
                (username,),
            )
            row = await cursor.fetchone()
            return (_user(row[:6]), bytes(row[6])) if row else None

        return await self._db.transaction(select)

    async def insert_session(self, token_hash: str, user_id: str, expire_at_s: float) -> None:
        async def insert(conn: Conn) -> None:
            await conn.execute(
                "INSERT INTO sessions (token_hash, user_id, expire_at_s, created_at_s)"
                " VALUES (%s, %s, %s, %s)",
                (token_hash, user_id, expire_at_s, time.time()),
            )

        await self._db.transaction(insert)

    async def session(self, token_hash: str) -> Session | None:
        async def select(conn: Conn) -> Session | None:
            cursor = await conn.execute(
                "SELECT u.user_id, u.username, u.bank_id, u.account_number, u.currency, u.role,"
                " s.expire_at_s, s.revoked FROM sessions s JOIN users u ON u.user_id = s.user_id"
                " WHERE s.token_hash = %s",
                (token_hash,),
            )
            row = await cursor.fetchone()
            return Session(_user(row[:6]), float(row[6]), bool(row[7])) if row else None

        return await self._db.transaction(select)

    async def revoke_session(self, token_hash: str) -> None:
        async def revoke(conn: Conn) -> None:
            await conn.execute(
                "UPDATE sessions SET revoked = TRUE WHERE token_hash = %s", (token_hash,)
            )

        await self._db.transaction(revoke)

    async def prune_sessions(self, *, older_than_s: float, limit: int) -> int:
        return await self._delete_some("sessions", "expire_at_s < %s", older_than_s, limit)

    # Payments and their idempotency keys -------------------------------------------

    async def begin_payment(
        self, key: str, request_hash: str, payment: Payment, lease: Lease | None = None
    ) -> BeginResult:
        """Claim the key and record the payment together, or say why the key is taken."""

        async def begin(conn: Conn) -> BeginResult:
            for _ in range(BEGIN_ATTEMPTS):
                claimed = await conn.execute(
                    "INSERT INTO idempotency_keys (user_id, idempotency_key, request_hash, state,"
                    " payment_id, created_at_s) VALUES (%s, %s, %s, 'in_progress', %s, %s)"
                    " ON CONFLICT DO NOTHING",
                    (payment.payer_user_id, key, request_hash, payment.payment_id, time.time()),
                )
                if claimed.rowcount == 1:
                    await _insert_payment(conn, payment, lease)
                    return BeginResult(BeginOutcome.STARTED, payment.payment_id)
                taken = await _key_owner(conn, payment.payer_user_id, key, request_hash)
                if taken is not None:
                    return taken
            return BeginResult(BeginOutcome.IN_USE)

        return await self._db.transaction(begin)

    async def decide_commit(self, payment_id: str, *, finished: bool = False) -> TxnState:
        """Write the commit decision, unless a decision exists; return the decided state.

        `finished`: the only bank has already committed (a one-phase commit), so the
        transaction goes straight to COMMITTED.
        """
        state, finished_at_s = ("committed", time.time()) if finished else ("committing", None)

        async def decide(conn: Conn) -> TxnState:
            updated = await conn.execute(
                "UPDATE payments SET txn_state = %s, status = 'succeeded',"
                " decided_at_s = %s, finished_at_s = %s"
                " WHERE payment_id = %s AND txn_state = 'preparing'",
                (state, time.time(), finished_at_s, payment_id),
            )
            if updated.rowcount:
                await conn.execute(
                    "UPDATE idempotency_keys SET state = 'completed' WHERE payment_id = %s",
                    (payment_id,),
                )
            return await _txn_state(conn, payment_id)

        return await self._db.transaction(decide)

    async def decide_abort(
        self, payment_id: str, reason: str, message: str, *, release_key: bool
    ) -> TxnState:
        """Write the abort decision, unless a decision exists; return the decided state.

        A final refusal completes the key with its error; a transient failure releases it.
        """

        async def decide(conn: Conn) -> TxnState:
            updated = await conn.execute(
                "UPDATE payments SET txn_state = 'aborting', status = 'failed',"
                " failure_reason = %s, decided_at_s = %s WHERE payment_id = %s"
                " AND txn_state = 'preparing'",
                (reason, time.time(), payment_id),
            )
            if updated.rowcount and release_key:
                await conn.execute(
                    "DELETE FROM idempotency_keys WHERE payment_id = %s", (payment_id,)
                )
            elif updated.rowcount:
                await conn.execute(
                    "UPDATE idempotency_keys SET state = 'completed', error_reason = %s,"
                    " error_message = %s WHERE payment_id = %s",
                    (reason, message, payment_id),
                )
            return await _txn_state(conn, payment_id)

        return await self._db.transaction(decide)

    async def finish(self, payment_id: str, state: TxnState) -> None:
        await self.finish_many([(payment_id, state)])

    async def finish_many(self, finished: Sequence[tuple[str, TxnState]]) -> None:
        now = time.time()
        rows = [
            (str(state), now, payment_id, str(decided_before(state)))
            for payment_id, state in finished
        ]

        async def update(conn: Conn) -> None:
            async with conn.cursor() as cursor:
                await cursor.executemany(
                    "UPDATE payments SET txn_state = %s, finished_at_s = %s"
                    " WHERE payment_id = %s AND txn_state = %s",
                    rows,
                )

        await self._db.transaction(update)

    async def get_payment(self, payment_id: str) -> Payment | None:
        async def select(conn: Conn) -> Payment | None:
            cursor = await conn.execute(
                f"SELECT {_PAYMENT_COLUMNS} FROM payments WHERE payment_id = %s", (payment_id,)
            )
            row = await cursor.fetchone()
            return _payment(row) if row else None

        return await self._db.transaction(select)

    async def list_payments(
        self, user_id: str, *, before_seq: int | None, limit: int
    ) -> list[tuple[int, Payment]]:
        async def select(conn: Conn) -> list[tuple[int, Payment]]:
            columns = ", ".join("p." + c.strip() for c in _PAYMENT_COLUMNS.split(","))
            cursor = await conn.execute(
                f"SELECT p.seq, {columns}"
                " FROM payment_parties pp JOIN payments p ON p.seq = pp.seq"
                " WHERE pp.user_id = %s AND pp.seq < %s ORDER BY pp.seq DESC LIMIT %s",
                (user_id, before_seq if before_seq is not None else 2**62, limit),
            )
            return [(int(row[0]), _payment(row[1:])) for row in await cursor.fetchall()]

        return await self._db.transaction(select)

    async def count_unfinished(self, *, created_before_us: int) -> int:
        async def count(conn: Conn) -> int:
            cursor = await conn.execute(
                f"SELECT COUNT(*) FROM payments WHERE txn_state IN {UNFINISHED_SQL}"
                " AND create_time_us < %s",
                (created_before_us,),
            )
            row = await cursor.fetchone()
            return int(row[0]) if row else 0

        return await self._db.transaction(count)

    async def claim_unfinished(
        self, owner: str, *, now_s: float, lease_s: float, limit: int
    ) -> list[Payment]:
        """Lease to `owner` the unfinished payments that are free or already its own, those
        leased longest ago first (see the SQLite store's CLAIM_SQL for why)."""

        async def claim(conn: Conn) -> list[Payment]:
            cursor = await conn.execute(
                "UPDATE payments SET lease_owner = %s, lease_expires_at_s = %s"
                f" WHERE seq IN (SELECT seq FROM payments WHERE txn_state IN {UNFINISHED_SQL}"
                " AND (lease_owner IS NULL OR lease_expires_at_s <= %s OR lease_owner = %s)"
                " ORDER BY lease_expires_at_s NULLS FIRST, seq LIMIT %s FOR UPDATE SKIP LOCKED)"
                f" RETURNING seq, {_PAYMENT_COLUMNS}",
                (owner, now_s + lease_s, now_s, owner, limit),
            )
            rows = sorted(await cursor.fetchall(), key=lambda row: int(row[0]))
            return [_payment(row[1:]) for row in rows]

        return await self._db.transaction(claim)

    async def renew_lease(self, payment_id: str, lease: Lease) -> bool:
        """Extend the owner's lease of an unfinished payment; False when it is not theirs."""

        async def renew(conn: Conn) -> bool:
            cursor = await conn.execute(
                "UPDATE payments SET lease_expires_at_s = %s WHERE payment_id = %s"
                " AND lease_owner = %s AND txn_state = ANY(%s)",
                (lease.expires_at_s, payment_id, lease.owner, [str(s) for s in UNFINISHED]),
            )
            return cursor.rowcount == 1

        return await self._db.transaction(renew)

    async def prune_idempotency_keys(self, *, older_than_s: float, limit: int) -> int:
        return await self._delete_some(
            "idempotency_keys", "created_at_s < %s AND state = 'completed'", older_than_s, limit
        )

    # Login throttle -----------------------------------------------------------------

    async def login_failures(self, keys: list[str], *, since_s: float) -> list[list[float]]:
        """For each key, the times of its failures since `since_s`, oldest first."""

        async def select(conn: Conn) -> list[list[float]]:
            cursor = await conn.execute(
                "SELECT throttle_key, failed_at_s FROM login_failures"
                " WHERE throttle_key = ANY(%s) AND failed_at_s >= %s ORDER BY failed_at_s",
                (keys, since_s),
            )
            times: dict[str, list[float]] = {key: [] for key in keys}
            for throttle_key, failed_at_s in await cursor.fetchall():
                times[throttle_key].append(float(failed_at_s))
            return [times[key] for key in keys]

        return await self._db.transaction(select)

    async def record_login_failure(self, keys: list[str], at_s: float) -> None:
        async def insert(conn: Conn) -> None:
            async with conn.cursor() as cursor:
                await cursor.executemany(
                    "INSERT INTO login_failures (throttle_key, failed_at_s) VALUES (%s, %s)",
                    [(key, at_s) for key in keys],
                )

        await self._db.transaction(insert)

    async def clear_login_failures(self, key: str) -> None:
        async def delete(conn: Conn) -> None:
            await conn.execute("DELETE FROM login_failures WHERE throttle_key = %s", (key,))

        await self._db.transaction(delete)

    async def prune_login_failures(self, *, older_than_s: float, limit: int) -> int:
        return await self._delete_some("login_failures", "failed_at_s < %s", older_than_s, limit)

    async def _delete_some(self, table: str, where: str, before: float, limit: int) -> int:
        """Housekeeping's bounded delete (see the SQLite store); ctid is the row's address."""

        async def delete(conn: Conn) -> int:
            cursor = await conn.execute(
                f"DELETE FROM {table} WHERE ctid = ANY(ARRAY(SELECT ctid"
                f" FROM {table} WHERE {where} LIMIT %s))",
                (before, limit),
            )
            return cursor.rowcount

        return await self._db.transaction(delete)


async def _insert_payment(conn: Conn, payment: Payment, lease: Lease | None) -> None:
    cursor = await conn.execute(
        f"INSERT INTO payments ({_PAYMENT_COLUMNS}, lease_owner, lease_expires_at_s)"
        f" VALUES ({_placeholders(19)}) RETURNING seq",
        payment_row(payment, lease),
    )
    row = await cursor.fetchone()
    check(row is not None, f"payment {payment.payment_id} was inserted without a seq")
    assert row is not None
    async with conn.cursor() as parties:
        await parties.executemany(
            "INSERT INTO payment_parties (user_id, seq) VALUES (%s, %s)",
            [(payment.payer_user_id, row[0]), (payment.payee_user_id, row[0])],
        )


async def _key_owner(conn: Conn, user_id: str, key: str, request_hash: str) -> BeginResult | None:
    """Why a key that is taken is taken; None when it was released meanwhile."""
    cursor = await conn.execute(
        "SELECT request_hash, state, payment_id, error_reason, error_message"
        " FROM idempotency_keys WHERE user_id = %s AND idempotency_key = %s",
        (user_id, key),
    )
    row = await cursor.fetchone()
    if row is None:
        return None
    stored_hash, state, payment_id, error_reason, error_message = row
    if stored_hash != request_hash:
        return BeginResult(BeginOutcome.MISMATCH, payment_id)
    if state == "in_progress":
        return BeginResult(BeginOutcome.IN_USE, payment_id)
    return BeginResult(BeginOutcome.REPLAY, payment_id, error_reason, error_message)


async def _txn_state(conn: Conn, payment_id: str) -> TxnState:
    cursor = await conn.execute(
        "SELECT txn_state FROM payments WHERE payment_id = %s", (payment_id,)
    )
    row = await cursor.fetchone()
    check(row is not None, f"payment {payment_id} vanished inside a transaction")
    assert row is not None
    return TxnState(row[0])


async def _exists(conn: Conn, where: str, params: tuple[str, ...]) -> bool:
    cursor = await conn.execute(f"SELECT 1 FROM users WHERE {where}", params)
    return await cursor.fetchone() is not None


def _already_exists(constraint: str | None, user: User) -> AlreadyExists:
    """The message SqliteGatewayStore gives for the same conflict."""
    if constraint == "users_username_unique":
        return AlreadyExists(f"username {user.username!r} is taken")
    if constraint == "users_account_unique":
        return AlreadyExists(
            f"account {user.account_number} at {user.bank_id} is already linked to a user"
        )
    return AlreadyExists(f"user {user.username!r} already exists")
