"""Every RPC of GatewayService through the client library, against the real servers in this
process: each one answered, and each one refused, with the status code and the
google.rpc.ErrorInfo reason a user of the library sees.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable
from typing import Any

import grpc
import pytest
from paygate.client import (
    AlreadyExists,
    AsyncClient,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PaygateError,
    PaymentStatus,
    Unauthenticated,
)
from servers import Servers
from suite import OpenedAccount
from users import PASSWORD, unique_name

CODE = grpc.StatusCode
TIMEOUT_S = 10.0


async def refusal(call: Awaitable[Any], error_class: type[PaygateError]) -> tuple[CODE, str]:
    """The status code and ErrorInfo reason of a call the gateway must refuse."""
    with pytest.raises(error_class) as caught:
        await call
    cause = caught.value.__cause__
    assert isinstance(cause, grpc.aio.AioRpcError), f"not refused by the gateway: {cause!r}"
    return cause.code(), caught.value.reason


def client(servers: Servers) -> AsyncClient:
    """A client of the module's gateway; create it on the servers' loop."""
    return AsyncClient(
        servers.gateway_target, ca_cert=servers.config.certs_dir / "ca.pem", timeout_s=TIMEOUT_S
    )


async def signed_up(servers: Servers, account: OpenedAccount, bank_id: str) -> AsyncClient:
    """A client of a new user of `account`, logged in."""
    user = client(servers)
    name = unique_name("rpc")
    await user.register(name, PASSWORD, bank_id, account, link_code=account.link_code)
    await user.login(name, PASSWORD)
    return user


def test_register(servers: Servers) -> None:
    account = servers.admin_open_account("bank-a", 1_00)
    spare = servers.admin_open_account("bank-a", 0)

    async def scenario() -> None:
        async with client(servers) as user:
            name = unique_name("reg")
            registered = await user.register(
                name, PASSWORD, "bank-a", account, link_code=account.link_code
            )
            assert registered.user_id
            assert (registered.bank_id, registered.account_number) == ("bank-a", account)
            register = user.register
            assert await refusal(
                register("Not A Name", PASSWORD, "bank-a", spare, link_code=spare.link_code),
                InvalidArgument,
            ) == (CODE.INVALID_ARGUMENT, "INVALID_ARGUMENT")
            assert await refusal(
                register(unique_name(), PASSWORD, "bank-a", spare, link_code="AAAA-AAAA"),
                NotFound,
            ) == (CODE.NOT_FOUND, "ACCOUNT_NOT_FOUND")
            assert await refusal(
                register(name, PASSWORD, "bank-a", spare, link_code=spare.link_code),
                AlreadyExists,
            ) == (CODE.ALREADY_EXISTS, "ALREADY_EXISTS")
            assert await refusal(
                register(unique_name(), PASSWORD, "bank-a", account, link_code=account.link_code),
                AlreadyExists,
            ) == (CODE.ALREADY_EXISTS, "ALREADY_EXISTS")

    servers.run(scenario())


def test_login_logout_and_balance(servers: Servers) -> None:
    account = servers.admin_open_account("bank-b", 7_25)

    async def scenario() -> None:
        async with client(servers) as user:
            name = unique_name("login")
            await user.register(name, PASSWORD, "bank-b", account, link_code=account.link_code)
            # Nothing works before a login, and a wrong password is no login.
            assert await refusal(user.balance(), Unauthenticated) == (
                CODE.UNAUTHENTICATED, "UNAUTHENTICATED",
            )
            assert await refusal(user.login(name, "not the password"), Unauthenticated) == (
                CODE.UNAUTHENTICATED, "UNAUTHENTICATED",
            )
            session = await user.login(name, PASSWORD)
            assert session.access_token == user.access_token
            balance = await user.balance()
            assert (balance.currency, balance.balance_minor, balance.available_minor) == (
                "USD", 7_25, 7_25,
            )
            token = session.access_token
            await user.logout()
            assert user.access_token is None
            assert await refusal(user.logout(), Unauthenticated) == (
                CODE.UNAUTHENTICATED, "UNAUTHENTICATED",
            )
        # The revoked token is refused to whoever holds it.
        async with AsyncClient(
            servers.gateway_target, ca_cert=servers.config.certs_dir / "ca.pem",
            access_token=token, timeout_s=TIMEOUT_S,
        ) as stale:
            assert await refusal(stale.balance(), Unauthenticated) == (
                CODE.UNAUTHENTICATED, "UNAUTHENTICATED",
            )

    servers.run(scenario())


def test_payments(servers: Servers) -> None:
    """CreatePayment, GetPayment and ListPayments: answered, and refused for bad input,
    an unknown payee, missing funds, a reused key, and another user's payment."""
    payer_account = servers.admin_open_account("bank-a", 10_00)
    payee_account = servers.admin_open_account("bank-c", 0)
    stranger_account = servers.admin_open_account("bank-b", 0)

    async def scenario() -> None:
        payer = await signed_up(servers, payer_account, "bank-a")
        payee = await signed_up(servers, payee_account, "bank-c")
        stranger = await signed_up(servers, stranger_account, "bank-b")
        try:
            assert payee.username is not None
            key = uuid.uuid4().hex
            paid = await payer.pay(payee.username, 2_50, description="tea", idempotency_key=key)
            assert (paid.status, paid.amount_minor, paid.replayed) == (
                PaymentStatus.SUCCEEDED, 2_50, False,
            )
            again = await payer.pay(payee.username, 2_50, description="tea", idempotency_key=key)
            assert again.replayed and again.payment_id == paid.payment_id
            assert (await payee.balance()).balance_minor == 2_50

            assert await refusal(payer.pay(payee.username, 10**12), InvalidArgument) == (
                CODE.INVALID_ARGUMENT, "INVALID_ARGUMENT",
            )
            assert await refusal(payer.pay(unique_name("nobody"), 1_00), NotFound) == (
                CODE.NOT_FOUND, "NOT_FOUND",
            )
            assert await refusal(payer.pay(payee.username, 8_00), FailedPrecondition) == (
                CODE.FAILED_PRECONDITION, "INSUFFICIENT_FUNDS",
            )
            assert await refusal(
                payer.pay(payee.username, 3_00, idempotency_key=key), FailedPrecondition
            ) == (CODE.FAILED_PRECONDITION, "IDEMPOTENCY_KEY_MISMATCH")

            found = await payee.get_payment(paid.payment_id)
            assert found == paid
            assert await refusal(stranger.get_payment(paid.payment_id), NotFound) == (
                CODE.NOT_FOUND, "NOT_FOUND",
            )
            assert await refusal(payer.get_payment("x" * 65), InvalidArgument) == (
                CODE.INVALID_ARGUMENT, "INVALID_ARGUMENT",
            )

            listed, next_page = await payer.list_payments(page_size=10)
            assert next_page == ""
            assert [p.status for p in listed] == [PaymentStatus.FAILED, PaymentStatus.SUCCEEDED]
            assert listed[1] == paid
            assert await stranger.list_payments() == ([], "")
            assert await refusal(
                payer.list_payments(page_token="not-a-token"), InvalidArgument
            ) == (CODE.INVALID_ARGUMENT, "INVALID_ARGUMENT")
            assert await refusal(payer.list_payments(page_size=-1), InvalidArgument) == (
                CODE.INVALID_ARGUMENT, "INVALID_ARGUMENT",
            )
        finally:
            for user in (payer, payee, stranger):
                await user.close()

    servers.run(scenario())
