"""Refunds through the real suite: partial refunds up to what was captured, concurrent
refunds that never pass it, a payee short of funds, and every refusal with its code and
reason. A refund is the payment turned around, with its own two-phase commit
(gateway/refunds.py); what a user observes is balances at both banks, the payment's
amount_refunded and its list of refunds.
"""

from __future__ import annotations

import concurrent.futures
import uuid
from collections.abc import Iterator

import grpc
import pytest
from paygate.gen.paygate.v1 import gateway_pb2 as pb
from suite import SuiteClient
from users import RPC_TIMEOUT_S, assert_settled, error_reason, new_user

CODE = grpc.StatusCode


@pytest.fixture
def channel(suite: SuiteClient) -> Iterator[grpc.Channel]:
    creds = grpc.ssl_channel_credentials(suite.config.certs_dir.joinpath("ca.pem").read_bytes())
    with grpc.secure_channel(suite.gateway_target, creds) as ch:
        yield ch


def refusal(call: object, *args: object, **kwargs: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        call(*args, **kwargs)  # type: ignore[operator]
    return caught.value.code(), error_reason(caught.value)


def test_partial_refunds_up_to_the_amount_paid_and_not_a_cent_more(
    suite: SuiteClient, channel: grpc.Channel
) -> None:
    alice, shop = new_user(suite, channel, "bank-a", 100_00), new_user(suite, channel, "bank-b", 0)
    payment = alice.pay(shop, 60_00)
    first = shop.refund(payment.payment_id, 25_00, reason="one item returned")
    assert (first.status, first.amount, first.payment_id) == (
        pb.REFUND_STATUS_SUCCEEDED, 25_00, payment.payment_id
    )  # fmt: skip
    assert first.reason == "one item returned" and first.currency == "USD"
    second = shop.refund(payment.payment_id, 30_00)
    assert second.status == pb.REFUND_STATUS_SUCCEEDED
    # 5.00 is left: 5.01 is refused and changes nothing; 0 refunds what is left.
    assert refusal(shop.refund, payment.payment_id, 5_01) == (
        CODE.FAILED_PRECONDITION, "AMOUNT_EXCEEDS_REFUNDABLE"
    )  # fmt: skip
    assert alice.get_payment(payment.payment_id).amount_refunded == 55_00
    rest = shop.refund(payment.payment_id)
    assert rest.amount == 5_00
    assert refusal(shop.refund, payment.payment_id, 1) == (
        CODE.FAILED_PRECONDITION, "AMOUNT_EXCEEDS_REFUNDABLE"
    )  # fmt: skip
    after = alice.get_payment(payment.payment_id)
    assert (after.status, after.amount_captured, after.amount_refunded) == (
        pb.PAYMENT_STATUS_SUCCEEDED, 60_00, 60_00
    )  # fmt: skip
    listed = shop.list_refunds(payment.payment_id).refunds
    assert [r.refund_id for r in listed] == [first.refund_id, second.refund_id, rest.refund_id]
    assert list(alice.list_refunds(payment.payment_id).refunds) == list(listed)  # both parties
    # A refund is listed with its payment, never as a payment of its own.
    assert [p.payment_id for p in alice.list_payments().payments] == [payment.payment_id]
    assert refusal(alice.get_payment, first.refund_id)[0] == CODE.NOT_FOUND
    assert_settled(alice, 100_00)
    assert_settled(shop, 0)


def test_concurrent_refunds_never_pass_the_amount_captured(
    suite: SuiteClient, channel: grpc.Channel
) -> None:
    alice, shop = new_user(suite, channel, "bank-a", 100_00), new_user(suite, channel, "bank-c", 0)
    payment = alice.pay(shop, 100_00)

    def refund_30() -> str:
        try:
            shop.refund(payment.payment_id, 30_00)
            return "ok"
        except grpc.RpcError as error:
            return error_reason(error)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: refund_30(), range(8)))
    assert answers.count("ok") == 3, answers
    assert set(answers) == {"ok", "AMOUNT_EXCEEDS_REFUNDABLE"}, answers
    assert shop.get_payment(payment.payment_id).amount_refunded == 90_00
    assert_settled(alice, 90_00)
    assert_settled(shop, 10_00)


def test_a_payee_short_of_funds_cannot_refund_and_nothing_changes(
    suite: SuiteClient, channel: grpc.Channel
) -> None:
    alice, shop = new_user(suite, channel, "bank-a", 50_00), new_user(suite, channel, "bank-b", 0)
    supplier = new_user(suite, channel, "bank-c", 0)
    payment = alice.pay(shop, 40_00)
    shop.pay(supplier, 35_00)  # the shop spent the money: 5.00 left
    key = uuid.uuid4().hex
    assert refusal(shop.refund, payment.payment_id, 40_00, key=key) == (
        CODE.FAILED_PRECONDITION, "INSUFFICIENT_FUNDS"
    )  # fmt: skip
    # Recorded as failed, its key answers the same again; nothing moved or is held.
    (failed,) = shop.list_refunds(payment.payment_id).refunds
    assert (failed.status, failed.failure_reason) == (pb.REFUND_STATUS_FAILED, "INSUFFICIENT_FUNDS")
    assert refusal(shop.refund, payment.payment_id, 40_00, key=key) == (
        CODE.FAILED_PRECONDITION, "INSUFFICIENT_FUNDS"
    )  # fmt: skip
    assert shop.get_payment(payment.payment_id).amount_refunded == 0
    assert_settled(shop, 5_00)
    assert_settled(alice, 10_00)
    # The refundable amount is unchanged: once the shop has the money, all 40.00 refund.
    supplier.pay(shop, 35_00)
    assert shop.refund(payment.payment_id).amount == 40_00
    assert_settled(alice, 50_00)
    assert_settled(shop, 0)


def test_refunds_of_a_captured_authorization_and_within_one_bank(
    suite: SuiteClient, channel: grpc.Channel
) -> None:
    alice, shop = new_user(suite, channel, "bank-a", 50_00), new_user(suite, channel, "bank-a", 0)
    request = pb.CreatePaymentRequest(
        idempotency_key=uuid.uuid4().hex, payee_username=shop.username, amount=30_00,
        currency="USD", capture_method=pb.CAPTURE_METHOD_MANUAL,
    )  # fmt: skip
    held = alice.stub.CreatePayment(request, metadata=alice.metadata, timeout=RPC_TIMEOUT_S)
    payment_id = held.payment.payment_id
    # Not captured yet: nothing moved, nothing to refund.
    assert refusal(shop.refund, payment_id) == (CODE.FAILED_PRECONDITION, "PAYMENT_NOT_REFUNDABLE")
    shop.stub.CapturePayment(
        pb.CapturePaymentRequest(payment_id=payment_id, amount=20_00, idempotency_key="c1"),
        metadata=shop.metadata, timeout=RPC_TIMEOUT_S,
    )  # fmt: skip
    # What can be refunded is what was captured, not what was authorized.
    assert refusal(shop.refund, payment_id, 20_01) == (
        CODE.FAILED_PRECONDITION, "AMOUNT_EXCEEDS_REFUNDABLE"
    )  # fmt: skip
    assert shop.refund(payment_id).amount == 20_00  # both accounts at bank-a: one phase
    assert_settled(alice, 50_00)
    assert_settled(shop, 0)


def test_every_refusal_says_why_and_keys_replay(suite: SuiteClient, channel: grpc.Channel) -> None:
    alice, shop = new_user(suite, channel, "bank-a", 20_00), new_user(suite, channel, "bank-b", 0)
    mallory = new_user(suite, channel, "bank-c", 0)
    payment = alice.pay(shop, 10_00)
    assert refusal(alice.refund, payment.payment_id)[0] == CODE.PERMISSION_DENIED
    assert refusal(mallory.refund, payment.payment_id)[0] == CODE.NOT_FOUND
    assert refusal(mallory.list_refunds, payment.payment_id)[0] == CODE.NOT_FOUND
    assert refusal(shop.refund, payment.payment_id, -1)[0] == CODE.INVALID_ARGUMENT
    assert refusal(shop.refund, payment.payment_id, reason="two\nlines")[0] == (
        CODE.INVALID_ARGUMENT
    )
    assert refusal(shop.list_refunds, payment.payment_id, page_size=-1)[0] == (
        CODE.INVALID_ARGUMENT
    )
    assert refusal(alice.pay, shop, 99_00) == (CODE.FAILED_PRECONDITION, "INSUFFICIENT_FUNDS")
    failed = next(p for p in alice.list_payments().payments if p.status == pb.PAYMENT_STATUS_FAILED)
    assert refusal(shop.refund, failed.payment_id) == (
        CODE.FAILED_PRECONDITION, "PAYMENT_NOT_REFUNDABLE"
    )  # fmt: skip
    # A key answers its first answer, marked replayed; with other parameters it is refused.
    first = shop.refund(payment.payment_id, 3_00, key="refund-1")
    call = shop.stub.RefundPayment.with_call(
        pb.RefundPaymentRequest(payment_id=payment.payment_id, amount=3_00,
                                idempotency_key="refund-1"),
        metadata=shop.metadata, timeout=RPC_TIMEOUT_S,
    )  # fmt: skip
    replayed, info = call
    assert replayed.refund == first
    assert ("idempotent-replayed", "true") in info.initial_metadata()
    assert refusal(shop.refund, payment.payment_id, 4_00, key="refund-1") == (
        CODE.FAILED_PRECONDITION, "IDEMPOTENCY_KEY_MISMATCH"
    )  # fmt: skip
    assert shop.get_payment(payment.payment_id).amount_refunded == 3_00
    assert_settled(shop, 7_00)
    # A refusal is a business answer its key keeps: asked again, the same, replayed.
    assert refusal(shop.refund, payment.payment_id, 8_00, key="refund-2") == (
        CODE.FAILED_PRECONDITION, "AMOUNT_EXCEEDS_REFUNDABLE"
    )  # fmt: skip
    with pytest.raises(grpc.RpcError) as again:
        shop.stub.RefundPayment.with_call(
            pb.RefundPaymentRequest(payment_id=payment.payment_id, amount=8_00,
                                    idempotency_key="refund-2"),
            metadata=shop.metadata, timeout=RPC_TIMEOUT_S,
        )  # fmt: skip
    assert error_reason(again.value) == "AMOUNT_EXCEEDS_REFUNDABLE"
    assert ("idempotent-replayed", "true") in (again.value.initial_metadata() or ())
    assert shop.refund(payment.payment_id, 7_00).amount == 7_00  # another key: all the rest
