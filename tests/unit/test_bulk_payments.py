"""The pure parts of bulk payouts (gateway/bulk_payments.py): which items may run at once,
the whole-call checks, and that 1,000 items of the longest valid fields fit the batch's
message limit both ways."""

from __future__ import annotations

import pytest
from paygate.common.config import DEFAULT_MAX_BATCH_MESSAGE_BYTES, DEFAULT_MAX_MESSAGE_BYTES
from paygate.errors import InvalidArgument, NotFound, PaygateError
from paygate.gateway.bulk_payments import MAX_ITEMS, ItemResult, check_count, check_keys, covered
from paygate.gateway.messages import batch_result_message
from paygate.gateway.models import Payment, PaymentRequest, PaymentStatus, TxnState, User
from paygate.gateway.payments import DESCRIPTION_MAX_LENGTH, KEY_MAX_LENGTH
from paygate.gen.paygate.v1 import gateway_pb2 as pb

PAYER = User(
    user_id="usr_1", username="alice", bank_id="bank-a",
    account_number="100001", currency="USD",
)  # fmt: skip
MAX_PAYMENT_MINOR = 100_000_000


def request(amount_minor: int, *, currency: str = "USD", key: str | None = None) -> PaymentRequest:
    return PaymentRequest(
        idempotency_key=f"k{amount_minor}-{currency}" if key is None else key,
        payee_username="bob",
        amount_minor=amount_minor,
        currency=currency,
        description="",
    )


def runs(available_minor: int, items: list[PaymentRequest | PaygateError]) -> int:
    return covered(PAYER, items, available_minor, MAX_PAYMENT_MINOR)


def test_the_run_covered_ends_before_the_first_item_the_balance_cannot_cover() -> None:
    items: list[PaymentRequest | PaygateError] = [request(30), request(50), request(40)]
    assert runs(100, items) == 2
    assert runs(120, items) == 3
    assert runs(29, items) == 0  # the first item runs alone: its bank decides
    assert runs(0, []) == 0


def test_items_that_cannot_reserve_cost_nothing() -> None:
    items: list[PaymentRequest | PaygateError] = [
        NotFound("no user 'x'"), request(0), request(MAX_PAYMENT_MINOR + 1),
        request(500, currency="EUR"), request(10), request(11),
    ]  # fmt: skip
    assert runs(10, items) == 5
    assert runs(0, items) == 4


def test_whole_call_checks() -> None:
    check_count(1)
    check_count(MAX_ITEMS)
    for count in (0, MAX_ITEMS + 1):
        with pytest.raises(InvalidArgument, match="1 to 1000"):
            check_count(count)
    check_keys([request(1, key="a"), request(1, key=""), request(1, key=""), NotFound("x")])
    with pytest.raises(InvalidArgument, match=r"requests\[0\] and requests\[2\]"):
        check_keys([request(1, key="a"), request(2, key="b"), request(3, key="a")])


def longest_payment() -> Payment:
    return Payment(
        payment_id="pay_" + "f" * 24, status=PaymentStatus.SUCCEEDED,
        txn_state=TxnState.COMMITTING, payer_user_id="u", payer_username="a" * 32,
        payer_bank_id="bank-a", payer_account="1" * 34, payee_user_id="u",
        payee_username="b" * 32, payee_bank_id="bank-b", payee_account="2" * 34,
        amount_minor=MAX_PAYMENT_MINOR, currency="USD",
        description="\U0001f4b8" * DESCRIPTION_MAX_LENGTH, create_time_us=2**52,
        one_phase=False, manual_capture=True, capture_before_us=2**52,
    )  # fmt: skip


def test_a_thousand_items_of_the_longest_fields_fit_the_batch_limit_both_ways() -> None:
    item = pb.CreatePaymentRequest(
        idempotency_key="\U0001f511" * KEY_MAX_LENGTH, payee_username="b" * 32,
        amount=MAX_PAYMENT_MINOR, currency="USD",
        description="\U0001f4b8" * DESCRIPTION_MAX_LENGTH,
        capture_method=pb.CAPTURE_METHOD_MANUAL,
    )  # fmt: skip
    batch = pb.BatchCreatePaymentsRequest(requests=[item] * MAX_ITEMS)
    assert DEFAULT_MAX_MESSAGE_BYTES < batch.ByteSize() < DEFAULT_MAX_BATCH_MESSAGE_BYTES
    paid = batch_result_message(ItemResult(payment=longest_payment(), replayed=True))
    # The longest message an item's input can cause: an unknown currency of 1,024
    # characters, each escaped to 10 in the message; cut in a batch's answer.
    error = InvalidArgument(
        "unknown currency " + repr("\U000e0001" * 1024),
        metadata={"payment_id": "pay_" + "f" * 24, "outcome": "unknown"},
    )
    refused = batch_result_message(ItemResult(error=error))
    assert len(refused.error.message) == 500 and refused.error.message.endswith("...")
    for result in (paid, refused):
        response = pb.BatchCreatePaymentsResponse(results=[result] * MAX_ITEMS)
        assert response.ByteSize() < DEFAULT_MAX_BATCH_MESSAGE_BYTES
