"""Split payments against the real suite: one payment divided among payees at all three
banks, one two-phase commit whose participants are every bank involved, all legs or none.
(The gateway killed at each crash point of a split payment: test_crash_points_splits.py;
the checks of the request and a leg over the balance limit: the in-process tier,
tests/inproc/test_inproc_split_payments.py.)

Every test makes its own users, so the tests share one suite without seeing each other's
money.
"""

from __future__ import annotations

import uuid

import grpc
import pytest
from paygate.gen.paygate.v1 import gateway_pb2 as pb
from suite import Suite
from test_payments import channel
from users import TestUser, assert_settled, error_reason, eventually, new_user

__all__ = ["channel"]  # the fixture, used by name

pytestmark = pytest.mark.suite


def events_of(user: TestUser, payment_id: str) -> list[str]:
    response = user.stub.ListEvents(
        pb.ListEventsRequest(page_size=100), metadata=user.metadata, timeout=10
    )
    return [e.type for e in response.events if e.payment.payment_id == payment_id]


def test_a_split_payment_across_three_banks_moves_every_leg(
    suite: Suite, channel: grpc.Channel
) -> None:
    buyer = new_user(suite, channel, "bank-a", 100_00, "buyer")
    platform = new_user(suite, channel, "bank-a", 0, "platform")  # at the payer's bank
    seller = new_user(suite, channel, "bank-b", 0, "seller")
    courier = new_user(suite, channel, "bank-c", 0, "courier")
    key = uuid.uuid4().hex

    payment = buyer.pay_split([(seller, 70_00), (platform, 5_50), (courier, 12_25)], key=key)

    assert payment.status == pb.PAYMENT_STATUS_SUCCEEDED
    assert payment.amount == 87_75 and payment.payee_username == seller.username
    assert [(s.payee_username, s.amount) for s in payment.splits] == [
        (seller.username, 70_00), (platform.username, 5_50), (courier.username, 12_25)
    ]  # fmt: skip
    for user, balance in ((buyer, 12_25), (seller, 70_00), (platform, 5_50), (courier, 12_25)):
        assert_settled(user, balance)
        assert user.balance().balance == balance
    # Every party sees the payment, in their list and in their events; a stranger does not.
    for party in (buyer, seller, platform, courier):
        assert party.get_payment(payment.payment_id) == payment
        assert party.list_payments().payments[0] == payment
        assert events_of(party, payment.payment_id) == ["payment.succeeded"]
    stranger = new_user(suite, channel, "bank-b", 0)
    with pytest.raises(grpc.RpcError) as info:
        stranger.get_payment(payment.payment_id)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    # The same key answers the same payment, and moves nothing again.
    assert buyer.pay_split([(seller, 70_00), (platform, 5_50), (courier, 12_25)], key=key) == (
        payment
    )
    assert_settled(buyer, 12_25)


def test_a_split_payment_with_a_payee_bank_down_moves_nothing_at_any_bank(
    suite: Suite, channel: grpc.Channel
) -> None:
    buyer = new_user(suite, channel, "bank-a", 50_00)
    seller = new_user(suite, channel, "bank-b", 0)
    courier = new_user(suite, channel, "bank-c", 0)
    key = uuid.uuid4().hex
    parts: list[tuple[TestUser | str, int]] = [(seller, 30_00), (courier, 10_00)]
    assert suite.supervisorctl("stop", "bank-c").returncode == 0
    try:
        with pytest.raises(grpc.RpcError) as info:
            buyer.pay_split(parts, key=key)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert error_reason(info.value) in ("BANK_UNAVAILABLE", "BANK_TIMEOUT")
        # The legs held at the banks that are up are voided: nothing moved, nothing held.
        eventually(lambda: assert_settled(buyer, 50_00) or assert_settled(seller, 0))
        [failed] = buyer.list_payments().payments
        assert failed.status == pb.PAYMENT_STATUS_FAILED
    finally:
        assert suite.supervisorctl("start", "bank-c").returncode == 0
    assert_settled(courier, 0)
    # A transient failure released the key: the same request succeeds once the bank is back.
    payment = eventually(lambda: buyer.pay_split(parts, key=key))
    assert payment.status == pb.PAYMENT_STATUS_SUCCEEDED
    for user, balance in ((buyer, 10_00), (seller, 30_00), (courier, 10_00)):
        assert_settled(user, balance)
