"""The bank servers in-process: the operator's RPCs, and who may call what. (Health and
reflection, which tests/test_attach.py also runs against a suite it attaches to, and a bank's
state surviving SIGKILL and a restart: tests/test_banks.py.)"""

from __future__ import annotations

import uuid

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from paygate.gen.paygate.bank.v1 import bank_pb2, bank_pb2_grpc
from suite import BANKS, ISSUED_LINK_CODES, SuiteClient

BANK_SERVICE = "paygate.bank.v1.BankService"
RPC_TIMEOUT_S = 5.0


def reference() -> str:
    return f"test-{uuid.uuid4()}"


def error_reason(error: grpc.RpcError) -> str | None:
    """The google.rpc.ErrorInfo reason carried in the status details, if any."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    if status is None:
        return None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return str(info.reason)
    return None


def test_open_account_and_deposit_once_per_reference(suite: SuiteClient) -> None:
    number = suite.admin_open_account("bank-a", 10_00)
    account = suite.bank_account("bank-a", number)
    assert (account.currency, account.balance, account.available) == ("USD", 10_00, 10_00)

    ref = reference()
    first = suite.admin_deposit("bank-a", number, 2_50, ref)
    assert not first.replayed
    assert first.account.balance == 12_50
    second = suite.admin_deposit("bank-a", number, 2_50, ref)
    assert second.replayed
    assert second.account.balance == 12_50
    assert suite.bank_account("bank-a", number).balance == 12_50

    other = suite.admin_deposit("bank-a", number, 1_00, reference())
    assert not other.replayed
    assert suite.total_money([("bank-a", number)]) == 13_50


def test_reference_reused_for_another_deposit_is_refused(suite: SuiteClient) -> None:
    number = suite.admin_open_account("bank-c", 0)
    ref = reference()
    suite.admin_deposit("bank-c", number, 5_00, ref)
    with pytest.raises(grpc.RpcError) as caught:
        suite.admin_deposit("bank-c", number, 6_00, ref)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(caught.value) == "IDEMPOTENCY_KEY_MISMATCH"
    # An account number that is not one is refused as such, whatever the reference.
    with pytest.raises(grpc.RpcError) as caught:
        suite.admin_deposit("bank-c", "", 5_00, ref)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "account_number" in (caught.value.details() or "")
    assert suite.bank_account("bank-c", number).balance == 5_00


def test_new_accounts_get_distinct_numbers(suite: SuiteClient) -> None:
    numbers = {suite.admin_open_account("bank-b", 0) for _ in range(3)}
    assert len(numbers) == 3
    assert all(n.isdigit() and n.startswith("2") for n in numbers)  # bank-b numbers 200001..


@pytest.mark.parametrize(
    ("amount_minor", "currency", "ref"),
    [
        pytest.param(0, "USD", "ref-zero", id="zero-amount"),
        pytest.param(-5, "USD", "ref-negative", id="negative-amount"),
        pytest.param(1_00, "USD", "", id="empty-reference"),
        pytest.param(1_00, "XXX", "ref-xxx", id="unknown-currency"),
        pytest.param(1_00, "USD", "ref\x00nul", id="nul-in-reference"),
    ],
)
def test_bad_deposit_is_invalid_argument(
    suite: SuiteClient, amount_minor: int, currency: str, ref: str
) -> None:
    number = suite.admin_open_account("bank-a", 7_00)
    with pytest.raises(grpc.RpcError) as caught:
        suite.admin_deposit("bank-a", number, amount_minor, f"{ref}-{uuid.uuid4()}" if ref else "",
                            currency=currency)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(caught.value) == "INVALID_ARGUMENT"
    assert suite.bank_account("bank-a", number).balance == 7_00


def test_open_account_in_unknown_currency_is_invalid_argument(suite: SuiteClient) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        suite.admin_open_account("bank-a", 1_00, currency="XXX")
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_unknown_account_is_not_found(suite: SuiteClient) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        suite.bank_account("bank-a", "999999999")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_reason(caught.value) == "ACCOUNT_NOT_FOUND"


@pytest.mark.parametrize("number", ["100001\x00", "100001\n", "x" * 256])
def test_malformed_account_number_is_invalid_argument(suite: SuiteClient, number: str) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        suite.bank_account("bank-a", number)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "account_number" in caught.value.details()


def test_gateway_identity_may_not_deposit(suite: SuiteClient) -> None:
    number = suite.admin_open_account("bank-b", 3_00)
    with suite.bank_channel_sync("bank-b", identity="gateway") as channel:
        stub = bank_pb2_grpc.BankServiceStub(channel)
        # The gateway may read accounts: the certificate itself is accepted.
        account = stub.GetAccount(
            bank_pb2.GetAccountRequest(account_number=number), timeout=RPC_TIMEOUT_S
        ).account
        assert account.balance == 3_00
        with pytest.raises(grpc.RpcError) as caught:
            stub.Deposit(
                bank_pb2.DepositRequest(
                    account_number=number, amount=1_00, currency="USD", reference=reference()
                ),
                timeout=RPC_TIMEOUT_S,
            )
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_reason(caught.value) == "PERMISSION_DENIED"
    assert suite.bank_account("bank-b", number).balance == 3_00


def test_only_the_gateway_checks_link_codes_and_only_operators_issue_them(
    suite: SuiteClient,
) -> None:
    """An operator's certificate cannot be used to guess codes, nor the gateway's to
    replace one (and so take over an account)."""
    account = suite.admin_open_account("bank-a", 1_00)
    link = bank_pb2.LinkAccountRequest(account_number=account, link_code=account.link_code)
    issue = bank_pb2.IssueLinkCodeRequest(account_number=account)
    with suite.bank_channel_sync("bank-a") as admin_channel:
        with pytest.raises(grpc.RpcError) as caught:
            bank_pb2_grpc.BankServiceStub(admin_channel).LinkAccount(link, timeout=RPC_TIMEOUT_S)
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with suite.bank_channel_sync("bank-a", identity="gateway") as gateway_channel:
        stub = bank_pb2_grpc.BankServiceStub(gateway_channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.IssueLinkCode(issue, timeout=RPC_TIMEOUT_S)
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        # The code still links: nothing was replaced.
        assert stub.LinkAccount(link, timeout=RPC_TIMEOUT_S).account.account_number == account


def test_a_new_link_code_replaces_the_old_one(suite: SuiteClient) -> None:
    account = suite.admin_open_account("bank-c", 1_00)
    with suite.bank_channel_sync("bank-c") as admin_channel:
        issued = bank_pb2_grpc.BankServiceStub(admin_channel).IssueLinkCode(
            bank_pb2.IssueLinkCodeRequest(account_number=account), timeout=RPC_TIMEOUT_S
        ).link_code
    ISSUED_LINK_CODES.append(issued)
    assert issued and issued != account.link_code
    with suite.bank_channel_sync("bank-c", identity="gateway") as gateway_channel:
        stub = bank_pb2_grpc.BankServiceStub(gateway_channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.LinkAccount(
                bank_pb2.LinkAccountRequest(account_number=account, link_code=account.link_code),
                timeout=RPC_TIMEOUT_S,
            )
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        linked = stub.LinkAccount(
            bank_pb2.LinkAccountRequest(account_number=account, link_code=issued),
            timeout=RPC_TIMEOUT_S,
        )
        assert linked.account.balance == 1_00


def test_admin_identity_may_not_prepare(suite: SuiteClient) -> None:
    number = suite.admin_open_account("bank-a", 3_00)
    leg = bank_pb2.Leg(
        account_number=number, direction=bank_pb2.DIRECTION_DEBIT, amount=1_00, currency="USD"
    )
    with suite.bank_channel_sync("bank-a") as channel, pytest.raises(grpc.RpcError) as caught:
        bank_pb2_grpc.BankServiceStub(channel).Prepare(
            bank_pb2.PrepareRequest(transaction_id=reference(), legs=[leg]), timeout=RPC_TIMEOUT_S
        )
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert suite.bank_account("bank-a", number).available == 3_00


@pytest.mark.parametrize("bank_id", BANKS)
def test_client_without_certificate_cannot_connect(suite: SuiteClient, bank_id: str) -> None:
    with suite.bank_channel_sync(bank_id, identity=None) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            bank_pb2_grpc.BankServiceStub(channel).GetAccount(
                bank_pb2.GetAccountRequest(account_number="100001"), timeout=RPC_TIMEOUT_S
            )
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        # Health is open to any certificate of the suite, but not to a caller without one.
        with pytest.raises(grpc.RpcError) as caught_health:
            health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=RPC_TIMEOUT_S
            )
        assert caught_health.value.code() == grpc.StatusCode.UNAVAILABLE
