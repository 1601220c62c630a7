"""One-phase commit: a payment between two accounts of one bank is one call to that bank.

The bank applies a Prepare with one_phase set and, on a yes, posts it in the same database
transaction (paygate.gateway.coordinator). What a user sees must not change: the payment
succeeds exactly once, both balances move by exactly the amount, no hold is left; and what
cannot be known at once (the bank paused mid-call) is settled, once, by asking the bank.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator

import grpc
import pytest
from paygate.gen.paygate.bank.v1 import bank_pb2, bank_pb2_grpc
from paygate.gen.paygate.v1 import gateway_pb2 as pb
from suite import Suite
from test_batching import batch_sizes
from test_crash_points import CHANNEL_OPTIONS, settled
from users import error_reason, new_user

pytestmark = pytest.mark.suite

RPC_TIMEOUT_S = 5.0
SETTLE_WITHIN_S = 10.0


@pytest.fixture
def channel(suite: Suite) -> Iterator[grpc.Channel]:
    creds = grpc.ssl_channel_credentials(suite.config.certs_dir.joinpath("ca.pem").read_bytes())
    with grpc.secure_channel(suite.gateway_target, creds, options=CHANNEL_OPTIONS) as ch:
        yield ch


def leg(account: str, amount: int, direction: int) -> bank_pb2.Leg:
    return bank_pb2.Leg(account_number=account, direction=direction, amount=amount, currency="USD")


def transfer(transaction_id: str, payer: str, payee: str, amount: int) -> bank_pb2.PrepareRequest:
    return bank_pb2.PrepareRequest(
        transaction_id=transaction_id,
        legs=[
            leg(payer, amount, bank_pb2.DIRECTION_DEBIT),
            leg(payee, amount, bank_pb2.DIRECTION_CREDIT),
        ],
        one_phase=True,
    )


def calls_to(suite: Suite, bank_id: str) -> dict[str, float]:
    """The calls the gateway has sent to a bank so far, by operation (its /metrics)."""
    sizes = batch_sizes(suite)
    return {op: sizes.get((bank_id, op), (0.0, 0.0))[0] for op in ("prepare", "commit", "abort")}


def test_a_payment_within_one_bank_is_one_call_to_it(suite: Suite, channel: grpc.Channel) -> None:
    carol = new_user(suite, channel, "bank-c", 30_00, "carol")
    dave = new_user(suite, channel, "bank-c", 0, "dave")
    sent = []
    # Three payments, each counted on its own: a call to bank-c left over from an earlier
    # test (recovery, a background abort) can blur one count, not three.
    for _ in range(3):
        before = calls_to(suite, "bank-c")
        payment = carol.pay(dave, 2_50)
        after = calls_to(suite, "bank-c")
        sent.append({op: after[op] - before[op] for op in after})
        assert payment.status == pb.PAYMENT_STATUS_SUCCEEDED
        assert carol.get_payment(payment.payment_id) == payment
        assert dave.get_payment(payment.payment_id) == payment
    assert {"prepare": 1, "commit": 0, "abort": 0} in sent, sent
    # Posted when each answer came: nothing pending at the bank, both balances moved.
    assert (settled(carol), settled(dave)) == ((22_50, 0, 0), (7_50, 0, 0))


def test_a_refusal_within_one_bank_is_final_and_holds_nothing(
    suite: Suite, channel: grpc.Channel
) -> None:
    carol = new_user(suite, channel, "bank-b", 5_00, "carol")
    dave = new_user(suite, channel, "bank-b", 0, "dave")
    key = uuid.uuid4().hex
    for _ in range(2):  # the key keeps the answer
        with pytest.raises(grpc.RpcError) as caught:
            carol.pay(dave, 6_00, key=key)
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error_reason(caught.value) == "INSUFFICIENT_FUNDS"
    assert (settled(carol), settled(dave)) == ((5_00, 0, 0), (0, 0, 0))
    (failed,) = carol.list_payments().payments
    assert failed.status == pb.PAYMENT_STATUS_FAILED


def test_a_one_phase_prepare_posts_at_once_once_and_cannot_be_aborted(suite: Suite) -> None:
    payer = suite.admin_open_account("bank-a", 10_00)
    payee = suite.admin_open_account("bank-a", 0)
    transaction_id = f"test-one-phase-{uuid.uuid4()}"
    with suite.bank_channel_sync("bank-a", identity="gateway") as bank_channel:
        stub = bank_pb2_grpc.BankServiceStub(bank_channel)
        for _ in range(2):  # a repeated Prepare repeats its vote and posts nothing twice
            vote = stub.Prepare(transfer(transaction_id, payer, payee, 4_00), timeout=RPC_TIMEOUT_S)
            assert (vote.vote, vote.committed) == (bank_pb2.VOTE_YES, True)
            for account, balance in ((payer, 6_00), (payee, 4_00)):
                seen = suite.bank_account("bank-a", account)
                assert (seen.balance, seen.pending_debit, seen.pending_credit) == (balance, 0, 0)
        with pytest.raises(grpc.RpcError) as caught:
            stub.Abort(bank_pb2.AbortRequest(transaction_id=transaction_id), timeout=RPC_TIMEOUT_S)
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error_reason(caught.value) == "TRANSACTION_COMMITTED"
        # A Commit of it is acknowledged and changes nothing.
        stub.Commit(bank_pb2.CommitRequest(transaction_id=transaction_id), timeout=RPC_TIMEOUT_S)
    assert suite.bank_account("bank-a", payer).balance == 6_00
    assert suite.bank_account("bank-a", payee).balance == 4_00


def test_a_one_phase_prepare_after_an_abort_is_refused_and_moves_nothing(suite: Suite) -> None:
    payer = suite.admin_open_account("bank-b", 10_00)
    payee = suite.admin_open_account("bank-b", 0)
    transaction_id = f"test-one-phase-{uuid.uuid4()}"
    with suite.bank_channel_sync("bank-b", identity="gateway") as bank_channel:
        stub = bank_pb2_grpc.BankServiceStub(bank_channel)
        stub.Abort(bank_pb2.AbortRequest(transaction_id=transaction_id), timeout=RPC_TIMEOUT_S)
        vote = stub.Prepare(transfer(transaction_id, payer, payee, 4_00), timeout=RPC_TIMEOUT_S)
    assert (vote.vote, vote.reason) == (bank_pb2.VOTE_NO, "TRANSACTION_ABORTED")
    assert suite.bank_account("bank-b", payer).available == 10_00
    assert suite.bank_account("bank-b", payee).balance == 0


def test_only_a_balanced_transfer_not_held_in_two_phases_is_posted_in_one(
    suite: Suite,
) -> None:
    payer = suite.admin_open_account("bank-c", 10_00)
    payee = suite.admin_open_account("bank-c", 0)
    unbalanced = [
        [leg(payee, 4_00, bank_pb2.DIRECTION_CREDIT)],  # money from nowhere
        [leg(payer, 4_00, bank_pb2.DIRECTION_DEBIT)],
        [leg(payer, 4_00, bank_pb2.DIRECTION_DEBIT), leg(payee, 5_00, bank_pb2.DIRECTION_CREDIT)],
    ]
    held = f"test-one-phase-{uuid.uuid4()}"
    with suite.bank_channel_sync("bank-c", identity="gateway") as bank_channel:
        stub = bank_pb2_grpc.BankServiceStub(bank_channel)
        for legs in unbalanced:
            request = bank_pb2.PrepareRequest(
                transaction_id=f"test-one-phase-{uuid.uuid4()}", legs=legs, one_phase=True
            )
            with pytest.raises(grpc.RpcError) as caught:
                stub.Prepare(request, timeout=RPC_TIMEOUT_S)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        # Held by a two-phase Prepare: only its coordinator's Commit may post it.
        two_phase = transfer(held, payer, payee, 4_00)
        two_phase.one_phase = False
        assert stub.Prepare(two_phase, timeout=RPC_TIMEOUT_S).vote == bank_pb2.VOTE_YES
        with pytest.raises(grpc.RpcError) as caught:
            stub.Prepare(transfer(held, payer, payee, 4_00), timeout=RPC_TIMEOUT_S)
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        payer_seen = suite.bank_account("bank-c", payer)
        assert (payer_seen.balance, payer_seen.pending_debit) == (10_00, 4_00)
        stub.Abort(bank_pb2.AbortRequest(transaction_id=held), timeout=RPC_TIMEOUT_S)
    assert suite.bank_account("bank-c", payer).available == 10_00
    assert suite.bank_account("bank-c", payee).balance == 0


def test_a_one_phase_payment_through_a_paused_bank_is_settled_once(
    suite: Suite, channel: grpc.Channel
) -> None:
    """Paused mid-call, the bank may or may not apply the Prepare when it resumes: the
    payer hears UNAVAILABLE in time, and a retry with the key pays exactly once."""
    alice = new_user(suite, channel, "bank-c", 50_00, "alice")
    bob = new_user(suite, channel, "bank-c", 0, "bob")
    timeout_s = suite.config.gateway.prepare_timeout_s
    key = uuid.uuid4().hex
    pid = suite.kill("bank-c", signal.SIGSTOP)
    try:
        start = time.monotonic()
        with pytest.raises(grpc.RpcError) as caught:
            alice.pay(bob, 20_00, key=key)
        elapsed_s = time.monotonic() - start
    finally:
        os.kill(pid, signal.SIGCONT)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error_reason(caught.value) in ("BANK_TIMEOUT", "BANK_UNAVAILABLE")
    assert elapsed_s < timeout_s + 2.0, f"the payment took {elapsed_s:.1f} s to fail"

    # Until the bank answers the gateway's Abort the key is in use; then a retry gets the
    # settled payment (it committed late) or runs anew (it was aborted).
    deadline = time.monotonic() + SETTLE_WITHIN_S
    while True:
        try:
            payment = alice.pay(bob, 20_00, key=key)
            break
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.ABORTED, exc
            assert error_reason(exc) == "IDEMPOTENCY_KEY_IN_USE"
            assert time.monotonic() < deadline, "the payment was not settled in time"
            time.sleep(0.2)
    assert payment.status == pb.PAYMENT_STATUS_SUCCEEDED
    assert (settled(alice), settled(bob)) == ((30_00, 0, 0), (20_00, 0, 0))
    succeeded = [
        p.payment_id
        for p in alice.list_payments().payments
        if p.status == pb.PAYMENT_STATUS_SUCCEEDED
    ]
    assert succeeded == [payment.payment_id]
    assert alice.pay(bob, 20_00, key=key) == payment
