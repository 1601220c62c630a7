"""Gateway users for suite tests: each test makes its own, with fresh names and accounts.

A TestUser holds a synchronous stub and its token; its methods return the raw responses
or raise grpc.RpcError, so tests assert on exactly what a client would see.
"""

from __future__ import annotations

import dataclasses
import time
import uuid

import grpc
from google.rpc import error_details_pb2, status_pb2
from paygate.gen.paygate.v1 import gateway_pb2 as pb
from paygate.gen.paygate.v1 import gateway_pb2_grpc as pbg
from suite import SuiteClient

PASSWORD = "correct horse battery"
# Every token handed to a TestUser, for the search for leaked secrets at the end of the run.
ISSUED_TOKENS: list[str] = []
# Two-factor secrets the tests saw, for the same search: TOTP secrets (base32), recovery
# codes, and the one-time codes used, each with its user's name: 6 digits are searched for
# only in the log lines that name that user, where any other 6 digits would match too.
ISSUED_TOTP_SECRETS: list[str] = []
ISSUED_RECOVERY_CODES: list[str] = []
USED_ONE_TIME_CODES: list[tuple[str, str]] = []
RPC_TIMEOUT_S = 15.0
BATCH_TIMEOUT_S = 60.0
RESOLVE_WITHIN_S = 10.0


def unique_name(prefix: str = "u") -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def error_reason(error: grpc.RpcError) -> str:
    """The google.rpc.ErrorInfo reason carried by a failed call, or ''."""
    for key, value in error.trailing_metadata() or ():  # type: ignore[attr-defined]
        if key == "grpc-status-details-bin":
            for detail in status_pb2.Status.FromString(value).details:
                info = error_details_pb2.ErrorInfo()
                if detail.Unpack(info):
                    return str(info.reason)
    return ""


@dataclasses.dataclass
class TestUser:
    __test__ = False  # not a test class, despite the name

    suite: SuiteClient
    stub: pbg.GatewayServiceStub
    username: str
    bank_id: str
    account_number: str
    token: str = ""

    @property
    def metadata(self) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self.token}")]

    def balance(self) -> pb.GetBalanceResponse:
        return self.stub.GetBalance(
            pb.GetBalanceRequest(), metadata=self.metadata, timeout=RPC_TIMEOUT_S
        )

    def pay(
        self,
        payee: TestUser | str,
        amount_minor: int,
        *,
        key: str | None = None,
        currency: str = "USD",
        description: str = "",
        timeout_s: float = RPC_TIMEOUT_S,
    ) -> pb.Payment:
        request = pb.CreatePaymentRequest(
            idempotency_key=uuid.uuid4().hex if key is None else key,
            payee_username=payee if isinstance(payee, str) else payee.username,
            amount=amount_minor,
            currency=currency,
            description=description,
        )
        response = self.stub.CreatePayment(request, metadata=self.metadata, timeout=timeout_s)
        return response.payment

    def pay_split(
        self,
        parts: list[tuple[TestUser | str, int]],
        *,
        key: str | None = None,
        currency: str = "USD",
        amount_minor: int | None = None,
        timeout_s: float = RPC_TIMEOUT_S,
    ) -> pb.Payment:
        """A split payment of `parts` (payee, amount); its amount is their sum unless given."""
        request = pb.CreatePaymentRequest(
            idempotency_key=uuid.uuid4().hex if key is None else key,
            amount=sum(part for _, part in parts) if amount_minor is None else amount_minor,
            currency=currency,
            splits=[
                pb.Split(payee_username=p if isinstance(p, str) else p.username, amount=part)
                for p, part in parts
            ],
        )
        response = self.stub.CreatePayment(request, metadata=self.metadata, timeout=timeout_s)
        return response.payment

    def pay_batch(
        self, items: list[pb.CreatePaymentRequest], *, timeout_s: float = BATCH_TIMEOUT_S
    ) -> list[pb.BatchCreatePaymentResult]:
        """BatchCreatePayments of `items` (made with item()); the results, in order."""
        response = self.stub.BatchCreatePayments(
            pb.BatchCreatePaymentsRequest(requests=items),
            metadata=self.metadata,
            timeout=timeout_s,
        )
        return list(response.results)

    def get_payment(self, payment_id: str) -> pb.Payment:
        return self.stub.GetPayment(
            pb.GetPaymentRequest(payment_id=payment_id),
            metadata=self.metadata,
            timeout=RPC_TIMEOUT_S,
        ).payment

    def list_payments(self, page_size: int = 0, page_token: str = "") -> pb.ListPaymentsResponse:
        return self.stub.ListPayments(
            pb.ListPaymentsRequest(page_size=page_size, page_token=page_token),
            metadata=self.metadata,
            timeout=RPC_TIMEOUT_S,
        )

    def refund(
        self, payment_id: str, amount_minor: int = 0, *, key: str = "", reason: str = ""
    ) -> pb.Refund:
        request = pb.RefundPaymentRequest(
            payment_id=payment_id,
            amount=amount_minor,
            reason=reason,
            idempotency_key=key or uuid.uuid4().hex,
        )
        response = self.stub.RefundPayment(request, metadata=self.metadata, timeout=RPC_TIMEOUT_S)
        return response.refund

    def list_refunds(self, payment_id: str, page_size: int = 0, page_token: str = ""):  # type: ignore[no-untyped-def]
        return self.stub.ListRefunds(
            pb.ListRefundsRequest(
                payment_id=payment_id, page_size=page_size, page_token=page_token
            ),
            metadata=self.metadata,
            timeout=RPC_TIMEOUT_S,
        )

    def bank_account(self):  # type: ignore[no-untyped-def]
        """The account as the bank sees it (posted, pending), read with the admin certificate."""
        return self.suite.bank_account(self.bank_id, self.account_number)


def item(
    payee: TestUser | str,
    amount_minor: int,
    *,
    key: str | None = None,
    currency: str = "USD",
    description: str = "",
) -> pb.CreatePaymentRequest:
    """One item of a BatchCreatePayments call (a fresh key unless given)."""
    return pb.CreatePaymentRequest(
        idempotency_key=uuid.uuid4().hex if key is None else key,
        payee_username=payee if isinstance(payee, str) else payee.username,
        amount=amount_minor,
        currency=currency,
        description=description,
    )


def new_user(
    suite: SuiteClient,
    channel: grpc.Channel,
    bank_id: str,
    balance_minor: int,
    prefix: str = "u",
    currency: str = "USD",
) -> TestUser:
    """Open a funded account at `bank_id`, register a new user on it and log in."""
    account = suite.admin_open_account(bank_id, balance_minor, currency=currency)
    stub = pbg.GatewayServiceStub(channel)
    username = unique_name(prefix)
    stub.Register(
        pb.RegisterRequest(
            username=username,
            password=PASSWORD,
            bank_id=bank_id,
            account_number=account,
            link_code=account.link_code,
        ),
        timeout=RPC_TIMEOUT_S,
    )
    login = stub.Login(pb.LoginRequest(username=username, password=PASSWORD), timeout=RPC_TIMEOUT_S)
    ISSUED_TOKENS.append(login.access_token)
    return TestUser(suite, stub, username, bank_id, account, login.access_token)


def eventually(check, timeout_s: float = RESOLVE_WITHIN_S, interval_s: float = 0.2):  # type: ignore[no-untyped-def]
    """Call check() until it returns a truthy value or raises no AssertionError in time."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            result = check()
            if result is None or result:
                return result
        except (AssertionError, grpc.RpcError):
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s: {check}")
        time.sleep(interval_s)


def assert_settled(user: TestUser, balance_minor: int) -> None:
    account = user.bank_account()
    assert (account.balance, account.pending_debit, account.pending_credit) == (balance_minor, 0, 0)
