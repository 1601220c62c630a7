"""The record of one chaos run: users, the calls they made, bank reads and faults.

Everything here is plain data with times in seconds since the run started (monotonic
clock), so that the checker can be a set of pure functions over it and the whole record
can be written to JSON for a person to read afterwards. No password or access token is
ever part of the history.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any


class Outcome(enum.StrEnum):
    """What one CreatePayment call told its client."""

    SUCCEEDED = "succeeded"  # a payment came back: money moved (or will, once decided)
    REFUSED = "refused"  # a final business answer (insufficient funds) that the key keeps
    INDEFINITE = "indefinite"  # unavailable, timed out, key in use: retry the same key
    ERROR = "error"  # an answer a correct suite never gives to this workload


class Phase(enum.StrEnum):
    RUN = "run"  # during the run, under faults
    RESOLVE = "resolve"  # after healing: retrying keys that never got a definite answer
    REPLAY = "replay"  # after recovery: asking every key again, expecting the same answer


@dataclasses.dataclass(frozen=True, kw_only=True)
class User:
    username: str
    bank_id: str
    account_number: str
    initial_minor: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class Intent:
    """The parameters sent under one idempotency key; every retry sends exactly these."""

    key: str
    payer: str
    payee: str
    amount_minor: int
    # An authorization (manual capture), and what its payee does with it: "capture"
    # (capture_minor of it), "cancel", or "expire" (nothing, until after the run).
    manual: bool = False
    settle: str = ""
    capture_minor: int = 0
    # Refunds its payee sends at once, all together, once the payment moved money: their
    # amounts (their sum may pass what moved: the gateway refuses what is too much).
    refund_minor: tuple[int, ...] = ()
    # A split payment: (payee, part) of each payee, the parts adding up to amount_minor;
    # `payee` is then the first of them (chaos/many_payees.py), the one who refunds it.
    splits: tuple[tuple[str, int], ...] = ()


@dataclasses.dataclass(frozen=True, kw_only=True)
class Call:
    key: str
    phase: Phase
    start_s: float
    end_s: float
    outcome: Outcome
    payment_id: str = ""
    status: str = ""  # the status of the returned payment, when one came back
    code: str = ""  # the gRPC status name of a failed call
    reason: str = ""  # the google.rpc.ErrorInfo reason of a failed call
    batch: int = 0  # of an item of a BatchCreatePayments call: that call's number (from 1)

    def answer(self) -> tuple[str, str]:
        """What a definite call answered, comparable between calls of the same key."""
        if self.outcome == Outcome.SUCCEEDED:
            return ("succeeded", self.payment_id)
        return (self.outcome.value, self.reason)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settlement:
    """One CapturePayment or CancelPayment call of an authorization's payee."""

    key: str  # the authorization's intent key
    action: str  # "capture" or "cancel"
    phase: Phase
    start_s: float
    end_s: float
    outcome: Outcome
    payment_id: str
    amount_minor: int = 0  # asked to capture
    status: str = ""
    amount_captured: int = 0  # what the answer said was captured
    code: str = ""
    reason: str = ""


@dataclasses.dataclass(frozen=True, kw_only=True)
class AccountRead:
    bank_id: str
    account_number: str
    balance: int
    available: int
    pending_debit: int
    pending_credit: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class Sample:
    """One read of every user's account, issued concurrently between start_s and end_s.

    `complete` is False when a bank did not answer (killed or paused): the reads that did
    come back are still checked one by one, but no total is taken.
    """

    start_s: float
    end_s: float
    reads: tuple[AccountRead, ...]
    complete: bool

    def total_balance(self) -> int:
        return sum(read.balance for read in self.reads)

    def total_pending_debit(self) -> int:
        return sum(read.pending_debit for read in self.reads)

    def total_pending_credit(self) -> int:
        return sum(read.pending_credit for read in self.reads)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Fault:
    kind: str  # one of faults.KINDS
    target: str  # the supervisord program
    start_s: float
    end_s: float  # when the program served again (or the pause ended)
    detail: str = ""


@dataclasses.dataclass(frozen=True, kw_only=True)
class RefundCall:
    """One RefundPayment call by a payment's payee, under the key `<key>/refund-<index>`."""

    key: str  # the payment's intent key
    index: int
    phase: Phase
    start_s: float
    end_s: float
    outcome: Outcome
    payment_id: str
    amount_minor: int  # asked
    refund_id: str = ""  # of a refund that came back
    status: str = ""
    code: str = ""
    reason: str = ""
    # Of a refund of a split payment that came back: (payee, share) of each payee it takes
    # from, as answered.
    splits: tuple[tuple[str, int], ...] = ()

    @property
    def refund_key(self) -> str:
        return f"{self.key}/refund-{self.index}"


@dataclasses.dataclass(frozen=True, kw_only=True)
class GatewayRefund:
    """A refund as the gateway lists it after recovery; `refund_key` read from its reason."""

    refund_id: str
    payment_id: str
    status: str  # "SUCCEEDED", "FAILED" or "PENDING"
    amount_minor: int
    refund_key: str
    # Of a refund of a split payment: (payee, share) of each payee it takes from, the shares
    # adding up to amount_minor.
    splits: tuple[tuple[str, int], ...] = ()


@dataclasses.dataclass(frozen=True, kw_only=True)
class GatewayEvent:
    """One of a user's events as the gateway lists them after recovery."""

    username: str
    sequence: int
    type: str
    object_id: str  # the payment's id, or the refund's
    status: str  # the payment's or refund's status just after the change


@dataclasses.dataclass(frozen=True, kw_only=True)
class GatewayPayment:
    """A payment as the gateway lists it after recovery; `key` is read from its description."""

    payment_id: str
    status: str  # "SUCCEEDED", "FAILED", "PENDING", "REQUIRES_CAPTURE" or "CANCELED"
    payer: str
    payee: str
    amount_minor: int
    key: str
    manual: bool = False
    amount_captured: int = 0
    failure_reason: str = ""
    amount_refunded: int = 0
    splits: tuple[tuple[str, int], ...] = ()  # (payee, part) of a split payment

    def credits(self, moved_minor: int) -> tuple[tuple[str, int], ...]:
        """Who was paid how much of the `moved_minor` the payment moved: each split payee
        its part (a split payment moves all of its amount), or the payee all of it."""
        return self.splits or ((self.payee, moved_minor),)

    def parties(self) -> tuple[str, ...]:
        """The payer and every payee."""
        payees = [payee for payee, _ in self.splits] or [self.payee]
        return (self.payer, *payees)


@dataclasses.dataclass(frozen=True, kw_only=True)
class JournalEntry:
    """Money a bank posted to one of the run's accounts for a transaction (a payment's id,
    or a refund's), as its journal holds it after recovery: negative for a debit."""

    bank_id: str
    account_number: str
    reference: str
    amount_minor: int


@dataclasses.dataclass(kw_only=True)
class History:
    users: list[User] = dataclasses.field(default_factory=list)
    intents: dict[str, Intent] = dataclasses.field(default_factory=dict)
    calls: list[Call] = dataclasses.field(default_factory=list)
    settlements: list[Settlement] = dataclasses.field(default_factory=list)
    refunds: list[RefundCall] = dataclasses.field(default_factory=list)
    samples: list[Sample] = dataclasses.field(default_factory=list)
    faults: list[Fault] = dataclasses.field(default_factory=list)
    run_end_s: float = 0.0
    recovered_s: float = 0.0  # every process served again and every key was resolved
    quiescent: Sample | None = None  # the read after recovery, holds settled (or timed out)
    pending_settled_after_s: float | None = None  # None: holds were still pending at the limit
    gateway_payments: list[GatewayPayment] = dataclasses.field(default_factory=list)
    gateway_refunds: list[GatewayRefund] = dataclasses.field(default_factory=list)
    gateway_events: list[GatewayEvent] = dataclasses.field(default_factory=list)
    events_read: bool = False  # the events were listed (a run does; a hand-made history may not)
    # What the banks posted for the split payments and their refunds (chaos/journals.py),
    # when they were read.
    journal: list[JournalEntry] = dataclasses.field(default_factory=list)
    journal_read: bool = False
    replay_skipped: int = 0  # keys not replayed because of --replay-max

    def initial_total(self) -> int:
        return sum(user.initial_minor for user in self.users)

    def to_json(self) -> dict[str, Any]:
        return {
            "users": [dataclasses.asdict(u) for u in self.users],
            "intents": [dataclasses.asdict(i) for i in self.intents.values()],
            "calls": [dataclasses.asdict(c) for c in self.calls],
            "settlements": [dataclasses.asdict(s) for s in self.settlements],
            "refunds": [dataclasses.asdict(r) for r in self.refunds],
            "samples": [_sample_json(s) for s in self.samples],
            "faults": [dataclasses.asdict(f) for f in self.faults],
            "run_end_s": self.run_end_s,
            "recovered_s": self.recovered_s,
            "quiescent": None if self.quiescent is None else _sample_json(self.quiescent),
            "pending_settled_after_s": self.pending_settled_after_s,
            "gateway_payments": [dataclasses.asdict(p) for p in self.gateway_payments],
            "gateway_refunds": [dataclasses.asdict(r) for r in self.gateway_refunds],
            "gateway_events": [dataclasses.asdict(e) for e in self.gateway_events],
            "journal": [dataclasses.asdict(e) for e in self.journal],
            "replay_skipped": self.replay_skipped,
        }


def _sample_json(sample: Sample) -> dict[str, Any]:
    return {
        "start_s": sample.start_s,
        "end_s": sample.end_s,
        "complete": sample.complete,
        "reads": [dataclasses.asdict(r) for r in sample.reads],
    }
