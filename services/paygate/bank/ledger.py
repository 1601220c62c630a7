"""The bank's ledger rules: accounts, deposits, and the participant side of two-phase commit.

A transaction's life at a bank (TigerBeetle's two-phase transfers):

    (none) --Prepare, funds ok--> prepared --Commit--> committed   holds posted
       |                              |
       |                              +----Abort---> aborted       holds voided
       +----Prepare, vote no-------> refused --Abort-> aborted     nothing was held
       +----Abort (before Prepare)-> aborted                        a late Prepare is refused

Prepare writes the holds to disk before it votes yes: a pending debit reserves the payer's
funds (available = balance - pending debits), a pending credit marks the payee's money in
flight. Commit and Abort are idempotent, and each refuses the other's finished state, so a
hold resolves at most once. Every write checks the ledger's invariants before it commits;
the checks stay on in production (paygate.common.invariants).

An account holds at most MAX_BALANCE_MINOR, its pending credits included: a deposit past it
is refused and a Prepare that would credit past it votes no (BALANCE_LIMIT_EXCEEDED). So a
Commit, which the bank must never refuse after its yes, cannot overflow the balance of a
hold prepared under the limit (holds prepared by a version without it are posted as before).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
from typing import NamedTuple

from paygate.bank.store import AccountRow, HoldRow, JournalMark, LedgerTx, Totals
from paygate.common.invariants import check
from paygate.common.money import MAX_AMOUNT_MINOR, check_currency
from paygate.errors import (
    ACCOUNT_NOT_FOUND,
    BALANCE_LIMIT_EXCEEDED,
    CURRENCY_MISMATCH,
    IDEMPOTENCY_KEY_MISMATCH,
    INSUFFICIENT_FUNDS,
    TRANSACTION_ABORTED,
    TRANSACTION_COMMITTED,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)

FIRST_ACCOUNT_NUMBER = 100001
# A split payment's payer and its up to ten payees, all at one bank.
MAX_LEGS = 11
# Far below a signed 64-bit integer (9.2 * 10**18), which a balance must never pass: SQLite
# would silently store the sum as a float, and PostgreSQL would fail the write. (Bank-wide
# totals may pass it: the stores sum them exactly, common/sql.py's Dialect.exact_sum.)
MAX_BALANCE_MINOR = 10**17
MAX_ID_LENGTH = 255
MAX_LINK_CODE_LENGTH = 64
DEBIT = "debit"
CREDIT = "credit"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Leg:
    account_number: str
    direction: str  # DEBIT or CREDIT
    amount_minor: int
    currency: str


class Preparation(NamedTuple):
    """One Prepare: its legs here, and what the coordinator says of the transaction."""

    transaction_id: str
    legs: list[Leg]
    one_phase: bool = False  # this bank is the only participant: post on a yes
    spans_banks: bool = False  # legs at other banks too: the legs here need not balance


@dataclasses.dataclass(frozen=True)
class Vote:
    yes: bool
    reason: str = ""
    committed: bool = False  # a yes to a one-phase Prepare: posted, not only held


def validate_id(value: str, what: str) -> str:
    if not value or len(value) > MAX_ID_LENGTH or not value.isprintable():
        raise InvalidArgument(f"{what} must be 1 to {MAX_ID_LENGTH} printable characters")
    return value


def validate_amount(amount_minor: int, what: str = "amount") -> int:
    if amount_minor <= 0 or amount_minor > MAX_AMOUNT_MINOR:
        raise InvalidArgument(f"{what} must be positive and at most {MAX_AMOUNT_MINOR} minor units")
    return amount_minor


def validate_legs(legs: list[Leg], *, spans_banks: bool = False) -> None:
    """Legs a Prepare may hold: each account once, and, unless the transaction declares legs
    at other banks too (`spans_banks`, a split payment), one leg or a balanced transfer."""
    if not 1 <= len(legs) <= MAX_LEGS:
        raise InvalidArgument(f"a transaction has 1 to {MAX_LEGS} legs at one bank")
    seen = set()
    for leg in legs:
        validate_id(leg.account_number, "account_number")
        if leg.direction not in (DEBIT, CREDIT):
            raise InvalidArgument("leg direction must be DEBIT or CREDIT")
        validate_amount(leg.amount_minor, "leg amount")
        check_currency(leg.currency)
        if (leg.account_number, leg.direction) in seen:
            raise InvalidArgument("a transaction cannot have the same account and direction twice")
        seen.add((leg.account_number, leg.direction))
    distinct = len({leg.account_number for leg in legs}) == len(legs)
    if spans_banks and not distinct:
        raise InvalidArgument("a transaction cannot both debit and credit one account")
    if len(legs) > 1 and not spans_banks and not (distinct and balanced(legs)):
        # The whole of a transfer at one bank: it can check that it balances, and so that
        # no Prepare makes or destroys money here. (A single leg's other half is at another
        # bank, as are the other legs of a split payment; the coordinator's payment record
        # pairs them.)
        raise InvalidArgument(
            "legs at one bank are a transfer inside it: one debit and one credit (or a debit"
            " and the credits it is split into) of the same total and currency, between"
            " different accounts"
        )


def balanced(legs: list[Leg]) -> bool:
    """Whether the legs move money between their accounts only: debits and credits of one
    currency, with the same total."""
    debits = sum(leg.amount_minor for leg in legs if leg.direction == DEBIT)
    credits = sum(leg.amount_minor for leg in legs if leg.direction == CREDIT)
    return debits == credits > 0 and len({leg.currency for leg in legs}) == 1


def legs_digest(legs: list[Leg]) -> str:
    canonical = sorted(
        (leg.account_number, leg.direction, leg.amount_minor, leg.currency) for leg in legs
    )
    return hashlib.sha256(repr(canonical).encode()).hexdigest()


def check_account(account: AccountRow) -> None:
    """The invariants of one account row, checked after every write to it."""
    check(account.balance >= 0, f"account {account.account_number} has a negative balance")
    check(account.pending_debit >= 0, f"account {account.account_number} has negative holds")
    check(account.pending_credit >= 0, f"account {account.account_number} has negative holds")
    check(account.available >= 0, f"account {account.account_number} has negative available funds")


def _apply(
    tx: LedgerTx,
    account_number: str,
    *,
    balance: int = 0,
    pending_debit: int = 0,
    pending_credit: int = 0,
) -> AccountRow:
    """Change an account by deltas and check, in a pair, that exactly those deltas landed."""
    before = tx.get_account(account_number)
    check(before is not None, f"account {account_number} vanished inside a transaction")
    assert before is not None
    tx.add_to_account(
        account_number, balance=balance, pending_debit=pending_debit, pending_credit=pending_credit
    )
    after = tx.get_account(account_number)
    assert after is not None
    check(
        (after.balance, after.pending_debit, after.pending_credit)
        == (
            before.balance + balance,
            before.pending_debit + pending_debit,
            before.pending_credit + pending_credit,
        ),
        f"account {account_number} did not change by exactly the deltas applied",
    )
    check_account(after)
    return after


# Accounts and deposits -----------------------------------------------------------------


def open_account(
    tx: LedgerTx,
    currency: str,
    initial_balance_minor: int,
    account_number: str | None = None,
    link_code_hash: str | None = None,
) -> AccountRow:
    check_currency(currency)
    if initial_balance_minor < 0 or initial_balance_minor > MAX_AMOUNT_MINOR:
        raise InvalidArgument(
            f"initial balance must be 0 to {MAX_AMOUNT_MINOR} minor units,"
            f" not {initial_balance_minor}"
        )
    if account_number is None:
        highest = tx.max_account_number()
        account_number = str(FIRST_ACCOUNT_NUMBER if highest is None else highest + 1)
    elif tx.get_account(account_number) is not None:
        raise AlreadyExists(f"account {account_number} already exists")
    tx.insert_account(account_number, currency)
    if link_code_hash is not None:
        tx.set_link_code_hash(account_number, link_code_hash)
    if initial_balance_minor:
        tx.insert_entry(account_number, initial_balance_minor, "open", f"open:{account_number}")
        return _apply(tx, account_number, balance=initial_balance_minor)
    account = tx.get_account(account_number)
    assert account is not None
    return account


def hash_link_code(link_code: str) -> str:
    """What the bank keeps of a link code. Codes are random (80 bits from the bank, or the
    operator's own for demo accounts), so one SHA-256 is enough: there is no dictionary.
    People type them: case, spaces and dashes do not matter ("7k2m qd9x..." is the code)."""
    canonical = "".join(c for c in link_code.upper() if c not in " -")
    return hashlib.sha256(canonical.encode()).hexdigest()


# Compared against when an account has no code or does not exist, so that every refusal
# does the same work (no hash of any code: it never matches).
_NO_LINK_CODE = "0" * 64


def check_link_code(tx: LedgerTx, account_number: str, link_code: str) -> AccountRow:
    """The account, if `link_code` is its code. One answer, after the same work, for no such
    account, an account without a code and a wrong code, so that the call cannot be used to
    find out which accounts exist."""
    validate_id(account_number, "account_number")
    if not 0 < len(link_code) <= MAX_LINK_CODE_LENGTH or not link_code.isprintable():
        raise InvalidArgument(
            f"link_code must be 1 to {MAX_LINK_CODE_LENGTH} printable characters"
        )
    stored = tx.get_link_code_hash(account_number)  # None: no account, or no code
    matches = hmac.compare_digest(stored or _NO_LINK_CODE, hash_link_code(link_code))
    if stored is None or not matches:
        raise NotFound(
            f"no account {account_number} with this link code at this bank",
            reason=ACCOUNT_NOT_FOUND,
        )
    return get_account(tx, account_number)


def has_link_code(tx: LedgerTx, account_number: str) -> bool:
    return tx.get_link_code_hash(account_number) is not None


def set_link_code(tx: LedgerTx, account_number: str, link_code_hash: str) -> None:
    get_account(tx, account_number)  # NotFound for an unknown account
    tx.set_link_code_hash(account_number, link_code_hash)


def get_account(tx: LedgerTx, account_number: str) -> AccountRow:
    validate_id(account_number, "account_number")
    account = tx.get_account(account_number)
    if account is None:
        raise NotFound(f"no account {account_number} at this bank", reason=ACCOUNT_NOT_FOUND)
    return account


def deposit(
    tx: LedgerTx, account_number: str, amount_minor: int, currency: str, reference: str
) -> tuple[AccountRow, bool]:
    """Credit an account, once per reference. Returns the account and whether it was a replay."""
    validate_id(reference, "reference")
    validate_id(account_number, "account_number")
    validate_amount(amount_minor)
    check_currency(currency)
    previous = tx.get_deposit(reference)
    if previous is not None:
        if previous != (account_number, amount_minor, currency):
            # The reference is the deposit's idempotency key: same meaning, same reason.
            raise FailedPrecondition(
                f"reference {reference!r} was already used for a different deposit",
                reason=IDEMPOTENCY_KEY_MISMATCH,
            )
        return get_account(tx, account_number), True
    account = get_account(tx, account_number)
    if account.currency != currency:
        raise FailedPrecondition(
            f"account {account_number} is in {account.currency}, not {currency}",
            reason=CURRENCY_MISMATCH,
        )
    if not can_credit(account, amount_minor):
        raise FailedPrecondition(
            f"account {account_number} would hold more than {MAX_BALANCE_MINOR} minor units",
            reason=BALANCE_LIMIT_EXCEEDED,
        )
    tx.insert_deposit(reference, account_number, amount_minor, currency)
    tx.insert_entry(account_number, amount_minor, "deposit", reference)
    return _apply(tx, account_number, balance=amount_minor), False


# Two-phase commit ----------------------------------------------------------------------


def prepare(
    tx: LedgerTx, transaction_id: str, legs: list[Leg], *, spans_banks: bool = False
) -> Vote:
    """Place the holds of a transaction and vote. Repeating a Prepare repeats its vote."""
    validate_id(transaction_id, "transaction_id")
    validate_legs(legs, spans_banks=spans_banks)
    digest = legs_digest(legs)
    existing = tx.get_transaction(transaction_id)
    if existing is not None:
        if existing.state == "aborted":
            return Vote(False, TRANSACTION_ABORTED)
        if existing.legs_digest != digest:
            raise FailedPrecondition(
                f"transaction {transaction_id} was prepared with different legs"
            )
        if existing.state == "refused":
            return Vote(False, existing.reason)
        return Vote(True)

    # Touch the accounts in one global order first: where reads take row locks (PostgreSQL),
    # two payments between the same accounts in opposite directions then cannot deadlock.
    for leg in sorted(legs, key=lambda leg: leg.account_number):
        tx.get_account(leg.account_number)
    reason = _refusal(tx, legs)
    if reason:
        tx.insert_transaction(transaction_id, "refused", digest, reason)
        return Vote(False, reason)

    tx.insert_transaction(transaction_id, "prepared", digest, "")
    for leg in legs:
        tx.insert_hold(transaction_id, HoldRow(leg.account_number, leg.direction, leg.amount_minor))
        if leg.direction == DEBIT:
            _apply(tx, leg.account_number, pending_debit=leg.amount_minor)
        else:
            _apply(tx, leg.account_number, pending_credit=leg.amount_minor)
    return Vote(True)


def prepare_one_phase(tx: LedgerTx, transaction_id: str, legs: list[Leg]) -> tuple[Vote, bool]:
    """A one-phase commit: prepare, and on a yes post at once (this bank is the only
    participant, so its yes decides). Returns the vote, committed on a yes, and whether
    this call posted (False when a repeated Prepare finds it posted already).

    Only a balanced transfer may be posted this way, so that a one-phase Prepare can never
    create or destroy money; and never a transaction already held by a two-phase Prepare,
    which only its coordinator's Commit may post.
    """
    validate_legs(legs)  # legs at one bank balance; one leg alone is not a transfer
    if len(legs) < 2:
        raise InvalidArgument(
            "a one-phase transaction is a balanced transfer: debits and credits of the same"
            " total and currency"
        )
    existing = tx.get_transaction(validate_id(transaction_id, "transaction_id"))
    if existing is not None and existing.state == "prepared":
        raise FailedPrecondition(
            f"transaction {transaction_id} was prepared in two phases; it needs a Commit"
        )
    vote = prepare(tx, transaction_id, legs)
    if not vote.yes:
        return vote, False
    return Vote(True, committed=True), commit(tx, transaction_id)


def _refusal(tx: LedgerTx, legs: list[Leg]) -> str:
    """Why this bank must vote no, or "" when it can hold every leg."""
    for leg in legs:
        account = tx.get_account(leg.account_number)
        if account is None:
            return ACCOUNT_NOT_FOUND
        if account.currency != leg.currency:
            return CURRENCY_MISMATCH
        if leg.direction == DEBIT and account.available < leg.amount_minor:
            return INSUFFICIENT_FUNDS
        if leg.direction == CREDIT and not can_credit(account, leg.amount_minor):
            return BALANCE_LIMIT_EXCEEDED
    return ""


def can_credit(account: AccountRow, amount_minor: int) -> bool:
    """Whether the account can take `amount_minor` more, on top of the credits it has
    pending (each of which may still be posted)."""
    return account.balance + account.pending_credit + amount_minor <= MAX_BALANCE_MINOR


def commit(tx: LedgerTx, transaction_id: str, amount_minor: int = 0) -> bool:
    """Post a prepared transaction's holds: `amount_minor` of each (0: all of it), the rest
    released (a partial capture). Returns False when it was already committed."""
    validate_id(transaction_id, "transaction_id")
    if amount_minor < 0:
        raise InvalidArgument("amount must not be negative (0 posts everything held)")
    existing = tx.get_transaction(transaction_id)
    if existing is None:
        raise NotFound(f"transaction {transaction_id} was never prepared at this bank")
    if existing.state == "committed":
        return False
    if existing.state in ("aborted", "refused"):
        raise FailedPrecondition(
            f"transaction {transaction_id} was aborted and cannot be committed",
            reason=TRANSACTION_ABORTED,
        )
    check(existing.state == "prepared", f"transaction {transaction_id} in unknown state")
    holds = tx.holds_of(transaction_id)
    for hold in holds:
        if amount_minor > hold.amount:
            raise InvalidArgument(
                f"cannot post {amount_minor} of transaction {transaction_id}: it holds"
                f" {hold.amount} minor units"
            )
    for hold in holds:
        posted = amount_minor or hold.amount
        if hold.direction == DEBIT:
            tx.insert_entry(hold.account_number, -posted, "debit", transaction_id)
            _apply(tx, hold.account_number, balance=-posted, pending_debit=-hold.amount)
        else:
            tx.insert_entry(hold.account_number, posted, "credit", transaction_id)
            _apply(tx, hold.account_number, balance=posted, pending_credit=-hold.amount)
    tx.set_transaction_state(transaction_id, "committed")
    return True


def abort(tx: LedgerTx, transaction_id: str) -> bool:
    """Void a transaction's holds, or remember the abort of one never prepared here.

    Returns False when the transaction was already aborted.
    """
    validate_id(transaction_id, "transaction_id")
    existing = tx.get_transaction(transaction_id)
    if existing is None:
        tx.insert_transaction(transaction_id, "aborted", "", "ABORTED_BEFORE_PREPARE")
        return True
    if existing.state == "aborted":
        return False
    if existing.state == "committed":
        raise FailedPrecondition(
            f"transaction {transaction_id} was committed and cannot be aborted",
            reason=TRANSACTION_COMMITTED,
        )
    if existing.state == "prepared":
        for hold in tx.holds_of(transaction_id):
            if hold.direction == DEBIT:
                _apply(tx, hold.account_number, pending_debit=-hold.amount)
            else:
                _apply(tx, hold.account_number, pending_credit=-hold.amount)
    tx.set_transaction_state(transaction_id, "aborted")
    return True


def audit(tx: LedgerTx, since: JournalMark | None = None) -> tuple[Totals, JournalMark]:
    """Check the bank-wide invariants: balances equal the journal, holds equal pending sums.

    `since` is the journal as a previous pass summed it: only the entries after it are read
    (where the store allows, LedgerTx.journal). Without it the whole journal is summed.
    Returns the totals and the journal's mark for the next pass.
    """
    totals = tx.totals()
    journal = tx.journal(since or JournalMark())
    check(
        totals.balance == journal.total,
        f"sum of balances {totals.balance} != sum of journal entries {journal.total}",
    )
    check(
        totals.pending_debit == totals.prepared_debit_holds,
        f"pending debits {totals.pending_debit} != prepared debit holds "
        f"{totals.prepared_debit_holds}",
    )
    check(
        totals.pending_credit == totals.prepared_credit_holds,
        f"pending credits {totals.pending_credit} != prepared credit holds "
        f"{totals.prepared_credit_holds}",
    )
    return totals, journal
