"""Every RPC of BankService with raw stubs and the suite's certificates, against the real
banks in this process: each one answered for the certificate it is meant for, and refused
for bad input, an unknown account or transaction, a state that forbids it, and a
certificate of the wrong identity (the operator's for the gateway's calls, and back).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable
from typing import Any

import grpc
import pytest
from paygate.gen.paygate.bank.v1 import bank_pb2 as bpb
from paygate.gen.paygate.bank.v1 import bank_pb2_grpc
from servers import Servers
from users import error_reason

CODE = grpc.StatusCode
TIMEOUT_S = 5.0
BANK = "bank-b"


async def refusal(call: Awaitable[Any]) -> tuple[CODE, str]:
    """The status code and ErrorInfo reason of a call the bank must refuse."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value.code(), error_reason(caught.value)


def txn() -> str:
    return f"inproc-{uuid.uuid4()}"


def payment_txn() -> str:
    """A transaction id of the form the gateway gives its payments' transactions."""
    return f"pay_{uuid.uuid4().hex[:24]}"


def leg(account: str, amount: int, direction: int, currency: str = "USD") -> bpb.Leg:
    return bpb.Leg(account_number=account, direction=direction, amount=amount, currency=currency)


def transfer(transaction_id: str, payer: str, payee: str, amount: int) -> bpb.PrepareRequest:
    return bpb.PrepareRequest(
        transaction_id=transaction_id,
        legs=[leg(payer, amount, bpb.DIRECTION_DEBIT), leg(payee, amount, bpb.DIRECTION_CREDIT)],
    )


class Callers:
    """Stubs of one bank for the operator's certificate and the gateway's."""

    def __init__(self, servers: Servers, bank_id: str = BANK) -> None:
        self._channels = [servers.bank_channel(bank_id), servers.bank_channel(bank_id, "gateway")]
        self.admin: Any = bank_pb2_grpc.BankServiceStub(self._channels[0])
        self.gateway: Any = bank_pb2_grpc.BankServiceStub(self._channels[1])

    async def account(self, number: str) -> bpb.Account:
        response = await self.admin.GetAccount(
            bpb.GetAccountRequest(account_number=number), timeout=TIMEOUT_S
        )
        return response.account

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()


def test_open_get_and_deposit(servers: Servers) -> None:
    async def scenario(bank: Callers) -> None:
        opened = await bank.admin.OpenAccount(
            bpb.OpenAccountRequest(currency="USD", initial_balance=4_00), timeout=TIMEOUT_S
        )
        number = opened.account.account_number
        assert opened.link_code and (opened.account.balance, opened.account.available) == (
            4_00,
            4_00,
        )
        assert await refusal(
            bank.admin.OpenAccount(bpb.OpenAccountRequest(currency="XXX"), timeout=TIMEOUT_S)
        ) == (CODE.INVALID_ARGUMENT, "INVALID_ARGUMENT")
        assert await refusal(
            bank.gateway.OpenAccount(bpb.OpenAccountRequest(currency="USD"), timeout=TIMEOUT_S)
        ) == (CODE.PERMISSION_DENIED, "PERMISSION_DENIED")

        # Both certificates may read an account.
        for stub in (bank.admin, bank.gateway):
            got = await stub.GetAccount(
                bpb.GetAccountRequest(account_number=number), timeout=TIMEOUT_S
            )
            assert got.account == opened.account
        assert await refusal(
            bank.admin.GetAccount(bpb.GetAccountRequest(account_number="9" * 9), timeout=TIMEOUT_S)
        ) == (CODE.NOT_FOUND, "ACCOUNT_NOT_FOUND")
        assert await refusal(
            bank.admin.GetAccount(bpb.GetAccountRequest(account_number=""), timeout=TIMEOUT_S)
        ) == (CODE.INVALID_ARGUMENT, "INVALID_ARGUMENT")

        reference = txn()
        deposit = bpb.DepositRequest(
            account_number=number, amount=1_50, currency="USD", reference=reference
        )
        first = await bank.admin.Deposit(deposit, timeout=TIMEOUT_S)
        again = await bank.admin.Deposit(deposit, timeout=TIMEOUT_S)
        assert (first.replayed, again.replayed) == (False, True)
        assert first.account.balance == again.account.balance == 5_50
        other = bpb.DepositRequest(
            account_number=number, amount=2_00, currency="USD", reference=reference
        )
        assert await refusal(bank.admin.Deposit(other, timeout=TIMEOUT_S)) == (
            CODE.FAILED_PRECONDITION,
            "IDEMPOTENCY_KEY_MISMATCH",
        )
        assert await refusal(bank.gateway.Deposit(deposit, timeout=TIMEOUT_S)) == (
            CODE.PERMISSION_DENIED,
            "PERMISSION_DENIED",
        )
        assert (await bank.account(number)).balance == 5_50

    servers.run(with_callers(servers, scenario))


def test_link_codes(servers: Servers) -> None:
    account = servers.admin_open_account(BANK, 1_00)

    async def scenario(bank: Callers) -> None:
        link = bpb.LinkAccountRequest(account_number=account, link_code=account.link_code)
        linked = await bank.gateway.LinkAccount(link, timeout=TIMEOUT_S)
        assert linked.account.account_number == account
        assert await refusal(bank.admin.LinkAccount(link, timeout=TIMEOUT_S)) == (
            CODE.PERMISSION_DENIED,
            "PERMISSION_DENIED",
        )

        issue = bpb.IssueLinkCodeRequest(account_number=account)
        assert await refusal(bank.gateway.IssueLinkCode(issue, timeout=TIMEOUT_S)) == (
            CODE.PERMISSION_DENIED,
            "PERMISSION_DENIED",
        )
        assert await refusal(
            bank.admin.IssueLinkCode(
                bpb.IssueLinkCodeRequest(account_number="9" * 9), timeout=TIMEOUT_S
            )
        ) == (CODE.NOT_FOUND, "ACCOUNT_NOT_FOUND")
        issued = (await bank.admin.IssueLinkCode(issue, timeout=TIMEOUT_S)).link_code
        assert issued and issued != account.link_code
        # The old code is gone: answered as for an account that does not exist.
        assert await refusal(bank.gateway.LinkAccount(link, timeout=TIMEOUT_S)) == (
            CODE.NOT_FOUND,
            "ACCOUNT_NOT_FOUND",
        )
        renewed = bpb.LinkAccountRequest(account_number=account, link_code=issued)
        assert (await bank.gateway.LinkAccount(renewed, timeout=TIMEOUT_S)).account.balance == 1_00

    servers.run(with_callers(servers, scenario))


def test_prepare_commit_and_abort(servers: Servers) -> None:
    payer = servers.admin_open_account(BANK, 10_00)
    payee = servers.admin_open_account(BANK, 0)

    async def scenario(bank: Callers) -> None:
        committed, aborted = txn(), txn()
        for transaction_id in (committed, aborted):
            vote = await bank.gateway.Prepare(
                transfer(transaction_id, payer, payee, 3_00), timeout=TIMEOUT_S
            )
            assert (vote.vote, vote.reason, vote.committed) == (bpb.VOTE_YES, "", False)
        assert (await bank.account(payer)).available == 4_00
        # A refusal to vote yes is an answer, not an error.
        short = await bank.gateway.Prepare(transfer(txn(), payer, payee, 5_00), timeout=TIMEOUT_S)
        assert (short.vote, short.reason) == (bpb.VOTE_NO, "INSUFFICIENT_FUNDS")

        assert await refusal(
            bank.gateway.Prepare(bpb.PrepareRequest(transaction_id=txn()), timeout=TIMEOUT_S)
        ) == (CODE.INVALID_ARGUMENT, "INVALID_ARGUMENT")
        assert await refusal(
            bank.gateway.Prepare(transfer(committed, payer, payee, 1), timeout=TIMEOUT_S)
        ) == (CODE.FAILED_PRECONDITION, "FAILED_PRECONDITION")
        assert await refusal(
            bank.admin.Prepare(transfer(txn(), payer, payee, 1_00), timeout=TIMEOUT_S)
        ) == (CODE.PERMISSION_DENIED, "PERMISSION_DENIED")

        await bank.gateway.Commit(bpb.CommitRequest(transaction_id=committed), timeout=TIMEOUT_S)
        await bank.gateway.Abort(bpb.AbortRequest(transaction_id=aborted), timeout=TIMEOUT_S)
        assert await refusal(
            bank.gateway.Commit(bpb.CommitRequest(transaction_id=aborted), timeout=TIMEOUT_S)
        ) == (CODE.FAILED_PRECONDITION, "TRANSACTION_ABORTED")
        assert await refusal(
            bank.gateway.Commit(bpb.CommitRequest(transaction_id=txn()), timeout=TIMEOUT_S)
        ) == (CODE.NOT_FOUND, "NOT_FOUND")
        assert await refusal(
            bank.gateway.Abort(bpb.AbortRequest(transaction_id=committed), timeout=TIMEOUT_S)
        ) == (CODE.FAILED_PRECONDITION, "TRANSACTION_COMMITTED")
        assert await refusal(
            bank.admin.Commit(bpb.CommitRequest(transaction_id=committed), timeout=TIMEOUT_S)
        ) == (CODE.PERMISSION_DENIED, "PERMISSION_DENIED")
        assert await refusal(
            bank.admin.Abort(bpb.AbortRequest(transaction_id=aborted), timeout=TIMEOUT_S)
        ) == (CODE.PERMISSION_DENIED, "PERMISSION_DENIED")

        payer_now, payee_now = await bank.account(payer), await bank.account(payee)
        assert (payer_now.balance, payer_now.available, payer_now.pending_debit) == (7_00, 7_00, 0)
        assert (payee_now.balance, payee_now.pending_credit) == (3_00, 0)

    servers.run(with_callers(servers, scenario))


def test_a_commit_posts_part_of_its_holds_and_releases_the_rest(servers: Servers) -> None:
    """A partial capture: Commit names how much of each hold to post; never more than held."""
    payer = servers.admin_open_account(BANK, 10_00)
    payee = servers.admin_open_account(BANK, 0)

    async def scenario(bank: Callers) -> None:
        held, batched = txn(), txn()
        for transaction_id in (held, batched):
            await bank.gateway.Prepare(
                transfer(transaction_id, payer, payee, 4_00), timeout=TIMEOUT_S
            )
        assert (await bank.account(payer)).available == 2_00
        for amount in (4_01, -1):
            assert await refusal(
                bank.gateway.Commit(
                    bpb.CommitRequest(transaction_id=held, amount=amount), timeout=TIMEOUT_S
                )
            ) == (CODE.INVALID_ARGUMENT, "INVALID_ARGUMENT")
        assert (await bank.account(payer)).balance == 10_00, "a refused Commit posts nothing"

        await bank.gateway.Commit(
            bpb.CommitRequest(transaction_id=held, amount=1_50), timeout=TIMEOUT_S
        )
        response = await bank.gateway.CommitBatch(
            bpb.CommitBatchRequest(
                transactions=[bpb.CommitRequest(transaction_id=batched, amount=2_50)]
            ),
            timeout=TIMEOUT_S,
        )
        assert not response.results[0].HasField("error")
        payer_now, payee_now = await bank.account(payer), await bank.account(payee)
        assert (payer_now.balance, payer_now.available, payer_now.pending_debit) == (6_00, 6_00, 0)
        assert (payee_now.balance, payee_now.pending_credit) == (4_00, 0)

    servers.run(with_callers(servers, scenario))


def test_batches(servers: Servers) -> None:
    payer = servers.admin_open_account(BANK, 10_00)
    payee = servers.admin_open_account(BANK, 0)

    async def scenario(bank: Callers) -> None:
        first, second, refused = txn(), txn(), txn()
        prepared = await bank.gateway.PrepareBatch(
            bpb.PrepareBatchRequest(
                transactions=[
                    transfer(first, payer, payee, 2_00),
                    transfer(second, payer, payee, 3_00),
                    bpb.PrepareRequest(transaction_id=refused),  # no legs: this one alone fails
                ]
            ),
            timeout=TIMEOUT_S,
        )
        results = {r.transaction_id: r for r in prepared.results}
        assert [results[t].response.vote for t in (first, second)] == [bpb.VOTE_YES] * 2
        assert (results[refused].error.code, results[refused].error.reason) == (
            CODE.INVALID_ARGUMENT.value[0],
            "INVALID_ARGUMENT",
        )
        committed = await bank.gateway.CommitBatch(
            bpb.CommitBatchRequest(transactions=[bpb.CommitRequest(transaction_id=first)]),
            timeout=TIMEOUT_S,
        )
        aborted = await bank.gateway.AbortBatch(
            bpb.AbortBatchRequest(
                transactions=[
                    bpb.AbortRequest(transaction_id=second),
                    bpb.AbortRequest(transaction_id=first),  # committed: refused alone
                ]
            ),
            timeout=TIMEOUT_S,
        )
        assert [r.HasField("error") for r in committed.results] == [False]
        assert [(r.HasField("error"), r.error.reason) for r in aborted.results] == [
            (False, ""),
            (True, "TRANSACTION_COMMITTED"),
        ]
        payer_now = await bank.account(payer)
        assert (payer_now.balance, payer_now.available) == (8_00, 8_00)

        # A batch is refused whole when empty, and to any certificate but the gateway's.
        empty = {
            "PrepareBatch": bpb.PrepareBatchRequest(),
            "CommitBatch": bpb.CommitBatchRequest(),
            "AbortBatch": bpb.AbortBatchRequest(),
        }
        for method, request in empty.items():
            assert await refusal(getattr(bank.gateway, method)(request, timeout=TIMEOUT_S)) == (
                CODE.INVALID_ARGUMENT,
                "INVALID_ARGUMENT",
            ), method
            assert await refusal(getattr(bank.admin, method)(request, timeout=TIMEOUT_S)) == (
                CODE.PERMISSION_DENIED,
                "PERMISSION_DENIED",
            ), method

    servers.run(with_callers(servers, scenario))


def test_list_holds(servers: Servers) -> None:
    payer = servers.admin_open_account(BANK, 10_00)
    payee = servers.admin_open_account(BANK, 0)

    async def scenario(bank: Callers) -> None:
        async def holds(number: str, page_size: int = 0, page_token: str = "") -> Any:
            request = bpb.ListHoldsRequest(
                account_number=number, page_size=page_size, page_token=page_token
            )
            return await bank.admin.ListHolds(request, timeout=TIMEOUT_S)

        def rows(response: Any) -> list[tuple[str, str, int, int, str]]:
            return [
                (h.transaction_id, h.payment_id, h.direction, h.amount, h.currency)
                for h in response.holds
            ]

        assert rows(await holds(payer)) == []
        committed, aborted, named_otherwise = payment_txn(), payment_txn(), txn()
        refund = f"re_{uuid.uuid4().hex[:24]}"  # a refund's transaction, named as the gateway does
        before_s = time.time()
        for transaction_id, amount in ((committed, 3_00), (aborted, 2_00)):
            await bank.gateway.Prepare(
                transfer(transaction_id, payer, payee, amount), timeout=TIMEOUT_S
            )
        for transaction_id in (named_otherwise, refund):
            await bank.gateway.Prepare(
                bpb.PrepareRequest(
                    transaction_id=transaction_id, legs=[leg(payee, 1_00, bpb.DIRECTION_CREDIT)]
                ),
                timeout=TIMEOUT_S,
            )
        listed = await holds(payer)
        assert rows(listed) == [
            (committed, committed, bpb.DIRECTION_DEBIT, 3_00, "USD"),
            (aborted, aborted, bpb.DIRECTION_DEBIT, 2_00, "USD"),
        ]
        assert listed.next_page_token == ""
        created_s = [h.create_time.ToMicroseconds() / 1e6 for h in listed.holds]
        assert before_s - 1 < created_s[0] <= created_s[1] < time.time() + 1
        at_payee = await holds(payee)
        assert rows(at_payee) == [
            (committed, committed, bpb.DIRECTION_CREDIT, 3_00, "USD"),
            (aborted, aborted, bpb.DIRECTION_CREDIT, 2_00, "USD"),
            (named_otherwise, "", bpb.DIRECTION_CREDIT, 1_00, "USD"),
            (refund, "", bpb.DIRECTION_CREDIT, 1_00, "USD"),
        ]
        assert [h.refund_id for h in at_payee.holds] == ["", "", "", refund]
        first = await holds(payer, page_size=1)
        assert [h.transaction_id for h in first.holds] == [committed] and first.next_page_token
        second = await holds(payer, page_size=1, page_token=first.next_page_token)
        assert [h.transaction_id for h in second.holds] == [aborted]
        assert second.next_page_token == ""

        await bank.gateway.Commit(bpb.CommitRequest(transaction_id=committed), timeout=TIMEOUT_S)
        await bank.gateway.Abort(bpb.AbortRequest(transaction_id=aborted), timeout=TIMEOUT_S)
        assert rows(await holds(payer)) == []
        assert [h.transaction_id for h in (await holds(payee)).holds] == [named_otherwise, refund]
        for transaction_id in (named_otherwise, refund):
            await bank.gateway.Abort(
                bpb.AbortRequest(transaction_id=transaction_id), timeout=TIMEOUT_S
            )
        assert rows(await holds(payee)) == []

        # Only the operator's certificate may list holds; bad input is refused.
        request = bpb.ListHoldsRequest(account_number=payer)
        assert await refusal(bank.gateway.ListHolds(request, timeout=TIMEOUT_S)) == (
            CODE.PERMISSION_DENIED,
            "PERMISSION_DENIED",
        )
        for page_size in (-1, -(2**31)):
            assert await refusal(holds(payer, page_size=page_size)) == (
                CODE.INVALID_ARGUMENT,
                "INVALID_ARGUMENT",
            )
        assert await refusal(holds(payer, page_token="not-a-token")) == (
            CODE.INVALID_ARGUMENT,
            "INVALID_ARGUMENT",
        )
        assert await refusal(holds("9" * 9)) == (CODE.NOT_FOUND, "ACCOUNT_NOT_FOUND")
        assert await refusal(holds("")) == (CODE.INVALID_ARGUMENT, "INVALID_ARGUMENT")

    servers.run(with_callers(servers, scenario))


def test_a_page_of_holds_stays_within_the_largest_message(servers: Servers) -> None:
    """70 holds of 255-character transaction ids, 4 bytes each in UTF-8: 100 of them would
    pass the bank's 64 KiB messages. A page of 100 asked for stops short, with a token."""
    payer = servers.admin_open_account(BANK, 1_00)
    ids = [f"{n:03d}" + "\N{MUSICAL SYMBOL G CLEF}" * 252 for n in range(70)]

    async def scenario(bank: Callers) -> None:
        prepares = [
            bpb.PrepareRequest(transaction_id=t, legs=[leg(payer, 1, bpb.DIRECTION_DEBIT)])
            for t in ids
        ]
        for half in (prepares[:35], prepares[35:]):  # each batch within the 64 KiB too
            prepared = await bank.gateway.PrepareBatch(
                bpb.PrepareBatchRequest(transactions=half), timeout=TIMEOUT_S
            )
            assert {r.response.vote for r in prepared.results} == {bpb.VOTE_YES}
        listed, token, pages = [], "", 0
        while True:
            page = await bank.admin.ListHolds(
                bpb.ListHoldsRequest(account_number=payer, page_size=100, page_token=token),
                timeout=TIMEOUT_S,
            )
            listed += [h.transaction_id for h in page.holds]
            pages, token = pages + 1, page.next_page_token
            assert page.ByteSize() <= 64 * 1024
            if not token:
                break
        assert pages == 2
        assert sorted(listed) == ids
        for half in (ids[:35], ids[35:]):
            aborts = [bpb.AbortRequest(transaction_id=t) for t in half]
            await bank.gateway.AbortBatch(
                bpb.AbortBatchRequest(transactions=aborts), timeout=TIMEOUT_S
            )
        assert (await bank.account(payer)).available == 1_00

    servers.run(with_callers(servers, scenario))


async def with_callers(servers: Servers, scenario: Any) -> None:
    bank = Callers(servers)
    try:
        await scenario(bank)
    finally:
        await bank.close()
