"""What the workload sends for an intent and how it reads the answer, for CreatePayment and
for an item of BatchCreatePayments alike: the gateway treats an item's key exactly as a
CreatePayment's (both are Payments.create), so an item is recorded as a Call of its key and
retried, resolved and replayed as one.

A Call's outcome is what the answer means to a client that always resends the same key:
SUCCEEDED (a payment came back), REFUSED (a final business answer the key keeps),
INDEFINITE (send the key again) or ERROR (an answer a correct suite never gives).
"""

from __future__ import annotations

import grpc

from paygate.chaos.history import Call, Intent, Outcome, Phase
from paygate.errors import IDEMPOTENCY_KEY_MISMATCH
from paygate.gen.paygate.v1 import gateway_pb2

DESCRIPTION_PREFIX = "chaos:"
RETRY_BACKOFF_S = 0.2
RETRY_BACKOFF_MAX_S = 1.0

# Answers after which the same key must be sent again: the outcome is not known yet.
# CANCELLED is what a call still running gets from a server that stops (a restart).
INDEFINITE_CODES = {
    "UNAVAILABLE",
    "DEADLINE_EXCEEDED",
    "ABORTED",
    "RESOURCE_EXHAUSTED",
    "CANCELLED",
}
STATUS_NAMES: dict[int, str] = {
    gateway_pb2.PAYMENT_STATUS_PENDING: "PENDING",
    gateway_pb2.PAYMENT_STATUS_SUCCEEDED: "SUCCEEDED",
    gateway_pb2.PAYMENT_STATUS_FAILED: "FAILED",
    gateway_pb2.PAYMENT_STATUS_REQUIRES_CAPTURE: "REQUIRES_CAPTURE",
    gateway_pb2.PAYMENT_STATUS_CANCELED: "CANCELED",
}
# What a CreatePayment of an authorization may answer: as made, or as its payee left it.
AUTHORIZED_STATUSES = ("REQUIRES_CAPTURE", "SUCCEEDED", "CANCELED")
# A batch item's error names its gRPC status by number (google.rpc.Code).
CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}


def classify(code: str, reason: str) -> Outcome:
    """What a failed CreatePayment call means to a client that always resends the same key."""
    if code in INDEFINITE_CODES:
        return Outcome.INDEFINITE
    if code == "FAILED_PRECONDITION" and reason != IDEMPOTENCY_KEY_MISMATCH:
        return Outcome.REFUSED
    return Outcome.ERROR


def backoff_s(attempt: int) -> float:
    return float(min(RETRY_BACKOFF_MAX_S, RETRY_BACKOFF_S * 2**attempt))


def status_name(status: int) -> str:
    return STATUS_NAMES.get(status, str(status))


def create_request(intent: Intent, currency: str) -> gateway_pb2.CreatePaymentRequest:
    """Exactly the intent's parameters: every send of its key, alone or in a batch, is this."""
    return gateway_pb2.CreatePaymentRequest(
        idempotency_key=intent.key,
        payee_username="" if intent.splits else intent.payee,
        amount=intent.amount_minor,
        currency=currency,
        description=DESCRIPTION_PREFIX + intent.key,
        capture_method=gateway_pb2.CAPTURE_METHOD_MANUAL
        if intent.manual
        else gateway_pb2.CAPTURE_METHOD_AUTOMATIC,
        splits=[gateway_pb2.Split(payee_username=p, amount=a) for p, a in intent.splits],
    )


def answered_call(
    intent: Intent,
    phase: Phase,
    start_s: float,
    end_s: float,
    payment: gateway_pb2.Payment,
    batch: int = 0,
) -> Call:
    status = status_name(payment.status)
    return Call(
        key=intent.key,
        phase=phase,
        start_s=start_s,
        end_s=end_s,
        # CreatePayment answers only with a SUCCEEDED payment (an authorization: as made,
        # or as its payee left it); anything else is a bug.
        outcome=Outcome.SUCCEEDED
        if status in (AUTHORIZED_STATUSES if intent.manual else ("SUCCEEDED",))
        else Outcome.ERROR,
        payment_id=payment.payment_id,
        status=status,
        code="OK",
        batch=batch,
    )


def failed_call(
    intent: Intent,
    phase: Phase,
    start_s: float,
    end_s: float,
    code: str,
    reason: str,
    batch: int = 0,
) -> Call:
    return Call(
        key=intent.key,
        phase=phase,
        start_s=start_s,
        end_s=end_s,
        outcome=classify(code, reason),
        code=code,
        reason=reason,
        batch=batch,
    )
