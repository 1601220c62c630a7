"""The bank's storage on PostgreSQL: LedgerStore and LedgerTx over a pool of connections.

ledger.py's rules are synchronous functions of a LedgerTx; PostgresLedgerStore runs each in
a worker thread, on a connection of a bounded psycopg pool, inside one transaction.

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
from typing import TypeVar

import psycopg

from paygate.bank.store import (
    AccountRow,
    HoldRow,
    JournalMark,
    LedgerTx,
    Totals,
    TransactionRow,
)
from paygate.common.database_url import PostgresUrl
from paygate.common.postgres import RETRYABLE, UNIQUE_VIOLATION, SyncDatabase

T = TypeVar("T")

MIGRATIONS = [
    # 1: accounts, two-phase transactions with their holds, the journal of posted money.
    """
    CREATE TABLE accounts (
        account_number TEXT PRIMARY KEY,
        currency TEXT NOT NULL,
        balance BIGINT NOT NULL CHECK (balance >= 0),
        pending_debit BIGINT NOT NULL DEFAULT 0 CHECK (pending_debit >= 0),
        pending_credit BIGINT NOT NULL DEFAULT 0 CHECK (pending_credit >= 0),
        created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        CHECK (balance - pending_debit >= 0)
    );
    CREATE TABLE transactions (
        transaction_id TEXT PRIMARY KEY,
        state TEXT NOT NULL CHECK (state IN ('prepared', 'refused', 'committed', 'aborted')),
        legs_digest TEXT NOT NULL,
        reason TEXT NOT NULL DEFAULT '',
        created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        resolved_at TIMESTAMPTZ
    );
    CREATE INDEX transactions_prepared ON transactions (state) WHERE state = 'prepared';
    CREATE TABLE holds (
        transaction_id TEXT NOT NULL REFERENCES transactions (transaction_id),
        account_number TEXT NOT NULL REFERENCES accounts (account_number),
        direction TEXT NOT NULL CHECK (direction IN ('debit', 'credit')),
        amount BIGINT NOT NULL CHECK (amount > 0),
        PRIMARY KEY (transaction_id, account_number, direction)
    );
    CREATE TABLE entries (
        entry_id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        account_number TEXT NOT NULL REFERENCES accounts (account_number),
        amount BIGINT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('open', 'deposit', 'debit', 'credit')),
        reference TEXT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now()
    );
    CREATE INDEX entries_account ON entries (account_number);
    CREATE TABLE deposits (
        reference TEXT PRIMARY KEY,
        account_number TEXT NOT NULL REFERENCES accounts (account_number),
        amount BIGINT NOT NULL CHECK (amount > 0),
        currency TEXT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now()
    )
    """,
    # 2: the hash of each account's link code (NULL: none yet).
    """
    ALTER TABLE accounts ADD COLUMN link_code_hash TEXT
    """,
]

# Account numbers the bank assigns are decimal; a longer or non-numeric number (opened with
# an explicit number) does not take part in choosing the next one.
_NUMERIC_ACCOUNT = "account_number ~ '^[0-9]{1,18}$'"


class PostgresLedgerTx:
    """LedgerTx on one connection inside a transaction; `locking` in write transactions."""

    def __init__(self, conn: psycopg.Connection, *, locking: bool) -> None:
        self._conn = conn
        self._for_update = " FOR UPDATE" if locking else ""

    def get_account(self, account_number: str) -> AccountRow | None:
        row = self._conn.execute(
            "SELECT account_number, currency, balance, pending_debit, pending_credit"
            " FROM accounts WHERE account_number = %s" + self._for_update,
            (account_number,),
        ).fetchone()
        return AccountRow(*row) if row else None

    def max_account_number(self) -> int | None:
        row = self._conn.execute(
            f"SELECT MAX(account_number::BIGINT) FROM accounts WHERE {_NUMERIC_ACCOUNT}"
        ).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def insert_account(self, account_number: str, currency: str) -> None:
        self._conn.execute(
            "INSERT INTO accounts (account_number, currency, balance) VALUES (%s, %s, 0)",
            (account_number, currency),
        )

    def get_link_code_hash(self, account_number: str) -> str | None:
        row = self._conn.execute(
            "SELECT link_code_hash FROM accounts WHERE account_number = %s", (account_number,)
        ).fetchone()
        return None if row is None or row[0] is None else str(row[0])

    def set_link_code_hash(self, account_number: str, link_code_hash: str) -> None:
        self._conn.execute(
            "UPDATE accounts SET link_code_hash = %s WHERE account_number = %s",
            (link_code_hash, account_number),
        )

    def add_to_account(
        self, account_number: str, *, balance: int, pending_debit: int, pending_credit: int
    ) -> None:
        self._conn.execute(
            "UPDATE accounts SET balance = balance + %s, pending_debit = pending_debit + %s,"
            " pending_credit = pending_credit + %s WHERE account_number = %s",
            (balance, pending_debit, pending_credit, account_number),
        )

    def get_transaction(self, transaction_id: str) -> TransactionRow | None:
        row = self._conn.execute(
            "SELECT transaction_id, state, legs_digest, reason FROM transactions"
            " WHERE transaction_id = %s" + self._for_update,
            (transaction_id,),
        ).fetchone()
        return TransactionRow(*row) if row else None

    def insert_transaction(
        self, transaction_id: str, state: str, legs_digest: str, reason: str
    ) -> None:
        self._conn.execute(
            "INSERT INTO transactions (transaction_id, state, legs_digest, reason, resolved_at)"
            " VALUES (%s, %s, %s, %s, CASE WHEN %s THEN NULL ELSE now() END)",
            (transaction_id, state, legs_digest, reason, state == "prepared"),
        )

    def set_transaction_state(self, transaction_id: str, state: str) -> None:
        self._conn.execute(
            "UPDATE transactions SET state = %s, resolved_at = now() WHERE transaction_id = %s",
            (state, transaction_id),
        )

    def insert_hold(self, transaction_id: str, hold: HoldRow) -> None:
        self._conn.execute(
            "INSERT INTO holds (transaction_id, account_number, direction, amount)"
            " VALUES (%s, %s, %s, %s)",
            (transaction_id, hold.account_number, hold.direction, hold.amount),
        )

    def holds_of(self, transaction_id: str) -> list[HoldRow]:
        rows = self._conn.execute(
            "SELECT account_number, direction, amount FROM holds WHERE transaction_id = %s"
            ' ORDER BY account_number COLLATE "C", direction',
            (transaction_id,),
        ).fetchall()
        return [HoldRow(*row) for row in rows]

    def insert_entry(self, account_number: str, amount: int, kind: str, reference: str) -> None:
        # The foreign key would take a KEY SHARE lock on the account, and the update that
        # follows would have to upgrade it: two commits on one account would deadlock.
        self.get_account(account_number)
        self._conn.execute(
            "INSERT INTO entries (account_number, amount, kind, reference) VALUES (%s, %s, %s, %s)",
            (account_number, amount, kind, reference),
        )

    def get_deposit(self, reference: str) -> tuple[str, int, str] | None:
        row = self._conn.execute(
            "SELECT account_number, amount, currency FROM deposits WHERE reference = %s",
            (reference,),
        ).fetchone()
        return (row[0], int(row[1]), row[2]) if row else None

    def insert_deposit(
        self, reference: str, account_number: str, amount: int, currency: str
    ) -> None:
        self._conn.execute(
            "INSERT INTO deposits (reference, account_number, amount, currency)"
            " VALUES (%s, %s, %s, %s)",
            (reference, account_number, amount, currency),
        )

    def journal_sum(self, account_number: str) -> int:
        row = self._conn.execute(
            "SELECT COALESCE(SUM(amount), 0) FROM entries WHERE account_number = %s",
            (account_number,),
        ).fetchone()
        return int(row[0]) if row else 0

    def money_by_currency(self) -> dict[str, tuple[int, int]]:
        rows = self._conn.execute(
            "SELECT currency, SUM(balance), SUM(pending_debit) FROM accounts GROUP BY currency"
        ).fetchall()
        return {str(currency): (int(balance), int(held)) for currency, balance, held in rows}

    def totals(self) -> Totals:
        # SUM of BIGINT is NUMERIC in PostgreSQL: int() brings every sum back to int.
        balance, pending_debit, pending_credit = self._one(
            "SELECT COALESCE(SUM(balance), 0), COALESCE(SUM(pending_debit), 0),"
            " COALESCE(SUM(pending_credit), 0) FROM accounts"
        )
        debit, credit, count = self._one(
            "SELECT COALESCE(SUM(CASE WHEN h.direction = 'debit' THEN h.amount END), 0),"
            " COALESCE(SUM(CASE WHEN h.direction = 'credit' THEN h.amount END), 0),"
            " COUNT(DISTINCT t.transaction_id)"
            " FROM transactions t JOIN holds h ON h.transaction_id = t.transaction_id"
            " WHERE t.state = 'prepared'"
        )
        return Totals(
            balance=balance,
            pending_debit=pending_debit,
            pending_credit=pending_credit,
            prepared_debit_holds=debit,
            prepared_credit_holds=credit,
            prepared_transactions=count,
        )

    def journal_chunk(self, since: JournalMark, limit: int) -> tuple[JournalMark, bool]:
        # No prefix stays put (see journal): the audit's one snapshot sums it all.
        return since, False

    def journal(self, since: JournalMark) -> JournalMark:
        # The whole journal, every time. entry_id comes from a sequence, whose values are
        # taken when a row is inserted, not when its transaction commits: an entry with a
        # lower id can commit after a higher one was seen, so summing only the ids above a
        # mark could leave it out forever. (The sum runs on a connection of its own, in a
        # snapshot, and does not hold up the bank's writes as it does on SQLite.)
        last, total = self._one(
            "SELECT COALESCE(MAX(entry_id), 0), COALESCE(SUM(amount), 0) FROM entries"
        )
        return JournalMark(entry_id=last, total=total)

    def _one(self, sql: str) -> list[int]:
        row = self._conn.execute(sql).fetchone()
        return [int(value) for value in row] if row else []


class PostgresLedgerStore:
    def __init__(self, url: PostgresUrl, *, schema: str) -> None:
        self._db = SyncDatabase(url, schema, MIGRATIONS, retry_on=RETRYABLE | {UNIQUE_VIOLATION})

    async def open(self) -> None:
        await self._db.open()

    async def close(self) -> None:
        await self._db.close()

    async def transaction(self, fn: Callable[[LedgerTx], T]) -> T:
        return await self._db.transaction(lambda conn: fn(PostgresLedgerTx(conn, locking=True)))

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
        return await self._db.read(lambda conn: fn(PostgresLedgerTx(conn, locking=False)))

    async def healthy(self) -> bool:
        return await self._db.healthy()
