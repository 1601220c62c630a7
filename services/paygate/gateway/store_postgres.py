"""The gateway's storage on PostgreSQL: GatewayStore over an asyncio connection pool.

The same tables, statements and methods as SqliteGatewayStore (store_sql.py); MIGRATIONS
here and in store.py have the same numbered steps (a test checks that the counts agree).

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

from collections.abc import Awaitable, Iterable
from typing import Any, TypeVar

import psycopg

from paygate.common.database_url import PostgresUrl
from paygate.common.invariants import InvariantViolation
from paygate.common.postgres import AsyncDatabase
from paygate.common.sql import NO_VALUES, POSTGRES, Row, Statement, Values
from paygate.errors import AlreadyExists
from paygate.gateway.models import User
from paygate.gateway.schema import POSTGRES_MIGRATIONS as MIGRATIONS
from paygate.gateway.statements import GatewaySql
from paygate.gateway.store_accounts import account_linked, username_taken
from paygate.gateway.store_sql import SqlGatewayStore
from paygate.gateway.store_tx import Body

T = TypeVar("T")

DEFAULT_SCHEMA = "gateway"
SQL = GatewaySql(POSTGRES)


class PostgresGatewayStore(SqlGatewayStore):
    def __init__(self, url: PostgresUrl, *, schema: str = DEFAULT_SCHEMA) -> None:
        self._postgres = AsyncDatabase(url, schema, MIGRATIONS)
        super().__init__(self._postgres, SQL)

    def _write(self, body: Body[T]) -> Awaitable[T]:
        return self._postgres.transaction(lambda conn: body(PostgresTx(conn)))

    async def create_user(self, user: User, password_hash: bytes) -> None:
        # The checks come first, as on SQLite, for the same message; the unique constraints
        # catch the race between two concurrent sign-ups.
        try:
            await super().create_user(user, password_hash)
        except psycopg.errors.UniqueViolation as exc:
            raise _already_exists(exc.diag.constraint_name, user) from None


class PostgresTx:
    """A transaction on one pooled connection."""

    __slots__ = ("_conn",)

    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self._conn = conn

    async def run(self, statement: Statement, values: Values = NO_VALUES) -> int:
        return (await self._conn.execute(statement.text, statement.args(values))).rowcount

    async def one(self, statement: Statement, values: Values = NO_VALUES) -> Row | None:
        cursor = await self._conn.execute(statement.text, statement.args(values))
        row: Row | None = await cursor.fetchone()
        return row

    async def all(self, statement: Statement, values: Values = NO_VALUES) -> list[Row]:
        cursor = await self._conn.execute(statement.text, statement.args(values))
        return list(await cursor.fetchall())

    async def many(self, statement: Statement, rows: Iterable[Values]) -> None:
        async with self._conn.cursor() as cursor:
            await cursor.executemany(statement.text, map(statement.args, rows))

    async def insert(self, statement: Statement, values: Values) -> int:
        row = await self.one(statement, values)
        if row is None:
            raise InvariantViolation(f"no row id after {statement}")
        return int(row[0])


def _already_exists(constraint: str | None, user: User) -> AlreadyExists:
    """The message SqliteGatewayStore gives for the same conflict."""
    if constraint == "users_username_unique":
        return username_taken(user)
    if constraint == "users_account_unique":
        return account_linked(user)
    return AlreadyExists(f"user {user.username!r} already exists")
