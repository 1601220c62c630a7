"""The checker's claims about refunds (pure functions over a run's History):

    refund_mismatch   per payment: the SUCCEEDED refunds the gateway lists add up to its
                      amount_refunded, which is at most what the payment moved; no refund
                      is PENDING after recovery; per refund key: at most one refund
                      SUCCEEDED, every definite answer the same (that refund with the
                      same shares, or the same refusal), and a refund a client saw succeed
                      is SUCCEEDED at the gateway with the amount asked and the shares
                      answered. Of a split payment: every refund's shares are positive,
                      name its payees only and add up to the refund, and no payee gave back
                      more than its part in all its SUCCEEDED refunds; a refund of any
                      other payment has no shares

A refund that moved money twice for one request (a retry or a replay refunding again) shows
as two SUCCEEDED refunds under one key, or answers naming two refunds; the balances check
(checker.py) counts every SUCCEEDED refund (of a split payment, each payee its share), so
money that moved without its refund being listed shows there. What the banks posted for a
split payment's refund, share by share, is split_checks.py's: with the shares listed here
within each payee's part, a journal that holds exactly the listed shares never took more.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

from paygate.chaos.history import GatewayPayment, History, Outcome

if TYPE_CHECKING:
    from paygate.chaos.checker import Violation

SUCCEEDED = "SUCCEEDED"
PENDING = "PENDING"


def moved_minor(payment: GatewayPayment) -> int:
    """What a payment moved from its payer to its payee, before refunds."""
    if payment.status != SUCCEEDED:
        return 0
    return payment.amount_captured if payment.manual else payment.amount_minor


def refunded_by_user(history: History) -> dict[str, int]:
    """What each user's balance changed by through SUCCEEDED refunds: the payer gets each
    back whole; the payee gives it, or of a split payment each payee its share."""
    payments = {p.payment_id: p for p in history.gateway_payments}
    change: dict[str, int] = defaultdict(int)
    for refund in history.gateway_refunds:
        payment = payments.get(refund.payment_id)
        if refund.status == SUCCEEDED and payment is not None:
            change[payment.payer] += refund.amount_minor
            for payee, share in refund.splits or ((payment.payee, refund.amount_minor),):
                change[payee] -= share
    return change


def check_refunds(history: History) -> list[Violation]:
    from paygate.chaos.checker import Violation

    problems = [*_payment_problems(history), *_share_problems(history), *_key_problems(history)]
    return [Violation("refund_mismatch", message, example) for message, example in problems]


def _payment_problems(history: History) -> list[tuple[str, dict[str, str]]]:
    succeeded: dict[str, int] = defaultdict(int)
    problems = []
    for refund in history.gateway_refunds:
        if refund.status == SUCCEEDED:
            succeeded[refund.payment_id] += refund.amount_minor
        if refund.status == PENDING:
            problems.append((f"refund {refund.refund_id} is still PENDING after recovery",
                             {"refund_id": refund.refund_id}))  # fmt: skip
    for payment in history.gateway_payments:
        example = {"payment_id": payment.payment_id, "key": payment.key}
        if not 0 <= payment.amount_refunded <= moved_minor(payment):
            problems.append((f"payment {payment.payment_id} refunded {payment.amount_refunded}"
                             f" of {moved_minor(payment)} moved", example))  # fmt: skip
        if succeeded[payment.payment_id] != payment.amount_refunded:
            problems.append((f"payment {payment.payment_id}: its SUCCEEDED refunds add up to"
                             f" {succeeded[payment.payment_id]}, it says"
                             f" {payment.amount_refunded} refunded", example))  # fmt: skip
    return problems


def _share_problems(history: History) -> list[tuple[str, dict[str, str]]]:
    """A split payment's refunds take from its payees only, in shares that add up, and
    never more from a payee than its part; other refunds have no shares."""
    payments = {p.payment_id: p for p in history.gateway_payments}
    given: dict[tuple[str, str], int] = defaultdict(int)  # (payment, payee): SUCCEEDED shares
    problems = []
    for refund in history.gateway_refunds:
        payment = payments.get(refund.payment_id)
        if payment is None:
            continue
        example = {"refund_id": refund.refund_id, "payment_id": payment.payment_id}
        parts = dict(payment.splits)
        shares = dict(refund.splits)
        if not parts and refund.splits:
            problems.append((f"refund {refund.refund_id} of payment {payment.payment_id}, which"
                             f" is not split, lists shares {list(refund.splits)}",
                             example))  # fmt: skip
        elif parts and (
            len(shares) != len(refund.splits)
            or not set(shares) <= set(parts)
            or min(shares.values(), default=0) <= 0
            or sum(shares.values()) != refund.amount_minor
        ):
            problems.append((f"refund {refund.refund_id} of {refund.amount_minor} from split"
                             f" payment {payment.payment_id} (parts {list(payment.splits)})"
                             f" lists shares {list(refund.splits)}", example))  # fmt: skip
        if refund.status == SUCCEEDED:
            for payee, share in refund.splits:
                given[(payment.payment_id, payee)] += share
    for (payment_id, payee), total in sorted(given.items()):
        part = dict(payments[payment_id].splits).get(payee, 0)
        if total > part:
            problems.append((f"{payee} gave back {total} of split payment {payment_id} in its"
                             f" SUCCEEDED refunds, its part is {part}",
                             {"payment_id": payment_id, "username": payee}))  # fmt: skip
    return problems


def _key_problems(history: History) -> list[tuple[str, dict[str, str]]]:
    listed: dict[str, list[str]] = defaultdict(list)
    listed_as: dict[str, tuple[int, tuple[tuple[str, int], ...]]] = {}
    for refund in history.gateway_refunds:
        if refund.status == SUCCEEDED:
            listed[refund.refund_key].append(refund.refund_id)
            listed_as[refund.refund_id] = (refund.amount_minor, refund.splits)
    answered: dict[str, set[tuple[str, tuple[tuple[str, int], ...]]]] = defaultdict(set)
    definite: dict[str, set[str]] = defaultdict(set)  # every definite answer of each key
    asked: dict[str, int] = {}
    for call in history.refunds:
        if call.outcome == Outcome.SUCCEEDED:
            answered[call.refund_key].add((call.refund_id, call.splits))
            asked[call.refund_key] = call.amount_minor
        if call.outcome != Outcome.INDEFINITE:
            answer = f"{call.refund_id} {list(call.splits)}" if call.refund_id else ""
            definite[call.refund_key].add(answer or f"{call.code}/{call.reason}")
    problems = []
    for key in sorted(set(listed) | set(definite)):
        example = {"refund_key": key}
        if len(listed[key]) > 1:
            problems.append((f"refund key {key} has {len(listed[key])} SUCCEEDED refunds",
                             example))  # fmt: skip
        if len(definite[key]) > 1:
            problems.append((f"refund key {key} was answered {sorted(definite[key])}: a key"
                             " answers the same each time", example))  # fmt: skip
        for refund_id, shares in sorted(answered[key]):
            if listed_as.get(refund_id) != (asked[key], shares):
                problems.append((f"refund {refund_id} (key {key}) answered SUCCEEDED"
                                 f" (shares {list(shares)}) is not listed SUCCEEDED with"
                                 f" {asked[key]} and those shares", example))  # fmt: skip
    return problems
