"""A refund killed with SIGKILL at each step of its life: once the processes are back, the
money went back exactly once or not at all, no hold is left, the payment's amount_refunded
says what moved, and the payee's retry with the same idempotency key gets the true answer.

A refund is the payment turned around (gateway/refunds.py): its payer is the payment's
payee, at bank-b here, and its payee the payment's payer, at bank-a. It passes its own
point, gateway.after_refund_reserved (recorded with its amount reserved, no bank asked),
and then the points of a payment; a case for each kind of step, in each process.
"""

from __future__ import annotations

import uuid

import grpc
import pytest
from paygate.common import faults
from paygate.gen.paygate.v1 import gateway_pb2 as pb
from suite import Suite
from test_crash_points import channel, settled, within
from test_crash_points_authorizations import through_a_crash
from users import TestUser, new_user

__all__ = ["channel"]
pytestmark = pytest.mark.suite

START_MINOR, PAID_MINOR, REFUND_MINOR = 50_00, 20_00, 7_50
SETTLE_WITHIN_S = 20.0
# The refund's banks: money leaves the shop (bank-b) and returns to the customer (bank-a).
PROCESS = {"gateway": "gateway", "refund-payer": "bank-b", "refund-payee": "bank-a"}

# (crash point, the process that dies there, whether the refund was decided before).
CASES = [
    ("gateway.after_refund_reserved", "gateway", False),
    ("gateway.after_prepares", "gateway", False),
    ("gateway.after_decision", "gateway", True),
    ("gateway.after_first_commit", "gateway", True),
    ("bank.after_hold", "refund-payer", False),
    ("bank.after_hold", "refund-payee", False),
    ("bank.before_post", "refund-payer", True),
    ("bank.after_post", "refund-payee", True),
]


def test_the_refund_points_have_cases() -> None:
    assert set(faults.REFUND_POINTS) <= {point for point, _, _ in CASES}


def refund(shop: TestUser, payment_id: str, key: str) -> pb.Refund:
    return shop.refund(payment_id, REFUND_MINOR, key=key)


@pytest.mark.parametrize(
    ("point", "victim", "decided"), CASES, ids=[f"{p}-{v}" for p, v, _ in CASES]
)
def test_a_refund_killed_at_a_crash_point_moves_the_money_back_once_or_not_at_all(
    suite: Suite, channel: grpc.Channel, point: str, victim: str, decided: bool
) -> None:
    customer = within(SETTLE_WITHIN_S, lambda: new_user(suite, channel, "bank-a", START_MINOR))
    shop = within(SETTLE_WITHIN_S, lambda: new_user(suite, channel, "bank-b", 0))
    payment = within(SETTLE_WITHIN_S, lambda: customer.pay(shop, PAID_MINOR))
    key = uuid.uuid4().hex
    first = through_a_crash(
        suite, PROCESS[victim], point, lambda: refund(shop, payment.payment_id, key)
    )
    if victim != "gateway" and decided:  # the decision was on disk before the bank died
        assert isinstance(first, pb.Refund) and first.status == pb.REFUND_STATUS_SUCCEEDED

    # Settled: either nothing moved, or exactly the refund did; no hold either way.
    def balances_settled() -> int:
        shop_balance, shop_held, shop_pending = settled(shop)
        customer_balance, customer_held, customer_pending = settled(customer)
        assert (shop_held, shop_pending, customer_held, customer_pending) == (0, 0, 0, 0)
        back = PAID_MINOR - shop_balance
        assert back in (0, REFUND_MINOR)
        assert customer_balance == START_MINOR - PAID_MINOR + back
        return back

    moved = within(SETTLE_WITHIN_S, balances_settled)
    if decided:
        assert moved == REFUND_MINOR
    # The retry answers the refund if it went through, or makes it now: either way, once.
    again = within(SETTLE_WITHIN_S, lambda: refund(shop, payment.payment_id, key))
    assert (again.status, again.amount) == (pb.REFUND_STATUS_SUCCEEDED, REFUND_MINOR)
    assert within(SETTLE_WITHIN_S, balances_settled) == REFUND_MINOR
    after = shop.get_payment(payment.payment_id)
    assert after.amount_refunded == REFUND_MINOR
    succeeded = [
        r for r in shop.list_refunds(payment.payment_id).refunds
        if r.status == pb.REFUND_STATUS_SUCCEEDED
    ]  # fmt: skip
    assert [r.refund_id for r in succeeded] == [again.refund_id]
