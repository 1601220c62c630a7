"""Every decision of the gateway's two-phase commit, as a pure state machine.

`step(txn, event)` returns the transaction's next value and the actions the driver
(coordinator.py) must carry out, in order: write this decision, send Commit to these banks,
answer the caller, back off, count this outcome. Nothing here waits, reads a clock, draws a
random number or touches a database or the network, so the whole protocol is tested by
feeding it events (tests/unit/test_transitions*.py), as etcd's raft package is.

A transaction is recorded PREPARING (payments.py), then driven by the request that made it
or, after a crash or a lost lease, by recovery. What the driver is waiting for is the
transaction's `stage`; the recorded `state` is what survives a crash:

    stage        waits for                            recorded state
    START        Begin (a request) or Recover         any unfinished one
    RENEWING     LeaseRenewed                         any unfinished one
    VOTING       Voted / PrepareFailed per bank,      PREPARING
                 or VotesTimedOut
    DECIDING     Recorded (the store's answer to a    PREPARING, until the answer
                 conditional decision write)
    CONFIRMING   one bank's answer to Commit/Abort    PREPARING (one-phase: the bank decides)
                 (Acked, NotAcked, Refused)
    DELIVERING   Acked / NotAcked / Refused per bank  COMMITTING or ABORTING
    BACKING_OFF  BackoffElapsed                       COMMITTING or ABORTING
    DONE         nothing: finished, or left to        any
                 recovery

An authorization (a payment made with manual capture) stops after phase one: every bank
voted yes and holds the money, and AUTHORIZED is recorded instead of a commit. It is a
decision of its own (recovery never presumes it aborted), later replaced, once, from
AUTHORIZED: Capture records COMMITTING with the amount captured (at most the amount held;
the banks post that and release the rest), Cancel records ABORTING (by the payee, or by
recovery once the authorization is past its deadline). Whichever of two such writes comes
first stands; the other learns it from the store and changes nothing.

The rules it keeps (checked by tests/unit/test_transitions_properties.py under random event
orders, losses, duplicates, crashes and a second gateway racing the first):
- A decision is written before any Commit or Abort of two phases is sent, and a recorded
  commit is never followed by an abort, nor the reverse (the store writes a decision only
  from PREPARING, and every later step follows the state the store returns).
- Presumed abort only from PREPARING: no bank commits two phases without a recorded commit.
- One-phase (one bank): nothing is recorded until the bank has answered; an outcome that is
  not known is settled by asking the bank with an Abort (refused TRANSACTION_COMMITTED: it
  committed).
- The idempotency key is released (a transient abort) only when no money moved.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable

from paygate.common.invariants import check
from paygate.errors import (
    ACCOUNT_NOT_FOUND,
    AUTHORIZATION_EXPIRED,
    BALANCE_LIMIT_EXCEEDED,
    BANK_TIMEOUT,
    BANK_UNAVAILABLE,
    CANCELED,
    CURRENCY_MISMATCH,
    INSUFFICIENT_FUNDS,
    PAYMENT_NOT_CAPTURABLE,
    TRANSACTION_ABORTED,
    TRANSACTION_COMMITTED,
    FailedPrecondition,
    PaygateError,
    Unavailable,
)
from paygate.gateway.models import TxnState

PRESUMED_ABORT = "COORDINATOR_RESTARTED"
# Votes of no that are final answers about the payment itself: the key keeps this answer.
BUSINESS_REFUSALS = {
    INSUFFICIENT_FUNDS: "insufficient funds in the payer's account",
    CURRENCY_MISMATCH: "the payment's currency does not match an account's currency",
    ACCOUNT_NOT_FOUND: "an account of this payment no longer exists at its bank",
    BALANCE_LIMIT_EXCEEDED: "the payee's account cannot hold that much more",
}
# The reasons this coordinator aborts with (a bank's own error reason aside).
ABORT_REASONS = (
    *BUSINESS_REFUSALS, BANK_TIMEOUT, BANK_UNAVAILABLE, PRESUMED_ABORT, CANCELED,
    AUTHORIZATION_EXPIRED,
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Failure:
    """Why a transaction was aborted, and whether the cause was transient."""

    reason: str
    message: str
    transient: bool

    def error(self) -> PaygateError:
        if self.transient:
            return Unavailable(self.message, reason=self.reason)
        return FailedPrecondition(self.message, reason=self.reason)


@dataclasses.dataclass(frozen=True)
class Decision:
    """What the caller of CreatePayment is answered."""

    state: TxnState
    failure: Failure | None = None

    @property
    def committed(self) -> bool:
        return self.state in (TxnState.COMMITTING, TxnState.COMMITTED)


def refusal(reason: str) -> Failure:
    if reason in BUSINESS_REFUSALS:
        return Failure(reason, BUSINESS_REFUSALS[reason], False)
    # A no for any other reason (a Prepare that arrived after an Abort) says nothing final
    # about the payment: release the key so that a retry can succeed.
    return Failure(BANK_UNAVAILABLE, f"a bank voted no ({reason or 'no reason given'})", True)


class Stage(enum.StrEnum):
    """What the driver of a transaction waits for (module docstring)."""

    START = "start"
    RENEWING = "renewing"
    VOTING = "voting"
    DECIDING = "deciding"
    CONFIRMING = "confirming"
    DELIVERING = "delivering"
    BACKING_OFF = "backing_off"
    DONE = "done"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Txn:
    """One driver's view of a transaction: the recorded state and what it waits for."""

    payment_id: str
    banks: tuple[str, ...]  # the participants, in a fixed order
    one_phase: bool
    state: TxnState  # as recorded, or as the store last answered
    stage: Stage = Stage.START
    caller: bool = False  # a request waits for an Answer (it has none yet)
    recovering: bool = False  # driven by recovery: every send is a re-send
    voted_yes: frozenset[str] = frozenset()
    posted: bool = True  # every yes so far was also a commit (one-phase)
    awaiting: frozenset[str] = frozenset()  # banks asked and not yet answered
    pending: frozenset[str] = frozenset()  # banks that have not acknowledged the decision
    commit: bool | None = None  # the decision being written, delivered or asked for
    failure: Failure | None = None  # why it aborts, once known
    round: int = 0  # phase-two rounds sent by this driver, less one
    rounds: int = 3  # phase-two rounds a driver sends before leaving it to recovery
    manual: bool = False  # an authorization: phase one only, captured or cancelled later
    capture_minor: int = 0  # what a Commit posts; 0: everything held


def new_txn(
    *,
    payment_id: str,
    banks: tuple[str, ...],
    one_phase: bool,
    state: TxnState,
    rounds: int,
    manual: bool = False,
    capture_minor: int = 0,
) -> Txn:
    check(rounds >= 1, "a driver sends phase two at least once")
    check(not (manual and one_phase), "an authorization holds: it is never one-phase")
    return Txn(
        payment_id=payment_id,
        banks=banks,
        one_phase=one_phase,
        state=state,
        rounds=rounds,
        manual=manual,
        capture_minor=capture_minor,
    )


# Events: what happened ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Begin:
    """A request drives the payment it has just recorded."""


@dataclasses.dataclass(frozen=True)
class Recover:
    """Recovery claimed an unfinished transaction that nobody here drives."""


@dataclasses.dataclass(frozen=True)
class Capture:
    """A request captures an authorization: `amount_minor` of what is held, at most all."""

    amount_minor: int


@dataclasses.dataclass(frozen=True)
class Cancel:
    """A request (or recovery, past the deadline) releases an authorization's holds."""

    reason: str  # CANCELED or AUTHORIZATION_EXPIRED
    message: str


@dataclasses.dataclass(frozen=True)
class LeaseRenewed:
    ok: bool  # False: another gateway holds the transaction now


@dataclasses.dataclass(frozen=True)
class Voted:
    bank: str
    yes: bool
    reason: str = ""
    posted: bool = False  # a yes to a one-phase Prepare: the bank has committed it


@dataclasses.dataclass(frozen=True)
class PrepareFailed:
    bank: str
    reason: str
    message: str
    answered: bool  # the bank answered with an error (else: unavailable, or too slow)


@dataclasses.dataclass(frozen=True)
class VotesTimedOut:
    """The prepare phase's own bound passed with votes missing."""


@dataclasses.dataclass(frozen=True)
class Recorded:
    state: TxnState  # the state the store holds after a decision write
    applied: bool = True  # the write took effect (else another decision was there first)


@dataclasses.dataclass(frozen=True)
class Acked:
    bank: str


@dataclasses.dataclass(frozen=True)
class NotAcked:
    bank: str
    reason: str  # the bank did not answer (BANK_UNAVAILABLE, BANK_TIMEOUT)


@dataclasses.dataclass(frozen=True)
class Refused:
    bank: str
    reason: str  # the bank answered with an error (TRANSACTION_COMMITTED, ...)


@dataclasses.dataclass(frozen=True)
class BackoffElapsed:
    pass


Event = (
    Begin | Recover | Capture | Cancel | LeaseRenewed | Voted | PrepareFailed | VotesTimedOut
    | Recorded | Acked | NotAcked | Refused | BackoffElapsed
)  # fmt: skip


# Actions: what the driver must do ------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CrashPoint:
    point: str  # paygate.common.faults.POINTS


@dataclasses.dataclass(frozen=True)
class SendPrepares:
    banks: tuple[str, ...]
    one_phase: bool


@dataclasses.dataclass(frozen=True)
class SendDecision:
    banks: tuple[str, ...]
    commit: bool
    retry: bool = False  # a re-send (counted in paygate_2pc_retries_total)
    one_phase: bool = False  # asking the only bank of a one-phase transaction
    amount_minor: int = 0  # what a Commit posts of the holds; 0: all of them


@dataclasses.dataclass(frozen=True)
class RecordCommit:
    finished: bool  # the only bank has committed already: straight to COMMITTED
    from_state: TxnState = TxnState.PREPARING  # the only state the write replaces
    capture_minor: int = 0  # a capture's amount, recorded with the decision


@dataclasses.dataclass(frozen=True)
class RecordAbort:
    failure: Failure  # a transient one releases the idempotency key
    from_state: TxnState = TxnState.PREPARING


@dataclasses.dataclass(frozen=True)
class RecordAuthorization:
    """Every bank holds the money of an authorization: record AUTHORIZED (from PREPARING)."""


@dataclasses.dataclass(frozen=True)
class RecordFinish:
    state: TxnState  # COMMITTED or ABORTED


@dataclasses.dataclass(frozen=True)
class RenewLease:
    pass


@dataclasses.dataclass(frozen=True)
class Backoff:
    round: int  # the backoff grows with it


@dataclasses.dataclass(frozen=True)
class Answer:
    decision: Decision


@dataclasses.dataclass(frozen=True)
class Count:
    metric: str  # a field of CoordinatorMetrics
    labels: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Log:
    level: str  # "info", "warning", "error", "critical"
    message: str
    fields: tuple[tuple[str, object], ...] = ()


Action = (
    CrashPoint | SendPrepares | SendDecision | RecordCommit | RecordAbort | RecordAuthorization
    | RecordFinish
    | RenewLease | Backoff | Answer | Count | Log
)  # fmt: skip
Step = Callable[[Txn, Event], tuple[Txn, list[Action]]]
Result = tuple[Txn, list[Action]]


def step(txn: Txn, event: Event) -> Result:
    """The next value of `txn` and the actions to carry out, in order.

    An event the stage does not wait for (a late vote, a duplicated acknowledgement, an
    answer from a bank not asked) changes nothing."""
    handler = TRANSITIONS.get((txn.stage, type(event)))
    if handler is None:
        return txn, []
    return handler(txn, event)


# Starting ------------------------------------------------------------------------------


def _begin(txn: Txn, event: Event) -> Result:
    txn = dataclasses.replace(txn, stage=Stage.VOTING, caller=True, awaiting=frozenset(txn.banks))
    return txn, [
        CrashPoint("gateway.before_prepare"),
        SendPrepares(txn.banks, one_phase=txn.one_phase),
    ]


def _capture(txn: Txn, event: Event) -> Result:
    assert isinstance(event, Capture)
    check(txn.manual and event.amount_minor > 0, f"{txn.payment_id}: a capture of nothing")
    # Written from AUTHORIZED, whatever the request read: the store's answer says whether
    # the payment still was (and whether the caller's key was used before).
    txn = dataclasses.replace(
        txn,
        state=TxnState.AUTHORIZED,
        caller=True,
        stage=Stage.DECIDING,
        commit=True,
        capture_minor=event.amount_minor,
    )
    return txn, [
        RecordCommit(
            finished=False, from_state=TxnState.AUTHORIZED, capture_minor=event.amount_minor
        )
    ]


def _cancel(txn: Txn, event: Event) -> Result:
    assert isinstance(event, Cancel)
    failure = Failure(event.reason, event.message, False)
    txn = dataclasses.replace(
        txn,
        state=TxnState.AUTHORIZED,
        caller=True,
        stage=Stage.DECIDING,
        commit=False,
        failure=failure,
    )
    return txn, [RecordAbort(failure, from_state=TxnState.AUTHORIZED)]


def _recover(txn: Txn, event: Event) -> Result:
    # A claimed transaction may have waited for a free slot: make sure it is still ours.
    return dataclasses.replace(txn, stage=Stage.RENEWING, recovering=True), [RenewLease()]


def _lease_renewed(txn: Txn, event: Event) -> Result:
    assert isinstance(event, LeaseRenewed)
    if not event.ok:
        message = "lease lost, another gateway drives the transaction"
        return _done(txn, [Log("warning", message)])
    if txn.commit is None:
        return _resume(txn)
    txn = dataclasses.replace(txn, stage=Stage.DELIVERING, awaiting=txn.pending)
    amount = txn.capture_minor if txn.commit else 0
    banks = tuple(sorted(txn.pending))
    return txn, [SendDecision(banks, bool(txn.commit), retry=True, amount_minor=amount)]


def _resume(txn: Txn) -> Result:
    """Recovery's first step, from the recorded state alone."""
    if txn.state == TxnState.PREPARING and txn.one_phase:
        failure = Failure(PRESUMED_ABORT, "the bank's outcome was not known; aborted", True)
        return _ask(dataclasses.replace(txn, failure=failure), commit=False)
    if txn.state == TxnState.PREPARING:
        failure = Failure(PRESUMED_ABORT, "the gateway restarted before deciding", True)
        txn, actions = _record_abort(txn, failure)
        return txn, [Log("info", "presumed abort"), *actions]
    if txn.state in (TxnState.COMMITTING, TxnState.ABORTING):
        return _deliver(txn, commit=txn.state == TxnState.COMMITTING)
    if txn.state == TxnState.AUTHORIZED:
        # Recovery claims an authorization only once it is past its deadline.
        failure = Failure(AUTHORIZATION_EXPIRED, "the authorization expired uncaptured", False)
        txn = dataclasses.replace(txn, stage=Stage.DECIDING, commit=False, failure=failure)
        return txn, [RecordAbort(failure, from_state=TxnState.AUTHORIZED)]
    return _done(txn, [])


# Phase one -----------------------------------------------------------------------------


def _voted(txn: Txn, event: Event) -> Result:
    assert isinstance(event, Voted)
    if event.bank not in txn.awaiting:
        return txn, []
    txn = dataclasses.replace(txn, awaiting=txn.awaiting - {event.bank})
    if not event.yes:
        return _prepare_failed(txn, refusal(event.reason))
    txn = dataclasses.replace(
        txn, voted_yes=txn.voted_yes | {event.bank}, posted=txn.posted and event.posted
    )
    actions: list[Action] = []
    if len(txn.voted_yes) == 1 and len(txn.banks) >= 2:
        actions.append(CrashPoint("gateway.after_first_prepare"))
    if txn.awaiting:
        return txn, actions
    actions.append(CrashPoint("gateway.after_prepares"))
    if txn.manual:
        txn = dataclasses.replace(txn, stage=Stage.DECIDING, commit=True)
        return txn, [*actions, RecordAuthorization()]
    if not txn.one_phase:
        return _add(actions, _record_commit(txn, finished=False))
    if txn.posted:
        return _add(actions, _record_commit(txn, finished=True))
    # A yes that only held comes from a bank that ignores one_phase (an older version). The
    # bank still decides: ask it to Commit, and record its answer.
    return _add(actions, _ask(txn, commit=True))


def _prepare_error(txn: Txn, event: Event) -> Result:
    assert isinstance(event, PrepareFailed)
    if event.bank not in txn.awaiting:
        return txn, []
    txn = dataclasses.replace(txn, awaiting=txn.awaiting - {event.bank})
    if not event.answered:
        return _prepare_failed(txn, Failure(event.reason, event.message, True))
    fields = (("bank", event.bank), ("error", event.message))
    logged = Log("error", "bank refused a prepare", fields)
    failure = Failure(BANK_UNAVAILABLE, "a bank could not take part in the payment", True)
    return _add([logged], _prepare_failed(txn, failure))


def _votes_timed_out(txn: Txn, event: Event) -> Result:
    failure = Failure(BANK_TIMEOUT, "a bank did not answer within the prepare timeout", True)
    return _prepare_failed(txn, failure)


def _prepare_failed(txn: Txn, failure: Failure) -> Result:
    """Phase one ended without every yes."""
    txn = dataclasses.replace(txn, awaiting=frozenset(), failure=failure)
    if txn.one_phase and failure.transient:
        return _answer_then_ask(txn, [])
    # Two phases: nothing is committed without a decision. One phase: a no for a business
    # reason is final, the bank recorded the refusal and held nothing.
    return _record_abort(txn, failure)


# One bank: its answer decides ----------------------------------------------------------


def _ask(txn: Txn, *, commit: bool) -> Result:
    (bank,) = txn.banks
    txn = dataclasses.replace(
        txn, stage=Stage.CONFIRMING, commit=commit, awaiting=frozenset(txn.banks)
    )
    return txn, [SendDecision((bank,), commit, retry=txn.recovering, one_phase=True)]


def _bank_answered(txn: Txn, event: Event) -> Result:
    """The only bank answered a Commit or an Abort: an acknowledgement is that outcome, a
    refusal for the other outcome (TRANSACTION_ABORTED, TRANSACTION_COMMITTED) is the other."""
    assert isinstance(event, Acked | NotAcked | Refused)
    if event.bank not in txn.awaiting:
        return txn, []
    txn = dataclasses.replace(txn, awaiting=frozenset())
    refused_because = TRANSACTION_ABORTED if txn.commit else TRANSACTION_COMMITTED
    committed: bool | None = None
    if isinstance(event, Acked):
        committed = txn.commit
    elif isinstance(event, Refused) and event.reason == refused_because:
        committed = not txn.commit
    if committed:
        return _record_commit(txn, finished=True)
    failure = txn.failure or Failure(BANK_UNAVAILABLE, "the bank did not confirm the payment", True)
    if committed is False:
        return _record_abort(txn, failure)
    reason = "" if isinstance(event, Acked) else event.reason
    logged = Log(
        "info",
        "one-phase outcome unknown, will ask again",
        (("bank", event.bank), ("sent", "commit" if txn.commit else "abort"), ("reason", reason)),
    )
    if txn.commit:  # the request's Commit went unanswered
        return _answer_then_ask(dataclasses.replace(txn, failure=failure), [logged])
    return _done(txn, [logged])  # recovery asks again on its next pass


def _answer_then_ask(txn: Txn, actions: list[Action]) -> Result:
    """A one-phase outcome is not known: the bank may have committed. The caller hears
    UNAVAILABLE now; the outcome is settled by asking the bank with an Abort (in the
    background, then by recovery), and the key stays in use until it is."""
    answered = [_answer(txn)] if txn.caller else []
    return _add([*actions, *answered], _ask(dataclasses.replace(txn, caller=False), commit=False))


# The decision --------------------------------------------------------------------------


def _record_commit(txn: Txn, *, finished: bool) -> Result:
    txn = dataclasses.replace(txn, stage=Stage.DECIDING, commit=True)
    return txn, [RecordCommit(finished=finished)]


def _record_abort(txn: Txn, failure: Failure) -> Result:
    txn = dataclasses.replace(txn, stage=Stage.DECIDING, commit=False, failure=failure)
    return txn, [RecordAbort(failure)]


def _recorded(txn: Txn, event: Event) -> Result:
    """The store answered a decision write with the state it now holds: ours, or one that
    another driver recorded first, which stands."""
    assert isinstance(event, Recorded)
    check(event.state != TxnState.PREPARING, f"{txn.payment_id}: a decision write left no decision")
    was, txn = txn.state, dataclasses.replace(txn, state=event.state)
    if was == TxnState.AUTHORIZED:
        return _authorization_recorded(txn, event.applied)
    if txn.one_phase:
        return _one_phase_recorded(txn)
    if txn.state == TxnState.AUTHORIZED:  # ours: only the request records it
        counted: list[Action] = [Count("authorizations", ("authorized",))]
        return _done(txn, [*counted, CrashPoint("gateway.after_authorization")])
    if txn.state == TxnState.COMMITTING and txn.manual and not event.applied:
        # A capture stands, with an amount this driver may not know: its driver delivers it
        # (or recovery, from the recorded amount).
        return _done(txn, [])
    if txn.state == TxnState.COMMITTING:
        actions: list[Action] = []
        if txn.commit:
            actions.append(Count("transactions", ("committed", "")))
            if txn.caller:
                actions.append(CrashPoint("gateway.after_decision"))
        return _add(actions, _deliver(txn, commit=True))
    counted = []
    if txn.state in (TxnState.ABORTING, TxnState.ABORTED) and txn.commit:
        # Recovery presumed abort first (and may have finished it): that decision stands.
        failure = Failure(PRESUMED_ABORT, "the payment was aborted by recovery", True)
        txn = dataclasses.replace(txn, failure=failure)
    elif txn.state == TxnState.ABORTING:
        counted = [Count("transactions", ("aborted", _failure(txn).reason))]
    if txn.state == TxnState.ABORTING:
        answered = [_answer(txn)] if txn.caller else []
        txn = dataclasses.replace(txn, caller=False)
        return _add([*counted, *answered], _deliver(txn, commit=False))
    return _done(txn, [])  # finished already by another driver


def _authorization_recorded(txn: Txn, applied: bool) -> Result:
    """A capture or a cancellation of an authorization was written, or found another first."""
    if not applied:
        # The other write's driver delivers its decision (recovery, if it dies): this one
        # does not know the amount that write recorded.
        message = f"the payment is {txn.state}, not awaiting capture"
        failure = Failure(PAYMENT_NOT_CAPTURABLE, message, False)
        return _done(dataclasses.replace(txn, failure=failure, commit=None), [])
    outcome = "captured" if txn.commit else _OUTCOMES[_failure(txn).reason]
    counted: list[Action] = [Count("authorizations", (outcome,))]
    if txn.caller or txn.recovering:
        counted.append(CrashPoint(f"gateway.after_{outcome}_decision"))
    if txn.commit:
        return _add(counted, _deliver(txn, commit=True))
    answered = [_answer(txn)] if txn.caller else []
    txn = dataclasses.replace(txn, caller=False)
    return _add([*counted, *answered], _deliver(txn, commit=False))


_OUTCOMES = {CANCELED: "canceled", AUTHORIZATION_EXPIRED: "expired"}


def _one_phase_recorded(txn: Txn) -> Result:
    # The bank decided, and no driver records an outcome the bank did not give, so the store
    # can only hold the same outcome.
    if txn.commit:
        check(
            txn.state in (TxnState.COMMITTING, TxnState.COMMITTED),
            f"one-phase transaction {txn.payment_id} committed at its bank but {txn.state}",
        )
        actions: list[Action] = [Count("transactions", ("committed", ""))]
        if txn.caller:
            actions.append(CrashPoint("gateway.after_decision"))
        if txn.recovering:
            actions.append(Count("recovered", ("commit",)))
        return _done(txn, actions)
    check(
        txn.state in (TxnState.ABORTING, TxnState.ABORTED),
        f"one-phase transaction {txn.payment_id} aborted at its bank but {txn.state}",
    )
    actions = []
    if txn.state == TxnState.ABORTING:
        actions.append(Count("transactions", ("aborted", _failure(txn).reason)))
    if txn.recovering:
        actions.append(Count("recovered", ("abort",)))
    if txn.state == TxnState.ABORTING:
        # Nothing to deliver: the bank refused or acknowledged the abort already.
        actions += [_answer(txn)] if txn.caller else []
        txn = dataclasses.replace(txn, caller=False)
        actions.append(RecordFinish(TxnState.ABORTED))
    return _done(txn, actions)


# Phase two -----------------------------------------------------------------------------


def _deliver(txn: Txn, *, commit: bool) -> Result:
    banks = frozenset(txn.banks)
    txn = dataclasses.replace(
        txn, stage=Stage.DELIVERING, commit=commit, pending=banks, awaiting=banks, round=0
    )
    amount = txn.capture_minor if commit else 0
    return txn, [SendDecision(txn.banks, commit, retry=txn.recovering, amount_minor=amount)]


def _delivery_answer(txn: Txn, event: Event) -> Result:
    assert isinstance(event, Acked | NotAcked | Refused)
    if event.bank not in txn.awaiting:
        return txn, []
    txn = dataclasses.replace(txn, awaiting=txn.awaiting - {event.bank})
    actions: list[Action] = []
    if isinstance(event, Acked):
        txn = dataclasses.replace(txn, pending=txn.pending - {event.bank})
        if txn.commit and len(txn.banks) >= 2 and len(txn.pending) == len(txn.banks) - 1:
            actions.append(CrashPoint("gateway.after_first_commit"))
    elif isinstance(event, Refused):
        # A commit refused as aborted, or the reverse: a protocol violation. Logged, never
        # acted upon; the decision is re-sent as to a bank that did not answer.
        decision = "commit" if txn.commit else "abort"
        actions.append(
            Log("critical", "bank refused the decision",
                (("bank", event.bank), ("decision", decision), ("error", event.reason)))
        )  # fmt: skip
    if txn.awaiting:
        return txn, actions
    return _add(actions, _round_over(txn))


def _round_over(txn: Txn) -> Result:
    if not txn.pending:
        final = TxnState.COMMITTED if txn.commit else TxnState.ABORTED
        actions: list[Action] = [RecordFinish(final)]
        if txn.recovering:
            actions.append(Count("recovered", ("commit" if txn.commit else "abort",)))
        return _done(txn, actions)
    if txn.round + 1 < txn.rounds:
        return dataclasses.replace(txn, stage=Stage.BACKING_OFF), [Backoff(txn.round)]
    logged = Log(
        "warning",
        "decision not yet acknowledged",
        (("decision", "commit" if txn.commit else "abort"), ("pending", sorted(txn.pending))),
    )
    return _done(txn, [logged])  # recovery re-sends it


def _backoff_elapsed(txn: Txn, event: Event) -> Result:
    # Renew the lease before every re-send: a gateway that lost it must stop.
    return dataclasses.replace(txn, stage=Stage.RENEWING, round=txn.round + 1), [RenewLease()]


# Ending --------------------------------------------------------------------------------


def _done(txn: Txn, actions: list[Action]) -> Result:
    """Nothing more for this driver; a waiting caller is answered with what is recorded."""
    if txn.caller:
        if txn.commit and not txn.one_phase and txn.state == TxnState.COMMITTING:
            actions = [*actions, CrashPoint("gateway.after_commits")]
        actions = [*actions, _answer(txn)]
    return dataclasses.replace(txn, stage=Stage.DONE, caller=False, awaiting=frozenset()), actions


def _answer(txn: Txn) -> Answer:
    if txn.commit is None and txn.failure is not None:  # refused, changing nothing
        return Answer(Decision(txn.state, txn.failure))
    if txn.state in (TxnState.COMMITTING, TxnState.COMMITTED, TxnState.AUTHORIZED):
        return Answer(Decision(txn.state))
    return Answer(Decision(txn.state, _failure(txn)))


def _failure(txn: Txn) -> Failure:
    check(txn.failure is not None, f"{txn.payment_id}: aborting with no reason")
    assert txn.failure is not None
    return txn.failure


def _add(actions: list[Action], result: Result) -> Result:
    txn, more = result
    return txn, [*actions, *more]


Handler = Callable[[Txn, Event], Result]
# The state table: which event each stage waits for, and what handles it. ARCHITECTURE.md
# lists the same pairs (tests/unit/test_transitions.py compares them).
TRANSITIONS: dict[tuple[Stage, type], Handler] = {
    (Stage.START, Begin): _begin,
    (Stage.START, Recover): _recover,
    (Stage.START, Capture): _capture,
    (Stage.START, Cancel): _cancel,
    (Stage.RENEWING, LeaseRenewed): _lease_renewed,
    (Stage.VOTING, Voted): _voted,
    (Stage.VOTING, PrepareFailed): _prepare_error,
    (Stage.VOTING, VotesTimedOut): _votes_timed_out,
    (Stage.DECIDING, Recorded): _recorded,
    (Stage.CONFIRMING, Acked): _bank_answered,
    (Stage.CONFIRMING, NotAcked): _bank_answered,
    (Stage.CONFIRMING, Refused): _bank_answered,
    (Stage.DELIVERING, Acked): _delivery_answer,
    (Stage.DELIVERING, NotAcked): _delivery_answer,
    (Stage.DELIVERING, Refused): _delivery_answer,
    (Stage.BACKING_OFF, BackoffElapsed): _backoff_elapsed,
}


def phase_of(txn: Txn) -> str | None:
    """The phase a transaction is in, for its span: prepare, commit, abort or none."""
    if txn.stage == Stage.VOTING:
        return "prepare"
    if txn.stage in (Stage.CONFIRMING, Stage.DELIVERING, Stage.BACKING_OFF) or (
        txn.stage == Stage.RENEWING and txn.commit is not None
    ):
        return "commit" if txn.commit else "abort"
    return None


def outcome_of(phase: str, txn: Txn) -> str:
    """How a phase ended, for its span, from the transaction after it."""
    if phase == "prepare":
        return "yes" if txn.failure is None else txn.failure.reason
    if txn.one_phase:
        if txn.stage == Stage.DECIDING:
            return "committed" if txn.commit else "aborted"
        return "unknown"
    return "finished" if not txn.pending else "unacknowledged"


def forgets_commit_decision(inner: Step) -> Step:
    """A deliberately broken protocol, for the tests that show the checkers catch one:
    recovery delivers an Abort for a transaction whose commit is recorded."""

    def broken(txn: Txn, event: Event) -> Result:
        txn, actions = inner(txn, event)
        if txn.recovering and txn.stage == Stage.DELIVERING and txn.commit:
            txn = dataclasses.replace(txn, commit=False)
            actions = [
                dataclasses.replace(a, commit=False) if isinstance(a, SendDecision) else a
                for a in actions
            ]
        return txn, actions

    return broken


def captures_everything_held(inner: Step) -> Step:
    """A deliberately broken protocol: a capture's Commits post all that is held, not the
    amount captured (the banks post more than the payee captured)."""

    def broken(txn: Txn, event: Event) -> Result:
        txn, actions = inner(txn, event)
        return txn, [
            dataclasses.replace(a, amount_minor=0) if isinstance(a, SendDecision) else a
            for a in actions
        ]

    return broken


def commits_one_split_leg(inner: Step) -> Step:
    """A deliberately broken protocol: a commit to three banks or more (only a split
    payment has that many) goes as a Commit to its first bank and an Abort to the others.
    They acknowledge, and the payment ends COMMITTED with one bank's legs posted."""

    def broken(txn: Txn, event: Event) -> Result:
        txn, actions = inner(txn, event)
        if len(txn.banks) < 3:
            return txn, actions
        first = txn.banks[0]
        split: list[Action] = []
        for a in actions:
            if isinstance(a, SendDecision) and a.commit:
                others = tuple(bank for bank in a.banks if bank != first)
                split += [dataclasses.replace(a, banks=(first,))] if first in a.banks else []
                split += [dataclasses.replace(a, banks=others, commit=False)] if others else []
            else:
                split.append(a)
        return txn, split

    return broken


BROKEN_VARIANTS: dict[str, Callable[[Step], Step]] = {
    "forgets-commit-decision": forgets_commit_decision,
    "captures-everything-held": captures_everything_held,
    "commits-one-split-leg": commits_one_split_leg,
}
