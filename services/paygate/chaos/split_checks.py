"""The checker's claim about split payments (a pure function over a run's History):

    split_partial   a split payment moved all its legs or none: for each split payment
                    SUCCEEDED at the gateway, the banks' journals hold exactly the payer's
                    debit of the whole amount and each payee's credit of its part, each
                    once; for each FAILED one, none of them

A split payment is one two-phase commit across every bank it involves, so a gateway or a
bank that commits some of its banks and aborts others shows here, leg by leg, where the
balances check (checker.py) only sees accounts that do not add up. The journals hold only
the entries of the split payments, read from each bank after recovery (chaos/journals.py);
a split payment is never refunded, so nothing else posts under its id.
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING

from paygate.chaos.history import GatewayPayment, History

if TYPE_CHECKING:
    from paygate.chaos.checker import Violation

SUCCEEDED = "SUCCEEDED"
FAILED = "FAILED"

# A leg as the journal shows it: the account (bank, number) and the signed amount posted.
Leg = tuple[str, str, int]


def check_splits(history: History) -> list[Violation]:
    from paygate.chaos.checker import Violation

    if not history.journal_read:
        return []  # a history made by hand, without the journals
    accounts = {u.username: (u.bank_id, u.account_number) for u in history.users}
    posted: dict[str, collections.Counter[Leg]] = collections.defaultdict(collections.Counter)
    for entry in history.journal:
        posted[entry.reference][(entry.bank_id, entry.account_number, entry.amount_minor)] += 1
    found = []
    for payment in history.gateway_payments:
        if not payment.splits or payment.status not in (SUCCEEDED, FAILED):
            continue  # not final: payment_not_final says so
        expected = _legs(payment, accounts) if payment.status == SUCCEEDED else _NONE
        actual = posted.get(payment.payment_id, _NONE)
        if actual == expected:
            continue
        missing, extra = (
            sorted((expected - actual).elements()),
            sorted((actual - expected).elements()),
        )
        found.append(
            Violation(
                "split_partial",
                f"split payment {payment.payment_id} (key {payment.key}) is {payment.status};"
                f" of its {len(payment.splits) + 1} legs the banks posted"
                f" {sum(actual.values())}: missing {_legs_text(missing)}, unexpected"
                f" {_legs_text(extra)}",
                {
                    "payment_id": payment.payment_id,
                    "key": payment.key,
                    "status": payment.status,
                    "missing": [list(leg) for leg in missing],
                    "unexpected": [list(leg) for leg in extra],
                },
            )
        )
    return found


_NONE: collections.Counter[Leg] = collections.Counter()


def _legs(
    payment: GatewayPayment, accounts: dict[str, tuple[str, str]]
) -> collections.Counter[Leg]:
    """The legs a SUCCEEDED split payment posts: the payer's debit, each payee's credit."""
    legs = [(payment.payer, -payment.amount_minor), *payment.splits]
    return collections.Counter((*accounts[user], amount) for user, amount in legs)


def _legs_text(legs: list[Leg]) -> str:
    return ", ".join(f"{bank}/{account} {amount:+d}" for bank, account, amount in legs) or "none"
