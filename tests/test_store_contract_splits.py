"""Split payments in both stores: the gateway's row keeps the parts and every payee is a
party (listed, told by an event), and a bank holds a Prepare's unbalanced legs only when
the Prepare says the transaction spans banks."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from paygate.bank import ledger
from paygate.bank.store import LedgerStore
from paygate.errors import InvalidArgument
from paygate.gateway import store_refunds
from paygate.gateway.models import BeginOutcome, Payment, Split, TxnState
from paygate.gateway.store import GatewayStore, Lease
from test_store_contract import (
    ALICE,
    BOB,
    CAROL,
    Backend,
    account,
    backend,
    credit,
    debit,
    open_accounts,
    payment,
    pg_schemas,
    run,
    with_users,
)

__all__ = ["backend", "pg_schemas"]  # the fixtures, used by name


def split_payment() -> Payment:
    parts = [(BOB, 60), (CAROL, 40)]
    splits = tuple(
        Split(payee_user_id=u.user_id, payee_username=u.username, payee_bank_id=u.bank_id,
              payee_account=u.account_number, amount_minor=amount)
        for u, amount in parts
    )  # fmt: skip
    return dataclasses.replace(payment(ALICE, BOB, 100), splits=splits)


def test_a_split_payment_keeps_its_parts_and_every_payee_is_a_party(backend: Backend) -> None:
    async def body(store: GatewayStore) -> None:
        await with_users(store)
        paid = split_payment()
        begun = await store.begin_payment("k1", "h1", paid)
        assert begun.outcome == BeginOutcome.STARTED
        assert await store.get_payment(paid.payment_id) == paid
        await store.decide_commit(paid.payment_id, finished=True)
        for party in (ALICE, BOB, CAROL):
            [(_, listed)] = await store.list_payments(party.user_id, before_seq=None, limit=10)
            assert (listed.payment_id, listed.splits) == (paid.payment_id, paid.splits)
            [event] = await store.list_events(party.user_id, after=0, limit=10)
            assert (event.type, event.payment.splits) == ("payment.succeeded", paid.splits)
        assert (await store.get_payment(paid.payment_id)).txn_state == TxnState.COMMITTED  # type: ignore[union-attr]

    run(backend.gateway(backend.fresh("gateway")), body)


def test_unbalanced_legs_are_held_only_in_a_prepare_that_spans_banks(backend: Backend) -> None:
    async def body(store: LedgerStore) -> None:
        payer, platform, other = await open_accounts(store, 10_00, 0, 0)
        legs = [debit(payer, 10_00), credit(platform, 1_00)]  # the rest is at other banks
        with pytest.raises(InvalidArgument, match="one debit and one credit"):
            await store.transaction(lambda tx: ledger.prepare(tx, "plain", legs))
        vote = await store.transaction(
            lambda tx: ledger.prepare(tx, "split", legs, spans_banks=True)
        )
        assert vote.yes
        assert await account(store, payer) == (10_00, 10_00, 0)
        assert await account(store, platform) == (0, 0, 1_00)
        # Still each account once, and never both sides of one account.
        for bad in ([debit(payer, 1), credit(payer, 1)], [credit(other, 1), credit(other, 2)]):
            with pytest.raises(InvalidArgument):
                await store.transaction(
                    lambda tx, bad=bad: ledger.prepare(tx, "bad", bad, spans_banks=True)
                )
        await store.transaction(lambda tx: ledger.commit(tx, "split"))
        assert await account(store, payer) == (0, 0, 0)
        assert await account(store, platform) == (1_00, 0, 0)
        # One bank alone: a debit and the credits it is split into, posted in one phase.
        a, b, c = await open_accounts(store, 5_00, 0, 0)
        split = [debit(a, 5_00), credit(b, 3_00), credit(c, 2_00)]
        vote, posted = await store.transaction(
            lambda tx: ledger.prepare_one_phase(tx, "one", split)
        )
        assert vote.committed and posted
        assert [await account(store, n) for n in (a, b, c)] == [
            (0, 0, 0),
            (3_00, 0, 0),
            (2_00, 0, 0),
        ]
        short = [debit(a, 1), credit(b, 1), credit(c, 1)]
        with pytest.raises(InvalidArgument):
            await store.transaction(lambda tx: ledger.prepare_one_phase(tx, "short", short))

    run(backend.ledger(backend.fresh("bank")), body)


def test_concurrent_refunds_of_a_split_payment_never_take_more_than_a_part(
    backend: Backend,
) -> None:
    """Eight refunds of 30 % at once, through two stores: three fit, and no payee's parts of
    them pass what they were paid."""

    location = backend.fresh("gateway")

    async def body(store: GatewayStore) -> None:
        await with_users(store)
        paid = split_payment()
        await store.begin_payment("k-paid", "h", paid)
        await store.decide_commit(paid.payment_id, finished=True)
        other = backend.gateway(location)
        await other.open()
        try:

            async def refund(i: int, on: GatewayStore) -> BeginOutcome:
                asked = dataclasses.replace(
                    payment(BOB, ALICE, 30), payment_id=f"re_{i}", refund_of=paid.payment_id,
                    splits=paid.splits,
                )  # fmt: skip
                begun, _ = await on.begin_refund(f"r{i}", "h", asked, Lease("me", 9e9))
                return begun.outcome

            outcomes = await asyncio.gather(
                *(refund(i, store if i % 2 else other) for i in range(8))
            )
        finally:
            await other.close()
        assert outcomes.count(BeginOutcome.STARTED) == 3
        taken: dict[str, int] = {}
        for _, refunded in await store.list_refunds(paid.payment_id, after_seq=0, limit=10):
            assert refunded.amount_minor == sum(s.amount_minor for s in refunded.splits) == 30
            for split in refunded.splits:
                taken[split.payee_username] = (
                    taken.get(split.payee_username, 0) + split.amount_minor
                )
        assert taken == {"bob": 54, "carol": 36}  # 18 and 12 of each refund of 30

    run(backend.gateway(location), body)


@given(st.integers(1, 10**15), st.lists(st.integers(0, 10**12), min_size=1, max_size=10))
@settings(max_examples=300, deadline=None)
def test_shares_add_up_and_never_pass_what_is_left(amount: int, lefts: list[int]) -> None:
    assume(sum(lefts) >= amount)
    result = store_refunds.shares(amount, lefts)
    assert sum(result) == amount
    assert all(0 <= share <= left for share, left in zip(result, lefts, strict=True))
    # In proportion: each within one unit of its exact share.
    assert all(abs(share * sum(lefts) - amount * left) < sum(lefts)
               for share, left in zip(result, lefts, strict=True))  # fmt: skip
