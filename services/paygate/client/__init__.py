"""The Paygate client library: AsyncClient (asyncio) and Client (blocking).

    async with AsyncClient("127.0.0.1:50051", ca_cert="certs/ca.pem") as client:
        await client.login("alice", password)
        payment = await client.pay("bob", 1250, description="lunch")

An authorization holds the payer's money until its payee captures it (all or part) or
cancels it, before its `capture_before`:

        held = await client.pay("shop", 2000, capture_later=True)   # payer
        await shop_client.capture(held.payment_id, 1250)               # payee: 12.50 of 20.00

Every call has a deadline (`timeout_s`, 10 s by default). Failures are raised as the
exceptions of paygate.errors, each with a `reason` such as "INSUFFICIENT_FUNDS".

Offline payments (docs/offline-payments.md): give the client an Outbox and pay with
`queue_if_offline=True`; a QueuedPayment comes back when the gateway cannot be reached,
and deliver_queued() or start_delivery() send it later, exactly once.

Bulk payouts: pay_many([BatchItem(payee_username="bob", amount_minor=1250), ...]) pays
up to 1,000 payees a call, each item its own payment with its own key and its own
BatchResult (its payment or its error); the batch is not atomic.

Account security: enroll_totp() and confirm_totp() turn two-factor login on (then
login(..., one_time_code=...)), disable_totp(), regenerate_recovery_codes(),
change_password(), list_sessions(), revoke_session(), logout(all_sessions=True).
"""

from paygate.client._async_client import DEFAULT_TARGET, DEFAULT_TIMEOUT_S, AsyncClient
from paygate.client._batch import MAX_BATCH_ITEMS, BatchItem, BatchResult
from paygate.client._events import Event
from paygate.client._models import (
    Balance,
    CaptureMethod,
    Payment,
    PaymentStatus,
    Refund,
    RefundStatus,
    RegisteredUser,
    Session,
    SessionInfo,
    Split,
    TotpEnrollment,
)
from paygate.client._sync_client import Client
from paygate.client.delivery import DeliveryReport, DeliverySettings, RunEnd
from paygate.client.outbox import Outbox, OutboxMetrics, Outcome
from paygate.client.outbox_models import EntryState, QueuedPayment, default_outbox_path
from paygate.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    OutOfRange,
    PaygateError,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)

__all__ = [
    "DEFAULT_TARGET",
    "DEFAULT_TIMEOUT_S",
    "MAX_BATCH_ITEMS",
    "Aborted",
    "AlreadyExists",
    "AsyncClient",
    "Balance",
    "BatchItem",
    "BatchResult",
    "CaptureMethod",
    "Client",
    "DeliveryReport",
    "DeliverySettings",
    "EntryState",
    "Event",
    "FailedPrecondition",
    "InvalidArgument",
    "NotFound",
    "OutOfRange",
    "Outbox",
    "OutboxMetrics",
    "Outcome",
    "PaygateError",
    "Payment",
    "PaymentStatus",
    "PermissionDenied",
    "QueuedPayment",
    "Refund",
    "RefundStatus",
    "RegisteredUser",
    "ResourceExhausted",
    "RunEnd",
    "Session",
    "SessionInfo",
    "Split",
    "TotpEnrollment",
    "Unauthenticated",
    "Unavailable",
    "default_outbox_path",
]
