"""The driver of two-phase commits: it carries out what transitions.py decides.

transitions.py holds every decision of the protocol (read its docstring first). This module
only does I/O: it feeds a transaction's events to `step` and carries out the actions it
returns: store writes, bank calls (through the batching BankClients), leases, backoff,
spans, metrics, logs and crash points. A request drives the payment it recorded until the
transaction answers its caller; what remains (delivering an abort, asking the only bank of a
one-phase payment what happened) goes on in the background. Recovery (at start and every
recovery_interval_s) claims the unfinished transactions whose lease expired, or that are its
own, and drives those no task of this process is driving.

Each phase is an OpenTelemetry span ("2pc.prepare", "2pc.commit", "2pc.abort") carrying the
transaction id, its banks and its outcome, with the banks' calls inside it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any

from paygate.common.faults import FaultInjector
from paygate.common.invariants import check
from paygate.common.metrics import CoordinatorMetrics, new_registry
from paygate.errors import CANCELED
from paygate.gateway import transitions as t
from paygate.gateway.bank_calls import BankCalls
from paygate.gateway.drive import Drive
from paygate.gateway.finisher import Finisher
from paygate.gateway.models import BeginResult, OperationKey, Payment, TxnState
from paygate.gateway.store import GatewayStore, Lease
from paygate.gateway.transitions import ABORT_REASONS, Decision
from paygate.gateway.two_phase import (
    CoordinatorSettings,
    Participants,
    backoff_s,
    legs_by_bank,
)

__all__ = ["ABORT_REASONS", "Coordinator", "CoordinatorSettings", "Decision"]

_log = logging.getLogger("paygate.coordinator")


class Coordinator:
    def __init__(
        self,
        store: GatewayStore,
        participants: Participants,
        settings: CoordinatorSettings,
        faults: FaultInjector,
        metrics: CoordinatorMetrics | None = None,
        *,
        owner: str = "gateway",
        step: t.Step = t.step,
    ) -> None:
        self.owner = owner  # this instance's id in the leases; unique per start
        self._store = store
        self._banks = participants
        self._settings = settings
        self._faults = faults
        self._step = step
        # Without a registry of the process's (unit tests), the metrics go nowhere.
        self._metrics = metrics or CoordinatorMetrics.build(new_registry())
        self._driving: collections.Counter[str] = collections.Counter()
        self._background: set[asyncio.Task[None]] = set()
        # The finish writes of transactions ending together share one database transaction.
        self._finisher = Finisher(store, timeout_s=settings.bank_call_timeout_s)
        self._calls = BankCalls(participants, settings, self._metrics)

    def one_phase_for(self, payer_bank_id: str, *payee_bank_ids: str) -> bool:
        """Whether a new payment between these banks is sent as a one-phase commit."""
        return self._settings.one_phase and {payer_bank_id} == set(payee_bank_ids)

    @contextlib.contextmanager
    def claim(self, payment_id: str) -> Iterator[None]:
        """Mark a transaction as driven by this process, so that recovery leaves it alone."""
        self._driving[payment_id] += 1
        try:
            yield
        finally:
            self._release(payment_id)

    def _release(self, payment_id: str) -> None:
        self._driving[payment_id] -= 1
        if not self._driving[payment_id]:
            del self._driving[payment_id]

    def crash_point(self, point: str) -> None:
        """A crash point of a step outside the transition function (faults.py)."""
        self._faults.crash_point(point)

    def new_lease(self) -> Lease:
        """The lease a payment this process begins is recorded with."""
        return Lease(self.owner, time.time() + self._settings.lease_s)

    def _txn(self, payment: Payment) -> t.Txn:
        return t.new_txn(
            payment_id=payment.payment_id,
            banks=tuple(payment.participants),
            one_phase=payment.one_phase,
            state=payment.txn_state,
            rounds=self._settings.delivery_attempts,
            manual=payment.manual_capture,
            capture_minor=payment.amount_captured_minor,
        )

    # Driving -------------------------------------------------------------------------

    async def run(self, payment: Payment) -> Decision:
        """Drive a freshly recorded payment until its caller can be answered; the rest of
        its work (an abort's delivery, a one-phase outcome to settle) goes on in the
        background."""
        return (await self._request(payment, t.Begin()))[0]

    async def capture(
        self, payment: Payment, amount_minor: int, key: OperationKey
    ) -> tuple[Decision, BeginResult | None]:
        """Capture `amount_minor` of an authorization, recording `key` with the decision: the
        answer, and what the key held if it was used before (then nothing was written)."""
        return await self._request(payment, t.Capture(amount_minor), key)

    async def cancel(
        self, payment: Payment, key: OperationKey
    ) -> tuple[Decision, BeginResult | None]:
        """Cancel an authorization for its payee, as capture() does."""
        return await self._request(payment, t.Cancel(CANCELED, "canceled by the payee"), key)

    async def _request(
        self, payment: Payment, first: t.Event, key: OperationKey | None = None
    ) -> tuple[Decision, BeginResult | None]:
        drive = Drive(payment, self._txn(payment), self._step, first)
        drive.key = key
        with self.claim(payment.payment_id):
            try:
                await self._go(drive, until_answered=True)
            except BaseException:
                await self._end(drive)
                raise
            if drive.txn.stage != t.Stage.DONE or drive.todo:
                # Held until the background task ends, with no gap recovery could use.
                self._driving[payment.payment_id] += 1
                self._spawn(self._go_on(drive))
            else:
                await self._end(drive)
        check(drive.answer is not None, f"{payment.payment_id}: driven without an answer")
        assert drive.answer is not None
        return drive.answer, drive.key_taken

    async def _go_on(self, drive: Drive) -> None:
        try:
            await self._go(drive, until_answered=False)
        finally:
            self._release(drive.payment.payment_id)
            await self._end(drive)

    async def _go(self, drive: Drive, *, until_answered: bool) -> None:
        """Carry out actions and step events until the transaction is done (or answered)."""
        while True:
            while drive.todo:
                action = drive.todo.popleft()
                if isinstance(action, t.Answer):
                    drive.answer = action.decision
                    if until_answered:
                        return
                    continue
                await self._carry_out(drive, action)
            if drive.txn.stage == t.Stage.DONE:
                return
            check(
                not drive.inbox.empty() or bool(drive.calls),
                f"{drive.payment.payment_id}: waits in {drive.txn.stage} for nothing",
            )
            event = await drive.inbox.get()
            before = drive.txn
            drive.txn, actions = self._step(before, event)
            drive.todo.extend(actions)
            self._after_step(drive, before, event)

    def _after_step(self, drive: Drive, before: t.Txn, event: t.Event) -> None:
        """Observe a step: phase-wide timeouts, and the end of a phase's span."""
        if isinstance(event, t.VotesTimedOut):
            for bank in before.awaiting:
                self._metrics.timeouts.labels(bank, "prepare").inc()
        if drive.span is not None and drive.span.phase != t.phase_of(drive.txn):
            drive.end_phase(self._metrics.phase_seconds)
        if not drive.txn.awaiting and drive.calls:
            for task in list(drive.calls):
                task.cancel()  # a phase decided early (a no vote): its other calls are moot

    async def _end(self, drive: Drive) -> None:
        await drive.stop_calls()
        drive.end_phase(self._metrics.phase_seconds)

    async def _carry_out(self, drive: Drive, action: t.Action) -> None:
        payment_id = drive.payment.payment_id
        if isinstance(action, t.SendPrepares | t.SendDecision):
            self._send(drive, action)
        elif isinstance(action, t.RecordCommit | t.RecordAbort | t.RecordAuthorization):
            drive.inbox.put_nowait(await self._record(drive, action))
        elif isinstance(action, t.RecordFinish):
            await self._finisher.finish(payment_id, action.state)
        elif isinstance(action, t.RenewLease):
            renewed = await self._store.renew_lease(payment_id, self.new_lease())
            drive.inbox.put_nowait(t.LeaseRenewed(renewed))
        elif isinstance(action, t.Backoff):
            settings = self._settings
            await asyncio.sleep(
                backoff_s(action.round, settings.backoff_initial_s, settings.backoff_max_s)
            )
            drive.inbox.put_nowait(t.BackoffElapsed())
        elif isinstance(action, t.CrashPoint):
            self._faults.crash_point(action.point)
        elif isinstance(action, t.Count):
            getattr(self._metrics, action.metric).labels(*action.labels).inc()
        elif isinstance(action, t.Log):
            fields = {"transaction_id": payment_id, **dict(action.fields)}
            _log.log(logging.getLevelName(action.level.upper()), action.message,
                     extra={"fields": fields})  # fmt: skip

    async def _record(
        self, drive: Drive, action: t.RecordCommit | t.RecordAbort | t.RecordAuthorization
    ) -> t.Recorded:
        """A decision's conditional write, and the state the store holds after it."""
        payment_id = drive.payment.payment_id
        if isinstance(action, t.RecordAuthorization):
            return t.Recorded(await self._store.authorize(payment_id))
        if action.from_state == TxnState.AUTHORIZED:
            if isinstance(action, t.RecordCommit):
                settled = await self._store.capture(
                    payment_id, action.capture_minor, self.new_lease(), drive.key
                )
            else:
                reason = action.failure.reason
                settled = await self._store.cancel(payment_id, reason, self.new_lease(), drive.key)
            drive.key_taken = settled.key
            return t.Recorded(settled.state, settled.applied)
        if isinstance(action, t.RecordCommit):
            refund = drive.payment if drive.payment.refund_of else None
            state = await self._store.decide_commit(
                payment_id, finished=action.finished, refund=refund
            )
            return t.Recorded(state, state in (TxnState.COMMITTING, TxnState.COMMITTED))
        failure = action.failure
        state = await self._store.decide_abort(
            payment_id, failure.reason, failure.message, release_key=failure.transient
        )
        return t.Recorded(state, state in (TxnState.ABORTING, TxnState.ABORTED))

    # Bank calls ----------------------------------------------------------------------

    def _send(self, drive: Drive, action: t.SendPrepares | t.SendDecision) -> None:
        drive.enter_phase(t.phase_of(drive.txn))
        payment_id = drive.payment.payment_id
        if isinstance(action, t.SendPrepares):
            legs = legs_by_bank(drive.payment)
            # A split payment's legs at one bank need not balance there: say so.
            spans = bool(drive.payment.splits) and len(action.banks) > 1
            for bank in action.banks:
                drive.call(self._calls.prepare(payment_id, bank, legs[bank], action, spans))
            drive.call(self._calls.votes_deadline())
            return
        phase = "commit" if action.commit else "abort"
        for bank in action.banks:
            if action.retry:
                self._metrics.retries.labels(bank, phase).inc()
            drive.call(
                self._calls.decision(
                    drive.payment.payment_id, bank, action.commit, action.amount_minor
                )
            )

    # Recovery ------------------------------------------------------------------------

    async def recover_once(self) -> int:
        """Claim the unfinished transactions whose lease expired and drive them; return how many.

        Our own (a request's delivery that ran out of attempts) are claimed too; those a task
        here is still driving are left to it.
        """
        claims = {"now_s": time.time(), "lease_s": self._settings.lease_s}
        limit_n = self._settings.recovery_batch
        claimed = await self._store.claim_unfinished(self.owner, **claims, limit=limit_n)
        # Authorizations past their deadline, to expire (transitions.py).
        claimed += await self._store.claim_expired(self.owner, **claims, limit=limit_n)
        orphans = [p for p in claimed if p.payment_id not in self._driving]
        limit = asyncio.Semaphore(self._settings.recovery_concurrency)

        async def recover(payment: Payment) -> None:
            async with limit:
                if payment.payment_id in self._driving:
                    return
                with self.claim(payment.payment_id):
                    drive = Drive(payment, self._txn(payment), self._step, t.Recover())
                    try:
                        await self._go(drive, until_answered=False)
                    finally:
                        await self._end(drive)

        await asyncio.gather(*(recover(p) for p in orphans))
        return len(orphans)

    async def recover_forever(self) -> None:
        await self._every_recovery_interval(self.recover_once, "recovery pass")

    async def count_in_doubt(self) -> int:
        """Set paygate_2pc_in_doubt: the unfinished payments older than a request drives
        one. Its own loop, so that a recovery pass waiting on a dead bank does not stop it."""
        now_s = time.time()
        created_before_us = int((now_s - self._settings.request_drive_s) * 1e6)
        count = await self._store.count_unfinished(created_before_us=created_before_us)
        self._metrics.in_doubt.set(count)
        self._metrics.overdue.set(await self._store.count_expired(now_s=now_s))
        return count

    async def count_in_doubt_forever(self) -> None:
        await self._every_recovery_interval(self.count_in_doubt, "counting transactions in doubt")

    async def _every_recovery_interval(self, job: Callable[[], Awaitable[int]], what: str) -> None:
        while True:
            try:
                await job()
            except Exception:
                _log.exception("%s failed", what)
            await asyncio.sleep(self._settings.recovery_interval_s)

    def _spawn(self, job: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(job)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(_log_failure)

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self._finisher.close()


def _log_failure(task: asyncio.Task[None]) -> None:
    """A background job's exception goes to the log (recovery retries what it left undone)."""
    if not task.cancelled() and (exc := task.exception()) is not None:
        _log.error("background job failed", exc_info=exc)
