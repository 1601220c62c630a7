"""The checker's claim about events (a pure function over a run's History):

    event_mismatch   each user's events are numbered 1, 2, 3, ... with no gap; and for
                     every payment and refund in its final state, each of its parties (a
                     payment's payer and payee, or every payee of a split payment; a
                     refund's payer and payee, and of a split payment's refund every payee
                     it takes a share from) has exactly one final event of it, of the type
                     its state says, carrying that state (none of a payment that failed
                     says it succeeded)

The final event of a payment: payment.succeeded or payment.captured (SUCCEEDED),
payment.failed (FAILED), payment.canceled or payment.expired (CANCELED); of a refund:
refund.succeeded or refund.failed. payment.authorized is not final.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

from paygate.chaos.history import GatewayEvent, History

if TYPE_CHECKING:
    from paygate.chaos.checker import Violation

FINAL_TYPES = {
    "SUCCEEDED": {"payment.succeeded", "payment.captured", "refund.succeeded"},
    "FAILED": {"payment.failed", "refund.failed"},
    "CANCELED": {"payment.canceled", "payment.expired"},
}
FINAL = set().union(*FINAL_TYPES.values())


def check_events(history: History) -> list[Violation]:
    from paygate.chaos.checker import Violation

    return [
        Violation("event_mismatch", message, example) for message, example in _problems(history)
    ]


def _problems(history: History) -> list[tuple[str, dict[str, str]]]:
    if not history.events_read:
        return []  # a history made by hand, without events
    by_user: dict[str, list[GatewayEvent]] = defaultdict(list)
    finals: dict[tuple[str, str], list[GatewayEvent]] = defaultdict(list)
    for event in history.gateway_events:
        by_user[event.username].append(event)
        if event.type in FINAL:
            finals[(event.username, event.object_id)].append(event)
    problems = []
    for username, events in sorted(by_user.items()):
        numbers = [e.sequence for e in events]
        if numbers != list(range(1, len(numbers) + 1)):
            problems.append((f"{username}'s events are numbered {numbers[:8]}...",
                             {"username": username}))  # fmt: skip
    objects = [(p.payment_id, p.status, p.parties()) for p in history.gateway_payments]
    payers = {p.payment_id: (p.payer, p.payee) for p in history.gateway_payments}
    for refund in history.gateway_refunds:
        # The refunding payee (of a split payment, its first), the payer it pays back, and
        # each payee who gives a share.
        payer, payee = payers.get(refund.payment_id, ("", ""))
        sharing = [username for username, _ in refund.splits]
        parties = tuple(dict.fromkeys([payee, payer, *sharing]))
        objects.append((refund.refund_id, refund.status, parties))
    for object_id, status, parties in objects:
        if status not in FINAL_TYPES:
            continue  # not final: payment_not_final or refund_mismatch say so
        for username in parties:
            found = finals[(username, object_id)]
            example = {"object_id": object_id, "username": username}
            if len(found) != 1:
                problems.append((f"{object_id} ({status}) has {len(found)} final events for"
                                 f" {username}", example))  # fmt: skip
            elif found[0].type not in FINAL_TYPES[status] or found[0].status != status:
                problems.append((f"{object_id} is {status}, its final event for {username} is"
                                 f" {found[0].type} ({found[0].status})", example))  # fmt: skip
    return problems
