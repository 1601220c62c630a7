"""Client: the synchronous client, a thin wrapper that runs AsyncClient on its own loop."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from types import TracebackType
from typing import Self

from paygate.client._async_client import (
    DEFAULT_PAGE_SIZE,
    DEFAULT_TARGET,
    DEFAULT_TIMEOUT_S,
    AsyncClient,
    StrPath,
)
from paygate.client._models import Balance, Payment, RegisteredUser, Session
from paygate.common.money import DEFAULT_CURRENCY


class Client:
    """The same API as AsyncClient, blocking. Not for use inside a running event loop
    (asyncio.Runner refuses that); use AsyncClient there."""

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        ca_cert: StrPath,
        access_token: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self._runner = asyncio.Runner()
        try:
            # Created inside the runner's loop, which its grpc.aio channel is bound to.
            self._client = self._runner.run(
                _open(target, ca_cert=ca_cert, access_token=access_token, timeout_s=timeout_s)
            )
        except BaseException:
            self._runner.close()
            raise

    @property
    def access_token(self) -> str | None:
        return self._client.access_token

    @property
    def timeout_s(self) -> float:
        return self._client.timeout_s

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        try:
            self._runner.run(self._client.close())
        finally:
            self._runner.close()

    def register(
        self, username: str, password: str, bank_id: str, account_number: str
    ) -> RegisteredUser:
        return self._runner.run(self._client.register(username, password, bank_id, account_number))

    def login(self, username: str, password: str) -> Session:
        return self._runner.run(self._client.login(username, password))

    def logout(self) -> None:
        self._runner.run(self._client.logout())

    def balance(self) -> Balance:
        return self._runner.run(self._client.balance())

    def pay(
        self,
        payee_username: str,
        amount_minor: int,
        *,
        currency: str = DEFAULT_CURRENCY,
        description: str = "",
        idempotency_key: str | None = None,
    ) -> Payment:
        coroutine = self._client.pay(
            payee_username,
            amount_minor,
            currency=currency,
            description=description,
            idempotency_key=idempotency_key,
        )
        return self._runner.run(coroutine)

    def get_payment(self, payment_id: str) -> Payment:
        return self._runner.run(self._client.get_payment(payment_id))

    def list_payments(
        self, *, page_size: int = DEFAULT_PAGE_SIZE, page_token: str = ""
    ) -> tuple[list[Payment], str]:
        return self._runner.run(
            self._client.list_payments(page_size=page_size, page_token=page_token)
        )

    def iter_payments(self, *, page_size: int = DEFAULT_PAGE_SIZE) -> Iterator[Payment]:
        # Paged here rather than by driving AsyncClient.iter_payments, so that no async
        # generator is left open on the runner's loop when the caller stops early.
        page_token = ""
        while True:
            payments, page_token = self.list_payments(page_size=page_size, page_token=page_token)
            yield from payments
            if not page_token:
                return


async def _open(
    target: str, *, ca_cert: StrPath, access_token: str | None, timeout_s: float
) -> AsyncClient:
    return AsyncClient(target, ca_cert=ca_cert, access_token=access_token, timeout_s=timeout_s)
