"""The errors of Paygate, shared by the servers and the client library.

    PaygateError                  every error a caller can cause or observe
     ├── InvalidArgument          INVALID_ARGUMENT: bad input, nothing changed
     ├── NotFound                 NOT_FOUND: no such user, account or payment (or not yours)
     ├── AlreadyExists            ALREADY_EXISTS: duplicate username, account already linked
     ├── Unauthenticated          UNAUTHENTICATED: no, bad, expired or revoked token; bad login
     ├── PermissionDenied         PERMISSION_DENIED: authenticated, but not allowed
     ├── FailedPrecondition       FAILED_PRECONDITION: insufficient funds, currency mismatch,
     │                            idempotency key reused with other parameters
     ├── Aborted                  ABORTED: idempotency key in use by a request still running
     ├── ResourceExhausted        RESOURCE_EXHAUSTED: throttled
     ├── OutOfRange               OUT_OF_RANGE: an events cursor older than what is kept
     └── Unavailable              UNAVAILABLE: a bank is down or too slow; retry with the same key

Each error carries a `reason` (an UPPER_SNAKE string) that travels as a
`google.rpc.ErrorInfo` in the gRPC status details, and `metadata` (a few string pairs,
such as a payment's id and its known outcome) that travels as the ErrorInfo's metadata.
STATUS_BY_ERROR is the one table that maps errors to gRPC status codes;
`paygate.common.error_interceptor` applies it on the servers and `paygate.client` maps
statuses back to these classes.
"""

from __future__ import annotations

from collections.abc import Mapping

import grpc

ERROR_DOMAIN = "paygate.dev"
# Response metadata of a CreatePayment answered again from its idempotency key (a payment or
# a final error), as Stripe's Idempotent-Replayed header: the money moved only the first time.
IDEMPOTENT_REPLAYED_HEADER = "idempotent-replayed"


class PaygateError(Exception):
    """An error with a gRPC status code (by class), a reason and a message for people."""

    default_reason = "ERROR"

    def __init__(
        self, message: str, *, reason: str | None = None, metadata: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.metadata: dict[str, str] = dict(metadata or {})

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, reason={self.reason!r})"


class InvalidArgument(PaygateError):
    default_reason = "INVALID_ARGUMENT"


class NotFound(PaygateError):
    default_reason = "NOT_FOUND"


class AlreadyExists(PaygateError):
    default_reason = "ALREADY_EXISTS"


class Unauthenticated(PaygateError):
    default_reason = "UNAUTHENTICATED"


class PermissionDenied(PaygateError):
    default_reason = "PERMISSION_DENIED"


class FailedPrecondition(PaygateError):
    default_reason = "FAILED_PRECONDITION"


class Aborted(PaygateError):
    default_reason = "ABORTED"


class ResourceExhausted(PaygateError):
    default_reason = "RESOURCE_EXHAUSTED"


class Unavailable(PaygateError):
    default_reason = "UNAVAILABLE"


class OutOfRange(PaygateError):
    default_reason = "OUT_OF_RANGE"


STATUS_BY_ERROR: dict[type[PaygateError], grpc.StatusCode] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    Aborted: grpc.StatusCode.ABORTED,
    ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
    OutOfRange: grpc.StatusCode.OUT_OF_RANGE,
}

ERROR_BY_STATUS: dict[grpc.StatusCode, type[PaygateError]] = {
    code: cls for cls, code in STATUS_BY_ERROR.items()
}

# Reasons that travel in google.rpc.ErrorInfo. Named here so that servers, clients and
# tests agree on the spelling.
INSUFFICIENT_FUNDS = "INSUFFICIENT_FUNDS"
BALANCE_LIMIT_EXCEEDED = "BALANCE_LIMIT_EXCEEDED"
CURRENCY_MISMATCH = "CURRENCY_MISMATCH"
IDEMPOTENCY_KEY_MISMATCH = "IDEMPOTENCY_KEY_MISMATCH"
IDEMPOTENCY_KEY_IN_USE = "IDEMPOTENCY_KEY_IN_USE"
BANK_UNAVAILABLE = "BANK_UNAVAILABLE"
BANK_TIMEOUT = "BANK_TIMEOUT"
DATABASE_UNAVAILABLE = "DATABASE_UNAVAILABLE"
ACCOUNT_NOT_FOUND = "ACCOUNT_NOT_FOUND"
TRANSACTION_ABORTED = "TRANSACTION_ABORTED"
TRANSACTION_COMMITTED = "TRANSACTION_COMMITTED"
# The life of an authorization: captured once, or cancelled by its payee or by its deadline.
PAYMENT_NOT_CAPTURABLE = "PAYMENT_NOT_CAPTURABLE"
AMOUNT_EXCEEDS_CAPTURABLE = "AMOUNT_EXCEEDS_CAPTURABLE"
CANCELED = "CANCELED"
AUTHORIZATION_EXPIRED = "AUTHORIZATION_EXPIRED"
# Refunds: only of a payment that succeeded, never more than it moved.
PAYMENT_NOT_REFUNDABLE = "PAYMENT_NOT_REFUNDABLE"
AMOUNT_EXCEEDS_REFUNDABLE = "AMOUNT_EXCEEDS_REFUNDABLE"
# Events: a cursor from before the oldest event kept (re-list from the start).
EVENTS_EXPIRED = "EVENTS_EXPIRED"
# Account security: two-factor login, and accounts an operator froze.
MFA_REQUIRED = "MFA_REQUIRED"  # the password was right; the account needs a one-time code too
INVALID_ONE_TIME_CODE = "INVALID_ONE_TIME_CODE"
TOTP_NOT_ENROLLED = "TOTP_NOT_ENROLLED"
TOTP_ALREADY_ENABLED = "TOTP_ALREADY_ENABLED"
TOTP_NOT_ENABLED = "TOTP_NOT_ENABLED"
TOTP_KEY_MISMATCH = "TOTP_KEY_MISMATCH"
USER_FROZEN = "USER_FROZEN"  # an operator froze the user (AdminService.FreezeUser)
USER_NOT_FOUND = "USER_NOT_FOUND"  # AdminService: no user of that name

# ErrorInfo metadata of a failed CreatePayment (docs/protocol.md, "What a failed payment
# says"): the payment's id, and what is known of it. OUTCOME_FAILED: the gateway decided
# abort, nothing moved and nothing will, the key was released (transient causes) or keeps
# this error. OUTCOME_UNKNOWN: the payment may still commit; the key stays in use until
# the gateway knows, and a retry with it answers the outcome.
PAYMENT_ID_KEY = "payment_id"
OUTCOME_KEY = "outcome"
OUTCOME_FAILED = "failed"
OUTCOME_UNKNOWN = "unknown"


def status_code_of(error: PaygateError) -> grpc.StatusCode:
    for cls in type(error).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    return grpc.StatusCode.UNKNOWN
