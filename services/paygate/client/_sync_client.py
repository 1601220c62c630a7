"""Client: the synchronous client, a thin wrapper that runs AsyncClient on its own loop."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from types import TracebackType
from typing import Literal, Self, overload

from paygate.client._async_client import (
    DEFAULT_TARGET,
    DEFAULT_TIMEOUT_S,
    AsyncClient,
    StrPath,
)
from paygate.client._batch import BatchItem, BatchResult, OnResults
from paygate.client._events import Event
from paygate.client._models import (
    Balance,
    Payment,
    Refund,
    RegisteredUser,
    Session,
    SessionInfo,
    Split,
    TotpEnrollment,
)
from paygate.client._request_checks import DEFAULT_PAGE_SIZE
from paygate.client.delivery import DeliveryReport, DeliverySettings
from paygate.client.outbox import Outbox
from paygate.client.outbox_models import QueuedPayment
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
        username: str | None = None,
        outbox: Outbox | None = None,
        delivery: DeliverySettings | None = None,
    ) -> None:
        self._runner = asyncio.Runner()
        try:
            # Created inside the runner's loop, which its grpc.aio channel is bound to.
            self._client = self._runner.run(
                _open(
                    target,
                    ca_cert=ca_cert,
                    access_token=access_token,
                    timeout_s=timeout_s,
                    username=username,
                    outbox=outbox,
                    delivery=delivery,
                )
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

    @property
    def username(self) -> str | None:
        return self._client.username

    @property
    def outbox(self) -> Outbox | None:
        return self._client.outbox

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
        self, username: str, password: str, bank_id: str, account_number: str, *, link_code: str
    ) -> RegisteredUser:
        return self._runner.run(
            self._client.register(username, password, bank_id, account_number, link_code=link_code)
        )

    def login(self, username: str, password: str, *, one_time_code: str = "") -> Session:
        return self._runner.run(
            self._client.login(username, password, one_time_code=one_time_code)
        )

    def logout(self, *, all_sessions: bool = False) -> None:
        self._runner.run(self._client.logout(all_sessions=all_sessions))

    # Account security (AsyncClient's docstrings, in _async_security.py, say more).

    def enroll_totp(self, password: str) -> TotpEnrollment:
        return self._runner.run(self._client.enroll_totp(password))

    def confirm_totp(self, code: str) -> list[str]:
        return self._runner.run(self._client.confirm_totp(code))

    def disable_totp(self, password: str, one_time_code: str) -> None:
        self._runner.run(self._client.disable_totp(password, one_time_code))

    def regenerate_recovery_codes(self, one_time_code: str) -> list[str]:
        return self._runner.run(self._client.regenerate_recovery_codes(one_time_code))

    def change_password(self, current_password: str, new_password: str) -> int:
        return self._runner.run(self._client.change_password(current_password, new_password))

    def list_sessions(self) -> list[SessionInfo]:
        return self._runner.run(self._client.list_sessions())

    def revoke_session(self, session_id: str) -> None:
        self._runner.run(self._client.revoke_session(session_id))

    def balance(self) -> Balance:
        return self._runner.run(self._client.balance())

    @overload
    def pay(
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
    def pay(
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

    def pay(
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
        coroutine = self._client.pay(
            payee_username,
            amount_minor,
            currency=currency,
            description=description,
            idempotency_key=idempotency_key,
            capture_later=capture_later,
            queue_if_offline=queue_if_offline,
        )
        return self._runner.run(coroutine)

    def pay_many(
        self,
        items: Sequence[BatchItem],
        *,
        timeout_s: float | None = None,
        on_results: OnResults | None = None,
    ) -> list[BatchResult]:
        return self._runner.run(
            self._client.pay_many(items, timeout_s=timeout_s, on_results=on_results)
        )

    def pay_split(
        self,
        splits: Sequence[Split],
        *,
        currency: str = DEFAULT_CURRENCY,
        description: str = "",
        idempotency_key: str | None = None,
    ) -> Payment:
        return self._runner.run(
            self._client.pay_split(
                splits, currency=currency, description=description,
                idempotency_key=idempotency_key,
            )
        )  # fmt: skip

    def capture(
        self,
        payment_id: str,
        amount_minor: int | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> Payment:
        return self._runner.run(
            self._client.capture(payment_id, amount_minor, idempotency_key=idempotency_key)
        )

    def cancel(self, payment_id: str, *, idempotency_key: str | None = None) -> Payment:
        return self._runner.run(self._client.cancel(payment_id, idempotency_key=idempotency_key))

    def refund(
        self,
        payment_id: str,
        amount_minor: int | None = None,
        *,
        reason: str = "",
        idempotency_key: str | None = None,
    ) -> Refund:
        return self._runner.run(
            self._client.refund(
                payment_id, amount_minor, reason=reason, idempotency_key=idempotency_key
            )
        )

    def list_refunds(
        self, payment_id: str, *, page_size: int = DEFAULT_PAGE_SIZE, page_token: str = ""
    ) -> tuple[list[Refund], str]:
        return self._runner.run(
            self._client.list_refunds(payment_id, page_size=page_size, page_token=page_token)
        )

    def list_events(
        self, *, starting_after: int = 0, page_size: int = 0, types: list[str] | None = None
    ) -> tuple[list[Event], int, bool]:
        return self._runner.run(
            self._client.list_events(
                starting_after=starting_after, page_size=page_size, types=types
            )
        )

    def deliver_queued(
        self, *, wait_s: float = 0.0, max_attempts: int | None = None
    ) -> DeliveryReport:
        return self._runner.run(
            self._client.deliver_queued(wait_s=wait_s, max_attempts=max_attempts)
        )

    def queued_payments(self, *, limit: int = 100) -> list[QueuedPayment]:
        return self._runner.run(self._client.queued_payments(limit=limit))

    def queued_payment(self, ref: str) -> QueuedPayment:
        return self._runner.run(self._client.queued_payment(ref))

    def forget_queued(self, ref: str) -> QueuedPayment:
        return self._runner.run(self._client.forget_queued(ref))

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
    target: str,
    *,
    ca_cert: StrPath,
    access_token: str | None,
    timeout_s: float,
    username: str | None,
    outbox: Outbox | None,
    delivery: DeliverySettings | None,
) -> AsyncClient:
    return AsyncClient(
        target,
        ca_cert=ca_cert,
        access_token=access_token,
        timeout_s=timeout_s,
        username=username,
        outbox=outbox,
        delivery=delivery,
    )
