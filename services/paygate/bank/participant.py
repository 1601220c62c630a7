"""Participant: the bank's ledger operations as async calls, each one database transaction.

It runs the rules of ledger.py inside the store's transactions, marks the crash points
around the writes of the two-phase commit, and audits the whole ledger at start and
periodically (a failed audit makes the bank report NOT_SERVING). A periodic audit sums
only the journal entries posted since the pass before it, so that it does not grow with
the bank's history; a full pass (audit(full=True)) sums them all.

Metrics: holds resolved are counted as they resolve; the holds and money gauges are set
from the ledger's totals by refresh_metrics(), which the bank calls periodically.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
from collections.abc import Callable, Sequence
from typing import TypeVar

from paygate.bank import holds, ledger
from paygate.bank.holds import Hold, HoldsPage
from paygate.bank.ledger import Leg, Preparation, Vote
from paygate.bank.store import AccountRow, JournalMark, LedgerStore, LedgerTx, Totals
from paygate.common.faults import FaultInjector
from paygate.common.metrics import BankMetrics, new_registry
from paygate.errors import InvalidArgument, PaygateError

T = TypeVar("T")

_log = logging.getLogger("paygate.bank")

# A full audit sums the journal this many entries per read (~10 ms on SQLite): the bank's
# writes wait for one chunk at most, not for the whole history (463 ms at 6.7M entries).
AUDIT_CHUNK_ENTRIES = 100_000


# Link codes are read out and typed by people: groups of an alphabet without look-alikes
# (Crockford's base 32), 16 characters = 80 random bits.
_LINK_CODE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_link_code() -> str:
    chars = "".join(secrets.choice(_LINK_CODE_ALPHABET) for _ in range(16))
    return "-".join(chars[i : i + 4] for i in range(0, 16, 4))


class Participant:
    def __init__(
        self,
        store: LedgerStore,
        faults: FaultInjector,
        metrics: BankMetrics | None = None,
        *,
        audit_chunk_entries: int = AUDIT_CHUNK_ENTRIES,
    ) -> None:
        self._store = store
        self._audit_chunk_entries = audit_chunk_entries
        self._faults = faults
        self._metrics = metrics or BankMetrics.build(new_registry())
        self._audit_passed = True
        # The journal as the last audit that passed summed it; None: the next one reads all.
        self._journal: JournalMark | None = None
        # One audit at a time: a pass that started before a failure must not clear it.
        self._auditing = asyncio.Lock()

    async def get_account(self, account_number: str) -> AccountRow:
        return await self._store.read(lambda tx: ledger.get_account(tx, account_number))

    async def open_account(
        self,
        currency: str,
        initial_balance_minor: int,
        account_number: str | None = None,
        link_code: str | None = None,
    ) -> tuple[AccountRow, str]:
        """Open an account; return it and its link code (`link_code`, or a new one)."""
        code = link_code if link_code is not None else new_link_code()
        hashed = ledger.hash_link_code(code)
        account = await self._store.transaction(
            lambda tx: ledger.open_account(
                tx, currency, initial_balance_minor, account_number, hashed
            )
        )
        _log.info("account opened", extra={"fields": {"account_number": account.account_number}})
        return account, code

    async def link_account(self, account_number: str, link_code: str) -> AccountRow:
        return await self._store.read(
            lambda tx: ledger.check_link_code(tx, account_number, link_code)
        )

    async def has_link_code(self, account_number: str) -> bool:
        return await self._store.read(lambda tx: ledger.has_link_code(tx, account_number))

    async def issue_link_code(self, account_number: str, link_code: str | None = None) -> str:
        """Give the account a new link code (`link_code`, or a random one); return it."""
        code = link_code if link_code is not None else new_link_code()
        hashed = ledger.hash_link_code(code)
        await self._store.transaction(lambda tx: ledger.set_link_code(tx, account_number, hashed))
        _log.info(
            "link code issued", extra={"fields": {"account_number": account_number}}
        )
        return code

    async def list_holds(
        self,
        account_number: str,
        page_size: int,
        page_token: str,
        size_of: Callable[[Hold], int] = lambda hold: 0,
    ) -> HoldsPage:
        """A page of the holds open on an account, oldest first (holds.py)."""
        return await self._store.read(
            lambda tx: holds.list_holds(tx, account_number, page_size, page_token, size_of)
        )

    async def deposit(
        self, account_number: str, amount_minor: int, currency: str, reference: str
    ) -> tuple[AccountRow, bool]:
        return await self._store.transaction(
            lambda tx: ledger.deposit(tx, account_number, amount_minor, currency, reference)
        )

    async def prepare(
        self,
        transaction_id: str,
        legs: list[Leg],
        *,
        one_phase: bool = False,
        spans_banks: bool = False,
    ) -> Vote:
        return _value(
            await self.prepare_batch([Preparation(transaction_id, legs, one_phase, spans_banks)])
        )

    async def commit(self, transaction_id: str, amount_minor: int = 0) -> None:
        _value(await self.commit_batch([(transaction_id, amount_minor)]))

    async def abort(self, transaction_id: str) -> None:
        _value(await self.abort_batch([transaction_id]))

    # Batches: each transaction applied as if alone, all of them durable together (one
    # group commit). The crash points bracket the batch's one durable write.

    async def prepare_batch(
        self, transactions: Sequence[Preparation]
    ) -> list[Vote | PaygateError]:
        """Prepare each transaction; a one-phase yes is also posted."""
        self._faults.crash_point("bank.before_hold")
        outcomes = _domain(
            await self._store.transactions(
                [functools.partial(_prepare, preparation) for preparation in transactions]
            )
        )
        self._faults.crash_point("bank.after_hold")
        posted = sum(1 for outcome in outcomes if isinstance(outcome, tuple) and outcome[1])
        if posted:
            self._metrics.holds_resolved.labels("posted").inc(posted)
        return [outcome[0] if isinstance(outcome, tuple) else outcome for outcome in outcomes]

    async def commit_batch(
        self, transactions: Sequence[tuple[str, int]]
    ) -> list[None | PaygateError]:
        """Commit each (transaction_id, amount_minor to post of each hold; 0: all)."""
        self._faults.crash_point("bank.before_post")
        outcomes = _domain(
            await self._store.transactions(
                [
                    functools.partial(ledger.commit, transaction_id=t, amount_minor=amount)
                    for t, amount in transactions
                ]
            )
        )
        self._faults.crash_point("bank.after_post")
        posted = sum(1 for outcome in outcomes if outcome is True)
        if posted:
            self._metrics.holds_resolved.labels("posted").inc(posted)
        return [outcome if isinstance(outcome, PaygateError) else None for outcome in outcomes]

    async def abort_batch(self, transaction_ids: Sequence[str]) -> list[None | PaygateError]:
        outcomes = _domain(
            await self._store.transactions([functools.partial(_abort, t) for t in transaction_ids])
        )
        voided = sum(1 for outcome in outcomes if outcome is True)
        if voided:
            self._metrics.holds_resolved.labels("voided").inc(voided)
        return [outcome if isinstance(outcome, PaygateError) else None for outcome in outcomes]

    async def refresh_metrics(self) -> None:
        """Set the holds and money gauges from the ledger (one read transaction)."""
        totals, money = await self._store.read(lambda tx: (tx.totals(), tx.money_by_currency()))
        self._metrics.holds.labels("pending").set(totals.prepared_transactions)
        for currency, (posted, held) in money.items():
            self._metrics.money_minor.labels("posted", currency).set(posted)
            self._metrics.money_minor.labels("pending", currency).set(held)

    async def audit(self, *, full: bool = False) -> Totals:
        """Audit the ledger; a failure keeps the bank NOT_SERVING until one passes.

        Balances and holds are summed whole every time; the journal from where the last
        passed audit left it, unless `full` (or no audit has passed yet). After a failure
        the next audit is full again.
        """
        async with self._auditing:
            since = None if full else self._journal
            try:
                if since is None:
                    since = await self._journal_in_chunks()
                totals, self._journal = await self._store.read(
                    lambda tx: ledger.audit(tx, since)
                )
            except Exception:
                self._audit_passed = False
                self._journal = None
                raise
            self._audit_passed = True
            return totals

    async def _journal_in_chunks(self) -> JournalMark:
        """The journal summed from its start, `audit_chunk_entries` at a time, each chunk a
        read of its own: a whole history summed in one read would hold the bank's one
        database thread (SQLite), and every payment behind it, for as long as it takes."""
        mark, more = JournalMark(), True
        while more:
            read_next = functools.partial(_journal_chunk, mark, self._audit_chunk_entries)
            mark, more = await self._store.read(read_next)
        return mark

    async def healthy(self) -> bool:
        return self._audit_passed and await self._store.healthy()


def _journal_chunk(since: JournalMark, limit: int, tx: LedgerTx) -> tuple[JournalMark, bool]:
    return tx.journal_chunk(since, limit)


def _prepare(preparation: Preparation, tx: LedgerTx) -> tuple[Vote, bool]:
    """Prepare (one-phase: and post on yes); True second when this call posted holds."""
    transaction_id, legs, one_phase, spans_banks = preparation
    if one_phase:
        if spans_banks:
            raise InvalidArgument("a one-phase transaction has legs at one bank only")
        return ledger.prepare_one_phase(tx, transaction_id, legs)
    return ledger.prepare(tx, transaction_id, legs, spans_banks=spans_banks), False


def _abort(transaction_id: str, tx: LedgerTx) -> bool:
    """Abort; True when that voided holds (only an abort of a prepared transaction does)."""
    before = tx.get_transaction(transaction_id)
    aborted = ledger.abort(tx, transaction_id)
    return aborted and before is not None and before.state == "prepared"


def _domain(outcomes: Sequence[T | Exception]) -> list[T | PaygateError]:
    """The outcomes, with the errors a caller can cause kept per transaction.

    Any other error (the database failed, an invariant broke) fails the whole call; that
    is safe because every operation is idempotent: the gateway re-sends what it must.
    """
    for outcome in outcomes:
        if isinstance(outcome, Exception) and not isinstance(outcome, PaygateError):
            raise outcome
    return [outcome for outcome in outcomes]  # type: ignore[misc]


def _value(outcomes: list[T | PaygateError]) -> T:
    (outcome,) = outcomes
    if isinstance(outcome, PaygateError):
        raise outcome
    return outcome
