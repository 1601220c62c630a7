"""Authorizations through the client library (AsyncClient and Client) against the real
servers in this process: pay(..., capture_later=True) holds the money, the payee's
capture() takes all or part of it and cancel() releases it, replays say so, every refusal
arrives as the exception and reason of paygate.errors, and a payment that goes through the
outbox keeps its capture method.
"""

from __future__ import annotations

import datetime
import pathlib
import uuid
from collections.abc import Awaitable
from typing import Any

import grpc
import pytest
from paygate.client import (
    AsyncClient,
    CaptureMethod,
    Client,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Outbox,
    PaygateError,
    Payment,
    PaymentStatus,
    PermissionDenied,
)
from servers import Servers
from suite import OpenedAccount
from users import PASSWORD, unique_name

CODE = grpc.StatusCode
TIMEOUT_S = 10.0
CAPTURE_WINDOW = datetime.timedelta(days=7)  # the gateway's default authorization_ttl_s


def client(servers: Servers, outbox: Outbox | None = None) -> AsyncClient:
    """A client of the module's gateway; create it on the servers' loop."""
    return AsyncClient(
        servers.gateway_target, ca_cert=servers.config.certs_dir / "ca.pem",
        timeout_s=TIMEOUT_S, outbox=outbox,
    )


def opened(servers: Servers, bank_id: str, balance_minor: int) -> tuple[str, OpenedAccount]:
    """A new account; opened before a scenario, whose loop the admin's calls would block."""
    return bank_id, servers.admin_open_account(bank_id, balance_minor)


async def signed_up(
    servers: Servers, account_of: tuple[str, OpenedAccount], outbox: Outbox | None = None
) -> AsyncClient:
    """A logged-in client of a new user of the account."""
    bank_id, account = account_of
    user = client(servers, outbox)
    name = unique_name("auth")
    await user.register(name, PASSWORD, bank_id, account, link_code=account.link_code)
    await user.login(name, PASSWORD)
    return user


def name_of(user: AsyncClient) -> str:
    assert user.username is not None
    return user.username


async def refused(call: Awaitable[Any], error_class: type[PaygateError]) -> tuple[CODE, str]:
    """The status code and reason of a call the gateway refuses, raised as `error_class`."""
    with pytest.raises(error_class) as caught:
        await call
    cause = caught.value.__cause__
    assert isinstance(cause, grpc.aio.AioRpcError), f"not refused by the gateway: {cause!r}"
    return cause.code(), caught.value.reason


async def refused_here(call: Awaitable[Any]) -> str:
    """The message of a call the client refuses before sending anything."""
    with pytest.raises(InvalidArgument) as caught:
        await call
    assert caught.value.__cause__ is None, "the gateway was called"
    return caught.value.message


def assert_authorization(payment: Payment, amount_minor: int) -> None:
    assert (payment.status, payment.capture_method) == (
        PaymentStatus.REQUIRES_CAPTURE, CaptureMethod.MANUAL,
    )
    assert (payment.amount_minor, payment.amount_captured_minor) == (amount_minor, 0)
    assert payment.capture_before is not None
    window = payment.capture_before - payment.create_time
    assert CAPTURE_WINDOW - datetime.timedelta(seconds=2) <= window <= CAPTURE_WINDOW


def test_an_authorization_is_held_then_partly_captured_once(servers: Servers) -> None:
    payer_account = opened(servers, "bank-a", 50_00)
    shop_account = opened(servers, "bank-b", 0)

    async def scenario() -> None:
        payer = await signed_up(servers, payer_account)
        shop = await signed_up(servers, shop_account)
        try:
            held = await payer.pay(name_of(shop), 20_00, capture_later=True)
            assert_authorization(held, 20_00)
            balance = await payer.balance()
            assert (balance.balance_minor, balance.available_minor) == (50_00, 30_00)
            assert await shop.get_payment(held.payment_id) == held

            key = uuid.uuid4().hex
            captured = await shop.capture(held.payment_id, 12_50, idempotency_key=key)
            assert (captured.status, captured.amount_captured_minor, captured.replayed) == (
                PaymentStatus.SUCCEEDED, 12_50, False,
            )
            again = await shop.capture(held.payment_id, 12_50, idempotency_key=key)
            assert again.replayed and again.payment_id == held.payment_id
            assert again.amount_captured_minor == 12_50
            assert (await payer.balance()).balance_minor == 37_50
            assert (await shop.balance()).balance_minor == 12_50
            (listed,), _ = await payer.list_payments()
            assert (listed.status, listed.amount_captured_minor) == (PaymentStatus.SUCCEEDED, 12_50)

            # An automatic payment says so, with everything captured and no deadline.
            paid = await payer.pay(name_of(shop), 1_00)
            assert (paid.capture_method, paid.amount_captured_minor, paid.capture_before) == (
                CaptureMethod.AUTOMATIC, 1_00, None,
            )
        finally:
            await payer.close()
            await shop.close()

    servers.run(scenario())


def test_a_capture_without_an_amount_takes_all_and_a_cancel_releases_all(
    servers: Servers,
) -> None:
    payer_account = opened(servers, "bank-c", 30_00)
    shop_account = opened(servers, "bank-a", 0)

    async def scenario() -> None:
        payer = await signed_up(servers, payer_account)
        shop = await signed_up(servers, shop_account)
        try:
            whole = await payer.pay(name_of(shop), 10_00, capture_later=True)
            assert (await shop.capture(whole.payment_id)).amount_captured_minor == 10_00

            dropped = await payer.pay(name_of(shop), 5_00, capture_later=True)
            key = uuid.uuid4().hex
            canceled = await shop.cancel(dropped.payment_id, idempotency_key=key)
            assert (canceled.status, canceled.failure_reason, canceled.amount_captured_minor) == (
                PaymentStatus.CANCELED, "CANCELED", 0,
            )
            assert (await shop.cancel(dropped.payment_id, idempotency_key=key)).replayed
            balance = await payer.balance()
            assert (balance.balance_minor, balance.available_minor) == (20_00, 20_00)
        finally:
            await payer.close()
            await shop.close()

    servers.run(scenario())


def test_refusals_arrive_as_the_exceptions_of_paygate_errors(servers: Servers) -> None:
    payer_account = opened(servers, "bank-a", 50_00)
    shop_account = opened(servers, "bank-b", 0)
    stranger_account = opened(servers, "bank-c", 0)

    async def scenario() -> None:
        payer = await signed_up(servers, payer_account)
        shop = await signed_up(servers, shop_account)
        stranger = await signed_up(servers, stranger_account)
        try:
            pid = (await payer.pay(name_of(shop), 20_00, capture_later=True)).payment_id
            assert await refused(shop.capture(pid, 20_01), FailedPrecondition) == (
                CODE.FAILED_PRECONDITION, "AMOUNT_EXCEEDS_CAPTURABLE",
            )
            assert await refused(payer.capture(pid), PermissionDenied) == (
                CODE.PERMISSION_DENIED, "PERMISSION_DENIED",
            )
            assert await refused(payer.cancel(pid), PermissionDenied) == (
                CODE.PERMISSION_DENIED, "PERMISSION_DENIED",
            )
            assert await refused(stranger.cancel(pid), NotFound) == (CODE.NOT_FOUND, "NOT_FOUND")
            await shop.cancel(pid)
            assert await refused(shop.capture(pid), FailedPrecondition) == (
                CODE.FAILED_PRECONDITION, "PAYMENT_NOT_CAPTURABLE",
            )
            # What could never be sent is refused before a call.
            assert "positive" in await refused_here(shop.capture(pid, 0))
            assert "positive" in await refused_here(shop.capture(pid, -5))
            assert "whole number" in await refused_here(shop.capture(pid, 1.5))  # type: ignore[arg-type]
            assert "payment_id" in await refused_here(shop.cancel(""))
            assert "idempotency_key" in await refused_here(shop.cancel(pid, idempotency_key=""))
        finally:
            for user in (payer, shop, stranger):
                await user.close()

    servers.run(scenario())


def test_the_blocking_client_captures_and_cancels(servers: Servers) -> None:
    payer_account = opened(servers, "bank-a", 9_00)
    shop_account = opened(servers, "bank-b", 0)

    async def sign_up_both() -> tuple[str, str, str]:
        payer = await signed_up(servers, payer_account)
        shop = await signed_up(servers, shop_account)
        async with payer, shop:
            assert shop.access_token is not None
            return name_of(payer), name_of(shop), shop.access_token

    payer_name, shop_name, shop_token = servers.run(sign_up_both())
    ca_cert = servers.config.certs_dir / "ca.pem"
    with Client(servers.gateway_target, ca_cert=ca_cert, timeout_s=TIMEOUT_S) as payer:
        payer.login(payer_name, PASSWORD)
        first = payer.pay(shop_name, 4_00, capture_later=True)
        second = payer.pay(shop_name, 3_00, capture_later=True)
        assert_authorization(first, 4_00)
    with Client(
        servers.gateway_target, ca_cert=ca_cert, access_token=shop_token, timeout_s=TIMEOUT_S
    ) as shop:
        assert shop.capture(first.payment_id, 1_00).amount_captured_minor == 1_00
        assert shop.cancel(second.payment_id).status == PaymentStatus.CANCELED
        assert shop.balance().balance_minor == 1_00
        with pytest.raises(FailedPrecondition) as caught:
            shop.cancel(first.payment_id)
        assert caught.value.reason == "PAYMENT_NOT_CAPTURABLE"


def test_an_authorization_sent_through_the_outbox_stays_an_authorization(
    servers: Servers, tmp_path: pathlib.Path
) -> None:
    payer_account = opened(servers, "bank-a", 10_00)
    shop_account = opened(servers, "bank-b", 0)

    async def scenario() -> None:
        payer = await signed_up(servers, payer_account, Outbox(tmp_path / "outbox.db"))
        shop = await signed_up(servers, shop_account)
        try:
            sent = await payer.pay(
                name_of(shop), 6_00, capture_later=True, queue_if_offline=True
            )
            assert isinstance(sent, Payment)
            assert_authorization(sent, 6_00)
            (entry,) = await payer.queued_payments()
            assert entry.capture_later and entry.payment_status == "REQUIRES_CAPTURE"
        finally:
            await payer.close()
            await shop.close()

    servers.run(scenario())
