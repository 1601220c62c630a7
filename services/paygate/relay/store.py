"""The relay's SQL on the gateway's database: events not yet published, their mark, the lease.

The statements are written once (RelaySql, compiled per dialect like gateway/statements.py)
and each method is one transaction, a body over the gateway store's `Tx`
(gateway/store_tx.py); SqliteRelayStore and PostgresRelayStore (store_postgres.py) only say
how a body runs, as the gateway's stores do.

Which relay publishes is decided by the one row of `relay_lease` (gateway/schema.py step
12): a relay takes it, or renews its own, with a conditional UPDATE that applies only when
the row is its own or has expired. SQLite serializes writers; PostgreSQL re-checks the
condition on the newest row version after waiting for a concurrent writer. So of two relays
at most one holds the lease at any time, by the database's clock of each writer (the
relays' clocks: keep them in sync, as the gateways' leases need too).
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Awaitable, Sequence
from typing import TypeVar

from paygate.common.config import GatewayConfig
from paygate.common.database_url import PostgresUrl, default_schema
from paygate.common.sql import SQLITE, Column, Database, Dialect, OnDatabase, Table
from paygate.common.sqlite import Database as SqliteDatabase
from paygate.gateway.schema import SQLITE_MIGRATIONS
from paygate.gateway.store import SqliteTx, run_now
from paygate.gateway.store_tx import Body, Tx

T = TypeVar("T")

# The lag gauge counts unpublished events up to this many: a count of a larger backlog
# would read the whole index at every pass, and says nothing more to an operator.
LAG_COUNT_MAX = 1_000_000


@dataclasses.dataclass(frozen=True, kw_only=True)
class PendingEvent:
    """An event not yet published, with its user's name (the message names no user id)."""

    id: int  # the table's global order: publication follows it
    event_id: str
    username: str
    sequence: int
    type: str
    create_time_us: int
    body: str  # the gateway's Payment record after the change (store_events.load)


PENDING = Table(
    "events",
    PendingEvent,
    (
        Column("e.id", field="id"),
        Column("e.event_id", field="event_id"),
        Column("u.username", field="username"),
        Column("e.sequence", field="sequence"),
        Column("e.type", field="type"),
        Column("e.create_time_us", field="create_time_us"),
        Column("e.body", field="body"),
    ),
)


@dataclasses.dataclass(frozen=True)
class Lag:
    """How far behind publication is: unpublished events (up to LAG_COUNT_MAX) and when
    the oldest of them was written (None: none is waiting)."""

    unpublished: int
    oldest_create_time_us: int | None


class RelaySql:
    """The relay's statements in one dialect."""

    def __init__(self, d: Dialect) -> None:
        sql = d.compile
        self.take_lease = sql(
            "UPDATE relay_lease SET owner = :owner, expires_at_s = :expires_at_s"
            " WHERE id = 1 AND (owner = :owner OR expires_at_s <= :now_s)"
        )
        self.release_lease = sql(
            "UPDATE relay_lease SET expires_at_s = 0 WHERE id = 1 AND owner = :owner"
        )
        # `published = 0` written as a literal: the partial index events_unpublished.
        self.unpublished = sql(
            f"SELECT {PENDING.columns} FROM events e JOIN users u ON u.user_id = e.user_id"
            " WHERE e.published = 0 ORDER BY e.id LIMIT :limit"
        )
        self.mark_published = sql("UPDATE events SET published = 1 WHERE id = :id")
        self.oldest_unpublished = sql(
            "SELECT create_time_us FROM events WHERE published = 0 ORDER BY id LIMIT 1"
        )
        self.count_unpublished = sql(
            "SELECT COUNT(*) FROM (SELECT 1 FROM events WHERE published = 0 LIMIT :most) AS w"
        )


class RelayStore(OnDatabase):
    """The relay's transactions; a subclass runs the bodies (`_write`, `_read`)."""

    def __init__(self, db: Database, sql: RelaySql) -> None:
        super().__init__(db)
        self._sql = sql

    def _write(self, body: Body[T]) -> Awaitable[T]:
        raise NotImplementedError

    def _read(self, body: Body[T]) -> Awaitable[T]:
        return self._write(body)

    async def take_lease(self, owner: str, *, now_s: float, lease_s: float) -> bool:
        """Take the lease, or renew it, until now_s + lease_s; False: another relay has it."""
        values = {"owner": owner, "expires_at_s": now_s + lease_s, "now_s": now_s}
        return await self._write(lambda tx: _take(tx, self._sql, values))

    async def release_lease(self, owner: str) -> None:
        """Let the lease go at once (another relay takes it at its next pass)."""
        await self._write(lambda tx: tx.run(self._sql.release_lease, {"owner": owner}))

    async def unpublished(self, limit: int) -> list[PendingEvent]:
        """Up to `limit` unpublished events, in the order they were written (by id)."""

        async def select(tx: Tx) -> list[PendingEvent]:
            rows = await tx.all(self._sql.unpublished, {"limit": limit})
            return [PENDING.from_row(row) for row in rows]

        return await self._read(select)

    async def mark_published(
        self, ids: Sequence[int], *, owner: str, now_s: float, lease_s: float
    ) -> bool:
        """Mark the events published and renew the lease, in one transaction; whether the
        lease is still this relay's (the marks stand either way: the broker has them)."""
        values = {"owner": owner, "expires_at_s": now_s + lease_s, "now_s": now_s}

        async def mark(tx: Tx) -> bool:
            await tx.many(self._sql.mark_published, [{"id": event_id} for event_id in ids])
            return await _take(tx, self._sql, values)

        return await self._write(mark)

    async def lag(self) -> Lag:
        async def select(tx: Tx) -> Lag:
            count = await tx.one(self._sql.count_unpublished, {"most": LAG_COUNT_MAX})
            oldest = await tx.one(self._sql.oldest_unpublished)
            return Lag(
                unpublished=int(count[0]) if count else 0,
                oldest_create_time_us=int(oldest[0]) if oldest else None,
            )

        return await self._read(select)


async def _take(tx: Tx, sql: RelaySql, values: dict[str, object]) -> bool:
    return await tx.run(sql.take_lease, values) == 1


SQLITE_SQL = RelaySql(SQLITE)


class SqliteRelayStore(RelayStore):
    """The relay's store on the gateway's SQLite file, from a process of its own: each
    write waits its turn for the file's lock (BEGIN IMMEDIATE, up to the busy timeout)."""

    def __init__(self, path: pathlib.Path) -> None:
        self._sqlite = SqliteDatabase(path, SQLITE_MIGRATIONS)
        super().__init__(self._sqlite, SQLITE_SQL)

    def _write(self, body: Body[T]) -> Awaitable[T]:
        return self._sqlite.transaction(lambda conn: run_now(body(SqliteTx(conn))))

    def _read(self, body: Body[T]) -> Awaitable[T]:
        return self._sqlite.read(lambda conn: run_now(body(SqliteTx(conn))))


def relay_store(config: GatewayConfig) -> RelayStore:
    """The store on the gateway's database ([gateway] database), in the gateway's schema."""
    if isinstance(config.database, PostgresUrl):
        # Imported here: a relay on SQLite (the default) never loads psycopg.
        from paygate.relay.store_postgres import PostgresRelayStore  # noqa: PLC0415

        schema = config.database.schema_or(default_schema("gateway"))
        return PostgresRelayStore(config.database, schema=schema)
    return SqliteRelayStore(config.database)
