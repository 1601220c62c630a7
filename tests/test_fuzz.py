"""Adversarial fuzzing of every RPC of the gateway and of a bank (Hypothesis).

Thousands of random and malformed requests: random field values (empty, huge, unicode,
extreme integers, unknown enum values), random bytes that are not a valid message, and
garbage credentials. Whatever the input: never UNKNOWN or INTERNAL, every process still
SERVING afterwards, and the money of the accounts involved is conserved. Every RPC of the
services is fuzzed: a new one without a strategy here fails
test_every_rpc_of_the_gateway_is_fuzzed or test_every_rpc_of_the_bank_is_fuzzed.
BatchCreatePayments gets lists of fuzzed items, some paying bob. CapturePayment and
CancelPayment get real authorizations too, and RefundPayment and
ListRefunds real payments, called by their payee as well as by their payer. AdminService is
fuzzed on the gateway's admin port with the admin certificate, on a user of its own as well
as random names.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from paygate.gen.paygate.bank.v1 import bank_pb2
from paygate.gen.paygate.v1 import admin_pb2 as apb
from paygate.gen.paygate.v1 import gateway_pb2 as pb
from paygate.gen.paygate.v1 import gateway_pb2_grpc as pbg
from suite import PROGRAMS, Suite
from users import TestUser, new_user

pytestmark = pytest.mark.suite

FORBIDDEN = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}
STREAMS = {"/paygate.v1.GatewayService/WatchEvents"}
STREAM_WAIT_S = 0.5
EXAMPLES = 150
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

texts = st.one_of(
    st.text(max_size=40),
    st.text(max_size=600),
    st.sampled_from(["", " ", "\x00", "bank-a", "100001", "USD", "ünïcødé", "a" * 300]),
)
codes = st.one_of(st.from_regex(r"[0-9]{6}", fullmatch=True),
                  st.from_regex(r"[a-z2-7]{4}(-[a-z2-7]{4}){3}", fullmatch=True))
int64s = st.one_of(st.integers(-(2**63), 2**63 - 1), st.integers(-5, 5))
int32s = st.one_of(st.integers(-(2**31), 2**31 - 1), st.integers(-5, 200))
enums = st.one_of(st.integers(-(2**31), 2**31 - 1), st.integers(-1, 4))


class Fuzz:
    """The fuzz targets: a logged-in user with money, and channels to the gateway and bank-a."""

    def __init__(self, suite: Suite) -> None:
        self.suite = suite
        self.gateway = suite.gateway_channel_sync()
        self.bank_admin = suite.bank_channel_sync("bank-a", identity="admin")
        self.bank_gateway = suite.bank_channel_sync("bank-a", identity="gateway")
        self.admin = suite.gateway_admin_channel_sync()
        self.alice: TestUser = new_user(suite, self.gateway, "bank-a", 1000_00, "fuzza")
        self.bob: TestUser = new_user(suite, self.gateway, "bank-b", 1000_00, "fuzzb")
        # AdminService's own target: freezing alice or bob would only test USER_FROZEN.
        self.carol: TestUser = new_user(suite, self.gateway, "bank-c", 0, "fuzzc")
        self.tracked = {self.alice.account_number, self.bob.account_number}
        self.prepared: set[str] = set()
        self.gateway_stub = pbg.GatewayServiceStub(self.gateway)
        self.authorizations = 0  # made for CapturePayment and CancelPayment examples
        self.payments = 0  # made for RefundPayment and ListRefunds examples

    def authorization(self) -> str:
        """The id of a new authorization of alice's, to bob, awaiting capture."""
        request = pb.CreatePaymentRequest(
            idempotency_key=uuid.uuid4().hex, payee_username=self.bob.username, amount=1_00,
            currency="USD", capture_method=pb.CAPTURE_METHOD_MANUAL,
        )
        response = self.gateway_stub.CreatePayment(
            request, metadata=self.alice.metadata, timeout=10.0
        )
        self.authorizations += 1
        return str(response.payment.payment_id)

    def payment(self) -> str:
        """The id of a new payment of 1.00 from alice to bob, which bob may refund."""
        request = pb.CreatePaymentRequest(
            idempotency_key=uuid.uuid4().hex, payee_username=self.bob.username, amount=1_00,
            currency="USD",
        )
        response = self.gateway_stub.CreatePayment(
            request, metadata=self.alice.metadata, timeout=10.0
        )
        self.payments += 1
        return str(response.payment.payment_id)

    def cancel_authorizations(self) -> None:
        """Release what the fuzzer left held: holds must end. Listed and cancelled by bob,
        their payee, whose token no fuzzed call can revoke (alice's may be, by Logout)."""
        page_token = ""
        while True:
            page = self.bob.list_payments(page_size=100, page_token=page_token)
            for payment in page.payments:
                if payment.status == pb.PAYMENT_STATUS_REQUIRES_CAPTURE:
                    self.gateway_stub.CancelPayment(
                        pb.CancelPaymentRequest(
                            payment_id=payment.payment_id, idempotency_key=uuid.uuid4().hex
                        ),
                        metadata=self.bob.metadata, timeout=10.0,
                    )
            page_token = page.next_page_token
            if not page_token:
                return

    def call(self, channel: grpc.Channel, method: str, request: bytes,
             metadata: list[tuple[str, str]] | None = None) -> grpc.StatusCode:
        if method in STREAMS:  # a server stream: its first message, or its refusal
            watch: Callable[..., Any] = channel.unary_stream(method)
            try:
                next(iter(watch(request, metadata=metadata, timeout=STREAM_WAIT_S)), None)
            except grpc.RpcError as exc:
                code = exc.code()
                # Nothing to send yet within the wait: the stream was accepted.
                return grpc.StatusCode.OK if code == grpc.StatusCode.DEADLINE_EXCEEDED else code  # type: ignore[no-any-return]
            return grpc.StatusCode.OK
        stub: Callable[..., Any] = channel.unary_unary(method)  # raw bytes in and out
        try:
            stub(request, metadata=metadata, timeout=10.0)
        except grpc.RpcError as exc:
            return exc.code()  # type: ignore[no-any-return]
        return grpc.StatusCode.OK

    def close(self) -> None:
        for channel in (self.gateway, self.bank_admin, self.bank_gateway, self.admin):
            channel.close()


@pytest.fixture(scope="module")
def fuzz(suite: Suite) -> Iterator[Fuzz]:
    target = Fuzz(suite)
    before = target.suite.total_money([(u.bank_id, u.account_number)
                                        for u in (target.alice, target.bob)])
    yield target
    target.cancel_authorizations()
    # Void whatever the fuzzer prepared as the gateway, as the coordinator would.
    for transaction_id in target.prepared:
        target.call(target.bank_gateway, "/paygate.bank.v1.BankService/Abort",
                    bank_pb2.AbortRequest(transaction_id=transaction_id).SerializeToString())
    for user in (target.alice, target.bob):
        account = user.bank_account()
        assert account.pending_debit == 0 and account.pending_credit == 0
        assert account.balance >= 0
    after = target.suite.total_money([(u.bank_id, u.account_number)
                                       for u in (target.alice, target.bob)])
    assert after == before, "money was created or destroyed"
    for program in PROGRAMS:
        target.suite.wait_serving(program, timeout_s=10)
    target.close()


GATEWAY = "/paygate.v1.GatewayService/"
GATEWAY_REQUESTS = {
    "Register": st.builds(pb.RegisterRequest, username=texts, password=texts, bank_id=texts,
                          account_number=texts, link_code=texts),
    "Login": st.builds(pb.LoginRequest, username=texts, password=texts,
                       one_time_code=st.one_of(texts, codes)),
    "Logout": st.just(pb.LogoutRequest()),
    "GetBalance": st.just(pb.GetBalanceRequest()),
    "CreatePayment": st.builds(
        pb.CreatePaymentRequest, idempotency_key=texts,
        payee_username=st.one_of(texts, st.just("PAYEE")), amount=int64s,
        currency=st.one_of(texts, st.just("USD")), description=texts,
        capture_method=enums,
        splits=st.lists(st.builds(pb.Split, payee_username=st.one_of(texts, st.just("PAYEE")),
                                  amount=st.one_of(int64s, st.integers(1, 2_00))), max_size=12),
    ),
    # Each item as CreatePayment's (PAYEE in an item stands for bob), at most 8 of them: the
    # limits of the call itself are tested in tests/inproc/test_inproc_bulk_payments.py.
    "BatchCreatePayments": st.builds(
        pb.BatchCreatePaymentsRequest,
        requests=st.lists(st.builds(
            pb.CreatePaymentRequest, idempotency_key=texts,
            payee_username=st.one_of(texts, st.just("PAYEE")),
            amount=st.one_of(int64s, st.integers(1, 2_00)),
            currency=st.one_of(texts, st.just("USD")), description=texts, capture_method=enums,
        ), max_size=8),
    ),
    "GetPayment": st.builds(pb.GetPaymentRequest, payment_id=texts),
    "ListPayments": st.builds(pb.ListPaymentsRequest, page_size=int32s, page_token=texts),
    "ChangePassword": st.builds(pb.ChangePasswordRequest, current_password=texts,
                                new_password=texts),
    "ListSessions": st.just(pb.ListSessionsRequest()),
    "RevokeSession": st.builds(pb.RevokeSessionRequest, session_id=st.one_of(
        texts, st.builds(lambda: f"ses_{uuid.uuid4().hex[:24]}"))),
    "EnrollTotp": st.builds(pb.EnrollTotpRequest, password=texts),
    "ConfirmTotp": st.builds(pb.ConfirmTotpRequest, code=st.one_of(texts, codes)),
    "DisableTotp": st.builds(pb.DisableTotpRequest, password=texts,
                             one_time_code=st.one_of(texts, codes)),
    "RegenerateRecoveryCodes": st.builds(pb.RegenerateRecoveryCodesRequest,
                                         one_time_code=st.one_of(texts, codes)),
    # AUTH stands for a real authorization, made for the example.
    "CapturePayment": st.builds(
        pb.CapturePaymentRequest, payment_id=st.one_of(texts, st.just("AUTH")),
        amount=st.one_of(int64s, st.integers(0, 2_00)), idempotency_key=texts,
    ),
    "CancelPayment": st.builds(
        pb.CancelPaymentRequest, payment_id=st.one_of(texts, st.just("AUTH")),
        idempotency_key=texts,
    ),
    # PAID stands for a real payment of 1.00 from alice to bob, made for the example.
    "RefundPayment": st.builds(
        pb.RefundPaymentRequest, payment_id=st.one_of(texts, st.just("PAID")),
        amount=st.one_of(int64s, st.integers(0, 1_50)), reason=texts, idempotency_key=texts,
    ),
    "ListEvents": st.builds(
        pb.ListEventsRequest, starting_after=int64s, page_size=int32s,
        types=st.lists(st.one_of(texts, st.sampled_from(["payment.succeeded", "refund.failed"])),
                       max_size=20),
    ),
    "WatchEvents": st.builds(pb.WatchEventsRequest, starting_after=st.one_of(int64s,
                                                                             st.integers(0, 5))),
    "ListRefunds": st.builds(
        pb.ListRefundsRequest, payment_id=st.one_of(texts, st.just("PAID")), page_size=int32s,
        page_token=texts,
    ),
}


# Called by bob (the payee) half of the time; every other method by alice.
PAYEE_METHODS = {"CapturePayment", "CancelPayment", "RefundPayment", "ListRefunds"}


def test_every_rpc_of_the_gateway_is_fuzzed() -> None:
    service = pb.DESCRIPTOR.services_by_name["GatewayService"]
    assert set(GATEWAY_REQUESTS) == {method.name for method in service.methods}


@pytest.mark.parametrize("method", sorted(GATEWAY_REQUESTS))
def test_gateway_never_answers_unknown_or_internal(fuzz: Fuzz, method: str) -> None:
    @FUZZ_SETTINGS
    @given(request=GATEWAY_REQUESTS[method], garbage=st.booleans(), as_payee=st.booleans())
    def run(request: Any, garbage: bool, as_payee: bool) -> None:
        for payment in [request, *getattr(request, "requests", ()),
                        *getattr(request, "splits", ())]:  # fmt: skip
            if getattr(payment, "payee_username", None) == "PAYEE":
                payment.payee_username = fuzz.bob.username
        if getattr(request, "payment_id", None) == "AUTH":
            request.payment_id = fuzz.authorization()
        if getattr(request, "payment_id", None) == "PAID":
            request.payment_id = fuzz.payment()
        if method == "Logout" and not garbage:
            return  # logging the fuzzer out would only test UNAUTHENTICATED from then on
        caller = fuzz.bob if as_payee and method in PAYEE_METHODS else fuzz.alice
        metadata = [("authorization", "Bearer x" * 3)] if garbage else caller.metadata
        code = fuzz.call(fuzz.gateway, GATEWAY + method, request.SerializeToString(), metadata)
        assert code not in FORBIDDEN, (method, request)

    made_before = fuzz.authorizations + fuzz.payments
    run()
    if method in PAYEE_METHODS:
        made = fuzz.authorizations + fuzz.payments - made_before
        assert made >= 10, "too few real authorizations or payments fuzzed"


ADMIN = "/paygate.v1.AdminService/"
# USER stands for the fuzzer's own user (carol).
usernames = st.one_of(texts, st.just("USER"))
ADMIN_REQUESTS = {
    "GetUser": st.builds(apb.GetUserRequest, username=usernames),
    "FreezeUser": st.builds(apb.FreezeUserRequest, username=usernames, reason=texts),
    "UnfreezeUser": st.builds(apb.UnfreezeUserRequest, username=usernames, reason=texts),
    "ResetTwoFactor": st.builds(apb.ResetTwoFactorRequest, username=usernames, reason=texts),
}


def test_every_rpc_of_admin_service_is_fuzzed() -> None:
    service = apb.DESCRIPTOR.services_by_name["AdminService"]
    assert set(ADMIN_REQUESTS) == {method.name for method in service.methods}


@pytest.mark.parametrize("method", sorted(ADMIN_REQUESTS))
def test_admin_service_never_answers_unknown_or_internal(fuzz: Fuzz, method: str) -> None:
    @FUZZ_SETTINGS
    @given(request=ADMIN_REQUESTS[method])
    def run(request: Any) -> None:
        if request.username == "USER":
            request.username = fuzz.carol.username
        code = fuzz.call(fuzz.admin, ADMIN + method, request.SerializeToString())
        assert code not in FORBIDDEN, (method, request)

    run()


def _transaction_id(prefix: str) -> st.SearchStrategy[str]:
    return st.one_of(texts, st.builds(lambda: f"{prefix}-{uuid.uuid4().hex}"))


def _legs(fuzz: Fuzz) -> st.SearchStrategy[list[bank_pb2.Leg]]:
    account = texts.filter(lambda number: number not in fuzz.tracked)
    leg = st.builds(bank_pb2.Leg, account_number=st.one_of(account, st.sampled_from(["100003"])),
                    direction=st.integers(-3, 5), amount=int64s,
                    currency=st.one_of(texts, st.just("USD")))
    return st.lists(leg, max_size=4)


BANK = "/paygate.bank.v1.BankService/"


def _bank_requests(fuzz: Fuzz) -> dict[str, tuple[grpc.Channel, st.SearchStrategy[Any]]]:
    untracked = texts.filter(lambda number: number not in fuzz.tracked)
    return {
        "GetAccount": (fuzz.bank_gateway, st.builds(bank_pb2.GetAccountRequest,
                                                     account_number=texts)),
        "OpenAccount": (fuzz.bank_admin, st.builds(bank_pb2.OpenAccountRequest, currency=texts,
                                                    initial_balance=int64s)),
        "LinkAccount": (fuzz.bank_gateway, st.builds(bank_pb2.LinkAccountRequest,
                                                      account_number=texts, link_code=texts)),
        # Never a number: a new code for an account of the suite's (a demo account) would
        # stop other tests from registering with it.
        "IssueLinkCode": (fuzz.bank_admin, st.builds(
            bank_pb2.IssueLinkCodeRequest, account_number=texts.filter(
                lambda number: not number.strip().isdigit()))),
        "ListHolds": (fuzz.bank_admin, st.builds(
            bank_pb2.ListHoldsRequest,
            account_number=st.one_of(texts, st.sampled_from(sorted(fuzz.tracked))),
            page_size=int32s, page_token=texts)),
        "Deposit": (fuzz.bank_admin, st.builds(bank_pb2.DepositRequest,
                                                account_number=untracked, amount=int64s,
                                                currency=texts, reference=texts)),
        "Prepare": (fuzz.bank_gateway, st.builds(bank_pb2.PrepareRequest,
                                                  transaction_id=_transaction_id("fuzz-p"),
                                                  legs=_legs(fuzz))),
        # Commit and Abort draw ids from another namespace than Prepare: committing a
        # one-legged transaction the fuzzer prepared would be the gateway moving money on
        # purpose, which is its privilege, not an attack.
        "Commit": (fuzz.bank_gateway, st.builds(bank_pb2.CommitRequest,
                                                 transaction_id=_transaction_id("fuzz-c"))),
        "Abort": (fuzz.bank_gateway, st.builds(bank_pb2.AbortRequest,
                                                transaction_id=_transaction_id("fuzz-c"))),
        "PrepareBatch": (fuzz.bank_gateway, st.builds(
            bank_pb2.PrepareBatchRequest, transactions=st.lists(st.builds(
                bank_pb2.PrepareRequest, transaction_id=_transaction_id("fuzz-p"),
                legs=_legs(fuzz)), max_size=4))),
        "CommitBatch": (fuzz.bank_gateway, st.builds(
            bank_pb2.CommitBatchRequest, transactions=st.lists(st.builds(
                bank_pb2.CommitRequest, transaction_id=_transaction_id("fuzz-c")), max_size=4))),
        "AbortBatch": (fuzz.bank_gateway, st.builds(
            bank_pb2.AbortBatchRequest, transactions=st.lists(st.builds(
                bank_pb2.AbortRequest, transaction_id=_transaction_id("fuzz-c")), max_size=4))),
    }


BANK_METHODS = ["GetAccount", "OpenAccount", "LinkAccount", "IssueLinkCode", "Deposit",
                "Prepare", "Commit", "Abort", "PrepareBatch", "CommitBatch", "AbortBatch",
                "ListHolds"]


def test_every_rpc_of_the_bank_is_fuzzed() -> None:
    service = bank_pb2.DESCRIPTOR.services_by_name["BankService"]
    assert set(BANK_METHODS) == {method.name for method in service.methods}


@pytest.mark.parametrize("method", BANK_METHODS)
def test_bank_never_answers_unknown_or_internal(fuzz: Fuzz, method: str) -> None:
    channel, requests = _bank_requests(fuzz)[method]

    @FUZZ_SETTINGS
    @given(request=requests)
    def run(request: Any) -> None:
        if method == "Prepare":
            fuzz.prepared.add(request.transaction_id)
        if method == "PrepareBatch":
            fuzz.prepared.update(t.transaction_id for t in request.transactions)
        code = fuzz.call(channel, BANK + method, request.SerializeToString())
        assert code not in FORBIDDEN, (method, request)

    run()


@pytest.mark.parametrize(
    ("target", "method"),
    [("gateway", m) for m in sorted(GATEWAY_REQUESTS)]
    + [("admin", m) for m in sorted(ADMIN_REQUESTS)]
    + [("bank", m) for m in ("GetAccount", "Deposit", "Prepare", "Commit", "Abort",
                             "PrepareBatch", "CommitBatch", "AbortBatch", "ListHolds")],
)
def test_malformed_bytes_are_invalid_argument(fuzz: Fuzz, target: str, method: str) -> None:
    channel = {"gateway": fuzz.gateway, "admin": fuzz.admin}.get(target, fuzz.bank_admin)
    prefix = {"gateway": GATEWAY, "admin": ADMIN}.get(target, BANK)

    @settings(max_examples=40, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(data=st.binary(min_size=1, max_size=2000))
    def run(data: bytes) -> None:
        metadata = fuzz.alice.metadata if target == "gateway" else None
        code = fuzz.call(channel, prefix + method, data, metadata)
        assert code not in FORBIDDEN, (method, data)

    run()
    # Bytes that cannot be a protobuf message at all (a truncated varint) are refused clearly.
    metadata = fuzz.alice.metadata if target == "gateway" else None
    assert fuzz.call(channel, prefix + method, b"\x0a\xff", metadata) == (
        grpc.StatusCode.INVALID_ARGUMENT
    )
