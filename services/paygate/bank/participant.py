"""Participant: the bank's ledger operations as async calls, each one database transaction.

It runs the rules of ledger.py inside the store's transactions, marks the crash points
around the writes of the two-phase commit, and audits the whole ledger at start and
periodically (a failed audit makes the bank report NOT_SERVING).

Metrics: holds resolved are counted as they resolve; the holds and money gauges are set
from the ledger's totals by refresh_metrics(), which the bank calls periodically.
"""

from __future__ import annotations

import logging

from paygate.bank import ledger
from paygate.bank.ledger import Leg, Vote
from paygate.bank.store import AccountRow, LedgerStore, LedgerTx, Totals
from paygate.common.faults import FaultInjector
from paygate.common.metrics import BankMetrics, new_registry

_log = logging.getLogger("paygate.bank")


class Participant:
    def __init__(
        self, store: LedgerStore, faults: FaultInjector, metrics: BankMetrics | None = None
    ) -> None:
        self._store = store
        self._faults = faults
        self._metrics = metrics or BankMetrics.build(new_registry())
        self._audit_passed = True

    async def get_account(self, account_number: str) -> AccountRow:
        return await self._store.read(lambda tx: ledger.get_account(tx, account_number))

    async def open_account(
        self, currency: str, initial_balance_minor: int, account_number: str | None = None
    ) -> AccountRow:
        account = await self._store.transaction(
            lambda tx: ledger.open_account(tx, currency, initial_balance_minor, account_number)
        )
        _log.info("account opened", extra={"fields": {"account_number": account.account_number}})
        return account

    async def deposit(
        self, account_number: str, amount_minor: int, currency: str, reference: str
    ) -> tuple[AccountRow, bool]:
        return await self._store.transaction(
            lambda tx: ledger.deposit(tx, account_number, amount_minor, currency, reference)
        )

    async def prepare(self, transaction_id: str, legs: list[Leg]) -> Vote:
        self._faults.crash_point("bank.before_hold")
        vote = await self._store.transaction(lambda tx: ledger.prepare(tx, transaction_id, legs))
        self._faults.crash_point("bank.after_hold")
        return vote

    async def commit(self, transaction_id: str) -> None:
        self._faults.crash_point("bank.before_post")
        posted = await self._store.transaction(lambda tx: ledger.commit(tx, transaction_id))
        self._faults.crash_point("bank.after_post")
        if posted:
            self._metrics.holds_resolved.labels("posted").inc()

    async def abort(self, transaction_id: str) -> None:
        def abort(tx: LedgerTx) -> bool:
            # Only an abort of a prepared transaction voids holds; read its state first.
            before = tx.get_transaction(transaction_id)
            return ledger.abort(tx, transaction_id) and before is not None and (
                before.state == "prepared"
            )

        if await self._store.transaction(abort):
            self._metrics.holds_resolved.labels("voided").inc()

    async def refresh_metrics(self) -> None:
        """Set the holds and money gauges from the ledger's totals (one read transaction)."""
        totals = await self._store.read(lambda tx: tx.totals())
        self._metrics.holds.labels("pending").set(totals.prepared_transactions)
        self._metrics.money_minor.labels("posted").set(totals.balance)
        self._metrics.money_minor.labels("pending").set(totals.pending_debit)

    async def audit(self) -> Totals:
        """Audit the whole ledger; a failure keeps the bank NOT_SERVING until one passes."""
        try:
            totals = await self._store.read(ledger.audit)
        except Exception:
            self._audit_passed = False
            raise
        self._audit_passed = True
        return totals

    async def healthy(self) -> bool:
        return self._audit_passed and await self._store.healthy()
