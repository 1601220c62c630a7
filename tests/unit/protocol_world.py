"""A model world for the transition function: a store, banks and a network, in memory.

The gateways in it are transitions.step and nothing else; the store writes decisions only
from PREPARING (as both real stores do), and the banks follow the participant's rules (a
hold resolves at most once, an Abort of an unknown transaction records it aborted, so a late
Prepare is refused). A test moves the world one move at a time: a gateway carries out an
action, the network delivers, loses, delays or duplicates a message, a timer fires, a
gateway crashes, or another gateway's recovery claims the transaction. After every move the
protocol's invariants are checked; `settle` then lets every message through and runs
recovery until the transaction is finished.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from paygate.errors import BANK_TIMEOUT, CANCELED, INSUFFICIENT_FUNDS, TRANSACTION_ABORTED
from paygate.gateway import transitions as t
from paygate.gateway.models import TxnState

AMOUNT_MINOR = 100  # every payment's; a capture posts at most this
FINAL = (TxnState.COMMITTED, TxnState.ABORTED)
COMMITTED_STATES = (TxnState.COMMITTING, TxnState.COMMITTED)
ABORTED_STATES = (TxnState.ABORTING, TxnState.ABORTED)


class ProtocolViolation(AssertionError):
    pass


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise ProtocolViolation(message)


@dataclasses.dataclass
class Bank:
    name: str
    no_reason: str  # "" votes yes; else this reason (a business refusal or another)
    legacy: bool  # ignores one_phase: holds, and waits for a Commit
    status: str = "none"  # none, prepared, committed, aborted
    posted_minor: int = 0  # what a Commit posted of the hold

    def prepare(self, one_phase: bool) -> tuple[bool, str, bool]:
        """(yes, reason, posted)."""
        if self.status == "aborted":
            return False, TRANSACTION_ABORTED, False
        if self.status in ("prepared", "committed"):
            return True, "", self.status == "committed"
        if self.no_reason:
            self.status = "aborted"  # a refusal is recorded; nothing is held
            return False, self.no_reason, False
        posts = one_phase and not self.legacy
        self.status = "committed" if posts else "prepared"
        self.posted_minor = AMOUNT_MINOR if posts else 0
        return True, "", posts

    def commit(self, amount_minor: int) -> str:
        """An empty reason for an acknowledgement, else the refusal's reason."""
        if self.status == "prepared":
            expect(0 <= amount_minor <= AMOUNT_MINOR, f"a Commit of {amount_minor} posted")
            self.status, self.posted_minor = "committed", amount_minor or AMOUNT_MINOR
        if self.status == "committed":
            return ""
        return "TRANSACTION_ABORTED" if self.status == "aborted" else "TRANSACTION_NOT_FOUND"

    def abort(self) -> str:
        if self.status == "committed":
            return "TRANSACTION_COMMITTED"
        self.status = "aborted"
        return ""


@dataclasses.dataclass
class Gateway:
    """One driver of the transaction (a request's, or a recovery pass's)."""

    ident: int
    txn: t.Txn
    todo: list[t.Action]
    inbox: list[t.Event] = dataclasses.field(default_factory=list)
    timers: list[t.Event] = dataclasses.field(default_factory=list)
    alive: bool = True
    answers: list[t.Decision] = dataclasses.field(default_factory=list)

    @property
    def busy(self) -> bool:
        return self.alive and bool(self.todo or self.inbox or self.timers)


@dataclasses.dataclass
class Request:
    gateway: int
    bank: str
    kind: str  # prepare, commit, abort
    one_phase: bool
    late: bool = False  # its caller timed out on it already
    amount_minor: int = 0


class World:
    def __init__(
        self,
        *,
        one_phase: bool,
        banks: list[Bank],
        step: t.Step,
        rounds: int = 2,
        manual: bool = False,
    ) -> None:
        self.step = step
        self.one_phase = one_phase
        self.manual = manual
        self.captured_minor = 0  # the capture recorded with its decision
        self.banks = {bank.name: bank for bank in banks}
        self.state = TxnState.PREPARING
        self.key = "in_progress"
        self.lease = 0  # the gateway holding the transaction's lease
        self.rounds = rounds
        self.network: list[Request] = []
        self.replies: list[tuple[int, t.Event]] = []
        self.gateways: list[Gateway] = []
        self.request_answers: list[t.Decision] = []
        self._start(t.Begin())

    # Gateways --------------------------------------------------------------------------

    def _start(self, first: t.Event) -> Gateway:
        txn = t.new_txn(
            payment_id="pay_1",
            banks=tuple(sorted(self.banks)),
            one_phase=self.one_phase,
            state=self.state,
            rounds=self.rounds,
            manual=self.manual,
            capture_minor=self.captured_minor,
        )
        gateway = Gateway(len(self.gateways), txn, [])
        self.gateways.append(gateway)
        self.lease = gateway.ident
        self._feed(gateway, first)
        return gateway

    def _feed(self, gateway: Gateway, event: t.Event) -> None:
        gateway.txn, actions = self.step(gateway.txn, event)
        gateway.todo.extend(actions)

    def recover(self) -> Gateway | None:
        """Another gateway's recovery claims the transaction (its lease expired, or its
        owner is dead), as claim_unfinished does."""
        if self.state in FINAL:
            return None
        return self._start(t.Recover())

    def capture(self, amount_minor: int) -> None:
        """The payee captures (the gateway checks AUTHORIZED first; the write may still lose)."""
        if self.state == TxnState.AUTHORIZED:
            self._start(t.Capture(amount_minor))

    def cancel(self) -> None:
        if self.state == TxnState.AUTHORIZED:
            self._start(t.Cancel(CANCELED, "canceled by the payee"))

    def crash(self, gateway: Gateway) -> None:
        gateway.alive = False

    # Moves -----------------------------------------------------------------------------

    def act(self, gateway: Gateway) -> None:
        """The gateway carries out its next action."""
        action = gateway.todo.pop(0)
        before = gateway.txn
        self.check_action(gateway, before, action)
        if isinstance(action, t.SendPrepares):
            for bank in action.banks:
                self.network.append(Request(gateway.ident, bank, "prepare", action.one_phase))
            gateway.timers.append(t.VotesTimedOut())
        elif isinstance(action, t.SendDecision):
            kind = "commit" if action.commit else "abort"
            for bank in action.banks:
                self.network.append(
                    Request(gateway.ident, bank, kind, action.one_phase, False, action.amount_minor)
                )
        elif isinstance(action, t.RecordCommit | t.RecordAbort | t.RecordAuthorization):
            gateway.inbox.append(self._decide(action))
        elif isinstance(action, t.RecordFinish):
            decided = (
                TxnState.COMMITTING if action.state == TxnState.COMMITTED else (TxnState.ABORTING)
            )
            if self.state == decided:
                self.state = action.state
        elif isinstance(action, t.RenewLease):
            gateway.inbox.append(t.LeaseRenewed(self.lease == gateway.ident))
        elif isinstance(action, t.Backoff):
            gateway.timers.append(t.BackoffElapsed())
        elif isinstance(action, t.Answer):
            gateway.answers.append(action.decision)
            self.request_answers.append(action.decision)
        self.check_world()

    def _decide(self, action: t.RecordCommit | t.RecordAbort | t.RecordAuthorization) -> t.Event:
        """The store's conditional decision write: only from the state it replaces."""
        from_state = TxnState.PREPARING
        if isinstance(action, t.RecordCommit | t.RecordAbort):
            from_state = action.from_state
        if self.state != from_state:
            return t.Recorded(self.state, applied=False)
        if isinstance(action, t.RecordAuthorization):
            self.state = TxnState.AUTHORIZED
        elif isinstance(action, t.RecordCommit):
            self.state = TxnState.COMMITTED if action.finished else TxnState.COMMITTING
            self.captured_minor = action.capture_minor
        else:
            self.state = TxnState.ABORTING
        if from_state == TxnState.PREPARING:
            released = isinstance(action, t.RecordAbort) and action.failure.transient
            self.key = "released" if released else "completed"
        return t.Recorded(self.state)

    def deliver(self, index: int, fate: str) -> None:
        """A request reaches its bank (or not), and the answer returns (or not).

        fate: "ok"; "lost" (never arrives; the caller times out); "late" (the caller times
        out, the request arrives later); "no-reply" (applied, the answer is lost); "twice"
        (the answer arrives twice); "error" (the bank answers with an error)."""
        request = self.network[index]
        if fate == "late":
            if not request.late:
                self._timed_out(request)
            self.network.append(self.network.pop(index))
            request.late = True
            return
        self.network.pop(index)
        if fate == "lost":
            if not request.late:
                self._timed_out(request)
            return
        event = self._apply(request, request.kind, error=fate == "error")
        if request.late:
            return  # its caller gave up on it already
        if fate == "no-reply":
            self._timed_out(request)
            return
        self.replies.append((request.gateway, event))
        if fate == "twice":
            self.replies.append((request.gateway, event))

    def _apply(self, request: Request, kind: str, *, error: bool) -> t.Event:
        bank = self.banks[request.bank]
        if kind == "prepare":
            if error:
                return t.PrepareFailed(bank.name, "INVALID_ARGUMENT", "refused", answered=True)
            yes, reason, posted = bank.prepare(request.one_phase)
            return t.Voted(bank.name, yes, reason, posted)
        refused = bank.commit(request.amount_minor) if kind == "commit" else bank.abort()
        return t.Refused(bank.name, refused) if refused else t.Acked(bank.name)

    def _timed_out(self, request: Request) -> None:
        if request.kind == "prepare":
            event: t.Event = t.PrepareFailed(request.bank, BANK_TIMEOUT, "slow", answered=False)
        else:
            event = t.NotAcked(request.bank, BANK_TIMEOUT)
        self.replies.append((request.gateway, event))

    def reply(self, index: int) -> None:
        ident, event = self.replies.pop(index)
        gateway = self.gateways[ident]
        if gateway.alive:
            gateway.inbox.append(event)

    def take(self, gateway: Gateway, *, timer: bool = False) -> None:
        """The gateway steps its next event (or fires its next timer)."""
        event = gateway.timers.pop(0) if timer else gateway.inbox.pop(0)
        self._feed(gateway, event)
        self.check_world()

    # Invariants ------------------------------------------------------------------------

    def check_action(self, gateway: Gateway, before: t.Txn, action: t.Action) -> None:
        if isinstance(action, t.SendDecision) and not action.one_phase:
            recorded = COMMITTED_STATES if action.commit else ABORTED_STATES
            expect(
                self.state in recorded,
                f"{'Commit' if action.commit else 'Abort'} sent while {self.state}: a decision"
                " is recorded before phase two, and a recorded one is never reversed",
            )
            if action.commit:
                expect(
                    action.amount_minor == self.captured_minor,
                    f"a Commit of {action.amount_minor}, but {self.captured_minor} was captured",
                )
        if isinstance(action, t.RecordAbort):
            expect(before.state == action.from_state, "an abort decided after a decision")
            if action.failure.transient and self.state == TxnState.PREPARING:
                expect(not self._moved(), "the key is released though money moved")
            if self.one_phase and self.state == TxnState.PREPARING:
                (bank,) = self.banks.values()
                expect(bank.status == "aborted", "one-phase abort recorded before the bank's")
        if isinstance(action, t.RecordCommit) and self.one_phase:
            (bank,) = self.banks.values()
            expect(bank.status == "committed", "one-phase commit recorded before the bank's")
        if isinstance(action, t.Log):
            expect(action.level != "critical", f"a bank refused a decision: {action}")
        if isinstance(action, t.Answer):
            expect(not gateway.answers, "a caller answered twice")

    def _moved(self) -> bool:
        return any(bank.status == "committed" for bank in self.banks.values())

    def check_world(self) -> None:
        if self._moved():
            allowed = COMMITTED_STATES + ((TxnState.PREPARING,) if self.one_phase else ())
            expect(self.state in allowed, f"a bank committed while the gateway is {self.state}")
        if self.state in ABORTED_STATES:
            expect(not self._moved(), "aborted at the gateway, committed at a bank")

    # The end -----------------------------------------------------------------------------

    def settle(self, max_passes: int = 6) -> None:
        """Every message gets through and every gateway still alive runs to its end; then
        recovery passes until the transaction is finished (the banks answer again)."""
        for _ in range(max_passes):
            self._drain()
            if self.state in FINAL:
                break
            self.recover()
        self._drain()
        expect(self.state in FINAL, f"still {self.state} after the banks came back")
        statuses = {bank.name: bank.status for bank in self.banks.values()}
        if self.state == TxnState.COMMITTED:
            expect(all(s == "committed" for s in statuses.values()), f"committed: {statuses}")
            posted = {bank.posted_minor for bank in self.banks.values()}
            expect(posted == {self.captured_minor or AMOUNT_MINOR}, f"posted {posted}")
            expect(self.key == "completed", "a committed payment's key is not completed")
        else:
            expect(all(s in ("aborted", "none") for s in statuses.values()), f"aborted: {statuses}")
        for decision in self.request_answers:
            if decision.committed:
                expect(self.state == TxnState.COMMITTED, "answered success, then aborted")
            elif decision.state in ABORTED_STATES:
                expect(self.state == TxnState.ABORTED, "answered failure, then committed")

    def _drain(self, max_moves: int = 10_000) -> None:
        for _ in range(max_moves):
            gateway = next((g for g in self.gateways if g.alive and (g.todo or g.inbox)), None)
            if gateway is not None:
                if gateway.todo:
                    self.act(gateway)
                else:
                    self.take(gateway)
            elif self.network:
                self.deliver(0, "ok")
            elif self.replies:
                self.reply(0)
            elif timed := next((g for g in self.gateways if g.alive and g.timers), None):
                self.take(timed, timer=True)
            else:
                return
        raise ProtocolViolation("the gateways never stop")


def two_banks(no_reasons: tuple[str, str]) -> list[Bank]:
    return [Bank("bank-a", no_reasons[0], False), Bank("bank-b", no_reasons[1], False)]


NO_REASONS = ("", "", "", INSUFFICIENT_FUNDS, TRANSACTION_ABORTED)
FATES = ("ok",) * 8 + ("lost", "late", "no-reply", "twice", "error")
CALM_FATES = ("ok", "ok", "twice")
MoveChooser = Callable[[list[str]], str]
