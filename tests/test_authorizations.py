"""Authorizations through the suite: a payment with manual capture holds the payer's money
until its payee captures all or part of it (the rest is released at both banks) or cancels
it; every refusal's code and reason; idempotent captures and cancellations. The same tests
run in-process too (tests/inproc/test_inproc_authorizations.py). (Expiry:
tests/inproc/test_inproc_authorization_expiry.py, and through the suite in
tests/test_crash_points_authorizations.py; the gateway killed at each new step:
tests/test_crash_points*.py.)
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import grpc
import pytest
from paygate.gen.paygate.bank.v1 import bank_pb2 as bpb
from paygate.gen.paygate.v1 import gateway_pb2 as pb
from suite import SuiteClient
from users import RPC_TIMEOUT_S, TestUser, assert_settled, error_reason, new_user

CODE = grpc.StatusCode
DAY_S = 24 * 3600


@pytest.fixture
def channel(suite: SuiteClient) -> Iterator[grpc.Channel]:
    creds = grpc.ssl_channel_credentials(suite.config.certs_dir.joinpath("ca.pem").read_bytes())
    with grpc.secure_channel(suite.gateway_target, creds) as ch:
        yield ch


def authorize(payer: TestUser, payee: TestUser, amount: int, key: str = "") -> pb.Payment:
    request = pb.CreatePaymentRequest(
        idempotency_key=key or str(uuid.uuid4()),
        payee_username=payee.username,
        amount=amount,
        currency="USD",
        capture_method=pb.CAPTURE_METHOD_MANUAL,
    )
    return payer.stub.CreatePayment(request, metadata=payer.metadata, timeout=RPC_TIMEOUT_S).payment


def capture(user: TestUser, payment_id: str, amount: int = 0, key: str = "") -> pb.Payment:
    request = pb.CapturePaymentRequest(
        payment_id=payment_id, amount=amount, idempotency_key=key or str(uuid.uuid4())
    )
    return user.stub.CapturePayment(request, metadata=user.metadata, timeout=RPC_TIMEOUT_S).payment


def cancel(user: TestUser, payment_id: str, key: str = "") -> pb.Payment:
    request = pb.CancelPaymentRequest(
        payment_id=payment_id, idempotency_key=key or str(uuid.uuid4())
    )
    return user.stub.CancelPayment(request, metadata=user.metadata, timeout=RPC_TIMEOUT_S).payment


def refusal(call: object, *args: object, **kwargs: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        call(*args, **kwargs)  # type: ignore[operator]
    return caught.value.code(), error_reason(caught.value)


def holds(suite: SuiteClient, user: TestUser) -> list[tuple[str, int, int]]:
    """The holds on the user's account, as the bank lists them to an operator."""
    listed = suite.bank_holds(user.bank_id, user.account_number)
    return [(hold.payment_id, hold.direction, hold.amount) for hold in listed]


def held(user: TestUser) -> tuple[int, int, int]:
    account = user.bank_account()
    return account.balance, account.pending_debit, account.pending_credit


def test_an_authorization_holds_the_money_and_moves_nothing(
    suite: SuiteClient, channel: grpc.Channel
) -> None:
    shop, alice = new_user(suite, channel, "bank-b", 0), new_user(suite, channel, "bank-a", 50_00)
    payment = authorize(alice, shop, 20_00)
    assert payment.status == pb.PAYMENT_STATUS_REQUIRES_CAPTURE
    assert payment.capture_method == pb.CAPTURE_METHOD_MANUAL
    assert payment.amount_captured == 0
    ttl_s = payment.capture_before.seconds - payment.create_time.seconds
    assert 7 * DAY_S - 2 <= ttl_s <= 7 * DAY_S
    balance = alice.balance()
    assert (balance.balance, balance.available) == (50_00, 30_00)
    assert held(alice) == (50_00, 20_00, 0) and held(shop) == (0, 0, 20_00)
    assert shop.get_payment(payment.payment_id) == payment
    # What an operator sees at each bank: one hold, named by the payment it belongs to.
    assert holds(suite, alice) == [(payment.payment_id, bpb.DIRECTION_DEBIT, 20_00)]
    assert holds(suite, shop) == [(payment.payment_id, bpb.DIRECTION_CREDIT, 20_00)]


def test_a_partial_capture_moves_that_amount_and_releases_the_rest_at_both_banks(
    suite: SuiteClient, channel: grpc.Channel
) -> None:
    shop, alice = new_user(suite, channel, "bank-b", 0), new_user(suite, channel, "bank-a", 50_00)
    payment = authorize(alice, shop, 20_00)
    captured = capture(shop, payment.payment_id, 12_50)
    assert (captured.status, captured.amount_captured, captured.amount) == (
        pb.PAYMENT_STATUS_SUCCEEDED, 12_50, 20_00,
    )  # fmt: skip
    assert_settled(alice, 37_50)
    assert_settled(shop, 12_50)
    assert alice.balance().available == 37_50
    assert alice.get_payment(payment.payment_id).amount_captured == 12_50


def test_a_capture_of_zero_takes_everything_within_one_bank_too(
    suite: SuiteClient, channel: grpc.Channel
) -> None:
    shop, alice = new_user(suite, channel, "bank-c", 0), new_user(suite, channel, "bank-c", 9_00)
    payment = authorize(alice, shop, 9_00)
    assert held(alice) == (9_00, 9_00, 0)  # held, not posted: never one-phase
    assert capture(shop, payment.payment_id).amount_captured == 9_00
    assert_settled(alice, 0)
    assert_settled(shop, 9_00)


def test_a_cancellation_releases_everything(suite: SuiteClient, channel: grpc.Channel) -> None:
    shop, alice = new_user(suite, channel, "bank-b", 0), new_user(suite, channel, "bank-a", 50_00)
    payment = authorize(alice, shop, 20_00)
    canceled = cancel(shop, payment.payment_id)
    assert (canceled.status, canceled.failure_reason, canceled.amount_captured) == (
        pb.PAYMENT_STATUS_CANCELED, "CANCELED", 0,
    )  # fmt: skip
    assert_settled(alice, 50_00)
    assert_settled(shop, 0)
    assert alice.balance().available == 50_00
    assert holds(suite, alice) == holds(suite, shop) == []


def test_refusals_say_why_and_change_nothing(suite: SuiteClient, channel: grpc.Channel) -> None:
    shop, alice = new_user(suite, channel, "bank-b", 0), new_user(suite, channel, "bank-a", 50_00)
    stranger = new_user(suite, channel, "bank-c", 0)
    payment = authorize(alice, shop, 20_00)
    pid = payment.payment_id
    assert refusal(capture, shop, pid, 20_01) == (
        CODE.FAILED_PRECONDITION,
        "AMOUNT_EXCEEDS_CAPTURABLE",
    )
    assert refusal(capture, shop, pid, -1) == (CODE.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    assert refusal(capture, alice, pid) == (CODE.PERMISSION_DENIED, "PERMISSION_DENIED")
    assert refusal(cancel, alice, pid) == (CODE.PERMISSION_DENIED, "PERMISSION_DENIED")
    assert refusal(capture, stranger, pid) == (CODE.NOT_FOUND, "NOT_FOUND")
    assert refusal(cancel, stranger, "pay_nothing") == (CODE.NOT_FOUND, "NOT_FOUND")
    blank_key = pb.CapturePaymentRequest(payment_id=pid, idempotency_key="")
    assert refusal(
        shop.stub.CapturePayment, blank_key, metadata=shop.metadata, timeout=RPC_TIMEOUT_S
    ) == (CODE.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    assert shop.get_payment(pid) == payment and held(alice) == (50_00, 20_00, 0)

    capture(shop, pid, 5_00)
    assert refusal(capture, shop, pid) == (CODE.FAILED_PRECONDITION, "PAYMENT_NOT_CAPTURABLE")
    assert refusal(cancel, shop, pid) == (CODE.FAILED_PRECONDITION, "PAYMENT_NOT_CAPTURABLE")
    canceled = authorize(alice, shop, 1_00).payment_id
    cancel(shop, canceled)
    assert refusal(capture, shop, canceled) == (CODE.FAILED_PRECONDITION, "PAYMENT_NOT_CAPTURABLE")
    automatic = alice.pay(shop, 1_00).payment_id
    assert refusal(capture, shop, automatic) == (CODE.FAILED_PRECONDITION, "PAYMENT_NOT_CAPTURABLE")
    assert_settled(alice, 50_00 - 5_00 - 1_00)
    assert_settled(shop, 5_00 + 1_00)


def test_a_capture_and_a_cancellation_answer_again_for_their_keys(
    suite: SuiteClient, channel: grpc.Channel
) -> None:
    shop, alice = new_user(suite, channel, "bank-b", 0), new_user(suite, channel, "bank-a", 50_00)
    pid = authorize(alice, shop, 20_00).payment_id
    first = capture(shop, pid, 7_00, key="capture-1")
    again = shop.stub.CapturePayment.with_call(
        pb.CapturePaymentRequest(payment_id=pid, amount=7_00, idempotency_key="capture-1"),
        metadata=shop.metadata,
        timeout=RPC_TIMEOUT_S,
    )
    assert again[0].payment == first
    assert ("idempotent-replayed", "true") in again[1].initial_metadata()
    assert refusal(capture, shop, pid, 8_00, key="capture-1") == (
        CODE.FAILED_PRECONDITION, "IDEMPOTENCY_KEY_MISMATCH",
    )  # fmt: skip
    assert_settled(alice, 43_00)

    other = authorize(alice, shop, 3_00).payment_id
    canceled = cancel(shop, other, key="cancel-1")
    assert cancel(shop, other, key="cancel-1") == canceled
    assert refusal(cancel, shop, pid, key="cancel-1") == (
        CODE.FAILED_PRECONDITION, "IDEMPOTENCY_KEY_MISMATCH",
    )  # fmt: skip
    assert_settled(alice, 43_00)
