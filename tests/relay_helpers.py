"""What the relay tests share: relay settings for a test, the events as the gateway's SQLite
file holds them, and a relay built in the test process (paygate.relay's own parts)."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import time
from typing import Any

import psycopg
from paygate.common.config import RelayConfig, SuiteConfig
from paygate.common.database_url import DatabaseLocation, PostgresUrl
from paygate.common.metrics import new_registry
from paygate.relay.broker import Broker
from paygate.relay.metrics import RelayMetrics
from paygate.relay.relay import Relay
from paygate.relay.store import RelayStore, relay_store
from prometheus_client import CollectorRegistry

DRAIN_TIMEOUT_S = 30.0


def relay_settings(url: str, exchange: str, **overrides: Any) -> RelayConfig:
    """Short times, so that a test sees a pass, a failover and a reconnection quickly."""
    settings: dict[str, Any] = {
        "amqp_url": url,
        "exchange": exchange,
        "metrics": "127.0.0.1:0",
        "batch_size": 20,
        "poll_interval_s": 0.05,
        "timeout_s": 2.0,
        "lease_s": 6.0,
        "reconnect_max_s": 1.0,
        **overrides,
    }
    return RelayConfig(**settings)


@dataclasses.dataclass(frozen=True)
class StoredEvent:
    id: int
    event_id: str
    username: str
    sequence: int
    type: str
    create_time_us: int
    body: str
    published: bool


EVENTS_SQL = (
    "SELECT e.id, e.event_id, u.username, e.sequence, e.type, e.create_time_us, e.body,"
    " e.published FROM events e JOIN users u ON u.user_id = e.user_id ORDER BY e.id"
)


def stored_events(database: DatabaseLocation) -> list[StoredEvent]:
    """Every event in the gateway's database (its SQLite file, or its PostgreSQL schema),
    oldest first, read with a connection of the test's own (what the gateway wrote, not
    what the relay read)."""
    if isinstance(database, PostgresUrl):
        with psycopg.connect(database.url, connect_timeout=10) as conn:
            rows = conn.execute(EVENTS_SQL).fetchall()
    else:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10) as conn:
            rows = conn.execute(EVENTS_SQL).fetchall()
    return [StoredEvent(*row[:7], published=bool(row[7])) for row in rows]


@dataclasses.dataclass
class InProcessRelay:
    """A Relay on the suite's gateway database, built from the relay's own parts."""

    relay: Relay
    store: RelayStore
    registry: CollectorRegistry

    @classmethod
    async def open(cls, suite: SuiteConfig, settings: RelayConfig, name: str) -> InProcessRelay:
        store = relay_store(suite.gateway)
        await store.open()
        broker = Broker(
            settings.amqp_url, settings.exchange, timeout_s=settings.timeout_s, name=name
        )
        registry = new_registry()
        metrics = RelayMetrics.build(registry)
        return cls(Relay(store, broker, settings, metrics, owner=f"{name}-test"), store, registry)

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0

    @property
    def published(self) -> int:
        return int(self.metric("paygate_relay_events_published_total"))

    @property
    def lease_held(self) -> bool:
        return self.metric("paygate_relay_lease_held") == 1

    async def close(self) -> None:
        await self.relay.close()
        await self.store.close()


async def until_drained(database: DatabaseLocation, timeout_s: float = DRAIN_TIMEOUT_S) -> None:
    """Wait until every event in the database is marked published."""
    deadline = time.monotonic() + timeout_s
    while True:
        events = await asyncio.to_thread(stored_events, database)
        if events and all(e.published for e in events):
            return
        if time.monotonic() > deadline:
            waiting = sum(1 for e in events if not e.published)
            raise AssertionError(
                f"{waiting} of {len(events)} events unpublished after {timeout_s} s"
            )
        await asyncio.sleep(0.1)
