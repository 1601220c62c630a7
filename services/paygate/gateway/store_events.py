"""The store's event bodies: an event per party, written with the change it tells of.

Every store method that changes what a user sees of a payment (a decision, an
authorization, a capture, a cancellation or an expiry; the same for a refund) calls
`record` in its own database transaction, after its conditional write applied: so an
event exists exactly when its change does, under any crash, and never for a write that
lost a race. Each party of the payment gets one row, numbered by its own counter
(`users.event_seq`): updating the counter holds the user's row lock until commit, so a
user's events commit in sequence order, also from several gateways on PostgreSQL, and a
reader that resumes after the last sequence it saw can never miss one that commits later
with a smaller number (the hole of outbox tables numbered by one global sequence). The
counters are taken in user id order, so two changes never wait on each other.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import time
from typing import Any

from paygate.common.invariants import check
from paygate.errors import AUTHORIZATION_EXPIRED
from paygate.gateway.models import Event, EventType, Payment, PaymentStatus, Split, TxnState
from paygate.gateway.statements import PAYMENTS, GatewaySql
from paygate.gateway.store_tx import Tx

COMMIT, ABORT, AUTHORIZE, CAPTURE, CANCEL = "commit", "abort", "authorize", "capture", "cancel"


def event_type(change: str, payment: Payment) -> EventType:
    """The type of the event a change of `payment` (as it is after it) makes."""
    if payment.refund_of:
        return EventType.REFUND_SUCCEEDED if change == COMMIT else EventType.REFUND_FAILED
    if change == CANCEL:
        if payment.failure_reason == AUTHORIZATION_EXPIRED:
            return EventType.PAYMENT_EXPIRED
        return EventType.PAYMENT_CANCELED
    return {
        COMMIT: EventType.PAYMENT_SUCCEEDED,
        ABORT: EventType.PAYMENT_FAILED,
        AUTHORIZE: EventType.PAYMENT_AUTHORIZED,
        CAPTURE: EventType.PAYMENT_CAPTURED,
    }[change]


async def record(tx: Tx, sql: GatewaySql, payment_id: str, change: str, written: list[str]) -> None:
    """Write the events of a change to `payment_id`, one per party, in this transaction
    (their types are added to `written`, to be counted once it commits)."""
    row = await tx.one(sql.payment, {"payment_id": payment_id})
    check(row is not None, f"event of {payment_id}: the payment vanished inside a transaction")
    assert row is not None
    payment = PAYMENTS.from_row(row)
    kind = str(event_type(change, payment))
    values = {
        "type": kind,
        "create_time_us": time.time_ns() // 1000,
        "payment_id": payment_id,
        "body": dump(payment),
    }
    for user_id in sorted(payment.parties):
        counted = await tx.one(sql.next_event_seq, {"user_id": user_id})
        check(counted is not None, f"event of {payment_id}: no user {user_id}")
        assert counted is not None
        await tx.run(sql.insert_event, {
            **values, "event_id": f"evt_{secrets.token_hex(12)}", "user_id": user_id,
            "sequence": int(counted[0]),
        })  # fmt: skip
        written.append(kind)


def dump(payment: Payment) -> str:
    return json.dumps(dataclasses.asdict(payment), separators=(",", ":"), sort_keys=True)


def load(body: str) -> Payment:
    fields: dict[str, Any] = json.loads(body)
    fields["status"] = PaymentStatus(fields["status"])
    fields["txn_state"] = TxnState(fields["txn_state"])
    fields["splits"] = tuple(Split(**split) for split in fields.get("splits", ()))
    return Payment(**fields)


async def events_of(
    tx: Tx, sql: GatewaySql, user_id: str, *, after: int, limit: int
) -> list[Event]:
    rows = await tx.all(sql.events_of, {"user_id": user_id, "after": after, "limit": limit})
    return [
        Event(event_id=event_id, user_id=user_id, sequence=int(sequence),
              type=EventType(kind), create_time_us=int(created), payment=load(body))
        for event_id, sequence, kind, created, body in rows
    ]  # fmt: skip
