"""The relay: publish every unpublished event, in order, and mark it once the broker confirms.

One pass, while this relay holds the lease (relay_lease, store.py):

1. take or renew the lease, until now + lease_s;
2. read up to batch_size unpublished events, oldest first (by id);
3. publish them and wait for the broker's confirms (within timeout_s, which the lease
   outlives: config.py checks lease_s >= 3 x timeout_s);
4. mark the confirmed ones published, and renew the lease, in one transaction.

A crash anywhere loses nothing: an event is marked only after its confirm, so one the
broker confirmed but that was not yet marked is published again by the next pass of any
relay (at least once; consumers de-duplicate by message id, docs/events.md). When the
broker is down the relay lets the lease go, so that a relay that can reach its broker
takes over, and connects again with bounded, jittered backoff; when the database is down
it waits the same way. Neither ends the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import sqlite3
import time
from collections.abc import Awaitable
from typing import TypeVar

from paygate.common.config import RelayConfig
from paygate.errors import Unavailable
from paygate.relay.broker import Broker, BrokerUnavailable
from paygate.relay.message import outgoing
from paygate.relay.metrics import RelayMetrics
from paygate.relay.store import RelayStore

T = TypeVar("T")
_log = logging.getLogger("paygate.relay")

BACKOFF_FIRST_S = 0.2
LAG_INTERVAL_S = 2.0  # how often the lag gauges are read (a count of the backlog)


class DatabaseUnavailable(Exception):
    """The gateway's database did not answer within the deadline, or refused."""


@dataclasses.dataclass
class Backoff:
    """Waits that double from `first_s` up to `max_s`, each drawn in [half, all] of it."""

    first_s: float
    max_s: float
    attempt: int = 0

    def next_s(self) -> float:
        wait_s: float = min(self.max_s, self.first_s * 2.0**self.attempt)
        self.attempt = min(self.attempt + 1, 32)
        return wait_s * (0.5 + random.random() / 2)

    def reset(self) -> None:
        self.attempt = 0


class Relay:
    def __init__(
        self,
        store: RelayStore,
        broker: Broker,
        settings: RelayConfig,
        metrics: RelayMetrics,
        *,
        owner: str,
    ) -> None:
        self._store = store
        self._broker = broker
        self._settings = settings
        self._metrics = metrics
        self.owner = owner  # this instance's id in relay_lease; unique per start
        self._held = False
        self.database_ok = False

    @property
    def health(self) -> dict[str, bool]:
        return {"database": self.database_ok, "broker": self._broker.connected}

    async def run_forever(self) -> None:
        """Publish until cancelled; failures wait with backoff and never end the loop."""
        backoff = Backoff(BACKOFF_FIRST_S, self._settings.reconnect_max_s)
        while True:
            try:
                if not self._broker.connected:
                    await self._connect()
                published = await self.pass_once()
            except (BrokerUnavailable, DatabaseUnavailable) as exc:
                await self._failed(exc, backoff.next_s())
                continue
            backoff.reset()
            if published < self._settings.batch_size:
                await asyncio.sleep(self._settings.poll_interval_s)

    async def pass_once(self) -> int:
        """One pass (the module's steps); how many events were published."""
        settings = self._settings
        now_s = time.time()
        take = self._store.take_lease(self.owner, now_s=now_s, lease_s=settings.lease_s)
        held = await self._db(take)
        self._note_lease(held)
        if not held:
            return 0
        events = await self._db(self._store.unpublished(settings.batch_size))
        if not events or time.time() + settings.timeout_s >= now_s + settings.lease_s:
            return 0  # nothing to do, or too little of the lease left to publish safely
        started = time.monotonic()
        result = await self._broker.publish([outgoing(event) for event in events])
        if result.confirmed:
            self._metrics.batch_seconds.observe(time.monotonic() - started)
            mark = self._store.mark_published(
                result.confirmed, owner=self.owner, now_s=time.time(), lease_s=settings.lease_s
            )
            self._note_lease(await self._db(mark))
            self._metrics.published.inc(len(result.confirmed))
        if result.failure is not None:
            raise result.failure
        return len(result.confirmed)

    async def lag_forever(self) -> None:
        """Every LAG_INTERVAL_S, the lag gauges, whichever relay holds the lease."""
        while True:
            try:
                lag = await self._db(self._store.lag())
            except DatabaseUnavailable as exc:
                _log.warning("cannot read the relay's lag", extra={"fields": {"error": str(exc)}})
            else:
                self._metrics.unpublished.set(lag.unpublished)
                oldest = lag.oldest_create_time_us
                age_s = 0.0 if oldest is None else max(0.0, time.time() - oldest / 1e6)
                self._metrics.oldest_unpublished_age.set(age_s)
            await asyncio.sleep(LAG_INTERVAL_S)

    async def close(self) -> None:
        """Let the lease go (another relay takes over at once) and leave the broker."""
        await self._release()
        await self._broker.close()
        self._metrics.broker_connected.set(0)

    async def _connect(self) -> None:
        await self._broker.connect()
        self._metrics.broker_connected.set(1)
        _log.info("connected to the broker", extra={"fields": {"broker": self._broker.where}})

    async def _failed(self, exc: Exception, wait_s: float) -> None:
        kind = "broker" if isinstance(exc, BrokerUnavailable) else "database"
        self._metrics.failures.labels(kind).inc()
        _log.warning(
            f"{kind} unavailable; trying again",
            extra={"fields": {"error": str(exc), "retry_in_s": round(wait_s, 3)}},
        )
        if kind == "broker":
            self._metrics.broker_connected.set(0)
            await self._broker.close()
            await self._release()  # a relay that can reach its broker may take over
        else:  # it may expire meanwhile: publish nothing until it is taken again
            self._note_lease(False, "lost the lease with the database")
        await asyncio.sleep(wait_s)

    async def _release(self) -> None:
        """Let the lease go, if held; when the database does not answer, it expires."""
        if self._held:
            with contextlib.suppress(DatabaseUnavailable):
                await self._db(self._store.release_lease(self.owner))
            self._note_lease(False, "let the lease go")

    async def _db(self, operation: Awaitable[T]) -> T:
        """A database operation within timeout_s; DatabaseUnavailable if it fails."""
        try:
            async with asyncio.timeout(self._settings.timeout_s):
                result = await operation
        except (TimeoutError, Unavailable, OSError, sqlite3.OperationalError) as exc:
            self.database_ok = False
            raise DatabaseUnavailable(str(exc) or type(exc).__name__) from None
        self.database_ok = True
        return result

    def _note_lease(self, held: bool, released: str = "") -> None:
        if held != self._held:
            what = "took the lease: publishing" if held else "lost the lease to another relay"
            _log.info(released or what, extra={"fields": {"owner": self.owner}})
        self._held = held
        self._metrics.lease_held.set(1 if held else 0)
