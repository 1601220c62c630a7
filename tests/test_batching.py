"""Batched two-phase commit on a real suite: the banks' PrepareBatch, CommitBatch and
AbortBatch RPCs answer per transaction, and the gateway sends concurrent payments' calls
to one bank as batches (paygate.gateway.batching) without changing what a payer sees."""

from __future__ import annotations

import concurrent.futures
import urllib.request
import uuid
from collections.abc import Iterator

import grpc
import pytest
from paygate.gen.paygate.bank.v1 import bank_pb2, bank_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from suite import Suite
from users import new_user

pytestmark = pytest.mark.suite

RPC_TIMEOUT_S = 5.0


@pytest.fixture
def channel(suite: Suite) -> Iterator[grpc.Channel]:
    creds = grpc.ssl_channel_credentials(suite.config.certs_dir.joinpath("ca.pem").read_bytes())
    with grpc.secure_channel(suite.gateway_target, creds) as ch:
        yield ch


def txn() -> str:
    return f"test-batch-{uuid.uuid4()}"


def debit(account: str, amount: int, direction: int = bank_pb2.DIRECTION_DEBIT) -> bank_pb2.Leg:
    return bank_pb2.Leg(account_number=account, direction=direction, amount=amount, currency="USD")


def test_a_prepare_batch_answers_each_transaction_on_its_own(suite: Suite) -> None:
    funded = suite.admin_open_account("bank-a", 10_00)
    poor = suite.admin_open_account("bank-a", 1_00)
    ok, bad, refused = txn(), txn(), txn()
    with suite.bank_channel_sync("bank-a", identity="gateway") as channel:
        stub = bank_pb2_grpc.BankServiceStub(channel)
        response = stub.PrepareBatch(
            bank_pb2.PrepareBatchRequest(transactions=[
                bank_pb2.PrepareRequest(transaction_id=ok, legs=[debit(funded, 4_00)]),
                bank_pb2.PrepareRequest(
                    transaction_id=bad,
                    legs=[debit(funded, 1_00, bank_pb2.DIRECTION_UNSPECIFIED)],
                ),
                bank_pb2.PrepareRequest(transaction_id=refused, legs=[debit(poor, 5_00)]),
            ]),
            timeout=RPC_TIMEOUT_S,
        )
        assert [r.transaction_id for r in response.results] == [ok, bad, refused]
        first, second, third = response.results
        assert first.response.vote == bank_pb2.VOTE_YES and not first.HasField("error")
        assert second.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        assert "direction" in second.error.message
        assert third.response.vote == bank_pb2.VOTE_NO
        assert third.response.reason == "INSUFFICIENT_FUNDS"
        # Only the yes vote holds money.
        assert suite.bank_account("bank-a", funded).available == 6_00
        assert suite.bank_account("bank-a", poor).available == 1_00

        commits = stub.CommitBatch(
            bank_pb2.CommitBatchRequest(transactions=[
                bank_pb2.CommitRequest(transaction_id=ok),
                bank_pb2.CommitRequest(transaction_id=txn()),  # never prepared
                bank_pb2.CommitRequest(transaction_id=ok),  # a repeat is acknowledged again
            ]),
            timeout=RPC_TIMEOUT_S,
        )
        assert [r.HasField("error") for r in commits.results] == [False, True, False]
        assert commits.results[1].error.code == grpc.StatusCode.NOT_FOUND.value[0]
        account = suite.bank_account("bank-a", funded)
        assert (account.balance, account.available) == (6_00, 6_00)

        aborts = stub.AbortBatch(
            bank_pb2.AbortBatchRequest(transactions=[
                bank_pb2.AbortRequest(transaction_id=ok),  # committed: refused
                bank_pb2.AbortRequest(transaction_id=refused),
            ]),
            timeout=RPC_TIMEOUT_S,
        )
        assert aborts.results[0].error.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
        assert aborts.results[0].error.reason == "TRANSACTION_COMMITTED"
        assert not aborts.results[1].HasField("error")
    assert suite.bank_account("bank-a", funded).balance == 6_00


@pytest.mark.parametrize("size", [0, 257])
def test_a_batch_of_the_wrong_size_is_refused_whole(suite: Suite, size: int) -> None:
    account = suite.admin_open_account("bank-b", 10_00)
    requests = [
        bank_pb2.PrepareRequest(transaction_id=txn(), legs=[debit(account, 1)])
        for _ in range(size)
    ]
    with suite.bank_channel_sync("bank-b", identity="gateway") as channel:
        with pytest.raises(grpc.RpcError) as caught:
            bank_pb2_grpc.BankServiceStub(channel).PrepareBatch(
                bank_pb2.PrepareBatchRequest(transactions=requests), timeout=RPC_TIMEOUT_S
            )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "1 to 256" in (caught.value.details() or "")
    assert suite.bank_account("bank-b", account).available == 10_00


@pytest.mark.parametrize("method", ["PrepareBatch", "CommitBatch", "AbortBatch"])
def test_only_the_gateway_may_send_batches(suite: Suite, method: str) -> None:
    account = suite.admin_open_account("bank-c", 10_00)
    request = {
        "PrepareBatch": bank_pb2.PrepareBatchRequest(transactions=[
            bank_pb2.PrepareRequest(transaction_id=txn(), legs=[debit(account, 1_00)])
        ]),
        "CommitBatch": bank_pb2.CommitBatchRequest(
            transactions=[bank_pb2.CommitRequest(transaction_id=txn())]
        ),
        "AbortBatch": bank_pb2.AbortBatchRequest(
            transactions=[bank_pb2.AbortRequest(transaction_id=txn())]
        ),
    }[method]
    with suite.bank_channel_sync("bank-c", identity="admin") as channel:
        with pytest.raises(grpc.RpcError) as caught:
            getattr(bank_pb2_grpc.BankServiceStub(channel), method)(request, timeout=RPC_TIMEOUT_S)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert suite.bank_account("bank-c", account).available == 10_00


def batch_sizes(suite: Suite) -> dict[tuple[str, str], tuple[float, float]]:
    """(sum, count) of paygate_bank_batch_size per (bank, operation), from /metrics."""
    host, port = suite.config.gateway.metrics.rsplit(":", 1)
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=RPC_TIMEOUT_S) as r:
        text = r.read().decode()
    sizes: dict[tuple[str, str], list[float]] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "paygate_bank_batch_size":
            continue
        for sample in family.samples:
            key = (sample.labels["bank"], sample.labels["operation"])
            if sample.name.endswith("_sum"):
                sizes.setdefault(key, [0.0, 0.0])[0] = sample.value
            elif sample.name.endswith("_count"):
                sizes.setdefault(key, [0.0, 0.0])[1] = sample.value
    return {key: (v[0], v[1]) for key, v in sizes.items()}


def test_concurrent_payments_travel_in_batches_and_settle_exactly(
    suite: Suite, channel: grpc.Channel
) -> None:
    payers = [new_user(suite, channel, "bank-a", 100_00, prefix="batchpayer") for _ in range(16)]
    payee = new_user(suite, channel, "bank-b", 0, prefix="batchpayee")
    before = batch_sizes(suite)

    def pay(index: int) -> int:
        payers[index % len(payers)].pay(payee, 1_00)
        return 1_00

    with concurrent.futures.ThreadPoolExecutor(64) as pool:
        paid = sum(pool.map(pay, range(160)))

    after = batch_sizes(suite)
    for bank, operation in (("bank-a", "prepare"), ("bank-b", "prepare"), ("bank-a", "commit")):
        total, count = after[(bank, operation)]
        old_total, old_count = before.get((bank, operation), (0.0, 0.0))
        calls, batches = total - old_total, count - old_count
        assert calls == 160, (bank, operation)
        # Calls that were waiting together left together: fewer RPCs than payments.
        assert batches < calls, (bank, operation, batches)
    assert paid == 160_00
    assert payee.balance().balance == 160_00
    assert sum(p.balance().balance for p in payers) == 16 * 100_00 - 160_00
    for payer in payers:
        account = payer.bank_account()
        assert account.pending_debit == 0 and account.available == account.balance
