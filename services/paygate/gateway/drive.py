"""Drive: one transaction being driven by coordinator.py, and PhaseSpan, the span and
duration of one phase of a transaction at all its banks.

A phase ("2pc.prepare", "2pc.commit", "2pc.abort") opens with its first send and ends when
the transition function moves the transaction out of it (transitions.phase_of); its
outcome attribute says how it ended (transitions.outcome_of). The banks' calls of the phase
run inside it, so their spans are its children.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import time
from collections.abc import Coroutine
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from prometheus_client import Histogram

from paygate.common.metrics import observe
from paygate.gateway import transitions as t
from paygate.gateway.models import BeginResult, OperationKey, Payment
from paygate.gateway.transitions import Decision

_tracer = trace.get_tracer("paygate.gateway.coordinator")


class PhaseSpan:
    def __init__(self, phase: str, payment: Payment) -> None:
        self.phase = phase
        attributes: dict[str, Any] = {
            "paygate.transaction_id": payment.payment_id,
            "paygate.banks": sorted(payment.participants),
        }
        if payment.one_phase:
            attributes["paygate.one_phase"] = True
        self._span = _tracer.start_span(f"2pc.{phase}", attributes=attributes)
        self._started = time.perf_counter()

    def context(self) -> contextvars.Context:
        """A copy of the current context with this span current: for the phase's calls."""
        token = otel_context.attach(trace.set_span_in_context(self._span))
        try:
            return contextvars.copy_context()
        finally:
            otel_context.detach(token)

    def end(self, txn: t.Txn, seconds: Histogram) -> None:
        self._span.set_attribute("paygate.outcome", t.outcome_of(self.phase, txn))
        self._span.end()
        observe(seconds.labels(self.phase), time.perf_counter() - self._started)


class Drive:
    """One transaction being driven: its value, the events not yet stepped, the actions not
    yet carried out, and the bank calls in flight."""

    def __init__(self, payment: Payment, txn: t.Txn, step: t.Step, first: t.Event) -> None:
        self.payment = payment
        self.txn, actions = step(txn, first)
        self.todo: collections.deque[t.Action] = collections.deque(actions)
        self.inbox: asyncio.Queue[t.Event] = asyncio.Queue()
        self.calls: set[asyncio.Task[None]] = set()
        self.answer: Decision | None = None
        self.span: PhaseSpan | None = None
        # A capture's or a cancellation's idempotency key, written with its decision; what
        # the key held instead, when it had been used before.
        self.key: OperationKey | None = None
        self.key_taken: BeginResult | None = None

    def call(self, job: Coroutine[Any, Any, t.Event]) -> None:
        """Start a bank call (inside the phase's span) whose answer becomes an event."""

        async def deliver() -> None:
            self.inbox.put_nowait(await job)

        context = self.span.context() if self.span is not None else None
        task = asyncio.create_task(deliver(), context=context)
        self.calls.add(task)
        task.add_done_callback(self.calls.discard)

    def enter_phase(self, phase: str | None) -> None:
        """Open the phase's span, unless it is open already."""
        if phase is not None and (self.span is None or self.span.phase != phase):
            self.span = PhaseSpan(phase, self.payment)

    def end_phase(self, seconds: Histogram) -> None:
        if self.span is not None:
            self.span.end(self.txn, seconds)
            self.span = None

    async def stop_calls(self) -> None:
        for task in list(self.calls):
            task.cancel()
        await asyncio.gather(*self.calls, return_exceptions=True)
