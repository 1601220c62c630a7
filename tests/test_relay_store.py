"""The relay's store on SQLite and PostgreSQL (paygate.relay.store): one relay at a time
holds the lease, the unpublished events come oldest first with their user's name, a mark
takes them out for good, and the lag counts what waits.
"""

from __future__ import annotations

import asyncio
import pathlib
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

from paygate.common.config import config_from_mapping
from paygate.common.database_url import DatabaseLocation, PostgresUrl
from paygate.gateway.store import GatewayStore
from paygate.relay import store as stores
from paygate.relay.store import Lag, RelayStore
from test_store_contract import ALICE, BOB, Backend, backend, payment, pg_schemas, with_users

__all__ = ["backend", "pg_schemas"]  # the fixtures, used by name
T = TypeVar("T")
LEASE_S = 10.0


def relay_store(location: DatabaseLocation) -> RelayStore:
    """The relay's store as paygate-relay picks it, from a config naming the database."""
    database = location.url if isinstance(location, PostgresUrl) else str(location)
    config = config_from_mapping({"gateway": {"database": database}}, base=pathlib.Path("/"))
    store = stores.relay_store(config.gateway)
    expected = "PostgresRelayStore" if isinstance(location, PostgresUrl) else "SqliteRelayStore"
    assert type(store).__name__ == expected
    return store


def run_both(
    backend: Backend, body: Callable[[GatewayStore, RelayStore, RelayStore], Awaitable[T]]
) -> T:
    """body(gateway store, relay store, another relay's store), all on one new database."""
    location = backend.fresh("gateway")

    async def main() -> T:
        gateway = backend.gateway(location)
        await gateway.open()
        relays = [relay_store(location), relay_store(location)]
        for relay in relays:
            await relay.open()
        try:
            return await body(gateway, *relays)
        finally:
            for store in (*relays, gateway):
                await store.close()

    return asyncio.run(main())


def test_one_relay_at_a_time_holds_the_lease_until_it_expires_or_is_let_go(
    backend: Backend,
) -> None:
    async def body(_: GatewayStore, one: RelayStore, other: RelayStore) -> None:
        now_s = time.time()
        assert await one.take_lease("one", now_s=now_s, lease_s=LEASE_S)
        assert not await other.take_lease("other", now_s=now_s + 1, lease_s=LEASE_S)
        assert await one.take_lease("one", now_s=now_s + 2, lease_s=LEASE_S)  # renewed
        # Not expired at now + 11 (renewed at now + 2), expired at now + 12.
        assert not await other.take_lease("other", now_s=now_s + 11, lease_s=LEASE_S)
        assert await other.take_lease("other", now_s=now_s + 12, lease_s=LEASE_S)
        assert not await one.take_lease("one", now_s=now_s + 13, lease_s=LEASE_S)
        await one.release_lease("one")  # not its lease: nothing changes
        assert not await one.take_lease("one", now_s=now_s + 13, lease_s=LEASE_S)
        await other.release_lease("other")
        assert await one.take_lease("one", now_s=now_s + 13, lease_s=LEASE_S)

    run_both(backend, body)


def test_unpublished_events_come_oldest_first_and_a_mark_takes_them_out(
    backend: Backend,
) -> None:
    async def body(gateway: GatewayStore, relay: RelayStore, other: RelayStore) -> None:
        await with_users(gateway)
        assert await relay.lag() == Lag(0, None)
        paid = [payment(ALICE, BOB, amount) for amount in (10, 20, 30)]
        for p in paid:
            await gateway.begin_payment(uuid.uuid4().hex, "h", p)
            await gateway.decide_commit(p.payment_id)
        waiting = await relay.unpublished(100)
        assert [(e.username, e.sequence, e.type) for e in waiting] == [
            (name, sequence, "payment.succeeded")
            for sequence in (1, 2, 3)
            for name in ("alice", "bob")
        ]
        assert [e.id for e in waiting] == sorted(e.id for e in waiting)
        lag = await relay.lag()
        assert lag.unpublished == 6 and lag.oldest_create_time_us == waiting[0].create_time_us
        assert len(await relay.unpublished(4)) == 4
        now_s = time.time()
        assert await relay.take_lease("r", now_s=now_s, lease_s=LEASE_S)
        marked = [e.id for e in waiting[:4]]
        assert await relay.mark_published(marked, owner="r", now_s=now_s, lease_s=LEASE_S)
        left = await other.unpublished(100)  # as any relay sees it
        assert [e.event_id for e in left] == [e.event_id for e in waiting[4:]]
        assert (await other.lag()).oldest_create_time_us == left[0].create_time_us
        # A mark by a relay that lost the lease still stands (the broker has the events),
        # and says the lease is gone.
        assert await other.take_lease("o", now_s=now_s + LEASE_S, lease_s=LEASE_S)
        ids = [e.id for e in left]
        assert not await relay.mark_published(ids, owner="r", now_s=now_s + 11, lease_s=LEASE_S)
        assert await other.unpublished(100) == []
        assert (await other.lag()).unpublished == 0

    run_both(backend, body)
