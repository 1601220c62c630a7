"""The coordinator of two-phase commits: one transaction per payment, across its banks
(one-phase for a payment within one bank: see below).

The protocol, with the state written to the gateway's database at each step:

    begin_payment   payment row PREPARING + idempotency key IN_PROGRESS (one transaction)
    phase 1         Prepare at every participant bank, concurrently, within prepare_timeout_s;
                    each bank writes its holds to disk before it votes yes
    decision        all yes  -> COMMITTING (payment SUCCEEDED, key COMPLETED), on disk first
                    otherwise -> ABORTING (payment FAILED; key COMPLETED with the business
                                 error, or deleted when the cause was transient)
    phase 2         Commit (or Abort) at every participant, re-sent until each acknowledges
    finish          COMMITTED or ABORTED

A decision is written with a conditional UPDATE (only from PREPARING), so exactly one
decision is ever recorded even if recovery races the request. A commit decision is final:
it is re-sent until acknowledged and never turned into an abort.

Several gateways may share one database, so each unfinished transaction carries a lease:
the gateway that begins a payment holds it for lease_s (longer than the prepare phase) and
renews it before every re-send. Recovery (at start and every recovery_interval_s) claims
the unfinished transactions whose lease expired, or that are its own, and drives those that
no task of this process is driving: PREPARING ones have no decision and are aborted
(presumed abort: no bank can have committed, because no bank commits without a commit
decision on disk, and a decision is only written from PREPARING, so a slow owner that lost
its lease cannot commit afterwards); COMMITTING and ABORTING ones have their decision
re-sent. A gateway that dies hands its transactions over when their leases expire. Banks
keep prepared holds across restarts and refuse a Prepare that arrives after an Abort, so a
late or duplicated message cannot move money.

A payment between two accounts of the same bank has one participant, and is sent as a
one-phase commit (payment.one_phase, recorded with the payment before anything is sent):
one Prepare with one_phase set, which the bank applies and, on a yes, posts in the same
database transaction, saying so (`committed`). The bank decides: the gateway records
COMMITTED in one write, with no phase two. A yes that only held (a bank of an older version
ignores one_phase) is followed by a Commit, and the gateway records the bank's answer;
it never writes a decision before the bank has decided. Presumed abort does not hold for
these payments, so one whose outcome is not known (its Prepare or Commit failed or timed
out, or the gateway died) is settled by asking the bank with an Abort: acknowledged,
nothing was posted and nothing can be any more (the bank refuses a later Prepare or
Commit); refused with TRANSACTION_COMMITTED, it committed. While the bank cannot be asked,
the payment stays PREPARING with its idempotency key in use, and recovery asks again. The
caller's wait is bounded as for two phases: it is answered UNAVAILABLE at once, and the
question is asked in the background. `CoordinatorSettings.one_phase` = False sends new
payments within one bank in two phases, for while gateways of an older version (whose
recovery would presume abort for every PREPARING payment) share the database; recovery
follows each payment's recorded flag either way.

Each phase is an OpenTelemetry span ("2pc.prepare", "2pc.commit", "2pc.abort") carrying the
transaction id, its banks and its outcome, with the banks' calls inside it; outcomes,
phase durations, timeouts, re-sends and recoveries are counted in CoordinatorMetrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterator

from opentelemetry import trace

from paygate.common.faults import FaultInjector
from paygate.common.invariants import check
from paygate.common.metrics import CoordinatorMetrics, new_registry, observe
from paygate.errors import (
    BANK_TIMEOUT,
    BANK_UNAVAILABLE,
    TRANSACTION_ABORTED,
    TRANSACTION_COMMITTED,
    PaygateError,
    Unavailable,
)
from paygate.gateway.finisher import Finisher
from paygate.gateway.models import Leg, Payment, TxnState, Vote
from paygate.gateway.store import GatewayStore, Lease
from paygate.gateway.two_phase import (
    BUSINESS_REFUSALS,
    Decision,
    Failure,
    Participants,
    backoff_s,
    legs_by_bank,
    refusal,
)

_log = logging.getLogger("paygate.coordinator")
_tracer = trace.get_tracer(__name__)

PRESUMED_ABORT = "COORDINATOR_RESTARTED"
# The reasons this coordinator aborts with (a bank's own error reason aside): the
# paygate_2pc_transactions_total series made at start.
ABORT_REASONS = (*BUSINESS_REFUSALS, BANK_TIMEOUT, BANK_UNAVAILABLE, PRESUMED_ABORT)
PREPARE_TIMEOUT_MARGIN_S = 0.2
DEFAULT_LEASE_S = 6.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class CoordinatorSettings:
    prepare_timeout_s: float
    bank_call_timeout_s: float
    recovery_interval_s: float
    # How long a gateway owns a transaction it drives without renewing: more than the
    # prepare phase, plus the clock difference between the gateways sharing a database.
    lease_s: float = DEFAULT_LEASE_S
    # Phase-two attempts within one request or one recovery pass; recovery passes repeat forever.
    delivery_attempts: int = 3
    backoff_initial_s: float = 0.05
    backoff_max_s: float = 1.0
    recovery_batch: int = 100
    recovery_concurrency: int = 16
    # Payments within one bank as a one-phase commit (module docstring).
    one_phase: bool = True

    @property
    def request_drive_s(self) -> float:
        """The longest a request drives its payment: the prepares, then the commit attempts
        with their backoffs. An unfinished payment older than this waits for recovery."""
        phase_two_s = self.delivery_attempts * (self.bank_call_timeout_s + self.backoff_max_s)
        return self.prepare_timeout_s + PREPARE_TIMEOUT_MARGIN_S + phase_two_s


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
    ) -> None:
        self.owner = owner  # this instance's id in the leases; unique per start
        self._store = store
        self._banks = participants
        self._settings = settings
        self._faults = faults
        # Without a registry of the process's (unit tests), the metrics go nowhere.
        self._metrics = metrics or CoordinatorMetrics.build(new_registry())
        self._driving: set[str] = set()
        self._background: set[asyncio.Task[None]] = set()
        # The finish writes of transactions ending together share one database transaction.
        self._finisher = Finisher(store, timeout_s=settings.bank_call_timeout_s)

    def one_phase_for(self, payer_bank_id: str, payee_bank_id: str) -> bool:
        """Whether a new payment between these banks is sent as a one-phase commit."""
        return self._settings.one_phase and payer_bank_id == payee_bank_id

    @contextlib.contextmanager
    def claim(self, payment_id: str) -> Iterator[None]:
        """Mark a transaction as driven by this process, so that recovery leaves it alone."""
        self._driving.add(payment_id)
        try:
            yield
        finally:
            self._driving.discard(payment_id)

    def new_lease(self) -> Lease:
        """The lease a payment this process begins is recorded with."""
        return Lease(self.owner, time.time() + self._settings.lease_s)

    async def _keep_lease(self, payment_id: str) -> bool:
        """Renew our lease; False (and a log line) when another gateway has taken it over."""
        if await self._store.renew_lease(payment_id, self.new_lease()):
            return True
        _log.warning(
            "lease lost, another gateway drives the transaction",
            extra={"fields": {"transaction_id": payment_id, "owner": self.owner}},
        )
        return False

    @contextlib.contextmanager
    def _phase(self, phase: str, payment: Payment) -> Iterator[trace.Span]:
        """A span and a duration for one phase of a transaction at all its banks."""
        attributes = {
            "paygate.transaction_id": payment.payment_id,
            "paygate.banks": sorted(payment.participants),
        }
        start = time.perf_counter()
        with _tracer.start_as_current_span(f"2pc.{phase}", attributes=attributes) as span:
            try:
                yield span
            finally:
                observe(self._metrics.phase_seconds.labels(phase), time.perf_counter() - start)

    # A new payment -------------------------------------------------------------------

    async def run(self, payment: Payment) -> Decision:
        """Drive a freshly recorded payment's transaction through both phases.

        Returns the decision. Commits are delivered before returning when the banks answer
        (bounded by delivery_attempts); aborts are delivered in the background, so that a
        caller hears about a failure at once.
        """
        if payment.one_phase:
            return await self._run_one_phase(payment)
        self._faults.crash_point("gateway.before_prepare")
        with self._phase("prepare", payment) as span:
            failure, _ = await self._prepare_all(payment, one_phase=False)
            span.set_attribute("paygate.outcome", "yes" if failure is None else failure.reason)
        return await self._decide(payment, failure)

    async def _decide(self, payment: Payment, failure: Failure | None) -> Decision:
        """Phase one is over: write the decision, then deliver it (commits before returning)."""
        if failure is None:
            self._faults.crash_point("gateway.after_prepares")
            state = await self._store.decide_commit(payment.payment_id)
        else:
            state = await self._store.decide_abort(
                payment.payment_id, failure.reason, failure.message, release_key=failure.transient
            )
        if state == TxnState.COMMITTED:
            return Decision(state)  # never from here; a one-phase commit's, should it be
        if state == TxnState.COMMITTING and failure is None:
            self._metrics.transactions.labels("committed", "").inc()
        elif state == TxnState.ABORTING and failure is not None:
            self._metrics.transactions.labels("aborted", failure.reason).inc()
        if state == TxnState.COMMITTING:
            self._faults.crash_point("gateway.after_decision")
            await self._deliver(payment, commit=True)
            self._faults.crash_point("gateway.after_commits")
            return Decision(TxnState.COMMITTING)
        if state == TxnState.ABORTING:
            self._spawn(self._deliver_claimed(payment, commit=False))
        if failure is None:
            # Another driver decided abort first (only recovery can); that decision stands.
            failure = Failure(PRESUMED_ABORT, "the payment was aborted by recovery", True)
        return Decision(state, failure)

    async def _prepare_all(
        self, payment: Payment, *, one_phase: bool
    ) -> tuple[Failure | None, bool]:
        """Phase one: (None, posted) when every bank voted yes, else (the first failure,
        False); posted says that every yes was also a commit (one-phase)."""
        legs = legs_by_bank(payment)
        timeout_s = self._settings.prepare_timeout_s
        tasks = {
            asyncio.create_task(
                self._prepare_one(bank, payment.payment_id, bank_legs, one_phase)
            ): bank
            for bank, bank_legs in legs.items()
        }
        yes_votes = 0
        posted = True
        try:
            # The calls' own deadlines fire first, so that a bank that is down is told apart
            # from one that is slow (banks.py); this bound only backs them up.
            async with asyncio.timeout(timeout_s + PREPARE_TIMEOUT_MARGIN_S):
                for next_vote in asyncio.as_completed(tasks):
                    vote = await next_vote
                    if not vote.yes:
                        return refusal(vote.reason), False
                    yes_votes += 1
                    posted = posted and vote.committed
                    if yes_votes == 1 and len(tasks) == 2:
                        self._faults.crash_point("gateway.after_first_prepare")
        except TimeoutError:
            for task, bank in tasks.items():
                if not task.done():
                    self._metrics.timeouts.labels(bank, "prepare").inc()
            message = "a bank did not answer within the prepare timeout"
            return Failure(BANK_TIMEOUT, message, True), False
        except Unavailable as exc:
            return Failure(exc.reason, exc.message, True), False
        except PaygateError as exc:
            _log.error(
                "bank refused a prepare",
                extra={"fields": {"transaction_id": payment.payment_id, "error": repr(exc)}},
            )
            message = "a bank could not take part in the payment"
            return Failure(BANK_UNAVAILABLE, message, True), False
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return None, posted

    async def _prepare_one(
        self, bank: str, transaction_id: str, legs: list[Leg], one_phase: bool
    ) -> Vote:
        try:
            return await self._banks.prepare(
                bank,
                transaction_id,
                legs,
                timeout_s=self._settings.prepare_timeout_s,
                one_phase=one_phase,
            )
        except Unavailable as exc:
            if exc.reason == BANK_TIMEOUT:
                self._metrics.timeouts.labels(bank, "prepare").inc()
            raise

    # One bank: a one-phase commit --------------------------------------------------------

    async def _run_one_phase(self, payment: Payment) -> Decision:
        """One Prepare that commits on yes; an unknown outcome is settled with an Abort."""
        self._faults.crash_point("gateway.before_prepare")
        with self._phase("prepare", payment) as span:
            span.set_attribute("paygate.one_phase", True)
            failure, posted = await self._prepare_all(payment, one_phase=True)
            span.set_attribute("paygate.outcome", "yes" if failure is None else failure.reason)
        if failure is None:
            self._faults.crash_point("gateway.after_prepares")
            # A yes that only placed holds comes from a bank that ignores one_phase (an
            # older version). The bank still decides: Commit, then record its answer, with
            # no decision written before (recovery asks the bank about this payment).
            committed = True if posted else await self._commit_held(payment)
            if committed:
                decision = await self._one_phase_committed(payment)
                self._faults.crash_point("gateway.after_decision")
                return decision
            failure = Failure(BANK_UNAVAILABLE, "the bank did not confirm the payment", True)
            if committed is False:
                return await self._one_phase_aborted(payment, failure)
        if failure.transient:
            # The bank may have committed. The caller hears UNAVAILABLE now, as for two
            # phases; the outcome is settled by asking the bank (in the background, then by
            # recovery), and the key stays in use until it is.
            self._spawn(self._settle_one_phase(payment, failure))
            return Decision(TxnState.PREPARING, failure)
        # A no for a business reason is final: the bank recorded the refusal, held nothing.
        return await self._one_phase_aborted(payment, failure)

    async def _settle_one_phase(self, payment: Payment, failure: Failure) -> None:
        with self.claim(payment.payment_id):
            committed = await self._ask_one_phase(payment)
            if committed:
                await self._one_phase_committed(payment)
            elif committed is not None:
                await self._one_phase_aborted(payment, failure)

    async def _commit_held(self, payment: Payment) -> bool | None:
        """Commit the holds of a yes that did not post: whether it committed, None when the
        bank did not answer (refused: an Abort, another gateway asking, came first)."""
        return await self._tell_the_bank(payment, commit=True)

    async def _ask_one_phase(self, payment: Payment) -> bool | None:
        """Whether a one-phase transaction committed, fixing the outcome with an Abort.

        True: the bank refused the Abort, the transaction committed. False: the Abort was
        acknowledged, nothing is posted and nothing can be (the bank refuses a late Prepare
        or Commit). None: the bank did not answer; nothing is known yet.
        """
        return await self._tell_the_bank(payment, commit=False)

    async def _tell_the_bank(self, payment: Payment, *, commit: bool) -> bool | None:
        """Send the only bank of a one-phase payment a Commit or an Abort, and return whether
        the payment committed: the bank's answer decides, an acknowledgement being that
        outcome and a refusal (TRANSACTION_ABORTED / TRANSACTION_COMMITTED) the other. None
        when it did not answer."""
        (bank,) = payment.participants
        phase, refusal_means = ("commit", False) if commit else ("abort", True)
        refused_because = TRANSACTION_ABORTED if commit else TRANSACTION_COMMITTED
        send = self._banks.commit if commit else self._banks.abort
        with self._phase(phase, payment) as span:
            span.set_attribute("paygate.one_phase", True)
            try:
                await send(bank, payment.payment_id, timeout_s=self._settings.bank_call_timeout_s)
                committed: bool | None = commit
            except PaygateError as exc:
                committed = refusal_means if exc.reason == refused_because else None
                if committed is None:
                    if exc.reason == BANK_TIMEOUT:
                        self._metrics.timeouts.labels(bank, phase).inc()
                    _log.info(
                        "one-phase outcome unknown, will ask again",
                        extra={
                            "fields": {
                                "transaction_id": payment.payment_id,
                                "bank": bank,
                                "sent": phase,
                                "reason": exc.reason,
                            }
                        },
                    )
            outcome = {True: "committed", False: "aborted", None: "unknown"}[committed]
            span.set_attribute("paygate.outcome", outcome)
        return committed

    async def _one_phase_committed(self, payment: Payment) -> Decision:
        """Record a one-phase commit (the bank has posted it) as COMMITTED."""
        state = await self._store.decide_commit(payment.payment_id, finished=True)
        # The bank committed, so it acknowledged no Abort of this transaction, so no abort
        # decision can have been written (one is written only after that acknowledgement).
        check(
            state in (TxnState.COMMITTING, TxnState.COMMITTED),
            f"one-phase transaction {payment.payment_id} committed at its bank but {state}",
        )
        self._metrics.transactions.labels("committed", "").inc()
        return Decision(state)

    async def _one_phase_aborted(self, payment: Payment, failure: Failure) -> Decision:
        """Record a one-phase transaction the bank refused or aborted as ABORTED."""
        state = await self._store.decide_abort(
            payment.payment_id, failure.reason, failure.message, release_key=failure.transient
        )
        check(
            state in (TxnState.ABORTING, TxnState.ABORTED),
            f"one-phase transaction {payment.payment_id} aborted at its bank but {state}",
        )
        if state == TxnState.ABORTING:
            self._metrics.transactions.labels("aborted", failure.reason).inc()
            # Nothing to deliver: the bank refused or acknowledged the abort already.
            self._spawn(self._finish_claimed(payment.payment_id, TxnState.ABORTED))
        return Decision(state, failure)

    # Phase two -----------------------------------------------------------------------

    async def _deliver(self, payment: Payment, *, commit: bool, resend: bool = False) -> bool:
        """Send the decision to every participant until all acknowledge or attempts run out.

        Returns True when the transaction is finished. Refusals (a commit after an abort or
        the reverse) are protocol violations: they are logged and never acted upon. Sends
        after the first attempt, and every send of recovery (`resend`), count as retries.
        """
        with self._phase("commit" if commit else "abort", payment) as span:
            finished = await self._deliver_attempts(payment, commit=commit, resend=resend)
            span.set_attribute("paygate.outcome", "finished" if finished else "unacknowledged")
        return finished

    async def _deliver_attempts(self, payment: Payment, *, commit: bool, resend: bool) -> bool:
        pending = set(payment.participants)
        settings = self._settings
        acked = 0
        for attempt in range(settings.delivery_attempts):
            if attempt > 0 and not await self._keep_lease(payment.payment_id):
                return False
            if attempt > 0 or resend:
                for resent in pending:
                    self._metrics.retries.labels(resent, "commit" if commit else "abort").inc()
            sends = {
                asyncio.create_task(
                    self._send(bank, payment.payment_id, commit=commit, attempt=attempt)
                ): bank
                for bank in sorted(pending)
            }
            for done in asyncio.as_completed(list(sends)):
                bank = await done
                if bank is None:
                    continue
                pending.discard(bank)
                acked += 1
                if commit and acked == 1 and len(payment.participants) == 2:
                    self._faults.crash_point("gateway.after_first_commit")
            if not pending:
                await self._finisher.finish(
                    payment.payment_id, TxnState.COMMITTED if commit else TxnState.ABORTED
                )
                return True
            await asyncio.sleep(
                backoff_s(attempt, settings.backoff_initial_s, settings.backoff_max_s)
            )
        _log.warning(
            "decision not yet acknowledged",
            extra={
                "fields": {
                    "transaction_id": payment.payment_id,
                    "decision": "commit" if commit else "abort",
                    "pending": sorted(pending),
                }
            },
        )
        return False

    async def _send(
        self, bank: str, transaction_id: str, *, commit: bool, attempt: int
    ) -> str | None:
        """One Commit or Abort; returns the bank on acknowledgement, None otherwise."""
        timeout_s = self._settings.bank_call_timeout_s
        try:
            if commit:
                await self._banks.commit(bank, transaction_id, timeout_s=timeout_s)
            else:
                await self._banks.abort(bank, transaction_id, timeout_s=timeout_s)
        except Unavailable as exc:
            if exc.reason == BANK_TIMEOUT:
                self._metrics.timeouts.labels(bank, "commit" if commit else "abort").inc()
            _log.info(
                "phase two send failed, will retry",
                extra={
                    "fields": {
                        "transaction_id": transaction_id,
                        "bank": bank,
                        "reason": exc.reason,
                        "attempt": attempt + 1,
                    }
                },
            )
            return None
        except PaygateError as exc:
            _log.critical(
                "bank refused the decision",
                extra={
                    "fields": {
                        "transaction_id": transaction_id,
                        "bank": bank,
                        "decision": "commit" if commit else "abort",
                        "error": repr(exc),
                    }
                },
            )
            return None
        return bank

    # Recovery ------------------------------------------------------------------------

    async def recover_once(self) -> int:
        """Claim the unfinished transactions whose lease expired and drive them; return how many.

        Our own (a request's delivery that ran out of attempts) are claimed too; those a task
        here is still driving are left to it.
        """
        claimed = await self._store.claim_unfinished(
            self.owner,
            now_s=time.time(),
            lease_s=self._settings.lease_s,
            limit=self._settings.recovery_batch,
        )
        orphans = [p for p in claimed if p.payment_id not in self._driving]
        limit = asyncio.Semaphore(self._settings.recovery_concurrency)

        async def recover(payment: Payment) -> None:
            async with limit:
                await self._recover(payment)

        await asyncio.gather(*(recover(p) for p in orphans))
        return len(orphans)

    async def _recover(self, payment: Payment) -> None:
        if payment.payment_id in self._driving:
            return
        # It may have waited for a free slot for a while: make sure it is still ours.
        if not await self._keep_lease(payment.payment_id):
            return
        with self.claim(payment.payment_id):
            state = payment.txn_state
            if state == TxnState.PREPARING and payment.one_phase:
                committed = await self._ask_one_phase(payment)
                if committed is None:
                    return  # the bank is not answering; the next pass asks again
                if committed:
                    await self._one_phase_committed(payment)
                    self._metrics.recovered.labels("commit").inc()
                else:
                    await self._one_phase_aborted(
                        payment,
                        Failure(PRESUMED_ABORT, "the bank's outcome was not known; aborted", True),
                    )
                    self._metrics.recovered.labels("abort").inc()
                return
            if state == TxnState.PREPARING:
                state = await self._store.decide_abort(
                    payment.payment_id,
                    PRESUMED_ABORT,
                    "the gateway restarted before deciding",
                    release_key=True,
                )
                _log.info(
                    "presumed abort", extra={"fields": {"transaction_id": payment.payment_id}}
                )
                if state == TxnState.ABORTING:
                    self._metrics.transactions.labels("aborted", PRESUMED_ABORT).inc()
            if state in (TxnState.COMMITTING, TxnState.ABORTING):
                commit = state == TxnState.COMMITTING
                # A deliberately broken variant, switched on only by tests (test_chaos.py) to
                # show that paygate-chaos catches it: recovery forgets a commit decision.
                if os.environ.get("PAYGATE_BROKEN_PROTOCOL") == "gateway-forgets-decision":
                    commit = False
                if await self._deliver(payment, commit=commit, resend=True):
                    self._metrics.recovered.labels("commit" if commit else "abort").inc()

    async def recover_forever(self) -> None:
        await self._every_recovery_interval(self.recover_once, "recovery pass")

    async def count_in_doubt(self) -> int:
        """Set paygate_2pc_in_doubt: the unfinished payments older than a request drives
        one. Its own loop, so that a recovery pass waiting on a dead bank does not stop it."""
        created_before_s = time.time() - self._settings.request_drive_s
        count = await self._store.count_unfinished(created_before_us=int(created_before_s * 1e6))
        self._metrics.in_doubt.set(count)
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

    async def _finish_claimed(self, payment_id: str, final: TxnState) -> None:
        with self.claim(payment_id):
            await self._finisher.finish(payment_id, final)

    async def _deliver_claimed(self, payment: Payment, *, commit: bool) -> None:
        with self.claim(payment.payment_id):
            await self._deliver(payment, commit=commit)

    def _spawn(self, job: asyncio._CoroutineLike[None]) -> None:
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
