"""BatchCreatePayments in-process: each item its own payment and answer, in request order;
funds reserved as if in order; whole-call refusals; replays; message sizes; metrics.
(The suite test of a batch of 200 against supervisord: tests/test_bulk_payouts.py.)

Every test makes its own users, so the tests share the module's servers.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator

import grpc
import pytest
from google.rpc import code_pb2
from paygate.client import (
    BatchItem,
    BatchResult,
    Client,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PaymentStatus,
)
from paygate.gen.paygate.v1 import gateway_pb2 as pb
from servers import Servers
from suite import SuiteClient
from users import TestUser, assert_settled, error_reason, item, new_user


@pytest.fixture
def channel(suite: SuiteClient) -> Iterator[grpc.Channel]:
    with suite.gateway_channel_sync() as ch:
        yield ch


def outcome(result: pb.BatchCreatePaymentResult) -> str:
    """ "SUCCEEDED" for a payment, else the error's reason."""
    if result.WhichOneof("result") == "payment":
        return pb.PaymentStatus.Name(result.payment.status).removeprefix("PAYMENT_STATUS_")
    return result.error.reason


def test_each_item_is_its_own_payment_answered_in_order(
    suite: SuiteClient, channel: grpc.Channel
) -> None:
    alice = new_user(suite, channel, "bank-a", 100_00)
    bob = new_user(suite, channel, "bank-b", 0)
    carol = new_user(suite, channel, "bank-a", 0)  # alice's bank: a one-phase payment
    euro = new_user(suite, channel, "bank-c", 0, currency="EUR")
    items = [
        item(bob, 10_00, description="invoice 1"),
        item(carol, 20_00),
        item("nobody-" + uuid.uuid4().hex[:8], 1_00),
        item(bob, 0),
        item(euro, 1_00),
        item(bob, 500_00),  # more than alice has
        item(bob, 5_00),
        item(alice, 1_00),  # herself
    ]
    results = alice.pay_batch(items)

    assert [outcome(r) for r in results] == [
        "SUCCEEDED", "SUCCEEDED", "NOT_FOUND", "INVALID_ARGUMENT", "CURRENCY_MISMATCH",
        "INSUFFICIENT_FUNDS", "SUCCEEDED", "INVALID_ARGUMENT",
    ]  # fmt: skip
    codes = [r.error.code for r in results if r.HasField("error")]
    assert codes == [code_pb2.NOT_FOUND, code_pb2.INVALID_ARGUMENT, code_pb2.FAILED_PRECONDITION,
                     code_pb2.FAILED_PRECONDITION, code_pb2.INVALID_ARGUMENT]  # fmt: skip
    paid = [r.payment for r in results if r.HasField("payment")]
    assert [(p.payee_username, p.amount) for p in paid] == [
        (bob.username, 10_00), (carol.username, 20_00), (bob.username, 5_00),
    ]  # fmt: skip
    assert paid[0].description == "invoice 1" and not any(r.replayed for r in results)
    # The overdraft began a payment and failed: it names the payment, nothing moved.
    overdraft = results[5].error
    assert overdraft.metadata["outcome"] == "failed" and overdraft.metadata["payment_id"]
    assert "unknown" not in results[2].error.message
    assert_settled(alice, 65_00)
    assert_settled(bob, 15_00)
    assert_settled(carol, 20_00)
    assert_settled(euro, 0)
    for payment in paid:
        assert alice.get_payment(payment.payment_id) == payment


def sequential_outcomes(balance_minor: int, amounts: list[int]) -> list[str]:
    """What each payment becomes when sent one after another: the order the batch keeps."""
    outcomes = []
    for amount in amounts:
        if amount <= balance_minor:
            balance_minor -= amount
            outcomes.append("SUCCEEDED")
        else:
            outcomes.append("INSUFFICIENT_FUNDS")
    return outcomes


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_funds_are_reserved_as_if_the_items_ran_in_order(
    suite: SuiteClient, channel: grpc.Channel, seed: int
) -> None:
    # Amounts drawn so that the money runs out part way, and later small items still fit:
    # run all at once, a later item could take what an earlier one needed.
    rng = random.Random(seed)
    balance_minor = 100_00
    amounts = [rng.choice([1_00, 3_00, 7_00, 15_00, 40_00]) for _ in range(40)]
    alice = new_user(suite, channel, "bank-a", balance_minor)
    payees = [new_user(suite, channel, bank, 0) for bank in ("bank-b", "bank-a")]
    results = alice.pay_batch([item(payees[i % 2], a) for i, a in enumerate(amounts)])

    expected = sequential_outcomes(balance_minor, amounts)
    assert "INSUFFICIENT_FUNDS" in expected and expected.count("SUCCEEDED") > 3
    assert [outcome(r) for r in results] == expected
    spent = sum(a for a, o in zip(amounts, expected, strict=True) if o == "SUCCEEDED")
    assert_settled(alice, balance_minor - spent)


def test_a_replay_answers_every_item_as_before_and_a_mismatch_fails_alone(
    suite: SuiteClient, channel: grpc.Channel
) -> None:
    alice = new_user(suite, channel, "bank-a", 30_00)
    bob = new_user(suite, channel, "bank-b", 0)
    items = [item(bob, 10_00), item(bob, 50_00), item("nobody-" + uuid.uuid4().hex[:8], 1_00),
             item(bob, 15_00)]  # fmt: skip
    first = alice.pay_batch(items)
    assert [outcome(r) for r in first] == [
        "SUCCEEDED", "INSUFFICIENT_FUNDS", "NOT_FOUND", "SUCCEEDED",
    ]  # fmt: skip
    alice_suite_deposit(suite, alice, 100_00)  # money arrives: the refusal still stands

    again = alice.pay_batch(items)
    assert [r.payment for r in again] == [r.payment for r in first]
    assert [r.error for r in again] == [r.error for r in first]
    # Answered from their keys: the payments and the funds refusal. An unknown payee
    # recorded nothing (its key is free), so it is answered anew, not replayed.
    assert [r.replayed for r in again] == [True, True, False, True]

    changed = list(items)
    changed[0] = item(bob, 11_00, key=items[0].idempotency_key)
    third = alice.pay_batch(changed)
    assert [outcome(r) for r in third] == [
        "IDEMPOTENCY_KEY_MISMATCH", "INSUFFICIENT_FUNDS", "NOT_FOUND", "SUCCEEDED",
    ]  # fmt: skip
    assert third[0].error.code == code_pb2.FAILED_PRECONDITION
    assert_settled(alice, 105_00)
    assert_settled(bob, 25_00)


def alice_suite_deposit(suite: SuiteClient, user: TestUser, amount_minor: int) -> None:
    suite.admin_deposit(user.bank_id, user.account_number, amount_minor, uuid.uuid4().hex)


@pytest.mark.parametrize("count", [0, 1001])
def test_too_few_or_too_many_items_refuse_the_whole_call(
    suite: SuiteClient, channel: grpc.Channel, count: int
) -> None:
    alice = new_user(suite, channel, "bank-a", 10_00)
    bob = new_user(suite, channel, "bank-b", 0)
    with pytest.raises(grpc.RpcError) as info:
        alice.pay_batch([item(bob, 1) for _ in range(count)])
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "1 to 1000" in info.value.details()
    assert alice.list_payments().payments == []
    assert_settled(alice, 10_00)


def test_two_items_with_one_key_refuse_the_whole_call(
    suite: SuiteClient, channel: grpc.Channel
) -> None:
    alice = new_user(suite, channel, "bank-a", 10_00)
    bob = new_user(suite, channel, "bank-b", 0)
    items = [item(bob, 1_00), item(bob, 2_00, key="k1"), item(bob, 2_00, key="k1")]
    with pytest.raises(grpc.RpcError) as info:
        alice.pay_batch(items)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(info.value) == "INVALID_ARGUMENT"
    assert "requests[1] and requests[2]" in info.value.details()
    assert alice.list_payments().payments == []
    assert_settled(alice, 10_00)


def test_a_thousand_items_of_the_longest_fields_fit_while_other_calls_keep_64_kib(
    suite: SuiteClient, channel: grpc.Channel
) -> None:
    alice = new_user(suite, channel, "bank-a", 10_00)
    bob = new_user(suite, channel, "bank-b", 0)
    # Zero amounts: each item is refused alone, at once, and the call stays fast.
    items = [item(bob, 0, key=f"{i:04d}" + "\U0001f511" * 251, description="\U0001f4b8" * 500)
             for i in range(1000)]  # fmt: skip
    request = pb.BatchCreatePaymentsRequest(requests=items)
    assert request.ByteSize() > 3_000_000
    results = alice.pay_batch(items)
    assert len(results) == 1000
    assert {(r.error.code, r.error.reason) for r in results} == {
        (code_pb2.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    }
    # Any other method still takes at most max_message_bytes (64 KiB).
    with pytest.raises(grpc.RpcError) as info:
        alice.pay(bob, 1_00, description="x" * 70_000)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_reason(info.value) == "REQUEST_TOO_LARGE"
    assert alice.list_payments().payments == []


def test_batches_and_their_items_are_counted(suite: Servers, channel: grpc.Channel) -> None:
    registry = suite.gateway.registry

    def value(name: str, labels: dict[str, str] | None = None) -> float:
        return registry.get_sample_value(name, labels or {}) or 0.0

    before = {
        "answered": value("paygate_payment_batches_total", {"outcome": "answered"}),
        "refused": value("paygate_payment_batches_total", {"outcome": "refused"}),
        "items": value("paygate_payment_batch_items_sum"),
        "succeeded": value("paygate_payments_total", {"outcome": "succeeded"}),
        "rejected": value("paygate_payments_total", {"outcome": "rejected"}),
    }
    alice = new_user(suite, channel, "bank-a", 10_00)
    bob = new_user(suite, channel, "bank-b", 0)
    alice.pay_batch([item(bob, 1_00), item(bob, 2_00), item(bob, 0)])
    with pytest.raises(grpc.RpcError):
        alice.pay_batch([item(bob, 1_00, key="same"), item(bob, 1_00, key="same")])
    assert value("paygate_payment_batches_total", {"outcome": "answered"}) == before["answered"] + 1
    assert value("paygate_payment_batches_total", {"outcome": "refused"}) == before["refused"] + 1
    assert value("paygate_payment_batch_items_sum") == before["items"] + 3
    assert value("paygate_payments_total", {"outcome": "succeeded"}) == before["succeeded"] + 2
    assert value("paygate_payments_total", {"outcome": "rejected"}) == before["rejected"] + 1


def test_without_a_token_the_call_is_unauthenticated(
    suite: SuiteClient, channel: grpc.Channel
) -> None:
    bob = new_user(suite, channel, "bank-b", 0)
    stranger = TestUser(suite, bob.stub, "nobody", "bank-a", "0", token="not-a-token")
    with pytest.raises(grpc.RpcError) as info:
        stranger.pay_batch([item(bob, 1_00)])
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


def library_client(suite: SuiteClient, user: TestUser) -> Client:
    return Client(
        suite.gateway_target, ca_cert=suite.config.certs_dir / "ca.pem", access_token=user.token
    )


def test_pay_many_answers_each_item_with_its_payment_or_its_error(
    suite: SuiteClient, channel: grpc.Channel
) -> None:
    alice = new_user(suite, channel, "bank-a", 50_00)
    bob = new_user(suite, channel, "bank-b", 0)
    items = [
        BatchItem(payee_username=bob.username, amount_minor=10_00, description="june"),
        BatchItem(payee_username="nobody-" + uuid.uuid4().hex[:8], amount_minor=1_00),
        BatchItem(payee_username="", amount_minor=1_00),  # cannot be sent: never is
        BatchItem(payee_username=bob.username, amount_minor=0),
        BatchItem(payee_username=bob.username, amount_minor=60_00),
        BatchItem(payee_username=bob.username, amount_minor=5_00, idempotency_key="mine"),
    ]
    seen: list[list[BatchResult]] = []
    with library_client(suite, alice) as client:
        results = client.pay_many(items, on_results=seen.append)
        assert seen == [results]
        assert [r.item.payee_username for r in results] == [i.payee_username for i in items]
        assert results[5].item.idempotency_key == "mine"
        assert all(r.item.idempotency_key for r in results)
        assert [r.ok for r in results] == [True, False, False, False, False, True]
        assert results[0].payment is not None and results[0].payment.description == "june"
        assert results[0].payment.status == PaymentStatus.SUCCEEDED
        errors = [r.error for r in results]
        assert isinstance(errors[1], NotFound)
        assert isinstance(errors[2], InvalidArgument) and "payee_username" in errors[2].message
        assert isinstance(errors[3], InvalidArgument)
        assert isinstance(errors[4], FailedPrecondition)
        assert errors[4].reason == "INSUFFICIENT_FUNDS" and errors[4].metadata["payment_id"]
        assert not any(r.replayed for r in results)

        # The same items again, with the keys they were sent with: answered as before.
        again = client.pay_many([r.item for r in results])
        assert [r.replayed for r in again] == [True, False, False, False, True, True]
        assert again[0].payment is not None and again[0].payment.replayed
        assert [r.payment and r.payment.payment_id for r in again] == [
            r.payment and r.payment.payment_id for r in results
        ]
        with pytest.raises(InvalidArgument, match="items 0 and 1 have the same"):
            client.pay_many([results[0].item, results[0].item])
    assert_settled(alice, 35_00)
    assert_settled(bob, 15_00)


def test_pay_many_sends_more_than_a_thousand_items_in_several_calls(
    suite: SuiteClient, channel: grpc.Channel
) -> None:
    alice = new_user(suite, channel, "bank-a", 10_00)
    bob = new_user(suite, channel, "bank-b", 0)
    # Zero amounts: every item is refused by the gateway, at once.
    items = [BatchItem(payee_username=bob.username, amount_minor=0) for _ in range(1001)]
    items.append(BatchItem(payee_username=bob.username, amount_minor=3_00))
    calls: list[int] = []
    with library_client(suite, alice) as client:
        results = client.pay_many(items, on_results=lambda part: calls.append(len(part)))
    assert calls == [1000, 2]
    assert len(results) == 1002 and [r.ok for r in results].count(True) == 1 and results[-1].ok
    assert_settled(alice, 7_00)


def unknown_field(size: int) -> bytes:
    """A message of `size` bytes of an unknown field (15, bytes): any message parses it."""
    length = size
    varint = bytearray()
    while True:
        varint.append((length & 0x7F) | (0x80 if length > 0x7F else 0))
        length >>= 7
        if not length:
            break
    return b"\x7a" + bytes(varint) + b"\x00" * size


@pytest.mark.parametrize(
    "method",
    ["/grpc.health.v1.Health/Check", "/paygate.v1.GatewayService/WatchEvents",
     "/paygate.v1.GatewayService/Login"],
)  # fmt: skip
def test_every_other_method_refuses_a_request_over_64_kib_unparsed(
    suite: SuiteClient, channel: grpc.Channel, method: str
) -> None:
    alice = new_user(suite, channel, "bank-a", 0)
    request = unknown_field(70_000)
    with pytest.raises(grpc.RpcError) as info:
        if method.endswith("WatchEvents"):
            watch = channel.unary_stream(method)
            next(iter(watch(request, metadata=alice.metadata, timeout=5.0)))
        else:
            channel.unary_unary(method)(request, metadata=alice.metadata, timeout=5.0)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_reason(info.value) == "REQUEST_TOO_LARGE"
    # Below the limit, the same unknown field is ignored as protobuf ignores any.
    if method.endswith("Check"):
        channel.unary_unary(method)(unknown_field(60_000), timeout=5.0)
