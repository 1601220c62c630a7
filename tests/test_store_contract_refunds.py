"""The refund part of the storage contract, on SQLite and PostgreSQL: a refund is recorded
with its key only within what is left to refund, concurrent refunds of one payment never
pass the amount captured, an abort gives the amount back and a commit decision adds it to
the payment's amount_refunded (gateway/store_refunds.py). A property test then drives
random refunds and decisions through the SQLite store and checks the same after each.
"""

from __future__ import annotations

import asyncio
import dataclasses
import pathlib
import time
import uuid

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from paygate.errors import AMOUNT_EXCEEDS_REFUNDABLE, PAYMENT_NOT_REFUNDABLE
from paygate.gateway.models import BeginOutcome, Payment, PaymentStatus, TxnState
from paygate.gateway.store import GatewayStore, Lease, SqliteGatewayStore
from test_store_contract import ALICE, BOB, Backend, backend, payment, pg_schemas, run, with_users

__all__ = ["backend", "pg_schemas"]  # the fixtures, used by name

LEASE = Lease("gateway-test", time.time() + 60)


def refund_of(paid: Payment, amount_minor: int) -> Payment:
    return dataclasses.replace(
        payment(BOB, ALICE, amount_minor),
        payment_id=f"re_{uuid.uuid4().hex}",
        refund_of=paid.payment_id,
    )


async def paid(store: GatewayStore, amount_minor: int) -> Payment:
    made = payment(ALICE, BOB, amount_minor)
    await store.begin_payment(uuid.uuid4().hex, "h", made)
    assert await store.decide_commit(made.payment_id) == TxnState.COMMITTING
    return made


async def reserve(store: GatewayStore, made: Payment, amount_minor: int):  # type: ignore[no-untyped-def]
    return await store.begin_refund(uuid.uuid4().hex, "h", refund_of(made, amount_minor), LEASE)


def test_refunds_are_recorded_within_what_is_left(backend: Backend) -> None:
    async def body(store: GatewayStore) -> None:
        await with_users(store)
        made = await paid(store, 100)
        begun, first = await reserve(store, made, 60)
        assert begun.outcome == BeginOutcome.STARTED and first is not None
        refused, none = await reserve(store, made, 41)  # 60 reserved: 40 left
        assert (refused.outcome, refused.error_reason, none) == (
            BeginOutcome.REFUSED, AMOUNT_EXCEEDS_REFUNDABLE, None
        )  # fmt: skip
        # An abort gives its amount back; a commit counts as refunded.
        await store.decide_abort(first.payment_id, "INSUFFICIENT_FUNDS", "m", release_key=False)
        begun, rest = await reserve(store, made, 0)  # 0: all that is left
        assert begun.outcome == BeginOutcome.STARTED and rest is not None
        assert rest.amount_minor == 100
        await store.decide_commit(rest.payment_id, refund=rest)
        after = await store.get_payment(made.payment_id)
        assert after is not None and after.amount_refunded_minor == 100
        assert [r.payment_id for _, r in await store.list_refunds(made.payment_id, after_seq=0,
                limit=10)] == [first.payment_id, rest.payment_id]  # fmt: skip
        refused, _ = await reserve(store, made, 1)
        assert refused.error_reason == AMOUNT_EXCEEDS_REFUNDABLE
        # A payment that did not succeed has nothing to refund.
        failed = payment(ALICE, BOB, 50)
        await store.begin_payment(uuid.uuid4().hex, "h", failed)
        await store.decide_abort(failed.payment_id, "INSUFFICIENT_FUNDS", "m", release_key=False)
        refused, _ = await reserve(store, failed, 1)
        assert refused.error_reason == PAYMENT_NOT_REFUNDABLE

    run(backend.gateway(backend.fresh("gateway")), body)


def test_concurrent_refunds_never_pass_the_amount_captured(backend: Backend) -> None:
    location = backend.fresh("gateway")

    async def body(store: GatewayStore) -> None:
        await with_users(store)
        made = await paid(store, 100)
        # Two stores on one database (two gateways on PostgreSQL), eight refunds of 30.
        other = backend.gateway(location)
        await other.open()
        try:
            results = await asyncio.gather(
                *(reserve(s, made, 30) for s in [store, other] * 4)
            )  # fmt: skip
        finally:
            await other.close()
        started = [r for begun, r in results if begun.outcome == BeginOutcome.STARTED]
        assert len(started) == 3
        assert {begun.error_reason for begun, r in results if r is None} == {
            AMOUNT_EXCEEDS_REFUNDABLE
        }

    run(backend.gateway(location), body)


# Each step: reserve an amount, or decide the oldest pending refund (commit or abort).
STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("refund"), st.integers(min_value=0, max_value=120)),
        st.tuples(st.sampled_from(["commit", "abort"]), st.just(0)),
    ),
    max_size=25,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=STEPS)
def test_any_order_of_refunds_and_decisions_keeps_the_amounts(
    steps: list[tuple[str, int]], tmp_path: pathlib.Path
) -> None:
    async def body(store: GatewayStore) -> None:
        await with_users(store)
        made = await paid(store, 100)
        pending: list[Payment] = []
        reserved = refunded = 0
        for kind, amount in steps:
            if kind == "refund":
                begun, refund = await reserve(store, made, amount)
                left = 100 - reserved - refunded
                fits = 0 < (amount or left) <= left
                assert (begun.outcome == BeginOutcome.STARTED) == fits, (amount, left)
                if refund is not None:
                    pending.append(refund)
                    reserved += refund.amount_minor
            elif pending:
                refund = pending.pop(0)
                reserved -= refund.amount_minor
                if kind == "commit":
                    await store.decide_commit(refund.payment_id, refund=refund)
                    refunded += refund.amount_minor
                else:
                    await store.decide_abort(refund.payment_id, "R", "m", release_key=True)
            now = await store.get_payment(made.payment_id)
            assert now is not None and now.amount_refunded_minor == refunded
            assert refunded + reserved <= 100

    run(SqliteGatewayStore(tmp_path / f"{uuid.uuid4().hex}.db"), body)


def test_a_payment_status_other_than_succeeded_has_nothing_captured() -> None:
    made = payment(ALICE, BOB, 100)
    assert made.captured_minor == 0
    assert dataclasses.replace(made, status=PaymentStatus.SUCCEEDED).captured_minor == 100
