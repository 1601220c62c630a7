"""The checker's claim about split payments (a pure function over a run's History):

    split_partial   a split payment, and each refund of one, moved all its legs or none:
                    for each split payment SUCCEEDED at the gateway, the banks' journals
                    hold exactly the payer's debit of the whole amount and each payee's
                    credit of its part, each once; for each SUCCEEDED refund of one,
                    exactly each share's debit at its payee's bank and the credit of the
                    whole refund at the payer's, each once; for each FAILED payment or
                    refund, none of them

A split payment is one two-phase commit across every bank it involves, and so is each of
its refunds (a debit per share, at as many banks as the payees it takes from, and the
payer's credit), so a gateway or a bank that commits some of its banks and aborts others
shows here, leg by leg, where the balances check (checker.py) only sees accounts that do
not add up. The journals hold only the entries posted under the id of a split payment or
of a refund of one, read from each bank after recovery (chaos/journals.py): the payment's
own legs are under its id (`pay_...`), each refund's under the refund's (`re_...`). That
the shares a refund lists add up and stay within each payee's part is refund_checks.py's;
with the journals holding exactly those shares, no payee gave back more than its part.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from paygate.chaos.history import GatewayPayment, GatewayRefund, History

if TYPE_CHECKING:
    from paygate.chaos.checker import Violation

SUCCEEDED = "SUCCEEDED"
FAILED = "FAILED"

# A leg as the journal shows it: the account (bank, number) and the signed amount posted.
Leg = tuple[str, str, int]
Legs = collections.Counter[Leg]
Accounts = dict[str, tuple[str, str]]


def check_splits(history: History) -> list[Violation]:
    from paygate.chaos.checker import Violation

    if not history.journal_read:
        return []  # a history made by hand, without the journals
    accounts = {u.username: (u.bank_id, u.account_number) for u in history.users}
    posted: dict[str, Legs] = collections.defaultdict(collections.Counter)
    for entry in history.journal:
        posted[entry.reference][(entry.bank_id, entry.account_number, entry.amount_minor)] += 1
    found = []
    for subject, reference, status, legs, example in _transactions(history, accounts):
        expected = legs if status == SUCCEEDED else _NONE
        actual = posted.get(reference, _NONE)
        if actual == expected:
            continue
        missing, extra = (
            sorted((expected - actual).elements()),
            sorted((actual - expected).elements()),
        )
        found.append(
            Violation(
                "split_partial",
                f"{subject} is {status}; of its {sum(legs.values())} legs the banks posted"
                f" {sum(actual.values())}: missing {_legs_text(missing)}, unexpected"
                f" {_legs_text(extra)}",
                {
                    **example,
                    "status": status,
                    "missing": [list(leg) for leg in missing],
                    "unexpected": [list(leg) for leg in extra],
                },
            )
        )
    return found


def _transactions(
    history: History, accounts: Accounts
) -> Iterator[tuple[str, str, str, Legs, dict[str, Any]]]:
    """Each final split payment and refund of one: how to name it, the id its legs are
    posted under, its status, the legs it posts if it succeeds, and the example's data."""
    splits = {p.payment_id: p for p in history.gateway_payments if p.splits}
    for payment in splits.values():
        if payment.status not in (SUCCEEDED, FAILED):
            continue  # not final: payment_not_final says so
        legs = _payment_legs(payment, accounts)
        subject = f"split payment {payment.payment_id} (key {payment.key})"
        example = {"payment_id": payment.payment_id, "key": payment.key}
        yield subject, payment.payment_id, payment.status, legs, example
    for refund in history.gateway_refunds:
        paid = splits.get(refund.payment_id)
        if paid is None or refund.status not in (SUCCEEDED, FAILED):
            continue  # not of a split payment, or not final: refund_mismatch says so
        legs = _refund_legs(refund, paid, accounts)
        subject = (
            f"refund {refund.refund_id} (key {refund.refund_key}) of split payment"
            f" {paid.payment_id}"
        )
        example = {
            "refund_id": refund.refund_id,
            "refund_key": refund.refund_key,
            "payment_id": paid.payment_id,
        }
        yield subject, refund.refund_id, refund.status, legs, example


_NONE: Legs = collections.Counter()


def _payment_legs(payment: GatewayPayment, accounts: Accounts) -> Legs:
    """The legs a SUCCEEDED split payment posts: the payer's debit, each payee's credit."""
    legs = [(payment.payer, -payment.amount_minor), *payment.splits]
    return _at(legs, accounts)


def _refund_legs(refund: GatewayRefund, payment: GatewayPayment, accounts: Accounts) -> Legs:
    """The legs a SUCCEEDED refund of a split payment posts: each share's debit at its
    payee's bank (as the refund lists them), the credit of the whole at the payer's."""
    legs = [
        *((payee, -share) for payee, share in refund.splits),
        (payment.payer, refund.amount_minor),
    ]
    return _at(legs, accounts)


def _at(legs: list[tuple[str, int]], accounts: Accounts) -> Legs:
    # A user not of the run (a gateway naming a stranger) has no account to look in.
    return collections.Counter((*accounts.get(user, ("?", user)), amount) for user, amount in legs)


def _legs_text(legs: list[Leg]) -> str:
    return ", ".join(f"{bank}/{account} {amount:+d}" for bank, account, amount in legs) or "none"
