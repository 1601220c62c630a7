"""The relay's deadlines on the database: while another connection holds the gateway's
SQLite file locked longer than timeout_s, every pass gives up at its deadline (the relay
reports the database unhealthy and publishes nothing), and once the lock is gone it
publishes everything that waited. Needs RabbitMQ (skipped without, with the reason)."""

from __future__ import annotations

import asyncio
import pathlib
import sqlite3
import time
import uuid

from paygate.common.config import config_from_mapping
from paygate.gateway.store import SqliteGatewayStore
from rabbitmq import Bound, by_message_id, require_rabbitmq, unique_exchange
from relay_helpers import InProcessRelay, relay_settings, stored_events, until_drained
from test_store_contract import ALICE, BOB, payment, with_users

LOCKED_S = 2.0
TIMEOUT_S = 0.3


async def paid(path: pathlib.Path, count: int) -> None:
    store = SqliteGatewayStore(path)
    await store.open()
    try:
        await with_users(store)
        for _ in range(count):
            p = payment(ALICE, BOB)
            await store.begin_payment(uuid.uuid4().hex, "h", p)
            await store.decide_commit(p.payment_id)
    finally:
        await store.close()


def test_a_locked_database_fails_each_pass_at_its_deadline_and_nothing_is_lost(
    tmp_path: pathlib.Path,
) -> None:
    url = require_rabbitmq()
    path = tmp_path / "gateway.db"
    asyncio.run(paid(path, 5))
    suite = config_from_mapping({"gateway": {"database": str(path)}}, base=tmp_path)
    exchange = unique_exchange("deadline")
    bound = asyncio.run(Bound.declare(url, exchange, {"all": "#"}))
    settings = relay_settings(url, exchange, timeout_s=TIMEOUT_S, lease_s=1.0)

    async def locked_then_free() -> tuple[dict[str, bool], float, float]:
        lock = sqlite3.connect(path, isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")  # nobody else may read or write meanwhile
        relay = await InProcessRelay.open(suite, settings, "deadline")
        task = asyncio.create_task(relay.relay.run_forever())
        try:
            started = time.monotonic()
            await asyncio.sleep(LOCKED_S)
            health, failures = (
                relay.relay.health,
                relay.metric("paygate_relay_failures_total", kind="database"),
            )
            published_while_locked = relay.published
            lock.execute("ROLLBACK")
            lock.close()
            await until_drained(path, 10.0)
            assert time.monotonic() - started < LOCKED_S + 10.0
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await relay.close()
        assert published_while_locked == 0
        return health, failures, relay.published

    try:
        health, failures, published = asyncio.run(locked_then_free())
        received = asyncio.run(bound.drain("all"))
    finally:
        asyncio.run(bound.close())
    assert health == {"database": False, "broker": True}
    # Each pass gave up within its deadline (plus its backoff): several failed while locked.
    assert failures >= 2
    assert published == 10
    assert sorted(by_message_id(received)) == sorted(e.event_id for e in stored_events(path))
