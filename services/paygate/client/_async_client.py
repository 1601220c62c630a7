"""AsyncClient: the asyncio client of the Paygate gateway, over one TLS channel."""

from __future__ import annotations

import os
import pathlib
import uuid
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any, Self

import grpc
from google.protobuf.message import Message

from paygate.client._errors import error_from_rpc
from paygate.client._models import (
    INVALID_RESPONSE,
    Balance,
    Payment,
    RegisteredUser,
    Session,
)
from paygate.client.logging_interceptor import LoggingInterceptor
from paygate.client.token_interceptor import TokenHolder, TokenInterceptor
from paygate.common.money import DEFAULT_CURRENCY
from paygate.common.tls import channel_credentials
from paygate.errors import PaygateError
from paygate.gen.paygate.v1 import gateway_pb2, gateway_pb2_grpc

DEFAULT_TARGET = "127.0.0.1:50051"
DEFAULT_TIMEOUT_S = 10.0
DEFAULT_PAGE_SIZE = 20
DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024

StrPath = str | os.PathLike[str]


class AsyncClient:
    """A client of GatewayService. Use it as an async context manager, or call close().

    The channel is bound to the event loop running when the client is created, so
    create it inside that loop. Every call has a deadline of `timeout_s` seconds.
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        ca_cert: StrPath,
        access_token: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, not {timeout_s}")
        self.target = target
        self.timeout_s = timeout_s
        self._token = TokenHolder(access_token=access_token)
        self._channel = grpc.aio.secure_channel(
            target,
            channel_credentials(pathlib.Path(ca_cert)),
            options=[
                ("grpc.max_send_message_length", DEFAULT_MAX_MESSAGE_BYTES),
                ("grpc.max_receive_message_length", DEFAULT_MAX_MESSAGE_BYTES),
            ],
            # Outermost first: the log line times the whole call, token included.
            interceptors=[LoggingInterceptor(), TokenInterceptor(self._token)],
        )
        # The generated stub is untyped; every response is annotated where it is used.
        self._stub = gateway_pb2_grpc.GatewayServiceStub(self._channel)  # type: ignore[no-untyped-call]

    @property
    def access_token(self) -> str | None:
        return self._token.access_token

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
        await self._channel.close()

    async def register(
        self, username: str, password: str, bank_id: str, account_number: str
    ) -> RegisteredUser:
        request = gateway_pb2.RegisterRequest(
            username=username, password=password, bank_id=bank_id, account_number=account_number
        )
        response: gateway_pb2.RegisterResponse = await self._call(self._stub.Register, request)
        return RegisteredUser.from_proto(response)

    async def login(self, username: str, password: str) -> Session:
        """Log in and keep the new token for the calls that follow."""
        request = gateway_pb2.LoginRequest(username=username, password=password)
        response: gateway_pb2.LoginResponse = await self._call(self._stub.Login, request)
        session = Session.from_proto(response)
        self._token.access_token = session.access_token
        return session

    async def logout(self) -> None:
        """Revoke the token at the gateway and forget it, even if the gateway refuses
        (an expired token is as good as revoked)."""
        try:
            await self._call(self._stub.Logout, gateway_pb2.LogoutRequest())
        finally:
            self._token.access_token = None

    async def balance(self) -> Balance:
        request = gateway_pb2.GetBalanceRequest()
        response: gateway_pb2.GetBalanceResponse = await self._call(self._stub.GetBalance, request)
        return Balance.from_proto(response)

    async def pay(
        self,
        payee_username: str,
        amount_minor: int,
        *,
        currency: str = DEFAULT_CURRENCY,
        description: str = "",
        idempotency_key: str | None = None,
    ) -> Payment:
        """Pay another user. Without an idempotency key a new one is made for this call;
        pass your own to retry safely after an Unavailable error."""
        # Chosen once, before any attempt: a retry must reuse it or money could move twice.
        key = idempotency_key if idempotency_key is not None else str(uuid.uuid4())
        request = gateway_pb2.CreatePaymentRequest(
            idempotency_key=key,
            payee_username=payee_username,
            amount=amount_minor,
            currency=currency,
            description=description,
        )
        response: gateway_pb2.CreatePaymentResponse = await self._call(
            self._stub.CreatePayment, request
        )
        return Payment.from_proto(response.payment)

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


def checked_next_page_token(current: str, received: str) -> str:
    """The next page's token, refusing one that would fetch the same page forever."""
    if received and received == current:
        raise PaygateError("gateway returned the same page token again", reason=INVALID_RESPONSE)
    return received
