"""An authorization nobody captures expires: within one recovery interval of its deadline
the gateway cancels it (AUTHORIZATION_EXPIRED) and both banks release its holds; a capture
after that is refused. And an expiry racing captures: exactly one of them wins.

Servers of their own, with authorizations that last a second and recovery every 0.2 s."""

from __future__ import annotations

import concurrent.futures
import pathlib
import time
from collections.abc import Iterator

import grpc
import pytest
from paygate.gen.paygate.v1 import gateway_pb2 as pb
from servers import Servers
from suite import SHARED_GATEWAY_SETTINGS
from test_inproc_authorizations import authorize, capture, channel, refusal
from users import assert_settled, eventually, new_user

__all__ = ["channel"]
TTL_S = 1.0
RECOVERY_INTERVAL_S = 0.2
CODE = grpc.StatusCode


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory, certs_dir: pathlib.Path) -> Iterator[Servers]:
    settings = {
        **SHARED_GATEWAY_SETTINGS,
        "authorization_ttl_s": TTL_S,
        "recovery_interval_s": RECOVERY_INTERVAL_S,
    }
    servers = Servers.start(
        tmp_path_factory.mktemp("inproc-expiry"), certs_dir, gateway_settings=settings
    )
    try:
        yield servers
    finally:
        servers.stop()


def test_an_uncaptured_authorization_expires_and_releases_everything(
    suite: Servers, channel: grpc.Channel
) -> None:
    shop, alice = new_user(suite, channel, "bank-b", 0), new_user(suite, channel, "bank-a", 30_00)
    payment = authorize(alice, shop, 10_00)
    assert alice.balance().available == 20_00

    def expired() -> pb.Payment:
        now = alice.get_payment(payment.payment_id)
        assert now.status == pb.PAYMENT_STATUS_CANCELED, now
        return now

    found = eventually(expired, timeout_s=TTL_S + 10 * RECOVERY_INTERVAL_S + 5)
    assert found.failure_reason == "AUTHORIZATION_EXPIRED"
    assert time.time() >= payment.capture_before.seconds
    assert_settled(alice, 30_00)
    assert_settled(shop, 0)
    assert refusal(capture, shop, payment.payment_id) == (
        CODE.FAILED_PRECONDITION, "PAYMENT_NOT_CAPTURABLE",
    )  # fmt: skip


def test_captures_racing_the_expiry_have_one_winner(suite: Servers, channel: grpc.Channel) -> None:
    shop, alice = new_user(suite, channel, "bank-c", 0), new_user(suite, channel, "bank-a", 50_00)
    payments = [authorize(alice, shop, 1_00) for _ in range(10)]
    time.sleep(max(0.0, payments[0].capture_before.seconds + 1 - time.time()) * 0.9)

    def try_capture(payment: pb.Payment) -> str:
        try:
            return pb.PaymentStatus.Name(capture(shop, payment.payment_id).status)
        except grpc.RpcError as error:
            assert error.code() == CODE.FAILED_PRECONDITION, error
            return "refused"

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(try_capture, payments))

    def final(payment: pb.Payment) -> pb.Payment:
        now = shop.get_payment(payment.payment_id)
        assert now.status in (pb.PAYMENT_STATUS_SUCCEEDED, pb.PAYMENT_STATUS_CANCELED), now
        return now

    ends = [eventually(lambda p=p: final(p), timeout_s=10) for p in payments]
    for answer, end in zip(answers, ends, strict=True):
        succeeded = end.status == pb.PAYMENT_STATUS_SUCCEEDED
        assert (answer == "PAYMENT_STATUS_SUCCEEDED") == succeeded, (answer, end)
    captured = sum(end.amount_captured for end in ends)
    assert_settled(alice, 50_00 - captured)
    assert_settled(shop, captured)
