"""The checker: pure functions over a run's History that find every violation of the claims.

The claims, after the schedule has healed every process and the gateway has recovered:

    money_not_conserved      the money in all the run's accounts equals the initial total
    negative_balance         no read, during the run or after, shows a negative balance,
                             available balance or hold
    total_out_of_bounds      reads during the run: see below
    hold_pending_after_recovery   no hold is pending `pending_limit_s` after recovery
    success_not_recorded     every payment a client saw succeed is SUCCEEDED at the gateway
    balance_mismatch         every account's final balance is its initial balance plus exactly
                             the SUCCEEDED payments it took part in (of an authorization, the
                             amount captured): each is posted at both banks exactly once, and
                             nothing else moved money
    capture_mismatch         an authorization's capture is at most its amount, is what its
                             payee asked and was answered, and a cancelled or expired one
                             captured nothing
    key_multiple_effects     no key has more than one SUCCEEDED payment, nor one besides a
                             refusal it answered
    key_answer_changed       every definite answer of a key is the same, replays included
    call_unresolved          every key got a definite answer, during the run or by retrying
                             it after recovery
    replay_not_definite      every key asked again after recovery answered definitely
    unexpected_error         no call got an answer a correct suite never gives this workload
    payment_not_final        no payment is still PENDING (or awaiting capture) after recovery
    refund_mismatch          refunds add up, never pass what moved, once per key; those of
                             a split payment take shares that add up, from no payee more
                             than its part (chaos/refund_checks.py)
    event_mismatch           each final payment and refund has one final event per party
                             (every payee of a split payment is one, and every payee its
                             refund takes a share from), matching it; each
                             user's events numbered with no gap (chaos/event_checks.py)
    split_partial            a split payment, and each refund of one, moved all its legs or
                             none: the banks' journals hold the payer's debit of the whole
                             and each payee's credit of its part (of a refund: each share's
                             debit and the payer's credit of the whole) when it SUCCEEDED,
                             none of them when it FAILED (chaos/split_checks.py)

Totals during the run. The reads of one sample are concurrent but not atomic: accounts are
read one by one, at banks that commit a payment's two sides at different instants. A
sample's total is exact only at quiescence. During the run the checker asserts a bound
instead. A payment moves the total of a sample away from the initial total only when one
side's commit is seen and the other's is not. If the unseen side still held the payment
when its account was read, the hold is in that read (a pending debit when the payer's
commit is unseen, a pending credit when the payee's is); otherwise both sides were prepared
and the commit decided while the sample was being read, which can only happen inside a
call that was running then: a CreatePayment, a CapturePayment, or a RefundPayment (a refund
is a transaction of its own, with its own holds). So, with `in_flight` the amounts of the
calls that overlap the sample (an indefinite call counts until `indefinite_settle_s` after
it ended, because the gateway may still be deciding its payment):

    -(pending_credit + in_flight)  <=  total - initial  <=  pending_debit + in_flight
"""

from __future__ import annotations

import bisect
import dataclasses
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from paygate.chaos.event_checks import check_events
from paygate.chaos.history import (
    AccountRead,
    Call,
    GatewayPayment,
    History,
    Outcome,
    Phase,
    Sample,
)
from paygate.chaos.refund_checks import check_refunds, moved_minor, refunded_by_user
from paygate.chaos.split_checks import check_splits

SUCCEEDED = "SUCCEEDED"
PENDING = "PENDING"
REQUIRES_CAPTURE = "REQUIRES_CAPTURE"
CANCELED = "CANCELED"
# What an authorization a client saw made may be listed as: as made, or as settled.
AUTHORIZATION_MADE = (SUCCEEDED, REQUIRES_CAPTURE, CANCELED)

# Each check, stated as the claim it makes; the summary lists them with "ok" or "VIOLATED".
CHECKS: dict[str, str] = {
    "money_not_conserved": "money after recovery equals the initial total, exactly",
    "negative_balance": "no read shows a negative balance, available balance or hold",
    "total_out_of_bounds": "totals read during the run stay within holds and calls in flight",
    "hold_pending_after_recovery": "no hold is pending 10 s after recovery",
    "success_not_recorded": "every payment a client saw succeed is SUCCEEDED at the gateway",
    "balance_mismatch": "every balance is its initial one plus its SUCCEEDED payments, once",
    "capture_mismatch": "captured <= authorized, as asked and answered; nothing if cancelled",
    "key_multiple_effects": "no key has more than one effect",
    "key_answer_changed": "every key gives the same definite answer each time",
    "call_unresolved": "every key got a definite answer, at once or retried after recovery",
    "replay_not_definite": "every key asked again after recovery answers definitely",
    "unexpected_error": "no call gets an answer a correct suite never gives",
    "payment_not_final": "no payment is PENDING or awaiting capture after recovery",
    "refund_mismatch": "refunds <= what moved (a split payee's <= its part), as answered, once",
    "event_mismatch": "one final event per party of each final payment and refund, matching",
    "split_partial": "a split payment or its refund posted all its legs, or none of them",
}


@dataclasses.dataclass(frozen=True)
class Violation:
    kind: str
    message: str
    example: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True, kw_only=True)
class CheckSettings:
    pending_limit_s: float = 10.0
    indefinite_settle_s: float = 20.0


@dataclasses.dataclass(frozen=True)
class CheckResult:
    violations: dict[str, list[Violation]]

    @property
    def valid(self) -> bool:
        return not any(self.violations.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "valid": self.valid,
            "checks": {kind: "violated" if self.violations.get(kind) else "ok" for kind in CHECKS},
            "violations": {
                kind: {
                    "count": len(found),
                    "claim": CHECKS[kind],
                    "first": {"message": found[0].message, **found[0].example},
                }
                for kind, found in self.violations.items()
                if found
            },
        }


def check_history(history: History, settings: CheckSettings) -> CheckResult:
    by_key = calls_by_key(history.calls)
    found: list[Violation] = [
        *check_conservation(history),
        *check_no_negative([*history.samples, *_present(history.quiescent)]),
        *check_run_totals(history, settings),
        *check_pending(history, settings),
        *check_successes_recorded(history.calls, history.gateway_payments),
        *check_balances(history),
        *check_captures(history),
        *check_refunds(history),
        *check_events(history),
        *check_splits(history),
        *check_one_effect_per_key(by_key, history.gateway_payments),
        *check_answers_stable(by_key),
        *check_resolved(by_key),
        *check_replays(history.calls),
        *check_unexpected(history.calls),
        *check_final_statuses(history.gateway_payments),
    ]
    violations: dict[str, list[Violation]] = defaultdict(list)
    for violation in found:
        violations[violation.kind].append(violation)
    return CheckResult(dict(violations))


def _present(sample: Sample | None) -> list[Sample]:
    return [] if sample is None else [sample]


def calls_by_key(calls: Iterable[Call]) -> dict[str, list[Call]]:
    grouped: dict[str, list[Call]] = defaultdict(list)
    for call in sorted(calls, key=lambda c: (c.start_s, c.end_s)):
        grouped[call.key].append(call)
    return dict(grouped)


def first_definite(calls: list[Call]) -> Call | None:
    return next((c for c in calls if c.outcome in (Outcome.SUCCEEDED, Outcome.REFUSED)), None)


# Money ----------------------------------------------------------------------------------


def check_conservation(history: History) -> list[Violation]:
    final = history.quiescent
    initial = history.initial_total()
    if final is None or not final.complete:
        return [Violation("money_not_conserved", "no complete read of the accounts after recovery")]
    total = final.total_balance()
    if total == initial:
        return []
    return [
        Violation(
            "money_not_conserved",
            f"total after recovery {total} != initial total {initial}",
            {"initial_minor": initial, "final_minor": total, "difference_minor": total - initial},
        )
    ]


def check_no_negative(samples: Iterable[Sample]) -> list[Violation]:
    found = []
    for sample in samples:
        for read in sample.reads:
            values = (read.balance, read.available, read.pending_debit, read.pending_credit)
            if min(values) < 0:
                found.append(
                    Violation(
                        "negative_balance",
                        f"{read.bank_id}/{read.account_number} read negative at "
                        f"{sample.start_s:.1f} s",
                        {"at_s": sample.start_s, **dataclasses.asdict(read)},
                    )
                )
    return found


def check_run_totals(history: History, settings: CheckSettings) -> list[Violation]:
    initial = history.initial_total()
    windows = active_windows(history, settings.indefinite_settle_s)
    found = []
    for sample in history.samples:
        if not sample.complete:
            continue
        in_flight = windows.amount_overlapping(sample.start_s, sample.end_s)
        delta = sample.total_balance() - initial
        low = -(sample.total_pending_credit() + in_flight)
        high = sample.total_pending_debit() + in_flight
        if not low <= delta <= high:
            found.append(
                Violation(
                    "total_out_of_bounds",
                    f"total - initial = {delta} outside [{low}, {high}] at {sample.start_s:.1f} s",
                    {"at_s": sample.start_s, "delta_minor": delta, "low": low, "high": high},
                )
            )
    return found


@dataclasses.dataclass(frozen=True)
class ActiveWindows:
    """The intervals in which each call may have decided a payment, sorted by start."""

    starts: list[float]
    ends: list[float]
    amounts: list[int]
    longest_s: float

    def amount_overlapping(self, start_s: float, end_s: float) -> int:
        # Only windows that start at most `longest_s` before `start_s` can reach it.
        first = bisect.bisect_left(self.starts, start_s - self.longest_s)
        last = bisect.bisect_right(self.starts, end_s)
        return sum(self.amounts[i] for i in range(first, last) if self.ends[i] >= start_s)


def active_windows(history: History, settle_s: float) -> ActiveWindows:
    rows = []
    # A capture or a refund in flight moves money too: its amount counts as a call's does.
    for refund in history.refunds:
        definite = refund.outcome in (Outcome.SUCCEEDED, Outcome.REFUSED)
        end_s = refund.end_s if definite else refund.end_s + settle_s
        rows.append((refund.start_s, end_s, refund.amount_minor))
    for settled in history.settlements:
        if settled.action == "capture":
            definite = settled.outcome in (Outcome.SUCCEEDED, Outcome.REFUSED)
            end_s = settled.end_s if definite else settled.end_s + settle_s
            rows.append((settled.start_s, end_s, settled.amount_minor))
    for call in history.calls:
        intent = history.intents.get(call.key)
        if intent is None:
            continue
        definite = call.outcome in (Outcome.SUCCEEDED, Outcome.REFUSED)
        end_s = call.end_s if definite else call.end_s + settle_s
        rows.append((call.start_s, end_s, intent.amount_minor))
    rows.sort()
    return ActiveWindows(
        starts=[r[0] for r in rows],
        ends=[r[1] for r in rows],
        amounts=[r[2] for r in rows],
        longest_s=max((r[1] - r[0] for r in rows), default=0.0),
    )


def check_pending(history: History, settings: CheckSettings) -> list[Violation]:
    if history.pending_settled_after_s is not None:
        return []
    held = [r for r in _reads(history.quiescent) if r.pending_debit or r.pending_credit]
    example = dataclasses.asdict(held[0]) if held else {}
    return [
        Violation(
            "hold_pending_after_recovery",
            f"{len(held)} account(s) still had holds {settings.pending_limit_s} s after recovery",
            example,
        )
    ]


def _reads(sample: Sample | None) -> tuple[AccountRead, ...]:
    return () if sample is None else sample.reads


def check_balances(history: History) -> list[Violation]:
    """Each account's final balance is its initial one plus its SUCCEEDED payments (of a
    split payment, each payee its part), less what it refunded and plus what was refunded
    to it."""
    expected = {u.username: u.initial_minor for u in history.users}
    for username, change in refunded_by_user(history).items():
        expected[username] = expected.get(username, 0) + change
    for payment in history.gateway_payments:
        moved = moved_minor(payment)
        if moved:
            expected[payment.payer] = expected.get(payment.payer, 0) - moved
            for payee, part in payment.credits(moved):
                expected[payee] = expected.get(payee, 0) + part
    reads = {(r.bank_id, r.account_number): r for r in _reads(history.quiescent)}
    found = []
    for user in history.users:
        read = reads.get((user.bank_id, user.account_number))
        if read is None:
            continue  # check_conservation already reports the missing read
        if read.balance != expected[user.username]:
            found.append(
                Violation(
                    "balance_mismatch",
                    f"{user.username} at {user.bank_id}/{user.account_number} has "
                    f"{read.balance}, its SUCCEEDED payments say {expected[user.username]}",
                    {
                        "username": user.username,
                        "bank_id": user.bank_id,
                        "account_number": user.account_number,
                        "expected_minor": expected[user.username],
                        "actual_minor": read.balance,
                    },
                )
            )
    return found


def check_captures(history: History) -> list[Violation]:
    """Each authorization captured at most its amount, exactly what a capture that was
    answered asked for and was told, and nothing when it was cancelled or expired."""
    answers: dict[str, set[int]] = defaultdict(set)
    asked: dict[str, int] = {}
    for settled in history.settlements:
        if settled.action == "capture" and settled.outcome == Outcome.SUCCEEDED:
            answers[settled.payment_id].add(settled.amount_captured)
            asked[settled.payment_id] = settled.amount_minor
    found = []
    for payment in history.gateway_payments:
        problem = _capture_problem(payment, asked.get(payment.payment_id), answers)
        if problem:
            found.append(
                Violation(
                    "capture_mismatch",
                    f"authorization {payment.payment_id} (key {payment.key}): {problem}",
                    {"payment_id": payment.payment_id, "key": payment.key},
                )
            )
    return found


def _capture_problem(
    payment: GatewayPayment, asked: int | None, answers: dict[str, set[int]]
) -> str:
    captured = payment.amount_captured
    if not payment.manual:
        return ""
    if not 0 <= captured <= payment.amount_minor:
        return f"captured {captured} of {payment.amount_minor} authorized"
    if payment.status == SUCCEEDED and captured == 0:
        return "SUCCEEDED with nothing captured"
    if payment.status != SUCCEEDED and captured != 0:
        return f"{payment.status} with {captured} captured"
    if asked is not None and (
        payment.status != SUCCEEDED
        or answers[payment.payment_id] != {captured}
        or captured != asked
    ):
        return (
            f"a capture of {asked} was answered {sorted(answers[payment.payment_id])};"
            f" the gateway lists {payment.status} with {captured} captured"
        )
    return ""


# Keys -----------------------------------------------------------------------------------


def check_successes_recorded(
    calls: Iterable[Call], payments: Iterable[GatewayPayment]
) -> list[Violation]:
    by_id = {p.payment_id: p for p in payments}
    found = []
    for call in calls:
        if call.outcome != Outcome.SUCCEEDED:
            continue
        payment = by_id.get(call.payment_id)
        made = (
            (SUCCEEDED, REQUIRES_CAPTURE, CANCELED) if payment and payment.manual else (SUCCEEDED,)
        )
        if payment is None or payment.status not in made or payment.key != call.key:
            seen = "absent" if payment is None else f"{payment.status} under key {payment.key}"
            found.append(
                Violation(
                    "success_not_recorded",
                    f"key {call.key} succeeded as {call.payment_id}, the gateway lists it {seen}",
                    {"key": call.key, "payment_id": call.payment_id, "phase": call.phase.value},
                )
            )
    return found


def check_one_effect_per_key(
    by_key: dict[str, list[Call]], payments: Iterable[GatewayPayment]
) -> list[Violation]:
    effects: dict[str, list[str]] = defaultdict(list)
    for payment in payments:
        # An authorization is an effect of its key however its payee settled it.
        if payment.status == SUCCEEDED or (payment.manual and payment.status != "FAILED"):
            effects[payment.key].append(payment.payment_id)
    found = []
    for key, ids in effects.items():
        first = first_definite(by_key.get(key, []))
        refused = first is not None and first.outcome == Outcome.REFUSED
        if len(ids) > 1 or refused:
            why = f"answered {first.reason} but" if first is not None and refused else "has"
            found.append(
                Violation(
                    "key_multiple_effects",
                    f"key {key} {why} {len(ids)} SUCCEEDED payment(s)",
                    {"key": key, "payment_ids": sorted(ids)},
                )
            )
    return found


def check_answers_stable(by_key: dict[str, list[Call]]) -> list[Violation]:
    found = []
    for key, calls in by_key.items():
        first = first_definite(calls)
        if first is None:
            continue
        for call in calls:
            definite = call.outcome in (Outcome.SUCCEEDED, Outcome.REFUSED)
            if definite and call.answer() != first.answer():
                found.append(
                    Violation(
                        "key_answer_changed",
                        f"key {key} answered {first.answer()} then {call.answer()} "
                        f"({call.phase.value})",
                        {"key": key, "first": list(first.answer()), "later": list(call.answer())},
                    )
                )
                break
    return found


def check_resolved(by_key: dict[str, list[Call]]) -> list[Violation]:
    return [
        Violation(
            "call_unresolved",
            f"key {key} got no definite answer in {len(calls)} call(s)",
            {"key": key, "last_code": calls[-1].code, "last_reason": calls[-1].reason},
        )
        for key, calls in by_key.items()
        if first_definite(calls) is None
    ]


def check_replays(calls: Iterable[Call]) -> list[Violation]:
    return [
        Violation(
            "replay_not_definite",
            f"key {c.key} asked again after recovery got {c.code} {c.reason}",
            {"key": c.key, "code": c.code, "reason": c.reason},
        )
        for c in calls
        if c.phase == Phase.REPLAY and c.outcome not in (Outcome.SUCCEEDED, Outcome.REFUSED)
    ]


def check_unexpected(calls: Iterable[Call]) -> list[Violation]:
    return [
        Violation(
            "unexpected_error",
            f"key {c.key} got {c.code} {c.reason} {c.status}".rstrip(),
            {"key": c.key, "code": c.code, "reason": c.reason, "phase": c.phase.value},
        )
        for c in calls
        if c.outcome == Outcome.ERROR
    ]


def check_final_statuses(payments: Iterable[GatewayPayment]) -> list[Violation]:
    return [
        Violation(
            "payment_not_final",
            f"payment {p.payment_id} (key {p.key}) is still {p.status} after recovery",
            {"payment_id": p.payment_id, "key": p.key},
        )
        for p in payments
        if p.status in (PENDING, REQUIRES_CAPTURE)
    ]
