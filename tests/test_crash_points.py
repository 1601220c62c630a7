"""Every crash point of the two-phase commit, with SIGKILL: a payment ends at both banks or neither.

Each case arms one point (paygate.common.faults) in the gateway, the payer's bank or the
payee's bank, makes a payment from bank-a to bank-b through it, and waits for supervisord to
restart the killed process. Then, as a user would see it: within 10 s the payment is either
posted at both banks or at neither, no hold is left, no money appeared or vanished, and the
client's retry with the same idempotency key gets the true answer: the same SUCCEEDED payment
when it was committed, a fresh success when it was aborted.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import TypeVar

import grpc
import pytest
from paygate.common import faults
from paygate.gen.paygate.v1 import gateway_pb2 as pb
from suite import Suite
from users import TestUser, error_reason, new_user

pytestmark = pytest.mark.suite

PAYER_BANK, PAYEE_BANK = "bank-a", "bank-b"
START_MINOR, AMOUNT_MINOR = 50_00, 20_00
SETTLE_WITHIN_S = 10.0
POLL_S = 0.1
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
]

# (crash point, the process that dies there, whether the payment is committed)
CASES = [
    ("gateway.before_prepare", "gateway", False),
    ("gateway.after_first_prepare", "gateway", False),
    ("gateway.after_prepares", "gateway", False),
    ("gateway.after_decision", "gateway", True),
    ("gateway.after_first_commit", "gateway", True),
    ("gateway.after_commits", "gateway", True),
    ("bank.before_hold", "payer", False),
    ("bank.before_hold", "payee", False),
    ("bank.after_hold", "payer", False),
    ("bank.after_hold", "payee", False),
    ("bank.before_post", "payer", True),
    ("bank.before_post", "payee", True),
    ("bank.after_post", "payer", True),
    ("bank.after_post", "payee", True),
]
PROCESS = {"gateway": "gateway", "payer": PAYER_BANK, "payee": PAYEE_BANK}

T = TypeVar("T")


@pytest.fixture
def channel(suite: Suite) -> Iterator[grpc.Channel]:
    if not suite.config.gateway.fault_injection:
        pytest.skip("crash points need a suite with fault_injection = true")
    creds = grpc.ssl_channel_credentials(suite.config.certs_dir.joinpath("ca.pem").read_bytes())
    with grpc.secure_channel(suite.gateway_target, creds, options=CHANNEL_OPTIONS) as ch:
        yield ch


def within(timeout_s: float, attempt: Callable[[], T]) -> T:
    """attempt() until it neither fails an assertion nor an RPC, for at most timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return attempt()
        except (AssertionError, grpc.RpcError):
            if time.monotonic() > deadline:
                raise
        time.sleep(POLL_S)


def settled(user: TestUser) -> tuple[int, int, int]:
    account = user.bank_account()
    return account.balance, account.pending_debit, account.pending_credit


def first_answer(payer: TestUser, payee: TestUser, key: str) -> pb.Payment | tuple[str, str]:
    try:
        return payer.pay(payee, AMOUNT_MINOR, key=key)
    except grpc.RpcError as exc:
        return exc.code().name, error_reason(exc)


def pay_through_a_crash(
    suite: Suite, process: str, point: str, payer: TestUser, payee: TestUser, key: str
) -> pb.Payment | tuple[str, str]:
    """Arm `point` in `process`, pay, and wait for supervisord to restart the process;
    return what the payer heard."""
    old_pid = suite.pid(process)
    armed = suite.arm_fault(process, point)
    try:
        first = first_answer(payer, payee, key)
        assert not armed.exists(), f"{process} never reached {point}"
    finally:
        armed.unlink(missing_ok=True)
    suite.wait_restarted(process, old_pid)
    return first


def test_every_crash_point_has_a_case() -> None:
    assert {point for point, _, _ in CASES} == set(faults.PAYMENT_POINTS)
    # A one-phase commit passes the points before and at its decision; no phase two.
    assert {point for point, _, _ in ONE_PHASE_CASES} == {
        point for point in faults.PAYMENT_POINTS if "commit" not in point and "post" not in point
    } - {"gateway.after_first_prepare"}
    bank_points = {point for point in faults.POINTS if point.startswith("bank.")}
    for victim in ("payer", "payee"):
        assert {p for p, v, _ in CASES if v == victim} == bank_points


@pytest.mark.parametrize(
    ("point", "victim", "committed"), CASES, ids=[f"{p}-{v}" for p, v, _ in CASES]
)
def test_payment_killed_at_a_crash_point_ends_at_both_banks_or_neither(
    suite: Suite, channel: grpc.Channel, point: str, victim: str, committed: bool
) -> None:
    # Registering asks the bank, which the gateway may still be reconnecting to after the
    # previous case killed it.
    alice = within(SETTLE_WITHIN_S, lambda: new_user(suite, channel, PAYER_BANK, START_MINOR))
    bob = within(SETTLE_WITHIN_S, lambda: new_user(suite, channel, PAYEE_BANK, 0))
    key = uuid.uuid4().hex
    first = pay_through_a_crash(suite, PROCESS[victim], point, alice, bob, key)

    # What the client heard first: the bank that dies after the commit decision cannot take
    # the success back; a death before it leaves the client with an indefinite error.
    if committed and victim != "gateway":
        assert isinstance(first, pb.Payment) and first.status == pb.PAYMENT_STATUS_SUCCEEDED
    else:
        assert not isinstance(first, pb.Payment)
        assert first[0] == "UNAVAILABLE", first

    # Committed at both or aborted at both, with no hold left, within 10 s.
    expected = (START_MINOR - AMOUNT_MINOR, AMOUNT_MINOR) if committed else (START_MINOR, 0)

    def both_settled() -> None:
        assert (settled(alice), settled(bob)) == ((expected[0], 0, 0), (expected[1], 0, 0))

    within(SETTLE_WITHIN_S, both_settled)
    assert alice.bank_account().balance + bob.bank_account().balance == START_MINOR

    # The client's retry with the same key gets the true answer, and never pays twice.
    retried = within(SETTLE_WITHIN_S, lambda: alice.pay(bob, AMOUNT_MINOR, key=key))
    assert retried.status == pb.PAYMENT_STATUS_SUCCEEDED
    listed = alice.list_payments().payments
    if committed:
        # A replay: the one payment that was committed, nothing new.
        assert [p.payment_id for p in listed] == [retried.payment_id]
        if isinstance(first, pb.Payment):
            assert retried == first
    else:
        # A fresh payment: the aborted one stays FAILED beside it (and so does any retry
        # that found a bank still restarting).
        succeeded = [p.payment_id for p in listed if p.status == pb.PAYMENT_STATUS_SUCCEEDED]
        assert succeeded == [retried.payment_id]
        assert len(listed) >= 2
        assert {p.status for p in listed[1:]} == {pb.PAYMENT_STATUS_FAILED}
    assert (settled(alice), settled(bob)) == (
        (START_MINOR - AMOUNT_MINOR, 0, 0),
        (AMOUNT_MINOR, 0, 0),
    )
    assert alice.pay(bob, AMOUNT_MINOR, key=key) == retried
    # Both users see their balances through the gateway, which reaches both banks again.
    assert within(SETTLE_WITHIN_S, lambda: alice.balance().balance) == START_MINOR - AMOUNT_MINOR
    assert within(SETTLE_WITHIN_S, lambda: bob.balance().balance) == AMOUNT_MINOR


# One bank: a one-phase commit. (crash point, the process that dies there, committed)
ONE_PHASE_BANK = "bank-c"
ONE_PHASE_CASES = [
    ("gateway.before_prepare", "gateway", False),
    # The bank has posted it; the gateway died before recording that: recovery asks the bank.
    ("gateway.after_prepares", "gateway", True),
    ("gateway.after_decision", "gateway", True),
    ("bank.before_hold", ONE_PHASE_BANK, False),
    # The bank posted it and died before answering: the gateway learns it by asking.
    ("bank.after_hold", ONE_PHASE_BANK, True),
]


@pytest.mark.parametrize(
    ("point", "process", "committed"),
    ONE_PHASE_CASES,
    ids=[f"{p}-{v}" for p, v, _ in ONE_PHASE_CASES],
)
def test_one_phase_payment_killed_at_a_crash_point_is_posted_once_or_not_at_all(
    suite: Suite, channel: grpc.Channel, point: str, process: str, committed: bool
) -> None:
    alice = within(SETTLE_WITHIN_S, lambda: new_user(suite, channel, ONE_PHASE_BANK, START_MINOR))
    bob = within(SETTLE_WITHIN_S, lambda: new_user(suite, channel, ONE_PHASE_BANK, 0))
    key = uuid.uuid4().hex
    first = pay_through_a_crash(suite, process, point, alice, bob, key)
    # Every one of these deaths comes before the payer's answer.
    assert not isinstance(first, pb.Payment) and first[0] == "UNAVAILABLE", first

    expected = (START_MINOR - AMOUNT_MINOR, AMOUNT_MINOR) if committed else (START_MINOR, 0)

    def posted_or_not() -> None:
        assert (settled(alice), settled(bob)) == ((expected[0], 0, 0), (expected[1], 0, 0))

    within(SETTLE_WITHIN_S, posted_or_not)
    # The retry with the key gets the true answer once the gateway knows it.
    retried = within(SETTLE_WITHIN_S, lambda: alice.pay(bob, AMOUNT_MINOR, key=key))
    assert retried.status == pb.PAYMENT_STATUS_SUCCEEDED
    succeeded = [
        p.payment_id
        for p in alice.list_payments().payments
        if p.status == pb.PAYMENT_STATUS_SUCCEEDED
    ]
    assert succeeded == [retried.payment_id]
    assert (settled(alice), settled(bob)) == (
        (START_MINOR - AMOUNT_MINOR, 0, 0),
        (AMOUNT_MINOR, 0, 0),
    )
    assert alice.pay(bob, AMOUNT_MINOR, key=key) == retried
