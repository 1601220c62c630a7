"""Outbox: the durable queue of payments the gateway could not be reached for, and its reports.

    outbox = Outbox()                        # $XDG_STATE_HOME/paygate/outbox.db
    outbox.add_callback(print)               # called with each Outcome
    async with AsyncClient(target, ca_cert=ca, outbox=outbox) as client:
        await client.login("alice", password)
        result = await client.pay("bob", 500, queue_if_offline=True)
        if isinstance(result, QueuedPayment):
            print("queued under key", result.idempotency_key)
        client.start_delivery()              # sends queued payments once the gateway answers
        async for outcome in outbox.outcomes():
            ...

The rows live in outbox_store, the sending in delivery. This module holds what an embedding
application sees: the Outcome of each payment, callbacks, an async iterator, and metrics on
the outbox's own prometheus CollectorRegistry (never the global one).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import pathlib
import time
from collections.abc import AsyncIterator, Callable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge

from paygate.client._models import Payment
from paygate.client.outbox_models import EntryState, QueuedPayment, default_outbox_path
from paygate.client.outbox_store import OutboxStore
from paygate.errors import PaygateError

MAX_UNREAD_OUTCOMES = 1_000  # per async iterator; older ones are dropped, and logged

_log = logging.getLogger("paygate.client.outbox")
# A library does not print: without the application's logging set up, these lines go nowhere
# (rather than to stderr through logging's last-resort handler). Outcomes are reported anyway.
_log.addHandler(logging.NullHandler())


@dataclasses.dataclass(frozen=True, kw_only=True)
class Outcome:
    """How a queued payment ended: the gateway's payment, or its final error; or that it
    was held for review (needs_review: no payment, no error) and will not be sent again
    unless its user requeues it."""

    entry: QueuedPayment  # as recorded: state succeeded, failed or needs_review
    payment: Payment | None = None
    error: PaygateError | None = None

    @property
    def succeeded(self) -> bool:
        return self.entry.state == EntryState.SUCCEEDED

    @property
    def needs_review(self) -> bool:
        return self.entry.state == EntryState.NEEDS_REVIEW


OutcomeCallback = Callable[[Outcome], None]


class OutboxMetrics:
    """Queue depth, attempts and outcomes. Labels are fixed words: never a key or a name."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.depth = Gauge(
            "paygate_client_outbox_depth",
            "Payments in the outbox that have not ended yet (queued or being sent).",
            registry=registry,
        )
        self.attempts = Counter(
            "paygate_client_outbox_attempts",
            "Attempts to send a queued payment, by result.",
            ["result"],  # succeeded, failed, retry, unauthenticated
            registry=registry,
        )
        self.outcomes = Counter(
            "paygate_client_outbox_outcomes",
            "Queued payments that ended, by state.",
            ["state"],  # succeeded, failed, needs_review
            registry=registry,
        )


class Outbox:
    """A SQLite outbox file, opened on first use. The client it is given to closes it."""

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = (
            pathlib.Path(path)
            if path is not None
            else default_outbox_path(os.environ if environ is None else environ)
        )
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = OutboxMetrics(self.registry)
        self.store = OutboxStore(self.path, clock=clock)
        self._callbacks: list[OutcomeCallback] = []
        self._subscribers: set[asyncio.Queue[Outcome | None]] = set()
        self._opened = False
        self._closed = False

    async def open(self) -> None:
        """Create or open the file; called by every other method, so optional."""
        if self._closed:
            raise RuntimeError(f"outbox {self.path} is closed")
        if not self._opened:
            await self.store.open()
            self._opened = True
            await self.refresh_depth()

    async def close(self) -> None:
        """Close the file and end every outcomes() iterator."""
        for queue in self._subscribers:
            _put_dropping_oldest(queue, None)
        if self._opened:
            await self.store.close()
        self._opened = False
        self._closed = True

    # Reading and forgetting, for people ----------------------------------------------

    async def entries(self, gateway: str, payer: str, *, limit: int = 100) -> list[QueuedPayment]:
        """The payer's unsettled payments and the latest settled ones, in queue order."""
        await self.open()
        return await self.store.entries(gateway, payer, limit=limit)

    async def find(self, gateway: str, payer: str, ref: str) -> QueuedPayment | None:
        """The payer's payment with this entry id or idempotency key."""
        await self.open()
        return await self.store.find(gateway, payer, ref)

    async def forget(self, entry_id: int) -> QueuedPayment:
        """Drop a payment that is queued and not being sent; raises FailedPrecondition else."""
        await self.open()
        entry = await self.store.forget(entry_id)
        _log.info(
            "forgot queued payment %s",
            entry.idempotency_key,
            extra={"fields": {"key": entry.idempotency_key, "attempts": entry.attempts}},
        )
        await self.refresh_depth()
        return entry

    async def requeue(self, entry_id: int) -> QueuedPayment:
        """Queue a needs_review payment again, once its user has checked (`paygate payments`)
        that the gateway did not make it; raises FailedPrecondition for any other state."""
        await self.open()
        entry = await self.store.requeue(entry_id)
        _log.info(
            "queued payment %s again after review",
            entry.idempotency_key,
            extra={"fields": {"key": entry.idempotency_key, "attempts": entry.attempts}},
        )
        await self.refresh_depth()
        return entry

    # Notification --------------------------------------------------------------------

    def add_callback(self, callback: OutcomeCallback) -> None:
        """Call `callback(outcome)` for each payment this process sees end."""
        self._callbacks.append(callback)

    def remove_callback(self, callback: OutcomeCallback) -> None:
        self._callbacks.remove(callback)

    async def outcomes(self) -> AsyncIterator[Outcome]:
        """Each outcome reported from now on, until the outbox is closed."""
        queue: asyncio.Queue[Outcome | None] = asyncio.Queue(MAX_UNREAD_OUTCOMES)
        self._subscribers.add(queue)
        try:
            while (outcome := await queue.get()) is not None:
                yield outcome
        finally:
            self._subscribers.discard(queue)

    def publish(self, outcome: Outcome) -> None:
        self.metrics.outcomes.labels(state=str(outcome.entry.state)).inc()
        for queue in self._subscribers:
            _put_dropping_oldest(queue, outcome)
        for callback in list(self._callbacks):
            try:
                callback(outcome)
            except Exception:
                # An application's bug must not stop the delivery of the other payments.
                _log.exception("outcome callback failed")

    async def refresh_depth(self) -> None:
        self.metrics.depth.set(await self.store.depth())


def _put_dropping_oldest(queue: asyncio.Queue[Outcome | None], item: Outcome | None) -> None:
    if queue.full():
        with contextlib.suppress(asyncio.QueueEmpty):
            queue.get_nowait()
        _log.warning("an outcomes() reader is %d outcomes behind; dropped the oldest",
                     MAX_UNREAD_OUTCOMES)
    queue.put_nowait(item)
