"""The bank's records as the ledger reads them: accounts, transactions, holds, sums."""

from __future__ import annotations

import dataclasses


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
class AccountHold:
    """A hold on one account, of a transaction still prepared: what an operator lists."""

    transaction_id: str
    direction: str
    amount: int
    created_at_us: int  # when the transaction was prepared, microseconds since the epoch


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
