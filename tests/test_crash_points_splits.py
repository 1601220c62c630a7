"""A split payment across the three banks killed with SIGKILL at each crash point: once the
processes are back, every leg moved or none did, no hold is left, no money appeared or
vanished, and the payer's retry with the same idempotency key gets the true answer.

The buyer is at bank-a, and so is one payee (the platform's fee: bank-a holds a debit and a
credit that do not balance there); the seller is at bank-b, the courier at bank-c. The
payment passes the points a payment across two banks does (gateway.after_first_prepare: the
first of three votes; gateway.after_first_commit: the first of three acknowledgements); each
bank point is armed at one of the three banks, each bank at least once.
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

START_MINOR = 50_00
PARTS = {"seller": 20_00, "platform": 2_50, "courier": 7_50}
PAID_MINOR = sum(PARTS.values())
SETTLE_WITHIN_S = 20.0
BANKS = {"buyer": "bank-a", "platform": "bank-a", "seller": "bank-b", "courier": "bank-c"}

# (crash point, the process that dies there, whether the payment is committed)
CASES = [
    ("gateway.before_prepare", "gateway", False),
    ("gateway.after_first_prepare", "gateway", False),
    ("gateway.after_prepares", "gateway", False),
    ("gateway.after_decision", "gateway", True),
    ("gateway.after_first_commit", "gateway", True),
    ("gateway.after_commits", "gateway", True),
    ("bank.before_hold", "bank-c", False),
    ("bank.after_hold", "bank-a", False),
    ("bank.before_post", "bank-b", True),
    ("bank.after_post", "bank-a", True),
    ("bank.after_post", "bank-c", True),
]


def new_users(suite: Suite, channel: grpc.Channel) -> dict[str, TestUser]:
    """The buyer, funded, and the three payees, each at their bank."""
    return {
        role: within(SETTLE_WITHIN_S, lambda role=role, bank=bank: new_user(
            suite, channel, bank, START_MINOR if role == "buyer" else 0, role))
        for role, bank in BANKS.items()
    }  # fmt: skip


def test_every_payment_point_has_a_split_case() -> None:
    assert {point for point, _, _ in CASES} == set(faults.PAYMENT_POINTS)
    assert {bank for _, bank, _ in CASES if bank != "gateway"} == {"bank-a", "bank-b", "bank-c"}


@pytest.mark.parametrize(
    ("point", "process", "committed"), CASES, ids=[f"{p}-{v}" for p, v, _ in CASES]
)
def test_a_split_payment_killed_at_a_crash_point_moves_every_leg_or_none(
    suite: Suite, channel: grpc.Channel, point: str, process: str, committed: bool
) -> None:
    users = new_users(suite, channel)
    buyer = users["buyer"]
    parts: list[tuple[TestUser | str, int]] = [(users[r], amount) for r, amount in PARTS.items()]
    key = uuid.uuid4().hex

    first = through_a_crash(suite, process, point, lambda: buyer.pay_split(parts, key=key))

    if committed and process != "gateway":
        # A bank that dies after the commit decision cannot take the success back.
        assert isinstance(first, pb.Payment) and first.status == pb.PAYMENT_STATUS_SUCCEEDED
    else:
        assert not isinstance(first, pb.Payment)
        assert first[0] == "UNAVAILABLE", first

    def balances(moved: bool) -> dict[str, tuple[int, int, int]]:
        if not moved:
            return {r: ((START_MINOR if r == "buyer" else 0), 0, 0) for r in users}
        return {r: ((START_MINOR - PAID_MINOR if r == "buyer" else PARTS[r]), 0, 0) for r in users}

    def every_leg_or_none() -> None:
        assert {role: settled(user) for role, user in users.items()} == balances(committed)

    within(SETTLE_WITHIN_S, every_leg_or_none)
    assert sum(user.bank_account().balance for user in users.values()) == START_MINOR

    # The retry with the same key gets the true answer, and never pays twice.
    retried = within(SETTLE_WITHIN_S, lambda: buyer.pay_split(parts, key=key))
    assert retried.status == pb.PAYMENT_STATUS_SUCCEEDED
    succeeded = [
        p.payment_id for p in buyer.list_payments().payments
        if p.status == pb.PAYMENT_STATUS_SUCCEEDED
    ]  # fmt: skip
    assert succeeded == [retried.payment_id]
    if isinstance(first, pb.Payment):
        assert retried == first
    assert {role: settled(user) for role, user in users.items()} == balances(True)
    assert buyer.pay_split(parts, key=key) == retried


# A split payment's refund: every payee gives back a share (seller 8.00, platform 1.00,
# courier 3.00 of 12.00), at the three banks, to the buyer at bank-a. (crash point, the
# process that dies there, whether the refund was decided before)
REFUND_MINOR = 12_00
SHARES = {"seller": 8_00, "platform": 1_00, "courier": 3_00}
REFUND_CASES = [
    ("gateway.after_refund_reserved", "gateway", False),
    ("gateway.after_first_prepare", "gateway", False),
    ("gateway.after_decision", "gateway", True),
    ("gateway.after_first_commit", "gateway", True),
    ("bank.after_hold", "bank-c", False),
    ("bank.before_post", "bank-b", True),
    ("bank.after_post", "bank-a", True),
]


@pytest.mark.parametrize(
    ("point", "process", "decided"),
    REFUND_CASES,
    ids=[f"{p}-{v}" for p, v, _ in REFUND_CASES],
)
def test_a_split_refund_killed_at_a_crash_point_takes_back_every_share_once_or_none(
    suite: Suite, channel: grpc.Channel, point: str, process: str, decided: bool
) -> None:
    users = new_users(suite, channel)
    buyer, seller = users["buyer"], users["seller"]
    parts: list[tuple[TestUser | str, int]] = [(users[r], amount) for r, amount in PARTS.items()]
    payment = within(SETTLE_WITHIN_S, lambda: buyer.pay_split(parts))
    key = uuid.uuid4().hex

    def refund() -> pb.Refund:
        return seller.refund(payment.payment_id, REFUND_MINOR, key=key)

    first = through_a_crash(suite, process, point, refund)
    if process != "gateway" and decided:
        assert isinstance(first, pb.Refund) and first.status == pb.REFUND_STATUS_SUCCEEDED

    def balances(back: bool) -> dict[str, tuple[int, int, int]]:
        paid = {r: PARTS[r] - (SHARES[r] if back else 0) for r in PARTS}
        buyer_balance = START_MINOR - PAID_MINOR + (REFUND_MINOR if back else 0)
        return {"buyer": (buyer_balance, 0, 0), **{r: (paid[r], 0, 0) for r in PARTS}}

    def every_share_or_none() -> bool:
        now = {role: settled(user) for role, user in users.items()}
        assert now in (balances(False), balances(True)), now
        return now == balances(True)

    moved = within(SETTLE_WITHIN_S, every_share_or_none)
    if decided:
        assert moved
    # The retry answers the refund if it went through, or makes it now: either way, once.
    again = within(SETTLE_WITHIN_S, refund)
    assert (again.status, again.amount) == (pb.REFUND_STATUS_SUCCEEDED, REFUND_MINOR)
    assert {s.payee_username: s.amount for s in again.splits} == {
        users[r].username: share for r, share in SHARES.items()
    }
    assert within(SETTLE_WITHIN_S, every_share_or_none)
    assert seller.get_payment(payment.payment_id).amount_refunded == REFUND_MINOR
