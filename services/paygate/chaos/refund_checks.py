"""The checker's claims about refunds (pure functions over a run's History):

    refund_mismatch   per payment: the SUCCEEDED refunds the gateway lists add up to its
                      amount_refunded, which is at most what the payment moved; no refund
                      is PENDING after recovery; per refund key: at most one refund
                      SUCCEEDED, every definite answer the same (that refund, or the same
                      refusal), and a refund a client saw succeed is SUCCEEDED at the
                      gateway with the amount asked

A refund that moved money twice for one request (a retry or a replay refunding again) shows
as two SUCCEEDED refunds under one key, or answers naming two refunds; the balances check
(checker.py) counts every SUCCEEDED refund, so money that moved without its refund being
listed shows there.
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
    """What each user's balance changed by through SUCCEEDED refunds (payer +, payee -)."""
    payments = {p.payment_id: p for p in history.gateway_payments}
    change: dict[str, int] = defaultdict(int)
    for refund in history.gateway_refunds:
        payment = payments.get(refund.payment_id)
        if refund.status == SUCCEEDED and payment is not None:
            change[payment.payer] += refund.amount_minor
            change[payment.payee] -= refund.amount_minor
    return change


def check_refunds(history: History) -> list[Violation]:
    from paygate.chaos.checker import Violation

    problems = [*_payment_problems(history), *_key_problems(history)]
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


def _key_problems(history: History) -> list[tuple[str, dict[str, str]]]:
    listed: dict[str, list[str]] = defaultdict(list)
    amounts = {}
    for refund in history.gateway_refunds:
        if refund.status == SUCCEEDED:
            listed[refund.refund_key].append(refund.refund_id)
            amounts[refund.refund_id] = refund.amount_minor
    answered: dict[str, set[str]] = defaultdict(set)
    definite: dict[str, set[str]] = defaultdict(set)  # every definite answer of each key
    asked: dict[str, int] = {}
    for call in history.refunds:
        if call.outcome == Outcome.SUCCEEDED:
            answered[call.refund_key].add(call.refund_id)
            asked[call.refund_key] = call.amount_minor
        if call.outcome != Outcome.INDEFINITE:
            definite[call.refund_key].add(call.refund_id or f"{call.code}/{call.reason}")
    problems = []
    for key in sorted(set(listed) | set(definite)):
        example = {"refund_key": key}
        if len(listed[key]) > 1:
            problems.append((f"refund key {key} has {len(listed[key])} SUCCEEDED refunds",
                             example))  # fmt: skip
        if len(definite[key]) > 1:
            problems.append((f"refund key {key} was answered {sorted(definite[key])}: a key"
                             " answers the same each time", example))  # fmt: skip
        for refund_id in answered[key]:
            if amounts.get(refund_id) != asked[key]:
                problems.append((f"refund {refund_id} (key {key}) answered SUCCEEDED is not"
                                 f" listed SUCCEEDED with {asked[key]}", example))  # fmt: skip
    return problems
