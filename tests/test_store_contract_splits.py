"""Split payments in both stores: the gateway's row keeps the parts and every payee is a
party (listed, told by an event), and a bank holds a Prepare's unbalanced legs only when
the Prepare says the transaction spans banks."""

from __future__ import annotations

import dataclasses

import pytest
from paygate.bank import ledger
from paygate.bank.store import LedgerStore
from paygate.errors import InvalidArgument
from paygate.gateway.models import BeginOutcome, Payment, Split, TxnState
from paygate.gateway.store import GatewayStore
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
