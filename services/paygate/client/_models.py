"""The values the client library returns: frozen dataclasses built from gateway messages."""

from __future__ import annotations

import dataclasses
import datetime
import enum

from google.protobuf import timestamp_pb2

from paygate.errors import PaygateError
from paygate.gen.paygate.v1 import gateway_pb2

# A response that breaks the protocol is the gateway's bug, not the caller's mistake.
INVALID_RESPONSE = "INVALID_RESPONSE"


class PaymentStatus(enum.StrEnum):
    """Where a payment stands."""

    PENDING = "PENDING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    # An authorization: the payer's money is held until the payee captures or cancels it.
    REQUIRES_CAPTURE = "REQUIRES_CAPTURE"
    # An authorization cancelled by its payee or expired uncaptured: nothing moved.
    CANCELED = "CANCELED"


class CaptureMethod(enum.StrEnum):
    """When a payment's money moves: at once, or when its payee captures it."""

    AUTOMATIC = "AUTOMATIC"
    MANUAL = "MANUAL"


_STATUS_BY_PROTO: dict[int, PaymentStatus] = {
    gateway_pb2.PAYMENT_STATUS_PENDING: PaymentStatus.PENDING,
    gateway_pb2.PAYMENT_STATUS_SUCCEEDED: PaymentStatus.SUCCEEDED,
    gateway_pb2.PAYMENT_STATUS_FAILED: PaymentStatus.FAILED,
    gateway_pb2.PAYMENT_STATUS_REQUIRES_CAPTURE: PaymentStatus.REQUIRES_CAPTURE,
    gateway_pb2.PAYMENT_STATUS_CANCELED: PaymentStatus.CANCELED,
}

# UNSPECIFIED is what a gateway older than authorizations sends: its payments are automatic.
_CAPTURE_METHOD_BY_PROTO: dict[int, CaptureMethod] = {
    gateway_pb2.CAPTURE_METHOD_UNSPECIFIED: CaptureMethod.AUTOMATIC,
    gateway_pb2.CAPTURE_METHOD_AUTOMATIC: CaptureMethod.AUTOMATIC,
    gateway_pb2.CAPTURE_METHOD_MANUAL: CaptureMethod.MANUAL,
}


@dataclasses.dataclass(frozen=True)
class Split:
    """One payee's part of a split payment (AsyncClient.pay_split)."""

    payee_username: str
    amount_minor: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class Payment:
    """One transfer of money from a payer to a payee; amounts in minor units."""

    payment_id: str
    status: PaymentStatus
    payer_username: str
    payee_username: str
    amount_minor: int
    currency: str
    description: str
    create_time: datetime.datetime
    # Why a FAILED payment failed, or why a CANCELED one was cancelled ("CANCELED" by its
    # payee, "AUTHORIZATION_EXPIRED"); empty otherwise.
    failure_reason: str
    capture_method: CaptureMethod = CaptureMethod.AUTOMATIC
    # An authorization's deadline: uncaptured by then, it is cancelled. None otherwise.
    capture_before: datetime.datetime | None = None
    # How much moved: the amount of a succeeded automatic payment, what the payee captured
    # of an authorization (at most the amount), 0 while nothing has.
    amount_captured_minor: int = 0
    # How much of amount_captured_minor went back to the payer in refunds that succeeded.
    amount_refunded_minor: int = 0
    # True when the call (CreatePayment, CapturePayment, CancelPayment) answered again from
    # its idempotency key: an earlier call did this, and nothing happened this time.
    replayed: bool = False
    # A split payment's payees and parts, in the order asked (the first is also
    # payee_username); empty for a payment to one payee.
    splits: tuple[Split, ...] = ()

    @classmethod
    def from_proto(cls, message: gateway_pb2.Payment) -> Payment:
        return cls(
            payment_id=message.payment_id,
            status=payment_status_from_proto(message.status),
            payer_username=message.payer_username,
            payee_username=message.payee_username,
            amount_minor=message.amount,
            currency=message.currency,
            description=message.description,
            create_time=datetime_from_proto(message.create_time),
            failure_reason=message.failure_reason,
            capture_method=capture_method_from_proto(message.capture_method),
            capture_before=(
                datetime_from_proto(message.capture_before)
                if message.HasField("capture_before")
                else None
            ),
            amount_captured_minor=message.amount_captured,
            amount_refunded_minor=message.amount_refunded,
            splits=tuple(Split(split.payee_username, split.amount) for split in message.splits),
        )


class RefundStatus(enum.StrEnum):
    """Where a refund stands."""

    PENDING = "PENDING"  # in flight: its amount is reserved on the payment
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"  # nothing moved; the amount can be refunded again


_REFUND_STATUS_BY_PROTO: dict[int, RefundStatus] = {
    gateway_pb2.REFUND_STATUS_PENDING: RefundStatus.PENDING,
    gateway_pb2.REFUND_STATUS_SUCCEEDED: RefundStatus.SUCCEEDED,
    gateway_pb2.REFUND_STATUS_FAILED: RefundStatus.FAILED,
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Refund:
    """Money of a payment sent back from its payee to its payer; amounts in minor units."""

    refund_id: str
    payment_id: str
    amount_minor: int
    currency: str
    status: RefundStatus
    reason: str
    create_time: datetime.datetime
    failure_reason: str  # why a FAILED refund failed, for example "INSUFFICIENT_FUNDS"
    # True when RefundPayment answered again from its idempotency key: nothing moved now.
    replayed: bool = False
    # Of a split payment's refund: what each payee gives back; empty otherwise.
    splits: tuple[Split, ...] = ()

    @classmethod
    def from_proto(cls, message: gateway_pb2.Refund) -> Refund:
        if message.status not in _REFUND_STATUS_BY_PROTO:
            raise PaygateError(
                f"the gateway sent refund status {message.status}", reason=INVALID_RESPONSE
            )
        return cls(
            refund_id=message.refund_id,
            payment_id=message.payment_id,
            amount_minor=message.amount,
            currency=message.currency,
            status=_REFUND_STATUS_BY_PROTO[message.status],
            reason=message.reason,
            create_time=datetime_from_proto(message.create_time),
            failure_reason=message.failure_reason,
            splits=tuple(Split(split.payee_username, split.amount) for split in message.splits),
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class Balance:
    """The balance of the caller's account; `available` excludes payments in flight."""

    currency: str
    balance_minor: int
    available_minor: int

    @classmethod
    def from_proto(cls, message: gateway_pb2.GetBalanceResponse) -> Balance:
        return cls(
            currency=message.currency,
            balance_minor=message.balance,
            available_minor=message.available,
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class Session:
    """The result of a login: a bearer token and when it stops being accepted."""

    access_token: str = dataclasses.field(repr=False)  # never shown in logs or tracebacks
    expire_time: datetime.datetime

    @classmethod
    def from_proto(cls, message: gateway_pb2.LoginResponse) -> Session:
        return cls(
            access_token=message.access_token,
            expire_time=datetime_from_proto(message.expire_time),
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class SessionInfo:
    """One of the user's live sessions, as ListSessions describes it: never its token."""

    session_id: str
    create_time: datetime.datetime
    # When the session was last used, to the minute.
    last_use_time: datetime.datetime
    expire_time: datetime.datetime
    # The client's address at login, for example "ipv4:127.0.0.1".
    client_address: str
    # Whether this is the session the call was made with.
    current: bool

    @classmethod
    def from_proto(cls, message: gateway_pb2.Session) -> SessionInfo:
        return cls(
            session_id=message.session_id,
            create_time=datetime_from_proto(message.create_time),
            last_use_time=datetime_from_proto(message.last_use_time),
            expire_time=datetime_from_proto(message.expire_time),
            client_address=message.client_address,
            current=message.current,
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class TotpEnrollment:
    """A new two-factor secret for an authenticator app, pending until confirm_totp().
    Both fields hold the secret: neither is shown in a repr (logs, tracebacks)."""

    secret: str = dataclasses.field(repr=False)  # base32, to type into the app
    otpauth_uri: str = dataclasses.field(repr=False)  # the same, to show as a QR code

    @classmethod
    def from_proto(cls, message: gateway_pb2.EnrollTotpResponse) -> TotpEnrollment:
        return cls(secret=message.secret, otpauth_uri=message.otpauth_uri)


@dataclasses.dataclass(frozen=True, kw_only=True)
class RegisteredUser:
    """A gateway user linked to a bank account."""

    user_id: str
    bank_id: str
    account_number: str

    @classmethod
    def from_proto(cls, message: gateway_pb2.RegisterResponse) -> RegisteredUser:
        return cls(
            user_id=message.user_id,
            bank_id=message.bank_id,
            account_number=message.account_number,
        )


def payment_status_from_proto(value: int) -> PaymentStatus:
    status = _STATUS_BY_PROTO.get(value)
    if status is None:
        raise PaygateError(f"gateway sent payment status {value}", reason=INVALID_RESPONSE)
    return status


def capture_method_from_proto(value: int) -> CaptureMethod:
    method = _CAPTURE_METHOD_BY_PROTO.get(value)
    if method is None:
        raise PaygateError(f"gateway sent capture method {value}", reason=INVALID_RESPONSE)
    return method


def datetime_from_proto(timestamp: timestamp_pb2.Timestamp) -> datetime.datetime:
    """An aware UTC datetime, so that it compares correctly with datetime.now(UTC)."""
    return timestamp.ToDatetime(tzinfo=datetime.UTC)
