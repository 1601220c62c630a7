"""The bank's tables and statements, each written once for SQLite and PostgreSQL.

ACCOUNTS, TRANSACTIONS and HOLDS declare the columns the ledger reads, each with the field
of the record it holds (common/sql.py's Table), and ACCOUNT_HOLDS those of an account's open
holds, which operators list; LedgerSql holds the statements both
databases share, written with named parameters and compiled for one dialect. Each store
adds its own (store.py, store_postgres.py): which account numbers are numeric, and how the
audit sums the journal.
"""

from __future__ import annotations

import datetime

from paygate.bank.models import AccountHold, AccountRow, HoldRow, TransactionRow
from paygate.common.sql import Column, Dialect, Statement, Table

ACCOUNTS = Table(
    "accounts",
    AccountRow,
    ("account_number", "currency", "balance", "pending_debit", "pending_credit"),
)
TRANSACTIONS = Table(
    "transactions", TransactionRow, ("transaction_id", "state", "legs_digest", "reason")
)
HOLDS = Table("holds", HoldRow, ("account_number", "direction", "amount"))  # of a transaction

_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
_MICROSECOND = datetime.timedelta(microseconds=1)


def microseconds(value: datetime.datetime | str) -> int:
    """A time of a write (Dialect.now) in microseconds since the epoch: PostgreSQL's
    TIMESTAMPTZ arrives as a datetime, SQLite's as ISO 8601 text with its offset."""
    if isinstance(value, str):
        value = datetime.datetime.fromisoformat(value)
    return (value - _EPOCH) // _MICROSECOND


# The holds of prepared transactions on one account: holds joined with their transaction
# (USING: transaction_id is one column of the join).
ACCOUNT_HOLDS = Table(
    "holds",
    AccountHold,
    ("transaction_id", "direction", "amount", Column("created_at", "created_at_us", microseconds)),
)

_DEBIT_HOLDS = "CASE WHEN h.direction = 'debit' THEN h.amount END"
_CREDIT_HOLDS = "CASE WHEN h.direction = 'credit' THEN h.amount END"


class LedgerSql:
    """The bank's statements in one dialect; `locking`: a write transaction's, whose reads
    lock the rows they return (where the database needs it: PostgreSQL)."""

    max_account_number: Statement  # each dialect's own

    def __init__(self, d: Dialect, *, locking: bool) -> None:
        sql = d.compile
        lock = d.for_update if locking else ""
        self.dialect = d
        self.account = sql(
            f"SELECT {ACCOUNTS.columns} FROM accounts WHERE account_number = :account_number{lock}"
        )
        self.insert_account = sql(
            "INSERT INTO accounts (account_number, currency, balance, created_at)"
            f" VALUES (:account_number, :currency, 0, {d.now})"
        )
        self.link_code_hash = sql(
            "SELECT link_code_hash FROM accounts WHERE account_number = :account_number"
        )
        self.set_link_code_hash = sql(
            "UPDATE accounts SET link_code_hash = :link_code_hash"
            " WHERE account_number = :account_number"
        )
        self.add_to_account = sql(
            "UPDATE accounts SET balance = balance + :balance,"
            " pending_debit = pending_debit + :pending_debit,"
            " pending_credit = pending_credit + :pending_credit"
            " WHERE account_number = :account_number"
        )
        self.transaction = sql(
            f"SELECT {TRANSACTIONS.columns} FROM transactions"
            f" WHERE transaction_id = :transaction_id{lock}"
        )
        self.insert_transaction = sql(
            f"INSERT INTO transactions ({TRANSACTIONS.columns}, created_at, resolved_at)"
            f" VALUES ({TRANSACTIONS.params}, {d.now},"
            f" CASE WHEN :state = 'prepared' THEN NULL ELSE {d.now} END)"
        )
        self.set_transaction_state = sql(
            f"UPDATE transactions SET state = :state, resolved_at = {d.now}"
            " WHERE transaction_id = :transaction_id"
        )
        self.insert_hold = sql(
            f"INSERT INTO holds (transaction_id, {HOLDS.columns})"
            f" VALUES (:transaction_id, {HOLDS.params})"
        )
        # In the order the ledger locks accounts in: Python's string order.
        self.holds_of = sql(
            f"SELECT {HOLDS.columns} FROM holds WHERE transaction_id = :transaction_id"
            f" ORDER BY account_number{d.bytewise}, direction"
        )
        # A page of an account's open holds, oldest first, then by transaction id; the next
        # page starts after the transaction `after` (the previous page's last). The prepared
        # transactions are found by their partial index: the cost is bounded by how many are
        # prepared at the bank, not by its history.
        holds_of_prepared = "holds JOIN transactions USING (transaction_id)"
        on_account = "account_number = :account_number AND state = 'prepared'"
        page = f" ORDER BY created_at, transaction_id{d.bytewise} LIMIT :limit"
        self.holds_on_account = sql(
            f"SELECT {ACCOUNT_HOLDS.columns} FROM {holds_of_prepared} WHERE {on_account}{page}"
        )
        self.holds_on_account_after = sql(
            "WITH mark AS (SELECT created_at AS at FROM transactions"
            " WHERE transaction_id = :after)"
            f" SELECT {ACCOUNT_HOLDS.columns} FROM mark, {holds_of_prepared}"
            f" WHERE {on_account} AND (created_at > mark.at"
            f" OR (created_at = mark.at AND transaction_id{d.bytewise} > :after)){page}"
        )
        self.insert_entry = sql(
            "INSERT INTO entries (account_number, amount, kind, reference, created_at)"
            f" VALUES (:account_number, :amount, :kind, :reference, {d.now})"
        )
        self.deposit = sql(
            "SELECT account_number, amount, currency FROM deposits WHERE reference = :reference"
        )
        self.insert_deposit = sql(
            "INSERT INTO deposits (reference, account_number, amount, currency, created_at)"
            f" VALUES (:reference, :account_number, :amount, :currency, {d.now})"
        )
        self.journal_sum = sql(
            "SELECT COALESCE(SUM(amount), 0) FROM entries WHERE account_number = :account_number"
        )
        # Bank-wide sums, exact past 2^63 (Dialect.exact_sum).
        self.money_by_currency = sql(
            f"SELECT currency, {d.exact_sum('balance')}, {d.exact_sum('pending_debit')}"
            " FROM accounts GROUP BY currency"
        )
        self.account_totals = sql(
            f"SELECT {d.exact_sum('balance')}, {d.exact_sum('pending_debit')},"
            f" {d.exact_sum('pending_credit')} FROM accounts"
        )
        self.hold_totals = sql(
            "SELECT COUNT(DISTINCT t.transaction_id),"
            f" {d.exact_sum(_DEBIT_HOLDS)}, {d.exact_sum(_CREDIT_HOLDS)}"
            " FROM transactions t JOIN holds h ON h.transaction_id = t.transaction_id"
            " WHERE t.state = 'prepared'"
        )
