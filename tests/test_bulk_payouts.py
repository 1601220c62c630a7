"""Bulk payouts against the real suite under supervisord: a batch of 200 items, some of which
fail, moves exactly the money of those that succeed at the banks; the same batch again
answers the same and moves nothing; a batch over the limit is refused whole. (Everything
else of BatchCreatePayments is tested in-process: tests/inproc/test_inproc_bulk_payments.py.)
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import grpc
import pytest
from paygate.gen.paygate.v1 import gateway_pb2 as pb
from suite import Suite
from users import TestUser, assert_settled, item, new_user

pytestmark = pytest.mark.suite

ITEMS = 200
OVERDRAFT_AT, UNKNOWN_AT, REUSED_AT = 60, 120, 170


@pytest.fixture
def channel(suite: Suite) -> Iterator[grpc.Channel]:
    with suite.gateway_channel_sync() as ch:
        yield ch


def reason_of(result: pb.BatchCreatePaymentResult) -> str:
    return "OK" if result.HasField("payment") else result.error.reason


def test_a_batch_of_200_moves_exactly_the_money_of_its_good_items(
    suite: Suite, channel: grpc.Channel
) -> None:
    alice = new_user(suite, channel, "bank-a", 1000_00, "bulk")
    # Payees at the other banks (two phases) and at alice's own (one phase).
    payees = [new_user(suite, channel, bank, 0, "payee") for bank in ("bank-b", "bank-c", "bank-a")]
    reused_key = uuid.uuid4().hex
    alice.pay(payees[0], 1_00, key=reused_key)  # the key's payment, made before the batch

    items = [
        item(payees[i % 3], 1_00 + i % 4 * 50, description=f"payout {i}") for i in range(ITEMS)
    ]
    items[OVERDRAFT_AT] = item(payees[0], 5000_00)
    items[UNKNOWN_AT] = item("nobody-" + uuid.uuid4().hex[:8], 1_00)
    items[REUSED_AT] = item(payees[1], 2_00, key=reused_key)  # other parameters
    results = alice.pay_batch(items)

    expected = {OVERDRAFT_AT: "INSUFFICIENT_FUNDS", UNKNOWN_AT: "NOT_FOUND",
                REUSED_AT: "IDEMPOTENCY_KEY_MISMATCH"}  # fmt: skip
    assert [reason_of(r) for r in results] == [expected.get(i, "OK") for i in range(ITEMS)]
    good = [i for i in range(ITEMS) if i not in expected]
    for i in good:
        payment = results[i].payment
        assert payment.status == pb.PAYMENT_STATUS_SUCCEEDED
        assert (payment.payee_username, payment.amount, payment.description) == (
            items[i].payee_username, items[i].amount, items[i].description,
        )  # fmt: skip
    assert len({results[i].payment.payment_id for i in good}) == len(good)

    # At the banks: exactly the good items' money moved, and nothing is left held.
    def received(payee: TestUser) -> int:
        return sum(items[i].amount for i in good if items[i].payee_username == payee.username)

    spent = sum(items[i].amount for i in good)
    assert_settled(alice, 1000_00 - 1_00 - spent)
    assert_settled(payees[0], 1_00 + received(payees[0]))
    for payee in payees[1:]:
        assert_settled(payee, received(payee))

    # The same batch again: every item answered as before; nothing moves.
    again = alice.pay_batch(items)
    assert [r.payment for r in again] == [r.payment for r in results]
    assert [r.error for r in again] == [r.error for r in results]
    assert [r.replayed for r in again] == [
        i not in (UNKNOWN_AT, REUSED_AT) for i in range(ITEMS)
    ]  # the unknown payee recorded nothing, and a mismatch is not an answer of its key
    assert_settled(alice, 1000_00 - 1_00 - spent)

    # Over the limit: refused whole, nothing done, nothing recorded.
    recorded = payment_ids(alice)
    assert len(recorded) == 1 + len(good) + 1  # the key's, the good items, the overdraft
    with pytest.raises(grpc.RpcError) as info:
        alice.pay_batch([item(payees[0], 1) for _ in range(1001)])
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert_settled(alice, 1000_00 - 1_00 - spent)
    assert payment_ids(alice) == recorded


def payment_ids(user: TestUser) -> list[str]:
    """Every payment of the user, newest first."""
    ids, token = [], ""
    while True:
        page = user.list_payments(page_size=100, page_token=token)
        ids += [p.payment_id for p in page.payments]
        token = page.next_page_token
        if not token:
            return ids
