"""An event as the broker carries it: a JSON document and the AMQP properties around it.

The document (docs/events.md, "Relay to RabbitMQ") names the user the event belongs to,
its sequence and type, and the payment (or refund) as it was just after the change, in
the public API's words (gateway.proto's Payment): ids, status, the parties' usernames,
the amounts in minor units, the reasons. Nothing else of the gateway's record leaves: no
user id, bank or account number, no description (free text, read it with GetPayment),
and nothing secret, which the record does not hold anyway.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from typing import Any

from paygate.gateway import store_events
from paygate.gateway.models import Payment, PaymentStatus
from paygate.relay.store import PendingEvent

CONTENT_TYPE = "application/json"
APP_ID = "paygate-relay"
# The document's format: a consumer that meets a larger number reads what it knows.
FORMAT_VERSION = 1
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


@dataclasses.dataclass(frozen=True)
class Outgoing:
    """One message to publish: its routing key (the event type), id and JSON body."""

    id: int  # the event's row, marked published once the broker confirms
    message_id: str  # the event_id: consumers de-duplicate by it
    routing_key: str
    body: bytes
    create_time_us: int


def outgoing(event: PendingEvent) -> Outgoing:
    document = event_document(event)
    body = json.dumps(document, separators=(",", ":"), sort_keys=True).encode()
    return Outgoing(event.id, event.event_id, event.type, body, event.create_time_us)


def event_document(event: PendingEvent) -> dict[str, Any]:
    return {
        "version": FORMAT_VERSION,
        "event_id": event.event_id,
        "type": event.type,
        "username": event.username,
        "sequence": event.sequence,
        "create_time": rfc3339(event.create_time_us),
        "payment": payment_document(store_events.load(event.body)),
    }


def payment_document(payment: Payment) -> dict[str, Any]:
    """The payment or refund in the API's words (gateway/servicer.py payment_message)."""
    captured = payment.amount_captured_minor
    if not payment.manual_capture and payment.status == PaymentStatus.SUCCEEDED:
        captured = payment.amount_minor  # an automatic payment moves all of it at once
    document: dict[str, Any] = {
        "payment_id": payment.payment_id,
        "refund_of": payment.refund_of,
        "status": str(payment.status),
        "payer_username": payment.payer_username,
        "payee_username": payment.payee_username,
        "amount": payment.amount_minor,
        "currency": payment.currency,
        "capture_method": "manual" if payment.manual_capture else "automatic",
        "amount_captured": captured,
        "amount_refunded": payment.amount_refunded_minor,
        "failure_reason": payment.failure_reason,
        "create_time": rfc3339(payment.create_time_us),
    }
    if payment.manual_capture:
        document["capture_before"] = rfc3339(payment.capture_before_us)
    if payment.splits:
        document["splits"] = [
            {"payee_username": split.payee_username, "amount": split.amount_minor}
            for split in payment.splits
        ]
    return document


def rfc3339(time_us: int) -> str:
    """A time in microseconds since the epoch as RFC 3339 in UTC: 2026-11-01T09:30:00.123456Z."""
    moment = _EPOCH + datetime.timedelta(microseconds=time_us)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")
