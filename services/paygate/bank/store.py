"""The bank's storage: SQL behind the narrow LedgerTx interface that ledger.py uses.

A LedgerStore runs a function inside one database transaction and hands it a LedgerTx
whose methods are single SQL statements. The ledger's rules live in ledger.py; nothing
here decides anything about money. LedgerTx's statements are written once, for SQLite and
PostgreSQL, in store_sql.py; SqliteLedgerStore runs them on one SQLite file.
"""

from __future__ import annotations

import pathlib
import sqlite3
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

from paygate.bank.models import AccountHold as AccountHold
from paygate.bank.models import AccountRow as AccountRow
from paygate.bank.models import HoldRow as HoldRow
from paygate.bank.models import JournalMark as JournalMark
from paygate.bank.models import Totals as Totals
from paygate.bank.models import TransactionRow as TransactionRow
from paygate.bank.schema import SQLITE_MIGRATIONS as MIGRATIONS
from paygate.bank.statements import LedgerSql
from paygate.bank.store_sql import SqlLedgerTx
from paygate.common.sql import SQLITE, OnDatabase
from paygate.common.sqlite import Database

T = TypeVar("T")


class LedgerTx(Protocol):
    """The statements the ledger may run inside one transaction."""

    def get_account(self, account_number: str) -> AccountRow | None: ...
    def max_account_number(self) -> int | None: ...
    def insert_account(self, account_number: str, currency: str) -> None: ...
    def get_link_code_hash(self, account_number: str) -> str | None: ...
    def set_link_code_hash(self, account_number: str, link_code_hash: str) -> None: ...
    def add_to_account(
        self, account_number: str, *, balance: int, pending_debit: int, pending_credit: int
    ) -> None: ...
    def get_transaction(self, transaction_id: str) -> TransactionRow | None: ...
    def insert_transaction(
        self, transaction_id: str, state: str, legs_digest: str, reason: str
    ) -> None: ...
    def set_transaction_state(self, transaction_id: str, state: str) -> None: ...
    def insert_hold(self, transaction_id: str, hold: HoldRow) -> None: ...
    def holds_of(self, transaction_id: str) -> list[HoldRow]: ...
    def holds_on_account(self, account_number: str, after: str, limit: int) -> list[AccountHold]:
        """Up to `limit` holds of prepared transactions on the account, oldest first (then by
        transaction id), after those of the transaction `after` ("": from the first)."""
        ...
    def insert_entry(self, account_number: str, amount: int, kind: str, reference: str) -> None: ...
    def get_deposit(self, reference: str) -> tuple[str, int, str] | None: ...
    def insert_deposit(
        self, reference: str, account_number: str, amount: int, currency: str
    ) -> None: ...
    def journal_sum(self, account_number: str) -> int: ...
    def totals(self) -> Totals: ...
    def money_by_currency(self) -> dict[str, tuple[int, int]]:
        """Per currency: the sum of posted balances and of pending debits (for metrics:
        amounts in different currencies are never added up)."""
        ...
    def journal(self, since: JournalMark) -> JournalMark:
        """The journal summed up to its last entry, reading only what follows `since` where
        the store can tell that nothing before it can still appear."""
        ...
    def journal_chunk(self, since: JournalMark, limit: int) -> tuple[JournalMark, bool]:
        """The journal summed past `since` over at most `limit` more entries, and whether
        more follow; (since, False) where the store cannot sum a prefix that stays put (then
        `journal` sums it all)."""
        ...


class LedgerStore(Protocol):
    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def transaction(self, fn: Callable[[LedgerTx], T]) -> T: ...
    async def transactions(self, fns: Sequence[Callable[[LedgerTx], T]]) -> list[T | Exception]:
        """Run each fn as its own transaction, in order; each one's result or exception."""
        ...

    async def read(self, fn: Callable[[LedgerTx], T]) -> T: ...
    async def healthy(self) -> bool: ...


class SqliteLedgerSql(LedgerSql):
    def __init__(self) -> None:
        super().__init__(SQLITE, locking=False)  # one writer at a time: nothing to lock
        sql = SQLITE.compile
        exact_sum = SQLITE.exact_sum
        self.max_account_number = sql("SELECT MAX(CAST(account_number AS INTEGER)) FROM accounts")
        self.last_entry = sql("SELECT MAX(entry_id) FROM entries")
        self.journal_since = sql(
            f"SELECT MAX(entry_id), {exact_sum('amount')} FROM entries WHERE entry_id > :entry_id"
        )
        # The next `limit` entries after a mark, summed: the full audit reads the journal this
        # way, a bounded read at a time, so that the bank's writes go on between its reads.
        self.journal_chunk = sql(
            f"SELECT MAX(entry_id), COUNT(*), {exact_sum('amount')} FROM (SELECT entry_id,"
            " amount FROM entries WHERE entry_id > :entry_id ORDER BY entry_id LIMIT :limit)"
        )


SQL = SqliteLedgerSql()
JOURNAL_SINCE_SQL = SQL.journal_since.text  # its plan is checked by a test


class SqliteLedgerTx(SqlLedgerTx):
    def __init__(self, conn: sqlite3.Connection) -> None:
        super().__init__(conn, SQL)

    def journal(self, since: JournalMark) -> JournalMark:
        # One writer appends entries, each with the next rowid (none is ever deleted), and a
        # reader's snapshot holds a prefix of them: nothing at or below since.entry_id can
        # appear after the pass that set it. A range search on the primary key.
        (highest,) = self._sums(SQL.last_entry)
        if highest is None or highest < since.entry_id:
            since = JournalMark()  # entries were removed behind the bank's back: sum them all
        last, *parts = self._sums(SQL.journal_since, {"entry_id": since.entry_id})
        if last is None:
            return since
        [added] = SQLITE.joined_sums(parts)
        return JournalMark(entry_id=last, total=since.total + added)

    def journal_chunk(self, since: JournalMark, limit: int) -> tuple[JournalMark, bool]:
        # Entries are only ever appended, each with the next rowid: a prefix summed once
        # stays summed, whatever is written between two chunks.
        values = {"entry_id": since.entry_id, "limit": limit}
        last, count, *parts = self._sums(SQL.journal_chunk, values)
        if last is None:
            return since, False
        [added] = SQLITE.joined_sums(parts)
        return JournalMark(entry_id=last, total=since.total + added), count == limit


class SqliteLedgerStore(OnDatabase):
    def __init__(self, path: pathlib.Path) -> None:
        self._sqlite = Database(path, MIGRATIONS)
        super().__init__(self._sqlite)

    async def transaction(self, fn: Callable[[LedgerTx], T]) -> T:
        return await self._sqlite.transaction(_on_sqlite(fn))

    async def transactions(self, fns: Sequence[Callable[[LedgerTx], T]]) -> list[T | Exception]:
        # One group commit for the batch: every fn in a savepoint of one SQLite transaction.
        return await self._sqlite.transactions([_on_sqlite(fn) for fn in fns])

    async def read(self, fn: Callable[[LedgerTx], T]) -> T:
        return await self._sqlite.read(_on_sqlite(fn))


def _on_sqlite(fn: Callable[[LedgerTx], T]) -> Callable[[sqlite3.Connection], T]:
    return lambda conn: fn(SqliteLedgerTx(conn))
