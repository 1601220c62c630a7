"""Split payments in-process: the request's checks (each refused with INVALID_ARGUMENT and
nothing recorded), a leg the payee's bank refuses (over the balance limit, or the payer
short of funds) moving nothing at any bank, all payees at the payer's bank as one
one-phase commit, a frozen payee, what a split payment cannot be (an
authorization), and refunds, which take back from every payee in proportion. The real
processes, a bank down and the crash points: tests/test_split_payments.py and
tests/test_crash_points_splits.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import grpc
import pytest
from paygate.bank import ledger
from paygate.common.money import MAX_AMOUNT_MINOR
from paygate.gen.paygate.v1 import admin_pb2 as apb
from paygate.gen.paygate.v1 import admin_pb2_grpc as apbg
from paygate.gen.paygate.v1 import gateway_pb2 as pb
from servers import Servers
from users import RPC_TIMEOUT_S, TestUser, assert_settled, error_reason, eventually, new_user

CODE = grpc.StatusCode


@pytest.fixture
def channel(servers: Servers) -> Iterator[grpc.Channel]:
    with servers.gateway_channel_sync() as ch:
        yield ch


def refused(call, code: grpc.StatusCode, reason: str = "") -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as info:
        call()
    assert info.value.code() == code, info.value.details()
    if reason:
        assert error_reason(info.value) == reason
    return str(info.value.details())


def test_a_split_payment_is_checked_before_anything_is_recorded(
    servers: Servers, channel: grpc.Channel
) -> None:
    buyer = new_user(servers, channel, "bank-a", 100_00)
    seller = new_user(servers, channel, "bank-b", 0)
    courier = new_user(servers, channel, "bank-c", 0)
    key = uuid.uuid4().hex
    bad: list[tuple[list[tuple[TestUser | str, int]], int | None, str]] = [
        ([(seller, 10_00), (courier, 5_00)], 16_00, "add up to 15.00, not the amount 16.00"),
        ([(seller, 10_00)], None, "2 to 10 splits"),
        ([(new_user(servers, channel, "bank-b", 0), 1)] * 11, None, "at most 10 splits"),
        ([(seller, 10_00), (seller, 5_00)], None, "each payee once"),
        ([(seller, 10_00), (buyer, 5_00)], None, "you cannot pay yourself"),
        ([(seller, 10_00), (courier, 0)], 10_00, "every part must be positive"),
        ([(seller, 10_00), (courier, -5_00)], 5_00, "every part must be positive"),
        ([(seller, 10_00), ("no such name!", 5_00)], None, "not a valid username"),
    ]
    for parts, amount, message in bad:
        details = refused(lambda p=parts, a=amount: buyer.pay_split(p, key=key, amount_minor=a),
                          CODE.INVALID_ARGUMENT)  # fmt: skip
        assert message in details
    # A payee name beside splits, or an authorization, is refused too.
    for extra in ({"payee_username": seller.username},
                  {"capture_method": pb.CAPTURE_METHOD_MANUAL}):  # fmt: skip
        request = pb.CreatePaymentRequest(
            idempotency_key=key, amount=15_00, currency="USD",
            splits=[pb.Split(payee_username=seller.username, amount=10_00),
                    pb.Split(payee_username=courier.username, amount=5_00)],
            **extra,  # type: ignore[arg-type]
        )  # fmt: skip
        refused(lambda r=request: buyer.stub.CreatePayment(r, metadata=buyer.metadata,
                                                           timeout=RPC_TIMEOUT_S),
                CODE.INVALID_ARGUMENT)  # fmt: skip
    # An unknown payee is NOT_FOUND, one in another currency FAILED_PRECONDITION.
    refused(lambda: buyer.pay_split([(seller, 10_00), ("nobody-" + key[:8], 5_00)], key=key),
            CODE.NOT_FOUND)  # fmt: skip
    yen = new_user(servers, channel, "bank-c", 0, currency="JPY")
    refused(lambda: buyer.pay_split([(seller, 10_00), (yen, 5_00)], key=key),
            CODE.FAILED_PRECONDITION, "CURRENCY_MISMATCH")  # fmt: skip
    # Nothing was recorded, not even the key: it pays once the request is right.
    assert buyer.list_payments().payments == []
    payment = buyer.pay_split([(seller, 10_00), (courier, 5_00)], key=key)
    assert payment.status == pb.PAYMENT_STATUS_SUCCEEDED
    for user, balance in ((buyer, 85_00), (seller, 10_00), (courier, 5_00)):
        assert_settled(user, balance)
    # The key now belongs to this split: other parts are another payment.
    refused(lambda: buyer.pay_split([(seller, 5_00), (courier, 10_00)], key=key),
            CODE.FAILED_PRECONDITION, "IDEMPOTENCY_KEY_MISMATCH")  # fmt: skip


def test_a_leg_over_the_balance_limit_moves_nothing_at_any_bank(
    servers: Servers, channel: grpc.Channel
) -> None:
    # In yen, so that the huge balance stays out of the USD totals other tests look at.
    limit = ledger.MAX_BALANCE_MINOR
    rich = new_user(servers, channel, "bank-c", MAX_AMOUNT_MINOR - 50, currency="JPY")
    for _ in range(limit // MAX_AMOUNT_MINOR - 1):
        servers.admin_deposit("bank-c", rich.account_number, MAX_AMOUNT_MINOR,
                              reference=uuid.uuid4().hex, currency="JPY")  # fmt: skip
    buyer = new_user(servers, channel, "bank-a", 1_000, currency="JPY")
    seller = new_user(servers, channel, "bank-b", 0, currency="JPY")
    platform = new_user(servers, channel, "bank-a", 0, currency="JPY")

    details = refused(
        lambda: buyer.pay_split([(seller, 500), (platform, 449), (rich, 51)], currency="JPY"),
        CODE.FAILED_PRECONDITION, "BALANCE_LIMIT_EXCEEDED",
    )  # fmt: skip
    assert "cannot hold" in details
    # The other banks' holds are voided (in the background, after the answer).
    for user, balance in ((buyer, 1_000), (seller, 0), (platform, 0), (rich, limit - 50)):
        eventually(lambda u=user, b=balance: assert_settled(u, b))
    [failed] = buyer.list_payments().payments
    assert (failed.status, failed.failure_reason) == (
        pb.PAYMENT_STATUS_FAILED, "BALANCE_LIMIT_EXCEEDED"
    )  # fmt: skip
    # Up to the limit exactly is fine.
    payment = buyer.pay_split([(seller, 500), (platform, 450), (rich, 50)], currency="JPY")
    assert payment.status == pb.PAYMENT_STATUS_SUCCEEDED
    for user, balance in ((buyer, 0), (seller, 500), (platform, 450), (rich, limit)):
        assert_settled(user, balance)


def test_a_payer_short_of_funds_moves_nothing_and_the_key_keeps_the_answer(
    servers: Servers, channel: grpc.Channel
) -> None:
    buyer = new_user(servers, channel, "bank-a", 10_00)
    seller = new_user(servers, channel, "bank-b", 0)
    courier = new_user(servers, channel, "bank-c", 0)
    key = uuid.uuid4().hex
    for _ in range(2):  # the first answer, and the same answer again from the key
        refused(lambda: buyer.pay_split([(seller, 8_00), (courier, 2_01)], key=key),
                CODE.FAILED_PRECONDITION, "INSUFFICIENT_FUNDS")  # fmt: skip
    for user, balance in ((buyer, 10_00), (seller, 0), (courier, 0)):
        eventually(lambda u=user, b=balance: assert_settled(u, b))


def test_payees_all_at_the_payers_bank_are_paid_in_one_phase(
    servers: Servers, channel: grpc.Channel
) -> None:
    buyer = new_user(servers, channel, "bank-b", 30_00)
    payees = [new_user(servers, channel, "bank-b", 0) for _ in range(3)]
    parts: list[tuple[TestUser | str, int]] = [(p, 5_00 * (i + 1)) for i, p in enumerate(payees)]
    payment = buyer.pay_split(parts)
    assert payment.status == pb.PAYMENT_STATUS_SUCCEEDED
    for user, balance in ((buyer, 0), *((p, 5_00 * (i + 1)) for i, p in enumerate(payees))):
        assert_settled(user, balance)


def test_a_frozen_payee_stops_the_whole_split(servers: Servers, channel: grpc.Channel) -> None:
    buyer = new_user(servers, channel, "bank-a", 20_00)
    seller = new_user(servers, channel, "bank-b", 0)
    courier = new_user(servers, channel, "bank-c", 0)
    with servers.gateway_admin_channel_sync() as admin_channel:
        admin = apbg.AdminServiceStub(admin_channel)
        admin.FreezeUser(apb.FreezeUserRequest(username=courier.username, reason="checks"),
                         timeout=RPC_TIMEOUT_S)  # fmt: skip
        details = refused(lambda: buyer.pay_split([(seller, 5_00), (courier, 5_00)]),
                          CODE.FAILED_PRECONDITION, "USER_FROZEN")  # fmt: skip
        assert courier.username in details
        admin.UnfreezeUser(apb.UnfreezeUserRequest(username=courier.username),
                           timeout=RPC_TIMEOUT_S)  # fmt: skip
    assert buyer.list_payments().payments == []
    assert buyer.pay_split([(seller, 5_00), (courier, 5_00)]).status == (
        pb.PAYMENT_STATUS_SUCCEEDED
    )


def test_a_split_payments_refunds_take_back_from_every_payee_in_proportion(
    servers: Servers, channel: grpc.Channel
) -> None:
    buyer = new_user(servers, channel, "bank-a", 100_00)
    seller = new_user(servers, channel, "bank-b", 0)
    platform = new_user(servers, channel, "bank-a", 0)
    courier = new_user(servers, channel, "bank-c", 0)
    payees = (seller, platform, courier)
    payment = buyer.pay_split([(seller, 60_00), (platform, 30_00), (courier, 10_00)])

    # Only the first payee refunds a split payment: it takes back from everyone.
    for other in (platform, courier):
        details = refused(lambda o=other: o.refund(payment.payment_id, 1_00),
                          CODE.PERMISSION_DENIED)  # fmt: skip
        assert seller.username in details

    def parts(refund: pb.Refund) -> list[tuple[str, int]]:
        return [(split.payee_username, split.amount) for split in refund.splits]

    half = seller.refund(payment.payment_id, 50_00)
    assert half.status == pb.REFUND_STATUS_SUCCEEDED
    assert parts(half) == [(seller.username, 30_00), (platform.username, 15_00),
                           (courier.username, 5_00)]  # fmt: skip
    # 25.01 of the 50.00 left (30.00, 15.00, 5.00): the unit left over goes to the largest
    # remainder, the seller's.
    odd = seller.refund(payment.payment_id, 25_01)
    assert parts(odd) == [(seller.username, 15_01), (platform.username, 7_50),
                          (courier.username, 2_50)]  # fmt: skip
    for user, balance in ((buyer, 75_01), (seller, 14_99), (platform, 7_50), (courier, 2_50)):
        assert_settled(user, balance)
    refused(lambda: seller.refund(payment.payment_id, 25_00),
            CODE.FAILED_PRECONDITION, "AMOUNT_EXCEEDS_REFUNDABLE")  # fmt: skip
    # All that is left: every payee gives back exactly the rest of their part.
    rest = seller.refund(payment.payment_id, 0)
    assert parts(rest) == [(seller.username, 14_99), (platform.username, 7_50),
                           (courier.username, 2_50)]  # fmt: skip
    for user in payees:
        assert_settled(user, 0)
    assert_settled(buyer, 100_00)
    assert seller.get_payment(payment.payment_id).amount_refunded == 100_00
    # Every payee is told of every refund that took from them.
    for user in payees:
        events = user.stub.ListEvents(pb.ListEventsRequest(page_size=100),
                                      metadata=user.metadata, timeout=RPC_TIMEOUT_S).events
        assert [e.type for e in events if e.refund.payment_id == payment.payment_id] == [
            "refund.succeeded"] * 3  # fmt: skip


def test_a_split_refund_a_payee_cannot_fund_moves_nothing(
    servers: Servers, channel: grpc.Channel
) -> None:
    buyer = new_user(servers, channel, "bank-a", 20_00)
    seller = new_user(servers, channel, "bank-b", 0)
    courier = new_user(servers, channel, "bank-c", 0)
    payment = buyer.pay_split([(seller, 15_00), (courier, 5_00)])
    courier.pay(new_user(servers, channel, "bank-c", 0), 4_00)  # spends most of their part

    refused(lambda: seller.refund(payment.payment_id, 0), CODE.FAILED_PRECONDITION,
            "INSUFFICIENT_FUNDS")  # fmt: skip
    for user, balance in ((buyer, 0), (seller, 15_00), (courier, 1_00)):
        eventually(lambda u=user, b=balance: assert_settled(u, b))
    # The failed refund gave its amount back: a smaller one fits what the courier has.
    refund = seller.refund(payment.payment_id, 4_00)
    assert [(s.payee_username, s.amount) for s in refund.splits] == [
        (seller.username, 3_00), (courier.username, 1_00)
    ]  # fmt: skip
    for user, balance in ((buyer, 4_00), (seller, 12_00), (courier, 0)):
        assert_settled(user, balance)


def test_a_frozen_payee_stops_a_split_refund_and_is_named(
    servers: Servers, channel: grpc.Channel
) -> None:
    buyer = new_user(servers, channel, "bank-a", 30_00)
    seller = new_user(servers, channel, "bank-b", 0)
    courier = new_user(servers, channel, "bank-c", 0)
    payment = buyer.pay_split([(seller, 10_00), (courier, 10_00)])
    with servers.gateway_admin_channel_sync() as admin_channel:
        admin = apbg.AdminServiceStub(admin_channel)
        admin.FreezeUser(apb.FreezeUserRequest(username=courier.username, reason="checks"),
                         timeout=RPC_TIMEOUT_S)  # fmt: skip
        details = refused(lambda: seller.refund(payment.payment_id, 10_00),
                          CODE.FAILED_PRECONDITION, "USER_FROZEN")  # fmt: skip
        assert details.startswith(f"{courier.username} cannot give back their share now")
        admin.UnfreezeUser(apb.UnfreezeUserRequest(username=courier.username),
                           timeout=RPC_TIMEOUT_S)  # fmt: skip
    assert seller.refund(payment.payment_id, 10_00).status == pb.REFUND_STATUS_SUCCEEDED
    for user, balance in ((buyer, 20_00), (seller, 5_00), (courier, 5_00)):
        assert_settled(user, balance)


def test_a_bulk_item_may_be_a_split_payment(servers: Servers, channel: grpc.Channel) -> None:
    buyer = new_user(servers, channel, "bank-a", 30_00)
    seller = new_user(servers, channel, "bank-b", 0)
    courier = new_user(servers, channel, "bank-c", 0)
    split = pb.CreatePaymentRequest(
        idempotency_key=uuid.uuid4().hex, amount=12_00, currency="USD",
        splits=[pb.Split(payee_username=seller.username, amount=10_00),
                pb.Split(payee_username=courier.username, amount=2_00)],
    )  # fmt: skip
    plain = pb.CreatePaymentRequest(idempotency_key=uuid.uuid4().hex, amount=5_00,
                                    currency="USD", payee_username=courier.username)  # fmt: skip
    first, second = buyer.pay_batch([split, plain])
    assert first.payment.status == second.payment.status == pb.PAYMENT_STATUS_SUCCEEDED
    assert [s.amount for s in first.payment.splits] == [10_00, 2_00]
    for user, balance in ((buyer, 13_00), (seller, 10_00), (courier, 7_00)):
        assert_settled(user, balance)
