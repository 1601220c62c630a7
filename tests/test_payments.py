"""Payments against the real suite when a process pauses or dies mid-payment: in time, and
at both banks or at neither. (Payments that need no process to die or pause are tested
in-process: tests/inproc/test_inproc_payments.py.)

Every test makes its own users (fresh names, freshly opened accounts), so the tests share one
suite without seeing each other's money.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator

import grpc
import pytest
from paygate.gen.paygate.v1 import gateway_pb2 as pb
from suite import Suite
from users import assert_settled, error_reason, eventually, new_user

pytestmark = pytest.mark.suite

CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
]


@pytest.fixture
def channel(suite: Suite) -> Iterator[grpc.Channel]:
    creds = grpc.ssl_channel_credentials(suite.config.certs_dir.joinpath("ca.pem").read_bytes())
    with grpc.secure_channel(suite.gateway_target, creds, options=CHANNEL_OPTIONS) as ch:
        yield ch


def test_a_paused_bank_fails_the_payment_in_time_and_a_retry_succeeds(
    suite: Suite, channel: grpc.Channel
) -> None:
    alice = new_user(suite, channel, "bank-a", 50_00)
    carol = new_user(suite, channel, "bank-c", 0)
    timeout_s = suite.config.gateway.prepare_timeout_s
    key = uuid.uuid4().hex
    pid = suite.kill("bank-c", signal.SIGSTOP)
    try:
        start = time.monotonic()
        with pytest.raises(grpc.RpcError) as info:
            alice.pay(carol, 20_00, key=key)
        elapsed_s = time.monotonic() - start
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert error_reason(info.value) in ("BANK_TIMEOUT", "BANK_UNAVAILABLE")
        assert elapsed_s < timeout_s + 2.0, f"the payment took {elapsed_s:.1f} s to fail"
        # The payer's hold was voided at once: no money moved, none is reserved.
        eventually(lambda: assert_settled(alice, 50_00))
    finally:
        os.kill(pid, signal.SIGCONT)
    eventually(lambda: assert_settled(carol, 0))
    payment = alice.pay(carol, 20_00, key=key)
    assert payment.status == pb.PAYMENT_STATUS_SUCCEEDED
    assert_settled(alice, 30_00)
    assert_settled(carol, 20_00)
    assert alice.pay(carol, 20_00, key=key) == payment


@pytest.mark.parametrize(
    ("point", "committed"),
    [("gateway.after_prepares", False), ("gateway.after_decision", True)],
)
def test_gateway_killed_mid_payment_ends_at_both_banks_or_neither(
    suite: Suite, channel: grpc.Channel, point: str, committed: bool
) -> None:
    alice = new_user(suite, channel, "bank-a", 50_00)
    bob = new_user(suite, channel, "bank-b", 0)
    key = uuid.uuid4().hex
    old_pid = suite.pid("gateway")
    suite.arm_fault("gateway", point)

    with pytest.raises(grpc.RpcError) as info:
        alice.pay(bob, 20_00, key=key)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE  # the connection dropped
    suite.wait_restarted("gateway", old_pid)

    expected = (30_00, 20_00) if committed else (50_00, 0)
    eventually(lambda: assert_settled(alice, expected[0]) or assert_settled(bob, expected[1]))

    # The client's retry with the same key learns the truth (and never pays twice).
    payment = eventually(lambda: alice.pay(bob, 20_00, key=key))
    assert payment.status == pb.PAYMENT_STATUS_SUCCEEDED
    assert_settled(alice, 30_00)
    assert_settled(bob, 20_00)


