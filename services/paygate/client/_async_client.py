"""AsyncClient: the asyncio client of the Paygate gateway, over one TLS channel."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import os
import pathlib
import uuid
from collections.abc import AsyncIterator, Sequence
from types import TracebackType
from typing import Any, Literal, Self, overload

import grpc
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc

from paygate.client import _batch
from paygate.client._async_after import AfterPaymentCalls
from paygate.client._async_security import AccountSecurityCalls
from paygate.client._batch import BatchItem, BatchResult, OnResults
from paygate.client._models import (
    Balance,
    Payment,
    RegisteredUser,
    Session,
    Split,
)
from paygate.client._request_checks import (
    DEFAULT_PAGE_SIZE,
    check_capture_fields,
    check_payment_fields,
    checked_next_page_token,
)
from paygate.client.delivery import Deliverer, DeliveryReport, DeliverySettings
from paygate.client.logging_interceptor import LoggingInterceptor
from paygate.client.outbox import Outbox
from paygate.client.outbox_models import PaymentOrder, QueuedPayment
from paygate.client.token_interceptor import (
    TokenHolder,
    TokenInterceptor,
    TokenStreamInterceptor,
)
from paygate.common import tracing
from paygate.common.gateway_targets import channel_target
from paygate.common.money import DEFAULT_CURRENCY
from paygate.common.rpc_errors import error_from_rpc
from paygate.common.tls import channel_credentials
from paygate.errors import IDEMPOTENT_REPLAYED_HEADER, InvalidArgument
from paygate.gen.paygate.v1 import gateway_pb2, gateway_pb2_grpc

DEFAULT_TARGET = "127.0.0.1:50051"
DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
HEALTH_TIMEOUT_S = 1.0  # a health check is small: a slow answer is as bad as none

StrPath = str | os.PathLike[str]


def open_channel(target: str, ca_cert: StrPath, token: TokenHolder) -> grpc.aio.Channel:
    """The client's channel to the gateway: TLS, bounded messages, and its interceptors.

    Several comma-separated addresses make one channel balancing over them
    (paygate.common.gateway_targets).
    """
    target_, balancing = channel_target(target)
    return grpc.aio.secure_channel(
        target_,
        channel_credentials(pathlib.Path(ca_cert)),
        options=[
            ("grpc.max_send_message_length", DEFAULT_MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", DEFAULT_MAX_MESSAGE_BYTES),
            *balancing,
        ],
        # Outermost first: the call's span starts the payment's trace (a no-op unless the
        # application installed an OpenTelemetry SDK); the log line times the whole call.
        interceptors=[
            *tracing.client_interceptors(),
            LoggingInterceptor(),
            TokenInterceptor(token),
            TokenStreamInterceptor(token),
        ],
    )


class AsyncClient(AccountSecurityCalls, AfterPaymentCalls):
    """A client of GatewayService. Use it as an async context manager, or call close().

    The channel is bound to the event loop running when the client is created, so
    create it inside that loop. Every call has a deadline of `timeout_s` seconds.

    With an `outbox`, pay(..., queue_if_offline=True) keeps a payment the gateway cannot
    be reached for, and deliver_queued() or start_delivery() send it later. Queued payments
    belong to a user: `username` (set by login()) says whose token this client holds.
    The client closes its outbox when it closes.

    Two-factor login, the password and sessions: see _async_security.py.
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        ca_cert: StrPath,
        access_token: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        username: str | None = None,
        outbox: Outbox | None = None,
        delivery: DeliverySettings | None = None,
    ) -> None:
        if not (math.isfinite(timeout_s) and timeout_s > 0):
            raise ValueError(f"timeout_s must be a positive number of seconds, not {timeout_s}")
        self.target = target
        self.timeout_s = timeout_s
        self.username = username
        self.outbox = outbox
        self._delivery_settings = delivery or DeliverySettings()
        self._delivery_task: asyncio.Task[None] | None = None
        self._token = TokenHolder(access_token=access_token)
        self._channel = open_channel(target, ca_cert, self._token)
        # The generated stub is untyped; every response is annotated where it is used.
        self._stub = gateway_pb2_grpc.GatewayServiceStub(self._channel)  # type: ignore[no-untyped-call]

    @property
    def access_token(self) -> str | None:
        return self._token.access_token

    @property
    def channel(self) -> grpc.aio.Channel:
        """The client's gRPC channel, for a call the client has no method for: such a call
        goes through the same TLS connection and interceptors (tracing, logging, the bearer
        token). paygate-bench times its baseline RPC on it, so both measure one stack."""
        return self._channel

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        try:
            await self.stop_delivery()
            if self.outbox is not None:
                await self.outbox.close()
        finally:
            await self._channel.close()

    async def register(
        self, username: str, password: str, bank_id: str, account_number: str, *, link_code: str
    ) -> RegisteredUser:
        """Create a user linked to an account; `link_code` is the code its bank gave the
        account holder (the proof that the account is theirs)."""
        request = gateway_pb2.RegisterRequest(
            username=username,
            password=password,
            bank_id=bank_id,
            account_number=account_number,
            link_code=link_code,
        )
        response: gateway_pb2.RegisterResponse = await self._call(self._stub.Register, request)
        return RegisteredUser.from_proto(response)

    async def login(self, username: str, password: str, *, one_time_code: str = "") -> Session:
        """Log in and keep the new token for the calls that follow. A user with two-factor
        login on needs `one_time_code` (the app's code, or a recovery code): without one,
        Unauthenticated with the reason MFA_REQUIRED (the password was right)."""
        request = gateway_pb2.LoginRequest(
            username=username, password=password, one_time_code=one_time_code
        )
        response: gateway_pb2.LoginResponse = await self._call(self._stub.Login, request)
        session = Session.from_proto(response)
        self._token.access_token = session.access_token
        self.username = username
        return session

    async def logout(self, *, all_sessions: bool = False) -> None:
        """Revoke the token at the gateway and forget it, even if the gateway refuses
        (an expired token is as good as revoked). With all_sessions, every session of the
        user ends, wherever it was made."""
        try:
            request = gateway_pb2.LogoutRequest(all_sessions=all_sessions)
            await self._call(self._stub.Logout, request)
        finally:
            self._token.access_token = None

    async def balance(self) -> Balance:
        request = gateway_pb2.GetBalanceRequest()
        response: gateway_pb2.GetBalanceResponse = await self._call(self._stub.GetBalance, request)
        return Balance.from_proto(response)

    @overload
    async def pay(
        self,
        payee_username: str,
        amount_minor: int,
        *,
        currency: str = ...,
        description: str = ...,
        idempotency_key: str | None = ...,
        capture_later: bool = ...,
        queue_if_offline: Literal[False] = ...,
    ) -> Payment: ...

    @overload
    async def pay(
        self,
        payee_username: str,
        amount_minor: int,
        *,
        currency: str = ...,
        description: str = ...,
        idempotency_key: str | None = ...,
        capture_later: bool = ...,
        queue_if_offline: bool,
    ) -> Payment | QueuedPayment: ...

    async def pay(
        self,
        payee_username: str,
        amount_minor: int,
        *,
        currency: str = DEFAULT_CURRENCY,
        description: str = "",
        idempotency_key: str | None = None,
        capture_later: bool = False,
        queue_if_offline: bool = False,
    ) -> Payment | QueuedPayment:
        """Pay another user. Without an idempotency key a new one is made for this call;
        pass your own to retry safely after an Unavailable error.

        With capture_later the payment is an authorization: the money is only held, and
        the payment is REQUIRES_CAPTURE until the payee captures it (capture()) or cancels
        it (cancel()) before its `capture_before`; uncaptured by then, it is cancelled.

        With queue_if_offline the payment is first written to the outbox, after the ones
        queued before it; a QueuedPayment is returned when it could not be sent now.
        """
        # Chosen once, before any attempt: a retry must reuse it or money could move twice.
        key = idempotency_key if idempotency_key is not None else str(uuid.uuid4())
        # Before the outbox: a queued payment that cannot even be sent would stay at the
        # head of the payer's queue, in front of every later one.
        check_payment_fields(payee_username, amount_minor, currency, description, key)
        if not queue_if_offline:
            return await self._create_payment(
                key, payee_username, amount_minor, currency, description, capture_later
            )
        deliverer = self._deliverer()
        order = PaymentOrder(
            idempotency_key=key,
            gateway=self.target,
            payer_username=deliverer.payer,
            payee_username=payee_username,
            amount_minor=amount_minor,
            currency=currency,
            description=description,
            capture_later=capture_later,
        )
        return await deliverer.pay_or_queue(order)

    async def pay_many(
        self,
        items: Sequence[BatchItem],
        *,
        timeout_s: float | None = None,
        on_results: OnResults | None = None,
    ) -> list[BatchResult]:
        """Pay many payees (bulk payouts): one BatchResult per item, in order, each its
        payment or its error; the batch is not atomic (_batch.py). Sent in calls of at most
        1,000 items, each with a deadline of `timeout_s` (default: this client's, plus
        0.05 s per item); `on_results` gets each call's results as they come. Raises only
        what fails a whole call; sending the same items again (same keys) is safe."""
        return await _batch.pay_many(
            self._stub,
            items,
            timeout_s=self.timeout_s if timeout_s is None else timeout_s,
            on_results=on_results,
        )

    async def pay_split(
        self,
        splits: Sequence[Split],
        *,
        currency: str = DEFAULT_CURRENCY,
        description: str = "",
        idempotency_key: str | None = None,
    ) -> Payment:
        """Pay 2 to 10 payees their parts of one payment, all or none (a split payment:
        one two-phase commit across every bank involved). The payment's amount is the sum
        of the parts; its payee_username is the first split's."""
        key = idempotency_key if idempotency_key is not None else str(uuid.uuid4())
        for split in splits:
            check_payment_fields(split.payee_username, split.amount_minor, currency,
                                 description, key)  # fmt: skip
        request = gateway_pb2.CreatePaymentRequest(
            idempotency_key=key,
            amount=sum(split.amount_minor for split in splits),
            currency=currency,
            description=description,
            splits=[gateway_pb2.Split(payee_username=s.payee_username, amount=s.amount_minor)
                    for s in splits],
        )  # fmt: skip
        return await self._call_for_payment(self._stub.CreatePayment, request)

    async def deliver_queued(
        self, *, wait_s: float = 0.0, max_attempts: int | None = None
    ) -> DeliveryReport:
        """Send this user's queued payments now, oldest first; with wait_s, wait up to that
        long for the gateway to come back. Outcomes also go to the outbox's listeners."""
        return await self._deliverer().deliver(wait_s=wait_s, max_attempts=max_attempts)

    def start_delivery(self) -> None:
        """Send queued payments in the background whenever the gateway answers, until
        stop_delivery() or close()."""
        if self._delivery_task is None or self._delivery_task.done():
            self._delivery_task = asyncio.create_task(
                self._deliverer().deliver_forever(), name="paygate-outbox-delivery"
            )

    async def stop_delivery(self) -> None:
        task, self._delivery_task = self._delivery_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def reachable(self) -> bool:
        """Whether the gateway answers its health check as SERVING (within 1 s)."""
        # The generated stub is untyped (its .pyi lacks the methods of an aio channel's stub).
        stub: Any = health_pb2_grpc.HealthStub(self._channel)
        request = health_pb2.HealthCheckRequest(service="")
        try:
            response = await stub.Check(request, timeout=min(self.timeout_s, HEALTH_TIMEOUT_S))
        except grpc.RpcError:
            return False
        return bool(response.status == health_pb2.HealthCheckResponse.SERVING)

    async def queued_payments(self, *, limit: int = 100) -> list[QueuedPayment]:
        """This user's payments in the outbox: the unsent ones and the latest that ended."""
        return await self._deliverer().entries(limit=limit)

    async def queued_payment(self, ref: str) -> QueuedPayment:
        """One of this user's queued payments, by entry id or idempotency key."""
        return await self._deliverer().find(ref)

    async def forget_queued(self, ref: str) -> QueuedPayment:
        """Drop one of this user's queued payments, by entry id or idempotency key, if it
        is not being sent and has not ended; raises NotFound or FailedPrecondition."""
        return await self._deliverer().forget(ref)

    def _deliverer(self) -> Deliverer:
        if self.outbox is None:
            raise ValueError("queued payments need a client made with an outbox")
        if self.username is None:
            raise ValueError("queued payments need the username: log in, or pass username=")
        return Deliverer(
            self.outbox,
            _ClientSender(self),
            gateway=self.target,
            payer=self.username,
            call_timeout_s=self.timeout_s,
            settings=self._delivery_settings,
        )

    async def _create_payment(
        self,
        key: str,
        payee_username: str,
        amount_minor: int,
        currency: str,
        description: str,
        capture_later: bool = False,
    ) -> Payment:
        try:
            request = gateway_pb2.CreatePaymentRequest(
                idempotency_key=key,
                payee_username=payee_username,
                amount=amount_minor,
                currency=currency,
                description=description,
                capture_method=(
                    gateway_pb2.CAPTURE_METHOD_MANUAL
                    if capture_later
                    else gateway_pb2.CAPTURE_METHOD_AUTOMATIC
                ),
            )
        except (TypeError, ValueError) as exc:
            # Only a queued row written before check_payment_fields existed gets here.
            raise InvalidArgument(f"the payment cannot be sent: {exc}") from exc
        return await self._call_for_payment(self._stub.CreatePayment, request)

    async def capture(
        self,
        payment_id: str,
        amount_minor: int | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> Payment:
        """Capture an authorization you are the payee of: all of it (amount_minor None) or
        less, once; the rest of the hold goes back to the payer. Returns the payment,
        SUCCEEDED with its amount_captured_minor.

        Refusals: FailedPrecondition with reason PAYMENT_NOT_CAPTURABLE (captured,
        cancelled, expired, or not an authorization) or AMOUNT_EXCEEDS_CAPTURABLE;
        PermissionDenied for its payer; NotFound for anyone else. Without an idempotency
        key one is made for this call; pass your own to retry after an Unavailable error.
        """
        key = idempotency_key if idempotency_key is not None else str(uuid.uuid4())
        check_capture_fields(payment_id, amount_minor, key)
        request = gateway_pb2.CapturePaymentRequest(
            payment_id=payment_id, amount=amount_minor or 0, idempotency_key=key
        )
        return await self._call_for_payment(self._stub.CapturePayment, request)

    async def cancel(self, payment_id: str, *, idempotency_key: str | None = None) -> Payment:
        """Cancel an authorization you are the payee of: its holds are released and
        nothing moves. Returns the payment, CANCELED. Refused as capture() is."""
        key = idempotency_key if idempotency_key is not None else str(uuid.uuid4())
        check_capture_fields(payment_id, None, key)
        request = gateway_pb2.CancelPaymentRequest(payment_id=payment_id, idempotency_key=key)
        return await self._call_for_payment(self._stub.CancelPayment, request)

    async def _call_for_payment(self, rpc: Any, request: Message) -> Payment:
        """Call an RPC that answers a payment and says in its headers whether the answer
        was replayed from the idempotency key (nothing happened this time)."""
        call = rpc(request, timeout=self.timeout_s)
        try:
            response = await call
            metadata = await call.initial_metadata()
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from exc
        replayed = (IDEMPOTENT_REPLAYED_HEADER, "true") in list(metadata or ())
        payment: gateway_pb2.Payment = response.payment
        return dataclasses.replace(Payment.from_proto(payment), replayed=replayed)

    async def get_payment(self, payment_id: str) -> Payment:
        request = gateway_pb2.GetPaymentRequest(payment_id=payment_id)
        response: gateway_pb2.GetPaymentResponse = await self._call(self._stub.GetPayment, request)
        return Payment.from_proto(response.payment)

    async def list_payments(
        self, *, page_size: int = DEFAULT_PAGE_SIZE, page_token: str = ""
    ) -> tuple[list[Payment], str]:
        """One page of the caller's payments, newest first, and the next page's token
        (empty on the last page)."""
        request = gateway_pb2.ListPaymentsRequest(page_size=page_size, page_token=page_token)
        response: gateway_pb2.ListPaymentsResponse = await self._call(
            self._stub.ListPayments, request
        )
        payments = [Payment.from_proto(message) for message in response.payments]
        return payments, checked_next_page_token(page_token, response.next_page_token)

    async def iter_payments(self, *, page_size: int = DEFAULT_PAGE_SIZE) -> AsyncIterator[Payment]:
        """All of the caller's payments, newest first, fetched a page at a time."""
        page_token = ""
        while True:
            payments, page_token = await self.list_payments(
                page_size=page_size, page_token=page_token
            )
            for payment in payments:
                yield payment
            if not page_token:
                return

    async def _call(self, rpc: Any, request: Message) -> Any:
        try:
            return await rpc(request, timeout=self.timeout_s)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from exc


class _ClientSender:
    """What delivery needs of the client: send a queued payment, and ask for health."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def send(self, entry: QueuedPayment) -> Payment:
        return await self._client._create_payment(
            entry.idempotency_key,
            entry.payee_username,
            entry.amount_minor,
            entry.currency,
            entry.description,
            entry.capture_later,
        )

    async def reachable(self) -> bool:
        return await self._client.reachable()
