"""Batcher: the calls waiting for one bank leave together, as one batch RPC.

Every payment needs a Prepare, then a Commit or an Abort, at each of its banks. Under load
many are in flight for the same bank at once; sending each as its own RPC makes the CPU
cost of a payment mostly gRPC, interceptors and per-call bookkeeping. A Batcher (one per
bank and operation) queues the calls and sends what is waiting as one batch RPC, which the
bank applies in one database transaction with one fsync (TigerBeetle's design, where a
batch forms from whatever arrived while the previous one was being processed).

Batches form only from what is already waiting, never by a timer: a call that finds fewer
than `max_in_flight` batches on the wire is sent at once, so under light load a batch is
one call and nothing waits longer than before. While `max_in_flight` batches are on the
wire, new calls queue, and the next batch takes up to `max_size` of them as soon as one
returns. The queue is bounded by the callers themselves (the server bounds concurrent
requests, and each request waits for its own calls).

A batcher may also linger (`linger_s`): a call that starts a sender makes it wait
`linger_s` before it takes what is queued, so that the calls of that moment leave together
even at a moderate load, where they seldom coincide; calls queued meanwhile start no other
sender, and a full batch (`max_size`) leaves at once. Lingering trades latency for fewer
RPCs and fewer database transactions at the bank: worth it where the caller does not wait
(commits delivered after the answer), and within a latency budget elsewhere
(docs/performance.md has the numbers).

Each call keeps its own deadline: it fails when the deadline passes, whether it is still
queued (it is then never sent) or on the wire; a batch's RPC deadline is the earliest of
its calls' deadlines. A call whose caller gives up before it was sent is dropped.

Errors: a result's own error fails that call alone; a batch RPC that fails fails each of
its calls with the same translated error. Every bank operation is idempotent, so a call
reported failed whose effect did happen (the RPC failed after the bank applied it) is
exactly the case a single call already had, and the coordinator's re-sends handle it.

Tracing: a batch's RPC runs in the context of its first call (so a lone call's trace is
exactly what it was without batching) inside a span (`span_name`: "bank.batch" for the
banks' calls) that links to the spans of the other calls it carries.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from opentelemetry import trace

from paygate.errors import PaygateError

Item = TypeVar("Item")
Result = TypeVar("Result")

_tracer = trace.get_tracer(__name__)

# send(items, timeout_s): one result or error per item, in order. It may raise; every item
# of the batch then fails with fail(exception), one fresh error per item.
SendBatch = Callable[[list[Item], float], Awaitable[Sequence[Result | PaygateError]]]


@dataclasses.dataclass(eq=False)
class _Waiting(Generic[Item, Result]):
    item: Item
    deadline: float  # on the event loop's clock
    future: asyncio.Future[Result]
    context: contextvars.Context


class Batcher(Generic[Item, Result]):
    def __init__(
        self,
        name: str,
        send: SendBatch[Item, Result],
        *,
        fail: Callable[[BaseException], PaygateError],
        expired: Callable[[], PaygateError],
        max_size: int,
        max_in_flight: int,
        observe_size: Callable[[int], None] | None = None,
        span_name: str = "batch",
        linger_s: float = 0.0,
    ) -> None:
        if max_size < 1 or max_in_flight < 1 or linger_s < 0:
            raise ValueError(
                "a batcher needs max_size >= 1, max_in_flight >= 1 and linger_s >= 0"
            )
        self.name = name
        self._send = send
        self._fail = fail
        self._expired = expired
        self._max_size = max_size
        self._max_in_flight = max_in_flight
        self._observe_size = observe_size
        self._span_name = span_name
        self._linger_s = linger_s
        # Set while a sender lingers; a full queue wakes it early.
        self._full: asyncio.Event | None = None
        self._queue: deque[_Waiting[Item, Result]] = deque()
        self._in_flight = 0
        self._senders: set[asyncio.Task[None]] = set()

    async def call(self, item: Item, *, timeout_s: float) -> Result:
        """Send `item` in the next batch and return its result (or raise its error)."""
        loop = asyncio.get_running_loop()
        waiting: _Waiting[Item, Result] = _Waiting(
            item, loop.time() + timeout_s, loop.create_future(), contextvars.copy_context()
        )
        self._queue.append(waiting)
        if self._full is not None:
            if len(self._queue) >= self._max_size:
                self._full.set()
        elif self._in_flight < self._max_in_flight:
            self._in_flight += 1
            if self._linger_s:
                # Set now, not when the sender first runs: calls queued before that join it.
                self._full = asyncio.Event()
            sender = asyncio.create_task(self._send_while_waiting())
            self._senders.add(sender)
            sender.add_done_callback(self._senders.discard)
        # A caller that is cancelled, or whose deadline passes, cancels the future: the
        # sender skips it if it is still queued, and ignores its result if it was sent.
        try:
            async with asyncio.timeout_at(waiting.deadline):
                return await waiting.future
        except TimeoutError:
            raise self._expired() from None

    async def _send_while_waiting(self) -> None:
        try:
            if self._full is not None:
                await self._linger(self._full)
            while batch := self._take():
                await self._send_batch(batch)
        finally:
            # No await between the last _take() and this: a call queued after it saw
            # this sender still counted, so it either was taken or starts a new sender.
            self._in_flight -= 1

    async def _linger(self, full: asyncio.Event) -> None:
        """Wait linger_s, or until a batch is full, for more calls to join the first."""
        try:
            if len(self._queue) < self._max_size:
                async with asyncio.timeout(self._linger_s):
                    await full.wait()
        except TimeoutError:
            pass
        finally:
            self._full = None

    def _take(self) -> list[_Waiting[Item, Result]]:
        """The next batch: up to max_size waiting calls, failing those past their deadline."""
        now = asyncio.get_running_loop().time()
        batch: list[_Waiting[Item, Result]] = []
        while self._queue and len(batch) < self._max_size:
            waiting = self._queue.popleft()
            if waiting.future.done():
                continue  # its caller gave up
            if waiting.deadline <= now:
                waiting.future.set_exception(self._expired())
                continue
            batch.append(waiting)
        return batch

    async def _send_batch(self, batch: list[_Waiting[Item, Result]]) -> None:
        if self._observe_size is not None:
            self._observe_size(len(batch))
        timeout_s = min(w.deadline for w in batch) - asyncio.get_running_loop().time()
        try:
            # The RPC runs in the first call's context (its span is the parent).
            outcomes = await asyncio.create_task(
                self._send_traced(batch, timeout_s), context=batch[0].context.copy()
            )
        except asyncio.CancelledError:
            for waiting in batch:
                waiting.future.cancel()
            raise
        except Exception as exc:
            self._fail_all(batch, exc)
            return
        if len(outcomes) != len(batch):
            self._fail_all(
                batch, RuntimeError(f"{self.name}: {len(outcomes)} results for {len(batch)} calls")
            )
            return
        for waiting, outcome in zip(batch, outcomes, strict=True):
            if waiting.future.done():
                continue
            if isinstance(outcome, PaygateError):
                waiting.future.set_exception(outcome)
            else:
                waiting.future.set_result(outcome)

    def _fail_all(self, batch: list[_Waiting[Item, Result]], exc: BaseException) -> None:
        """Fail every call of a batch still waiting, each with an error of its own."""
        for waiting in batch:
            if not waiting.future.done():
                waiting.future.set_exception(self._fail(exc))

    async def _send_traced(
        self, batch: list[_Waiting[Item, Result]], timeout_s: float
    ) -> Sequence[Result | PaygateError]:
        links = []
        for waiting in batch[1:]:
            span_context = waiting.context.run(trace.get_current_span).get_span_context()
            if span_context.is_valid:
                links.append(trace.Link(span_context))
        with _tracer.start_as_current_span(
            self._span_name,
            attributes={"paygate.batch": self.name, "paygate.batch.size": len(batch)},
            links=links,
        ):
            return await self._send([w.item for w in batch], timeout_s)

    async def close(self) -> None:
        """Stop the senders; calls still waiting are cancelled."""
        self._full = None
        for sender in list(self._senders):
            sender.cancel()
        await asyncio.gather(*self._senders, return_exceptions=True)
        while self._queue:
            self._queue.popleft().future.cancel()
