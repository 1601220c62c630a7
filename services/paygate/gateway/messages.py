"""GatewayService's messages from domain records and back: payments, refunds, events,
bulk results, and the checks of request fields that the domain does not make itself
(servicer.py uses them; nothing here calls the domain)."""

from __future__ import annotations

from collections.abc import Sequence

from google.protobuf import timestamp_pb2

from paygate.common.call_info import note
from paygate.common.handlers import Context
from paygate.common.invariants import check
from paygate.errors import (
    IDEMPOTENT_REPLAYED_HEADER,
    InvalidArgument,
    PaygateError,
    status_code_of,
)
from paygate.gateway.bulk_payments import ItemResult
from paygate.gateway.models import Event, Payment, PaymentRequest, PaymentStatus, SplitRequest
from paygate.gateway.payments import MAX_SPLITS
from paygate.gen.paygate.v1 import gateway_pb2

_STATUS = {
    PaymentStatus.PENDING: gateway_pb2.PAYMENT_STATUS_PENDING,
    PaymentStatus.REQUIRES_CAPTURE: gateway_pb2.PAYMENT_STATUS_REQUIRES_CAPTURE,
    PaymentStatus.SUCCEEDED: gateway_pb2.PAYMENT_STATUS_SUCCEEDED,
    PaymentStatus.FAILED: gateway_pb2.PAYMENT_STATUS_FAILED,
    PaymentStatus.CANCELED: gateway_pb2.PAYMENT_STATUS_CANCELED,
}
_REFUND_STATUS = {
    PaymentStatus.PENDING: gateway_pb2.REFUND_STATUS_PENDING,
    PaymentStatus.SUCCEEDED: gateway_pb2.REFUND_STATUS_SUCCEEDED,
    PaymentStatus.FAILED: gateway_pb2.REFUND_STATUS_FAILED,
}
_MANUAL: dict[int, bool] = {
    gateway_pb2.CAPTURE_METHOD_UNSPECIFIED: False,
    gateway_pb2.CAPTURE_METHOD_AUTOMATIC: False,
    gateway_pb2.CAPTURE_METHOD_MANUAL: True,
}
MAX_STRING_LENGTH = 1024
# An item's error message in a batch's answer: a message that quotes the item's input (an
# unknown currency of 1,024 characters, escaped) must not make 1,000 answers outgrow the
# batch's message limit (docs/protocol.md, "Bulk payouts").
ITEM_MESSAGE_MAX_LENGTH = 500


def payment_message(payment: Payment) -> gateway_pb2.Payment:
    create_time = timestamp_pb2.Timestamp()
    create_time.FromMicroseconds(payment.create_time_us)
    captured = payment.amount_captured_minor
    if not payment.manual_capture and payment.status == PaymentStatus.SUCCEEDED:
        captured = payment.amount_minor  # an automatic payment moves all of it at once
    message = gateway_pb2.Payment(
        payment_id=payment.payment_id,
        status=_STATUS[payment.status],
        payer_username=payment.payer_username,
        payee_username=payment.payee_username,
        amount=payment.amount_minor,
        currency=payment.currency,
        description=payment.description,
        create_time=create_time,
        failure_reason=payment.failure_reason,
        capture_method=gateway_pb2.CAPTURE_METHOD_MANUAL
        if payment.manual_capture
        else gateway_pb2.CAPTURE_METHOD_AUTOMATIC,
        amount_captured=captured,
        amount_refunded=payment.amount_refunded_minor,
        splits=[
            gateway_pb2.Split(payee_username=split.payee_username, amount=split.amount_minor)
            for split in payment.splits
        ],
    )
    if payment.manual_capture:
        message.capture_before.FromMicroseconds(payment.capture_before_us)
    return message


def refund_message(refund: Payment) -> gateway_pb2.Refund:
    """A refund, from its row (the payment turned around: gateway/refunds.py)."""
    message = gateway_pb2.Refund(
        refund_id=refund.payment_id,
        payment_id=refund.refund_of,
        amount=refund.amount_minor,
        currency=refund.currency,
        status=_REFUND_STATUS[refund.status],
        reason=refund.description,
        failure_reason=refund.failure_reason,
        splits=[
            gateway_pb2.Split(payee_username=split.payee_username, amount=split.amount_minor)
            for split in refund.splits
        ],
    )
    message.create_time.FromMicroseconds(refund.create_time_us)
    return message


def event_message(event: Event) -> gateway_pb2.Event:
    message = gateway_pb2.Event(
        event_id=event.event_id, sequence=event.sequence, type=str(event.type)
    )
    message.create_time.FromMicroseconds(event.create_time_us)
    if event.payment.refund_of:
        message.refund.CopyFrom(refund_message(event.payment))
    else:
        message.payment.CopyFrom(payment_message(event.payment))
    return message


def payment_request(message: gateway_pb2.CreatePaymentRequest) -> PaymentRequest:
    return PaymentRequest(
        idempotency_key=message.idempotency_key,
        payee_username=bounded(message.payee_username, "payee_username"),
        amount_minor=message.amount,
        currency=bounded(message.currency, "currency"),
        description=message.description,
        manual_capture=capture_method(message.capture_method),
        splits=split_requests(message.splits),
    )


def split_requests(splits: Sequence[gateway_pb2.Split]) -> tuple[SplitRequest, ...]:
    if len(splits) > MAX_SPLITS:  # checked before the names are read (payments.py: 2 to 10)
        raise InvalidArgument(f"a payment has at most {MAX_SPLITS} splits, not {len(splits)}")
    return tuple(
        SplitRequest(
            payee_username=bounded(split.payee_username, "splits.payee_username"),
            amount_minor=split.amount,
        )
        for split in splits
    )


def request_or_error(message: gateway_pb2.CreatePaymentRequest) -> PaymentRequest | PaygateError:
    """An item of a batch: its request, or the error that refuses it alone."""
    try:
        return payment_request(message)
    except PaygateError as error:
        return error


def batch_result_message(result: ItemResult) -> gateway_pb2.BatchCreatePaymentResult:
    if result.payment is not None:
        return gateway_pb2.BatchCreatePaymentResult(
            payment=payment_message(result.payment), replayed=result.replayed
        )
    check(result.error is not None, "a batch item answered with neither payment nor error")
    assert result.error is not None
    error = result.error
    return gateway_pb2.BatchCreatePaymentResult(
        error=gateway_pb2.BatchItemError(
            code=status_code_of(error).value[0],
            reason=error.reason,
            message=cut(error.message, ITEM_MESSAGE_MAX_LENGTH),
            metadata=error.metadata,
        ),
        replayed=result.replayed,
    )


def capture_method(value: int) -> bool:
    """Whether a CreatePayment's capture_method asks for an authorization only."""
    if value not in _MANUAL:
        raise InvalidArgument(f"capture_method {value} is not a CaptureMethod")
    return _MANUAL[value]


async def mark_replayed(context: Context, replayed: list[bool]) -> None:
    """Stripe's Idempotent-Replayed header on an answer given again (answers and errors
    alike), and the mark in the call's log line."""
    if replayed:
        await context.send_initial_metadata(((IDEMPOTENT_REPLAYED_HEADER, "true"),))
        note(replayed=True)


def timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    result = timestamp_pb2.Timestamp()
    result.FromMicroseconds(int(seconds * 1_000_000))
    return result


def cut(text: str, length: int) -> str:
    return text if len(text) <= length else text[: length - 3] + "..."


def bounded(value: str, field: str) -> str:
    if len(value) > MAX_STRING_LENGTH:
        raise InvalidArgument(f"{field} is longer than {MAX_STRING_LENGTH} characters")
    return value
