"""The bank's storage on PostgreSQL: LedgerStore and LedgerTx over a pool of connections.

ledger.py's rules are synchronous functions of a LedgerTx; PostgresLedgerStore runs each in
a worker thread, on a connection of a bounded psycopg pool, inside one transaction. The
statements are SQLite's (store_sql.py), but for the row locks and the journal sums here.

Why READ COMMITTED with row locks, and not SERIALIZABLE
-------------------------------------------------------
The danger is two Prepares that each see enough funds and together overspend. SERIALIZABLE
would prevent that by aborting one of them, but on a hot account (one payer, many payments)
most transactions would then fail and need retries, and retries must be bounded, so some
payments would fail for no reason a user could understand. Locks make them wait instead:

- Inside a write transaction, get_account and get_transaction read with SELECT ... FOR
  UPDATE. A second writer to the same account waits for the first to commit and then reads
  the committed row (READ COMMITTED re-reads after a lock wait), so "check available funds,
  then add the hold" is atomic with respect to every other writer: no overspend. A Commit
  and an Abort of one transaction serialize on its row, so a hold resolves at most once.
- Locks are taken in one order: ledger.prepare reads its accounts sorted by number before
  anything else, and Commit and Abort walk holds_of(), sorted the same way (COLLATE "C" is
  Python's string order). An entry's account is locked before the entry is inserted, so the
  foreign key's weaker lock is never upgraded (two upgraders would wait for each other).
  Two payments between the same two accounts in opposite directions therefore never
  deadlock; if a deadlock happened anyway, PostgreSQL breaks it and the victim is retried.
- Two writers inserting the same key (a transaction id, a deposit reference, a new account
  number) are resolved by the unique index: the second fails with unique_violation, and the
  whole function runs again in a new transaction, where it sees the first one's row, as it
  would have behind SQLite's single writer. Retries are bounded (postgres.MAX_ATTEMPTS).
- read() runs in a REPEATABLE READ, READ ONLY snapshot, so the audit's several sums are
  taken at one instant and balances always equal the journal.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import psycopg

from paygate.bank.schema import POSTGRES_MIGRATIONS as MIGRATIONS
from paygate.bank.statements import LedgerSql
from paygate.bank.store import JournalMark, LedgerTx
from paygate.bank.store_sql import SqlLedgerTx
from paygate.common.database_url import PostgresUrl
from paygate.common.postgres import RETRYABLE, UNIQUE_VIOLATION, SyncDatabase
from paygate.common.sql import POSTGRES, OnDatabase

T = TypeVar("T")


class PostgresLedgerSql(LedgerSql):
    def __init__(self, *, locking: bool) -> None:
        super().__init__(POSTGRES, locking=locking)
        # Account numbers the bank assigns are decimal; a longer or non-numeric number
        # (opened with an explicit number) does not take part in choosing the next one.
        self.max_account_number = POSTGRES.compile(
            "SELECT MAX(account_number::BIGINT) FROM accounts"
            " WHERE account_number ~ '^[0-9]{1,18}$'"
        )
        self.journal = POSTGRES.compile(
            "SELECT COALESCE(MAX(entry_id), 0), COALESCE(SUM(amount), 0) FROM entries"
        )


WRITE_SQL = PostgresLedgerSql(locking=True)
READ_SQL = PostgresLedgerSql(locking=False)  # a read-only snapshot may not lock rows


class PostgresLedgerTx(SqlLedgerTx):
    """LedgerTx on one connection inside a transaction; `locking` in write transactions."""

    def __init__(self, conn: psycopg.Connection[Any], *, locking: bool) -> None:
        super().__init__(conn, WRITE_SQL if locking else READ_SQL)

    def insert_entry(self, account_number: str, amount: int, kind: str, reference: str) -> None:
        # The foreign key would take a KEY SHARE lock on the account, and the update that
        # follows would have to upgrade it: two commits on one account would deadlock.
        self.get_account(account_number)
        super().insert_entry(account_number, amount, kind, reference)

    def journal_chunk(self, since: JournalMark, limit: int) -> tuple[JournalMark, bool]:
        # No prefix stays put (see journal): the audit's one snapshot sums it all.
        return since, False

    def journal(self, since: JournalMark) -> JournalMark:
        # The whole journal, every time. entry_id comes from a sequence, whose values are
        # taken when a row is inserted, not when its transaction commits: an entry with a
        # lower id can commit after a higher one was seen, so summing only the ids above a
        # mark could leave it out forever. (The sum runs on a connection of its own, in a
        # snapshot, and does not hold up the bank's writes as it does on SQLite.)
        last, total = self._sums(READ_SQL.journal)
        return JournalMark(entry_id=int(last), total=int(total))


class PostgresLedgerStore(OnDatabase):
    def __init__(self, url: PostgresUrl, *, schema: str) -> None:
        retry_on = RETRYABLE | {UNIQUE_VIOLATION}
        self._postgres = SyncDatabase(url, schema, MIGRATIONS, retry_on=retry_on)
        super().__init__(self._postgres)

    async def transaction(self, fn: Callable[[LedgerTx], T]) -> T:
        return await self._postgres.transaction(
            lambda conn: fn(PostgresLedgerTx(conn, locking=True))
        )

    async def transactions(self, fns: Sequence[Callable[[LedgerTx], T]]) -> list[T | Exception]:
        # Each its own transaction, concurrently over the pool (which bounds them): batching
        # on PostgreSQL saves gRPC calls; the server's WAL flush groups concurrent commits.
        # Concurrent transactions of one id serialize on its row, as separate calls would.
        results = await asyncio.gather(
            *(self.transaction(fn) for fn in fns), return_exceptions=True
        )
        outcomes: list[T | Exception] = []
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, Exception):
                raise result
            outcomes.append(result)
        return outcomes

    async def read(self, fn: Callable[[LedgerTx], T]) -> T:
        return await self._postgres.read(lambda conn: fn(PostgresLedgerTx(conn, locking=False)))
