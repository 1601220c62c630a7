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


def test_every_payment_point_has_a_split_case() -> None:
    assert {point for point, _, _ in CASES} == set(faults.PAYMENT_POINTS)
    assert {bank for _, bank, _ in CASES if bank != "gateway"} == {"bank-a", "bank-b", "bank-c"}


@pytest.mark.parametrize(
    ("point", "process", "committed"), CASES, ids=[f"{p}-{v}" for p, v, _ in CASES]
)
def test_a_split_payment_killed_at_a_crash_point_moves_every_leg_or_none(
    suite: Suite, channel: grpc.Channel, point: str, process: str, committed: bool
) -> None:
    users: dict[str, TestUser] = {
        role: within(SETTLE_WITHIN_S, lambda role=role, bank=bank: new_user(
            suite, channel, bank, START_MINOR if role == "buyer" else 0, role))
        for role, bank in BANKS.items()
    }  # fmt: skip
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
