"""The bank's LedgerTx, written once for SQLite and PostgreSQL.

LedgerTx's methods are written once, in SqlLedgerTx, over the statements of statements.py.
What each database does its own way is in its store's subclass: how the journal is summed
for the audit, and (on PostgreSQL) locking an account before an entry refers to it.
"""

from __future__ import annotations

from paygate.bank.models import AccountHold, AccountRow, HoldRow, Totals, TransactionRow
from paygate.bank.statements import ACCOUNT_HOLDS, ACCOUNTS, HOLDS, TRANSACTIONS, LedgerSql
from paygate.common.invariants import InvariantViolation
from paygate.common.sql import NO_VALUES, Connection, Row, Statement, Values


class SqlLedgerTx:
    """LedgerTx on one connection inside a transaction, for either database; its store's
    subclass adds the journal sums and what else its database does its own way."""

    def __init__(self, conn: Connection, sql: LedgerSql) -> None:
        self._conn = conn
        self._sql = sql

    def _run(self, statement: Statement, values: Values = NO_VALUES) -> None:
        self._conn.execute(statement.text, statement.args(values))

    def _one(self, statement: Statement, values: Values = NO_VALUES) -> Row | None:
        row: Row | None = self._conn.execute(statement.text, statement.args(values)).fetchone()
        return row

    def _all(self, statement: Statement, values: Values = NO_VALUES) -> list[Row]:
        rows: list[Row] = self._conn.execute(statement.text, statement.args(values)).fetchall()
        return rows

    def _sums(self, statement: Statement, values: Values = NO_VALUES) -> Row:
        """The one row of an aggregate (which has a row even over no rows at all)."""
        row = self._one(statement, values)
        if row is None:
            raise InvariantViolation(f"an aggregate returned no row: {statement}")
        return row

    def get_account(self, account_number: str) -> AccountRow | None:
        row = self._one(self._sql.account, {"account_number": account_number})
        return ACCOUNTS.from_row(row) if row else None

    def max_account_number(self) -> int | None:
        (highest,) = self._sums(self._sql.max_account_number)
        return None if highest is None else int(highest)

    def insert_account(self, account_number: str, currency: str) -> None:
        values = {"account_number": account_number, "currency": currency}
        self._run(self._sql.insert_account, values)

    def get_link_code_hash(self, account_number: str) -> str | None:
        row = self._one(self._sql.link_code_hash, {"account_number": account_number})
        return None if row is None or row[0] is None else str(row[0])

    def set_link_code_hash(self, account_number: str, link_code_hash: str) -> None:
        values = {"account_number": account_number, "link_code_hash": link_code_hash}
        self._run(self._sql.set_link_code_hash, values)

    def add_to_account(
        self, account_number: str, *, balance: int, pending_debit: int, pending_credit: int
    ) -> None:
        values = {
            "account_number": account_number,
            "balance": balance,
            "pending_debit": pending_debit,
            "pending_credit": pending_credit,
        }
        self._run(self._sql.add_to_account, values)

    def get_transaction(self, transaction_id: str) -> TransactionRow | None:
        row = self._one(self._sql.transaction, {"transaction_id": transaction_id})
        return TRANSACTIONS.from_row(row) if row else None

    def insert_transaction(
        self, transaction_id: str, state: str, legs_digest: str, reason: str
    ) -> None:
        values = {
            "transaction_id": transaction_id,
            "state": state,
            "legs_digest": legs_digest,
            "reason": reason,
        }
        self._run(self._sql.insert_transaction, values)

    def set_transaction_state(self, transaction_id: str, state: str) -> None:
        values = {"transaction_id": transaction_id, "state": state}
        self._run(self._sql.set_transaction_state, values)

    def insert_hold(self, transaction_id: str, hold: HoldRow) -> None:
        values = HOLDS.values(hold)
        values["transaction_id"] = transaction_id
        self._run(self._sql.insert_hold, values)

    def holds_of(self, transaction_id: str) -> list[HoldRow]:
        rows = self._all(self._sql.holds_of, {"transaction_id": transaction_id})
        return [HOLDS.from_row(row) for row in rows]

    def holds_on_account(self, account_number: str, after: str, limit: int) -> list[AccountHold]:
        values = {"account_number": account_number, "after": after, "limit": limit}
        statement = self._sql.holds_on_account_after if after else self._sql.holds_on_account
        return [ACCOUNT_HOLDS.from_row(row) for row in self._all(statement, values)]

    def insert_entry(self, account_number: str, amount: int, kind: str, reference: str) -> None:
        values = {
            "account_number": account_number,
            "amount": amount,
            "kind": kind,
            "reference": reference,
        }
        self._run(self._sql.insert_entry, values)

    def get_deposit(self, reference: str) -> tuple[str, int, str] | None:
        row = self._one(self._sql.deposit, {"reference": reference})
        return (str(row[0]), int(row[1]), str(row[2])) if row else None

    def insert_deposit(
        self, reference: str, account_number: str, amount: int, currency: str
    ) -> None:
        values = {
            "reference": reference,
            "account_number": account_number,
            "amount": amount,
            "currency": currency,
        }
        self._run(self._sql.insert_deposit, values)

    def journal_sum(self, account_number: str) -> int:
        (total,) = self._sums(self._sql.journal_sum, {"account_number": account_number})
        return int(total)

    def money_by_currency(self) -> dict[str, tuple[int, int]]:
        joined_sums = self._sql.dialect.joined_sums
        money = {}
        for currency, *sums in self._all(self._sql.money_by_currency):
            balance, held = joined_sums(sums)
            money[str(currency)] = (balance, held)
        return money

    def totals(self) -> Totals:
        joined_sums = self._sql.dialect.joined_sums
        balance, pending_debit, pending_credit = joined_sums(self._sums(self._sql.account_totals))
        count, *holds = self._sums(self._sql.hold_totals)
        debit, credit = joined_sums(holds)
        return Totals(
            balance=balance,
            pending_debit=pending_debit,
            pending_credit=pending_credit,
            prepared_debit_holds=debit,
            prepared_credit_holds=credit,
            prepared_transactions=int(count),
        )
