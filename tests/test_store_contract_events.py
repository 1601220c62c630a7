"""The event part of the storage contract, on SQLite and PostgreSQL: every change a user
should know about writes one event per party in its own transaction, numbered by the
party's own sequence with no gap; a write that lost its race writes none; and a reader
that pages while two stores write concurrently never sees a sequence out of order nor a
hole that fills later (gateway/store_events.py).
"""

from __future__ import annotations

import asyncio
import time
import uuid

from paygate.gateway.models import EventType, Lease, OperationKey, TxnState
from paygate.gateway.store import GatewayStore
from test_store_contract import (
    ALICE,
    BOB,
    CAROL,
    Backend,
    backend,
    payment,
    pg_schemas,
    run,
    with_users,
)

__all__ = ["backend", "pg_schemas"]  # the fixtures, used by name
LEASE = Lease("gateway-test", time.time() + 60)


async def kinds(store: GatewayStore, user_id: str) -> list[tuple[int, EventType, str]]:
    events = await store.list_events(user_id, after=0, limit=100)
    return [(e.sequence, e.type, e.payment.payment_id) for e in events]


def test_each_change_gives_each_party_one_event_in_sequence(backend: Backend) -> None:
    async def body(store: GatewayStore) -> None:
        await with_users(store)
        paid, failed = payment(ALICE, BOB, 10), payment(ALICE, BOB, 20)
        held = payment(BOB, ALICE, 5)
        for p in (paid, failed, held):
            await store.begin_payment(uuid.uuid4().hex, "h", p)
        await store.decide_commit(paid.payment_id)
        await store.decide_commit(paid.payment_id)  # a second decision writes nothing
        await store.decide_abort(failed.payment_id, "INSUFFICIENT_FUNDS", "m", release_key=False)
        await store.decide_commit(failed.payment_id)  # lost its race: no event
        await store.authorize(held.payment_id)
        key = OperationKey(ALICE.user_id, "capture-1", "h")
        await store.capture(held.payment_id, 3, LEASE, key)
        await store.cancel(held.payment_id, "CANCELED", LEASE, None)  # lost: no event
        expected = [
            (1, EventType.PAYMENT_SUCCEEDED, paid.payment_id),
            (2, EventType.PAYMENT_FAILED, failed.payment_id),
            (3, EventType.PAYMENT_AUTHORIZED, held.payment_id),
            (4, EventType.PAYMENT_CAPTURED, held.payment_id),
        ]
        assert await kinds(store, ALICE.user_id) == expected
        assert await kinds(store, BOB.user_id) == expected
        assert await kinds(store, CAROL.user_id) == []
        (captured,) = await store.list_events(BOB.user_id, after=3, limit=10)
        assert captured.payment.amount_captured_minor == 3  # the payment after the change
        assert captured.payment.txn_state == TxnState.COMMITTING
        assert await store.event_bounds(ALICE.user_id) == (4, 1)
        # Pruned in bounded batches; the last sequence stays known (an expired cursor).
        now_us = time.time_ns() // 1000 + 1
        assert await store.prune_events(older_than_us=now_us - 60_000_000, limit=10) == 0
        assert await store.prune_events(older_than_us=now_us, limit=5) == 5
        assert await store.prune_events(older_than_us=now_us, limit=5) == 3
        assert await store.event_bounds(ALICE.user_id) == (4, None)

    run(backend.gateway(backend.fresh("gateway")), body)


def test_a_reader_never_sees_a_hole_while_two_stores_write(backend: Backend) -> None:
    location = backend.fresh("gateway")
    writes = 60

    async def body(store: GatewayStore) -> None:
        await with_users(store)
        other = backend.gateway(location)
        await other.open()
        done = asyncio.Event()
        seen: list[int] = []

        async def write(s: GatewayStore, n: int) -> None:
            made = payment(ALICE, BOB if n % 2 else CAROL, 1)
            await s.begin_payment(uuid.uuid4().hex, "h", made)
            await s.decide_commit(made.payment_id)

        async def read() -> None:
            while not done.is_set() or len(seen) < writes:
                page = await store.list_events(ALICE.user_id, after=len(seen), limit=7)
                # Each page starts right after the cursor, with no gap: a sequence read
                # is never followed later by a smaller one committing.
                start = len(seen) + 1
                assert [e.sequence for e in page] == list(range(start, start + len(page)))
                seen.extend(e.sequence for e in page)
                await asyncio.sleep(0)

        try:
            reader = asyncio.create_task(read())
            await asyncio.gather(*(write(store if n % 2 else other, n) for n in range(writes)))
            done.set()
            await asyncio.wait_for(reader, 30)
        finally:
            await other.close()
        assert seen == list(range(1, writes + 1))

    run(backend.gateway(location), body)
