"""Every crash point of an authorization's life, with SIGKILL: the money moves once, by
the amount captured, or not at all, and every hold is released.

As tests/test_crash_points.py does for payments: a point is armed in the gateway or a bank,
the step is made through it, supervisord restarts the killed process, and then, as the
users see it: within the settle time the balances at both banks are what the step decided,
no hold is left, and the caller's retry with the same idempotency key gets the true answer.
The gateway that died held the lease of what it was driving: another start of it (a new
owner) takes over once that lease expires, so settling may take the lease's 6 s longer.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import grpc
import pytest
from paygate.common import faults
from paygate.gen.paygate.v1 import gateway_pb2 as pb
from suite import SHARED_GATEWAY_SETTINGS, Suite, started_suite
from test_crash_points import channel, settled, within
from users import RPC_TIMEOUT_S, TestUser, error_reason, new_user

__all__ = ["channel"]
pytestmark = pytest.mark.suite

PAYER_BANK, PAYEE_BANK = "bank-a", "bank-b"
START_MINOR, AUTHORIZED_MINOR, CAPTURED_MINOR = 50_00, 20_00, 12_50
SETTLE_WITHIN_S = 20.0
PROCESS = {"gateway": "gateway", "payer": PAYER_BANK, "payee": PAYEE_BANK}


def authorize(payer: TestUser, payee: TestUser, key: str) -> pb.Payment:
    request = pb.CreatePaymentRequest(
        idempotency_key=key,
        payee_username=payee.username,
        amount=AUTHORIZED_MINOR,
        currency="USD",
        capture_method=pb.CAPTURE_METHOD_MANUAL,
    )
    return payer.stub.CreatePayment(request, metadata=payer.metadata, timeout=RPC_TIMEOUT_S).payment


def capture(payee: TestUser, payment_id: str, key: str) -> pb.Payment:
    request = pb.CapturePaymentRequest(
        payment_id=payment_id, amount=CAPTURED_MINOR, idempotency_key=key
    )
    return payee.stub.CapturePayment(
        request, metadata=payee.metadata, timeout=RPC_TIMEOUT_S
    ).payment


def cancel(payee: TestUser, payment_id: str, key: str) -> pb.Payment:
    request = pb.CancelPaymentRequest(payment_id=payment_id, idempotency_key=key)
    return payee.stub.CancelPayment(request, metadata=payee.metadata, timeout=RPC_TIMEOUT_S).payment


def through_a_crash(
    suite: Suite, process: str, point: str, step: Callable[[], pb.Payment]
) -> pb.Payment | tuple[str, str]:
    old_pid = suite.pid(process)
    armed = suite.arm_fault(process, point)
    try:
        try:
            first: pb.Payment | tuple[str, str] = step()
        except grpc.RpcError as exc:
            first = (exc.code().name, error_reason(exc))
        assert not armed.exists(), f"{process} never reached {point}"
    finally:
        armed.unlink(missing_ok=True)
    suite.wait_restarted(process, old_pid)
    return first


def users(suite: Suite, channel: grpc.Channel) -> tuple[TestUser, TestUser]:
    payer = within(SETTLE_WITHIN_S, lambda: new_user(suite, channel, PAYER_BANK, START_MINOR))
    payee = within(SETTLE_WITHIN_S, lambda: new_user(suite, channel, PAYEE_BANK, 0))
    return payer, payee


def expect_balances(payer: TestUser, payee: TestUser, moved: int, held: int = 0) -> None:
    def balances() -> None:
        assert (settled(payer), settled(payee)) == (
            (START_MINOR - moved, held, 0),
            (moved, 0, held),
        )

    within(SETTLE_WITHIN_S, balances)


def test_every_authorization_crash_point_has_a_case() -> None:
    cases = {point for point, _ in CAPTURE_CASES} | {AUTHORIZE_POINT, CANCEL_POINT, EXPIRY_POINT}
    assert set(faults.AUTHORIZATION_POINTS) <= cases
    families = (faults.PAYMENT_POINTS, faults.AUTHORIZATION_POINTS, faults.REFUND_POINTS)
    assert set().union(*families) == set(faults.POINTS)


AUTHORIZE_POINT = "gateway.after_authorization"


def test_a_gateway_killed_after_recording_an_authorization_keeps_it(
    suite: Suite, channel: grpc.Channel
) -> None:
    payer, payee = users(suite, channel)
    key = uuid.uuid4().hex
    first = through_a_crash(suite, "gateway", AUTHORIZE_POINT, lambda: authorize(payer, payee, key))
    assert first == ("UNAVAILABLE", ""), first
    expect_balances(payer, payee, 0, held=AUTHORIZED_MINOR)
    # The retry finds the authorization, as it was recorded; it can be captured.
    again = within(SETTLE_WITHIN_S, lambda: authorize(payer, payee, key))
    assert again.status == pb.PAYMENT_STATUS_REQUIRES_CAPTURE
    assert capture(payee, again.payment_id, uuid.uuid4().hex).amount_captured == CAPTURED_MINOR
    expect_balances(payer, payee, CAPTURED_MINOR)


# (crash point, the process that dies there), each during a capture of 12.50 of 20.00.
CAPTURE_CASES = [
    ("gateway.after_captured_decision", "gateway"),
    ("gateway.after_first_commit", "gateway"),
    ("bank.before_post", "payer"),
    ("bank.before_post", "payee"),
    ("bank.after_post", "payer"),
    ("bank.after_post", "payee"),
]


@pytest.mark.parametrize(
    ("point", "victim"), CAPTURE_CASES, ids=[f"{p}-{v}" for p, v in CAPTURE_CASES]
)
def test_a_capture_killed_at_a_crash_point_moves_the_captured_amount_once(
    suite: Suite, channel: grpc.Channel, point: str, victim: str
) -> None:
    payer, payee = users(suite, channel)
    payment = authorize(payer, payee, uuid.uuid4().hex)
    key = uuid.uuid4().hex
    first = through_a_crash(
        suite, PROCESS[victim], point, lambda: capture(payee, payment.payment_id, key)
    )
    if victim != "gateway":  # the decision was on disk before the bank died: success
        assert isinstance(first, pb.Payment) and first.amount_captured == CAPTURED_MINOR, first
    expect_balances(payer, payee, CAPTURED_MINOR)
    again = within(SETTLE_WITHIN_S, lambda: capture(payee, payment.payment_id, key))
    assert (again.status, again.amount_captured) == (pb.PAYMENT_STATUS_SUCCEEDED, CAPTURED_MINOR)
    expect_balances(payer, payee, CAPTURED_MINOR)


CANCEL_POINT = "gateway.after_canceled_decision"


def test_a_cancellation_killed_after_its_decision_releases_everything(
    suite: Suite, channel: grpc.Channel
) -> None:
    payer, payee = users(suite, channel)
    payment = authorize(payer, payee, uuid.uuid4().hex)
    key = uuid.uuid4().hex
    first = through_a_crash(
        suite, "gateway", CANCEL_POINT, lambda: cancel(payee, payment.payment_id, key)
    )
    assert first == ("UNAVAILABLE", ""), first
    expect_balances(payer, payee, 0)
    again = within(SETTLE_WITHIN_S, lambda: cancel(payee, payment.payment_id, key))
    assert (again.status, again.failure_reason) == (pb.PAYMENT_STATUS_CANCELED, "CANCELED")


EXPIRY_POINT = "gateway.after_expired_decision"


@pytest.fixture
def short_lived(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    settings = {**SHARED_GATEWAY_SETTINGS, "authorization_ttl_s": 2.0}
    with started_suite(tmp_path_factory.mktemp("expiry"), gateway_settings=settings) as suite:
        yield suite


def test_an_expiry_killed_after_its_decision_releases_everything(short_lived: Suite) -> None:
    suite = short_lived
    creds = grpc.ssl_channel_credentials(suite.config.certs_dir.joinpath("ca.pem").read_bytes())
    with grpc.secure_channel(suite.gateway_target, creds) as channel:
        payer, payee = users(suite, channel)
        old_pid = suite.pid("gateway")
        armed = suite.arm_fault("gateway", EXPIRY_POINT)
        payment = authorize(payer, payee, uuid.uuid4().hex)
        # Recovery expires it within an interval of its deadline, and dies there once.
        def reached() -> None:
            assert not armed.exists(), "not expired yet"

        within(SETTLE_WITHIN_S, reached)
        suite.wait_restarted("gateway", old_pid)
        expect_balances(payer, payee, 0)
        ended = within(SETTLE_WITHIN_S, lambda: payer.get_payment(payment.payment_id))
        assert (ended.status, ended.failure_reason) == (
            pb.PAYMENT_STATUS_CANCELED, "AUTHORIZATION_EXPIRED",
        )  # fmt: skip
