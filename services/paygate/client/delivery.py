"""Delivery: send a payer's queued payments, oldest first, each under the key it was queued with.

A run claims the payer's head row (outbox_store leases it to this process), sends it, and
records the answer: a payment or a final error settles the row and is reported once; a
transient failure (no answer, a bank away, the key still in flight at the gateway) puts it
back and is retried after an exponential backoff with full jitter, at most
`max_attempts_per_run` times per run. An UNAUTHENTICATED answer ends the run: every other
payment would get the same until the user logs in again.

Sending twice is safe while the gateway keeps the key (idempotency_ttl_s, 24 h): it runs a
key once and replays its answer after. Leases only keep two processes from racing for no
purpose and keep the order. Past the key's window a resend could run the payment again, so
a row whose first attempt may have reached the gateway more than `key_ttl_s` ago is not sent
but moved to needs_review and reported; a person checks `paygate payments` and forgets or
requeues it. An attempt counts as maybe delivered unless we know it was not: the channel
never connected (see `maybe_delivered`), or the gateway answered that nothing ran.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import logging
import math
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Protocol

from paygate.client._models import Payment, PaymentStatus
from paygate.client.outbox import Outbox, Outcome
from paygate.client.outbox_models import (
    DEFAULT_KEY_TTL_S,
    EntryState,
    PaymentOrder,
    QueuedPayment,
    Settlement,
)
from paygate.client.outbox_store import Blocked, this_process_lease
from paygate.errors import (
    Aborted,
    NotFound,
    PaygateError,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)

LEASE_MARGIN_S = 5.0  # beyond the call's deadline, for the answer to be written down
BLOCKED_POLL_S = 0.2
MAX_WAIT_S = 24 * 3600.0
# What grpc-core says when a call fails because the channel has no connection (it could not
# connect, or not resolve the name): the request was never written to a socket.
NEVER_SENT_MARKERS = ("failed to connect to all addresses", "errors resolving",
                      "dns resolution failed")
# BANK_UNAVAILABLE and BANK_TIMEOUT are not among the answers that say nothing ran: for a
# payment between two banks they mean an abort before the decision, but for one within one
# bank (a one-phase commit) the bank may commit after the gateway answered, and the key
# stays in use until the gateway knows (docs/protocol.md, "One bank").

_log = logging.getLogger("paygate.client.outbox")


class Verdict(enum.StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    RETRY = "retry"
    UNAUTHENTICATED = "unauthenticated"


class RunEnd(enum.StrEnum):
    EMPTY = "empty"  # nothing of this payer is left to send
    DONE = "done"  # the payment the run was started for has ended
    RETRY_LATER = "retry_later"  # the run's attempts went to transient failures
    NEEDS_LOGIN = "needs_login"  # the gateway refused the token
    BLOCKED = "blocked"  # another process is sending this payer's next payment


@dataclasses.dataclass(frozen=True, kw_only=True)
class DeliverySettings:
    max_attempts_per_run: int = 5
    backoff_initial_s: float = 0.25
    backoff_max_s: float = 4.0
    poll_interval_s: float = 1.0  # how often the gateway's health is asked while it is away
    # How long after an attempt that may have reached the gateway a resend is still safe:
    # the gateway's idempotency_ttl_s minus a margin. Older rows go to needs_review.
    key_ttl_s: float = DEFAULT_KEY_TTL_S

    def __post_init__(self) -> None:
        if self.max_attempts_per_run < 1:
            raise ValueError("max_attempts_per_run must be at least 1")
        if not 0 < self.backoff_initial_s <= self.backoff_max_s:
            raise ValueError("need 0 < backoff_initial_s <= backoff_max_s")
        if not 0.1 <= self.poll_interval_s <= 60:
            raise ValueError("poll_interval_s must be between 0.1 and 60")
        if not (math.isfinite(self.key_ttl_s) and self.key_ttl_s > 0):
            raise ValueError("key_ttl_s must be a positive number of seconds")


@dataclasses.dataclass(frozen=True, kw_only=True)
class DeliveryReport:
    """What a delivery did: the outcomes it recorded, why it stopped, and what is left."""

    outcomes: list[Outcome]
    end: RunEnd
    last_error: str  # the reason of the last transient failure, if any
    pending: int  # this payer's payments still queued
    needs_review: int = 0  # this payer's payments held for a person to decide


class Sender(Protocol):
    async def send(self, entry: QueuedPayment) -> Payment:
        """CreatePayment with the entry's key; raises PaygateError."""

    async def reachable(self) -> bool:
        """Whether the gateway answers its health check as SERVING."""


def verdict_of_error(error: PaygateError) -> Verdict:
    if isinstance(error, Unauthenticated):
        return Verdict.UNAUTHENTICATED
    if isinstance(error, Unavailable | Aborted | ResourceExhausted):
        return Verdict.RETRY
    if type(error) is PaygateError:
        # No status we know (or an answer that broke the protocol): the outcome is
        # unknown, and the key makes asking again safe.
        return Verdict.RETRY
    return Verdict.FAILED


def maybe_delivered(error: PaygateError) -> bool:
    """Whether the request of an attempt that ended in this error may have reached the
    gateway and run there. When unsure: yes (a deadline, a dropped connection, no status)."""
    if isinstance(error, Unauthenticated):
        return False  # the gateway refused the token before running anything
    if isinstance(error, Unavailable) and error.reason == "UNAVAILABLE":
        # No ErrorInfo: the status came from the client's own channel, not the gateway.
        message = error.message.lower()
        return not any(marker in message for marker in NEVER_SENT_MARKERS)
    return True


def verdict_of_payment(payment: Payment) -> Verdict:
    # A PENDING payment was decided: its key is only answered once the commit is.
    return Verdict.FAILED if payment.status == PaymentStatus.FAILED else Verdict.SUCCEEDED


def backoff_s(failures: int, *, initial_s: float, max_s: float, rng: random.Random) -> float:
    """Exponential backoff with full jitter, after `failures` (>= 1) failed attempts."""
    return rng.uniform(0, min(max_s, initial_s * 2 ** (failures - 1)))


@dataclasses.dataclass(frozen=True)
class _Attempt:
    verdict: Verdict
    outcome: Outcome | None = None  # set when this process recorded the end
    error: PaygateError | None = None


class Deliverer:
    """Delivers one payer's queued payments at one gateway."""

    def __init__(
        self,
        outbox: Outbox,
        sender: Sender,
        *,
        gateway: str,
        payer: str,
        call_timeout_s: float,
        settings: DeliverySettings | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self._outbox = outbox
        self._sender = sender
        self.gateway = gateway
        self.payer = payer
        self.settings = settings or DeliverySettings()
        self._lease = this_process_lease(uuid.uuid4().hex, call_timeout_s + LEASE_MARGIN_S)
        self._sleep = sleep
        self._rng = rng or random.Random()

    async def pay_or_queue(self, order: PaymentOrder) -> Payment | QueuedPayment:
        """Queue the order, then send what is ahead of it and it, once each.

        Returns the payment, raises its final error, or returns the queued row when it
        could not be sent now (the row says why in last_error).
        """
        await self._outbox.open()
        entry = await self._outbox.store.enqueue(order)  # on disk before the first attempt
        await self._outbox.refresh_depth()
        if entry.settled:
            # The caller reused the key of an ended payment: the gateway replays its answer.
            return await self._sender.send(entry)
        report = await self.run(until_key=order.idempotency_key, max_attempts=1)
        for outcome in report.outcomes:
            if outcome.entry.idempotency_key != order.idempotency_key:
                continue
            if outcome.error is not None:
                raise outcome.error
            if outcome.payment is not None:
                return outcome.payment
        found = await self._outbox.find(self.gateway, self.payer, order.idempotency_key)
        return found if found is not None else entry

    async def entries(self, *, limit: int) -> list[QueuedPayment]:
        return await self._outbox.entries(self.gateway, self.payer, limit=limit)

    async def find(self, ref: str) -> QueuedPayment:
        entry = await self._outbox.find(self.gateway, self.payer, ref)
        if entry is None:
            raise NotFound(f"no queued payment {ref!r}")
        return entry

    async def forget(self, ref: str) -> QueuedPayment:
        return await self._outbox.forget((await self.find(ref)).entry_id)

    async def deliver(
        self, *, wait_s: float = 0.0, max_attempts: int | None = None
    ) -> DeliveryReport:
        """Send every queued payment of the payer now; with wait_s, keep waiting that long
        for the gateway (asking its health every poll_interval_s) until none is left."""
        deadline = time.monotonic() + min(max(wait_s, 0.0), MAX_WAIT_S)
        outcomes: list[Outcome] = []
        while True:
            report = await self.run(max_attempts=max_attempts)
            outcomes += report.outcomes
            remaining_s = deadline - time.monotonic()
            if report.end in (RunEnd.EMPTY, RunEnd.NEEDS_LOGIN) or remaining_s <= 0:
                return dataclasses.replace(report, outcomes=outcomes)
            if report.end == RunEnd.BLOCKED:
                await self._sleep(min(BLOCKED_POLL_S, remaining_s))
            elif not await self.wait_reachable(remaining_s):
                return dataclasses.replace(report, outcomes=outcomes)

    async def deliver_forever(self) -> None:
        """The background task: deliver whenever there is something to send and the
        gateway answers; notice payments queued by other processes within a poll."""
        poll_s = self.settings.poll_interval_s
        while True:
            report = await self.run()
            if report.end == RunEnd.RETRY_LATER:
                await self._sleep(self.settings.backoff_max_s)
                await self.wait_reachable(MAX_WAIT_S)
            elif report.end == RunEnd.BLOCKED:
                await self._sleep(BLOCKED_POLL_S)
            elif report.end == RunEnd.NEEDS_LOGIN:
                _log.warning("queued payments wait for a new login: the gateway refused the token")
                await self._sleep(poll_s * 10)
            else:
                await self._sleep(poll_s)

    async def wait_reachable(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while not await self._sender.reachable():
            remaining_s = deadline - time.monotonic()
            if remaining_s <= 0:
                return False
            await self._sleep(min(self.settings.poll_interval_s, remaining_s))
        return True

    async def run(
        self, *, until_key: str | None = None, max_attempts: int | None = None
    ) -> DeliveryReport:
        """One run: send head rows until none is left, or until_key's row has been tried,
        or the run's budget of transient failures is spent."""
        await self._outbox.open()
        budget = max_attempts or self.settings.max_attempts_per_run
        failures = 0
        outcomes: list[Outcome] = []
        last_error = ""
        while True:
            claim = await self._outbox.store.claim_head(
                self.gateway, self.payer, self._lease, key_ttl_s=self.settings.key_ttl_s
            )
            if claim is None or isinstance(claim, Blocked):
                end = RunEnd.EMPTY if claim is None else RunEnd.BLOCKED
                return await self._report(outcomes, end, last_error)
            if claim.state == EntryState.NEEDS_REVIEW:
                outcomes.append(self._held_for_review(claim))
                continue
            attempt = await self.attempt(claim)
            if attempt.outcome is not None:
                outcomes.append(attempt.outcome)
            if attempt.verdict == Verdict.UNAUTHENTICATED:
                return await self._report(outcomes, RunEnd.NEEDS_LOGIN, "UNAUTHENTICATED")
            if attempt.verdict == Verdict.RETRY:
                last_error = attempt.error.reason if attempt.error is not None else "UNKNOWN"
                failures += 1
                if failures >= budget or until_key is not None:
                    return await self._report(outcomes, RunEnd.RETRY_LATER, last_error)
                await self._sleep(self._backoff_s(failures))
            elif claim.idempotency_key == until_key:
                return await self._report(outcomes, RunEnd.DONE, last_error)

    async def attempt(self, entry: QueuedPayment) -> _Attempt:
        """Send one claimed row and record what came of it."""
        key, number = entry.idempotency_key, entry.attempts
        _log.info(
            "sending queued payment %s, attempt %d", key, number,
            extra={"fields": {"key": key, "attempt": number}},
        )
        try:
            payment = await self._sender.send(entry)
        except PaygateError as error:
            return await self._answered_with_error(entry, error)
        except asyncio.CancelledError:
            # Put it back now rather than leave it leased to a process that stopped caring.
            await self._outbox.store.release(entry.entry_id, self._lease.owner, "CANCELLED")
            raise
        verdict = verdict_of_payment(payment)
        self._outbox.metrics.attempts.labels(result=str(verdict)).inc()
        settlement = Settlement(
            state=EntryState.SUCCEEDED if verdict == Verdict.SUCCEEDED else EntryState.FAILED,
            payment_id=payment.payment_id,
            payment_status=str(payment.status),
            failure_reason=payment.failure_reason,
        )
        return _Attempt(verdict, await self._settle(entry, settlement, payment, None))

    async def _answered_with_error(self, entry: QueuedPayment, error: PaygateError) -> _Attempt:
        key, number = entry.idempotency_key, entry.attempts
        verdict = verdict_of_error(error)
        self._outbox.metrics.attempts.labels(result=str(verdict)).inc()
        if verdict in (Verdict.RETRY, Verdict.UNAUTHENTICATED):
            _log.warning(
                "queued payment %s not delivered on attempt %d: %s", key, number, error.reason,
                extra={"fields": {"key": key, "attempt": number, "reason": error.reason}},
            )
            await self._outbox.store.release(
                entry.entry_id, self._lease.owner, error.reason,
                maybe_delivered=maybe_delivered(error),
            )
            return _Attempt(verdict, error=error)
        settlement = Settlement(state=EntryState.FAILED, failure_reason=error.reason)
        return _Attempt(verdict, await self._settle(entry, settlement, None, error), error)

    def _held_for_review(self, entry: QueuedPayment) -> Outcome:
        key = entry.idempotency_key
        _log.warning(
            "queued payment %s needs review: an attempt may have reached the gateway at %s,"
            " longer ago than the gateway keeps its key; it is not sent again",
            key, entry.maybe_delivered_at,
            extra={"fields": {"key": key, "attempts": entry.attempts, "state": str(entry.state)}},
        )
        outcome = Outcome(entry=entry)
        self._outbox.publish(outcome)
        return outcome

    async def _settle(
        self,
        entry: QueuedPayment,
        settlement: Settlement,
        payment: Payment | None,
        error: PaygateError | None,
    ) -> Outcome | None:
        recorded = await self._outbox.store.settle(entry.entry_id, settlement)
        if recorded is None:
            return None  # another process recorded (and reported) it first
        _log.info(
            "queued payment %s %s after %d attempts", recorded.idempotency_key, recorded.state,
            recorded.attempts,
            extra={"fields": {"key": recorded.idempotency_key, "state": str(recorded.state),
                              "attempts": recorded.attempts, "reason": recorded.failure_reason}},
        )
        outcome = Outcome(entry=recorded, payment=payment, error=error)
        self._outbox.publish(outcome)
        return outcome

    async def _report(
        self, outcomes: list[Outcome], end: RunEnd, last_error: str
    ) -> DeliveryReport:
        await self._outbox.refresh_depth()
        store = self._outbox.store
        pending = await store.pending(self.gateway, self.payer)
        review = await store.pending(self.gateway, self.payer, EntryState.NEEDS_REVIEW)
        return DeliveryReport(
            outcomes=outcomes, end=end, last_error=last_error, pending=pending,
            needs_review=review,
        )

    def _backoff_s(self, failures: int) -> float:
        settings = self.settings
        return backoff_s(
            failures, initial_s=settings.backoff_initial_s, max_s=settings.backoff_max_s,
            rng=self._rng,
        )
