"""The bank's storage: SQL behind the narrow LedgerTx interface that ledger.py uses.

A LedgerStore runs a function inside one database transaction and hands it a LedgerTx
whose methods are single SQL statements. The ledger's rules live in ledger.py; nothing
here decides anything about money.
"""

from __future__ import annotations

import dataclasses
import datetime
import pathlib
import sqlite3
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

from paygate.common.sqlite import Database

T = TypeVar("T")

MIGRATIONS = [
    # 1: accounts, two-phase transactions with their holds, the journal of posted money.
    """
    CREATE TABLE accounts (
        account_number TEXT PRIMARY KEY,
        currency TEXT NOT NULL,
        balance INTEGER NOT NULL CHECK (balance >= 0),
        pending_debit INTEGER NOT NULL DEFAULT 0 CHECK (pending_debit >= 0),
        pending_credit INTEGER NOT NULL DEFAULT 0 CHECK (pending_credit >= 0),
        created_at TEXT NOT NULL,
        CHECK (balance - pending_debit >= 0)
    );
    CREATE TABLE transactions (
        transaction_id TEXT PRIMARY KEY,
        state TEXT NOT NULL CHECK (state IN ('prepared', 'refused', 'committed', 'aborted')),
        legs_digest TEXT NOT NULL,
        reason TEXT NOT NULL DEFAULT '',
        created_at TEXT NOT NULL,
        resolved_at TEXT
    );
    CREATE INDEX transactions_prepared ON transactions (state) WHERE state = 'prepared';
    CREATE TABLE holds (
        transaction_id TEXT NOT NULL REFERENCES transactions (transaction_id),
        account_number TEXT NOT NULL REFERENCES accounts (account_number),
        direction TEXT NOT NULL CHECK (direction IN ('debit', 'credit')),
        amount INTEGER NOT NULL CHECK (amount > 0),
        PRIMARY KEY (transaction_id, account_number, direction)
    );
    CREATE TABLE entries (
        entry_id INTEGER PRIMARY KEY,
        account_number TEXT NOT NULL REFERENCES accounts (account_number),
        amount INTEGER NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('open', 'deposit', 'debit', 'credit')),
        reference TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE INDEX entries_account ON entries (account_number);
    CREATE TABLE deposits (
        reference TEXT PRIMARY KEY,
        account_number TEXT NOT NULL REFERENCES accounts (account_number),
        amount INTEGER NOT NULL CHECK (amount > 0),
        currency TEXT NOT NULL,
        created_at TEXT NOT NULL
    )
    """,
    # 2: the hash of each account's link code, the holder's proof at registration (NULL:
    # no code yet; the account cannot be linked until an operator issues one).
    """
    ALTER TABLE accounts ADD COLUMN link_code_hash TEXT
    """,
]


@dataclasses.dataclass(frozen=True)
class AccountRow:
    account_number: str
    currency: str
    balance: int
    pending_debit: int
    pending_credit: int

    @property
    def available(self) -> int:
        return self.balance - self.pending_debit


@dataclasses.dataclass(frozen=True)
class TransactionRow:
    transaction_id: str
    state: str
    legs_digest: str
    reason: str


@dataclasses.dataclass(frozen=True)
class HoldRow:
    account_number: str
    direction: str
    amount: int


@dataclasses.dataclass(frozen=True)
class Totals:
    """Bank-wide sums over the accounts and the prepared holds, for the audit and metrics.

    Each is bounded by the number of accounts or of prepared transactions, not by history.
    """

    balance: int
    pending_debit: int
    pending_credit: int
    prepared_debit_holds: int
    prepared_credit_holds: int
    prepared_transactions: int


@dataclasses.dataclass(frozen=True)
class JournalMark:
    """How far the journal has been summed: every entry up to `entry_id`, and their total.

    The journal only grows (entries are never updated or deleted), so the audit keeps the
    mark of its last pass and reads only the entries after it (LedgerTx.journal).
    """

    entry_id: int = 0
    total: int = 0


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


# SQLite's SUM fails on passing a signed 64-bit integer, and a bank's total can (each account
# may hold up to ledger.MAX_BALANCE_MINOR, and there may be many). So a bank-wide sum is
# taken in two parts, the quotient and the remainder of each value by SUM_SPLIT, which
# cannot overflow below a billion rows, and the parts are joined in Python: exact at any size.
SUM_SPLIT = 10**9


def exact_sum(expression: str) -> str:
    """The two columns of an exact sum of `expression`; join them with `joined_sums`."""
    return (
        f"COALESCE(SUM(({expression}) / {SUM_SPLIT}), 0),"
        f" COALESCE(SUM(({expression}) % {SUM_SPLIT}), 0)"
    )


def joined_sums(parts: Sequence[int]) -> list[int]:
    """[quotient, remainder, quotient, remainder, ...] -> the sums. SQLite's integer `/`
    truncates toward zero and `%` takes the dividend's sign, so q * SUM_SPLIT + r is exact
    for negative values too."""
    return [q * SUM_SPLIT + r for q, r in zip(parts[0::2], parts[1::2], strict=True)]


JOURNAL_SINCE_SQL = (
    f"SELECT MAX(entry_id), {exact_sum('amount')} FROM entries WHERE entry_id > ?"
)
# The next `limit` entries after a mark, summed: the full audit reads the journal this way,
# a bounded read at a time, so that the bank's writes go on between its reads.
JOURNAL_CHUNK_SQL = (
    f"SELECT MAX(entry_id), COUNT(*), {exact_sum('amount')} FROM"
    " (SELECT entry_id, amount FROM entries WHERE entry_id > ? ORDER BY entry_id LIMIT ?)"
)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat()


class SqliteLedgerTx:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def get_account(self, account_number: str) -> AccountRow | None:
        row = self._conn.execute(
            "SELECT account_number, currency, balance, pending_debit, pending_credit"
            " FROM accounts WHERE account_number = ?",
            (account_number,),
        ).fetchone()
        return AccountRow(*row) if row else None

    def max_account_number(self) -> int | None:
        row = self._conn.execute(
            "SELECT MAX(CAST(account_number AS INTEGER)) FROM accounts"
        ).fetchone()
        return None if row[0] is None else int(row[0])

    def insert_account(self, account_number: str, currency: str) -> None:
        self._conn.execute(
            "INSERT INTO accounts (account_number, currency, balance, created_at)"
            " VALUES (?, ?, 0, ?)",
            (account_number, currency, _now()),
        )

    def get_link_code_hash(self, account_number: str) -> str | None:
        row = self._conn.execute(
            "SELECT link_code_hash FROM accounts WHERE account_number = ?", (account_number,)
        ).fetchone()
        return None if row is None or row[0] is None else str(row[0])

    def set_link_code_hash(self, account_number: str, link_code_hash: str) -> None:
        self._conn.execute(
            "UPDATE accounts SET link_code_hash = ? WHERE account_number = ?",
            (link_code_hash, account_number),
        )

    def add_to_account(
        self, account_number: str, *, balance: int, pending_debit: int, pending_credit: int
    ) -> None:
        self._conn.execute(
            "UPDATE accounts SET balance = balance + ?, pending_debit = pending_debit + ?,"
            " pending_credit = pending_credit + ? WHERE account_number = ?",
            (balance, pending_debit, pending_credit, account_number),
        )

    def get_transaction(self, transaction_id: str) -> TransactionRow | None:
        row = self._conn.execute(
            "SELECT transaction_id, state, legs_digest, reason FROM transactions"
            " WHERE transaction_id = ?",
            (transaction_id,),
        ).fetchone()
        return TransactionRow(*row) if row else None

    def insert_transaction(
        self, transaction_id: str, state: str, legs_digest: str, reason: str
    ) -> None:
        resolved = None if state == "prepared" else _now()
        self._conn.execute(
            "INSERT INTO transactions (transaction_id, state, legs_digest, reason, created_at,"
            " resolved_at) VALUES (?, ?, ?, ?, ?, ?)",
            (transaction_id, state, legs_digest, reason, _now(), resolved),
        )

    def set_transaction_state(self, transaction_id: str, state: str) -> None:
        self._conn.execute(
            "UPDATE transactions SET state = ?, resolved_at = ? WHERE transaction_id = ?",
            (state, _now(), transaction_id),
        )

    def insert_hold(self, transaction_id: str, hold: HoldRow) -> None:
        self._conn.execute(
            "INSERT INTO holds (transaction_id, account_number, direction, amount)"
            " VALUES (?, ?, ?, ?)",
            (transaction_id, hold.account_number, hold.direction, hold.amount),
        )

    def holds_of(self, transaction_id: str) -> list[HoldRow]:
        rows = self._conn.execute(
            "SELECT account_number, direction, amount FROM holds WHERE transaction_id = ?"
            " ORDER BY account_number, direction",
            (transaction_id,),
        ).fetchall()
        return [HoldRow(*row) for row in rows]

    def insert_entry(self, account_number: str, amount: int, kind: str, reference: str) -> None:
        self._conn.execute(
            "INSERT INTO entries (account_number, amount, kind, reference, created_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (account_number, amount, kind, reference, _now()),
        )

    def get_deposit(self, reference: str) -> tuple[str, int, str] | None:
        row = self._conn.execute(
            "SELECT account_number, amount, currency FROM deposits WHERE reference = ?",
            (reference,),
        ).fetchone()
        return (row[0], row[1], row[2]) if row else None

    def insert_deposit(
        self, reference: str, account_number: str, amount: int, currency: str
    ) -> None:
        self._conn.execute(
            "INSERT INTO deposits (reference, account_number, amount, currency, created_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (reference, account_number, amount, currency, _now()),
        )

    def journal_sum(self, account_number: str) -> int:
        row = self._conn.execute(
            "SELECT COALESCE(SUM(amount), 0) FROM entries WHERE account_number = ?",
            (account_number,),
        ).fetchone()
        return int(row[0])

    def money_by_currency(self) -> dict[str, tuple[int, int]]:
        rows = self._conn.execute(
            f"SELECT currency, {exact_sum('balance')}, {exact_sum('pending_debit')}"
            " FROM accounts GROUP BY currency"
        ).fetchall()
        money = {}
        for currency, *parts in rows:
            balance, held = joined_sums(parts)
            money[str(currency)] = (balance, held)
        return money

    def totals(self) -> Totals:
        balance, pending_debit, pending_credit = joined_sums(
            self._conn.execute(
                f"SELECT {exact_sum('balance')}, {exact_sum('pending_debit')},"
                f" {exact_sum('pending_credit')} FROM accounts"
            ).fetchone()
        )
        debit_holds = "CASE WHEN h.direction = 'debit' THEN h.amount END"
        credit_holds = "CASE WHEN h.direction = 'credit' THEN h.amount END"
        *parts, count = self._conn.execute(
            f"SELECT {exact_sum(debit_holds)}, {exact_sum(credit_holds)},"
            " COUNT(DISTINCT t.transaction_id)"
            " FROM transactions t JOIN holds h ON h.transaction_id = t.transaction_id"
            " WHERE t.state = 'prepared'"
        ).fetchone()
        debit, credit = joined_sums(parts)
        return Totals(
            balance=balance,
            pending_debit=pending_debit,
            pending_credit=pending_credit,
            prepared_debit_holds=debit,
            prepared_credit_holds=credit,
            prepared_transactions=count,
        )

    def journal(self, since: JournalMark) -> JournalMark:
        # One writer appends entries, each with the next rowid (none is ever deleted), and a
        # reader's snapshot holds a prefix of them: nothing at or below since.entry_id can
        # appear after the pass that set it. A range search on the primary key.
        (highest,) = self._conn.execute("SELECT MAX(entry_id) FROM entries").fetchone()
        if highest is None or highest < since.entry_id:
            since = JournalMark()  # entries were removed behind the bank's back: sum them all
        last, *parts = self._conn.execute(JOURNAL_SINCE_SQL, (since.entry_id,)).fetchone()
        if last is None:
            return since
        [added] = joined_sums(parts)
        return JournalMark(entry_id=last, total=since.total + added)

    def journal_chunk(self, since: JournalMark, limit: int) -> tuple[JournalMark, bool]:
        # Entries are only ever appended, each with the next rowid: a prefix summed once
        # stays summed, whatever is written between two chunks.
        last, count, *parts = self._conn.execute(
            JOURNAL_CHUNK_SQL, (since.entry_id, limit)
        ).fetchone()
        if last is None:
            return since, False
        [added] = joined_sums(parts)
        return JournalMark(entry_id=last, total=since.total + added), count == limit


class SqliteLedgerStore:
    def __init__(self, path: pathlib.Path) -> None:
        self._db = Database(path, MIGRATIONS)

    async def open(self) -> None:
        await self._db.open()

    async def close(self) -> None:
        await self._db.close()

    async def transaction(self, fn: Callable[[LedgerTx], T]) -> T:
        return await self._db.transaction(lambda conn: fn(SqliteLedgerTx(conn)))

    async def transactions(self, fns: Sequence[Callable[[LedgerTx], T]]) -> list[T | Exception]:
        # One group commit for the batch: every fn in a savepoint of one SQLite transaction.
        return await self._db.transactions([_on_sqlite(fn) for fn in fns])

    async def read(self, fn: Callable[[LedgerTx], T]) -> T:
        return await self._db.read(lambda conn: fn(SqliteLedgerTx(conn)))

    async def healthy(self) -> bool:
        return await self._db.healthy()


def _on_sqlite(fn: Callable[[LedgerTx], T]) -> Callable[[sqlite3.Connection], T]:
    return lambda conn: fn(SqliteLedgerTx(conn))
