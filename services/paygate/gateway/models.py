"""The gateway's domain records: users, sessions and payments (no gRPC, no SQL)."""

from __future__ import annotations

import dataclasses
import enum


class PaymentStatus(enum.StrEnum):
    PENDING = "pending"
    REQUIRES_CAPTURE = "requires_capture"  # authorized: the payee captures or cancels it
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"  # an authorization cancelled by its payee, or expired


class TxnState(enum.StrEnum):
    """The recorded state of a payment's two-phase commit (see transitions.py)."""

    PREPARING = "preparing"  # no decision yet: presumed abort (one bank: ask it first)
    AUTHORIZED = "authorized"  # held at every bank, to be captured or cancelled (manual)
    COMMITTING = "committing"  # commit decided and on disk; commits are re-sent until acked
    ABORTING = "aborting"  # abort decided and on disk; aborts are re-sent until acked
    COMMITTED = "committed"  # every participant acknowledged the commit
    ABORTED = "aborted"  # every participant acknowledged the abort


UNFINISHED = (TxnState.PREPARING, TxnState.COMMITTING, TxnState.ABORTING)
# The same states as an SQL list, written into queries as literals: with bound parameters
# instead, SQLite (and PostgreSQL's generic plans) cannot use the partial index
# payments_unfinished, and recovery's claim would scan every payment ever made.
UNFINISHED_SQL = "(" + ", ".join(f"'{state}'" for state in UNFINISHED) + ")"
# The states a gateway may hold a lease on: the unfinished ones, and an authorization that
# recovery is expiring or a request is capturing or cancelling.
LEASED_SQL = "(" + ", ".join(f"'{state}'" for state in (*UNFINISHED, TxnState.AUTHORIZED)) + ")"


REFUND_ID_PREFIX = "re_"


@dataclasses.dataclass(frozen=True, kw_only=True)
class User:
    user_id: str
    username: str
    bank_id: str
    account_number: str
    currency: str


@dataclasses.dataclass(frozen=True)
class Session:
    user: User
    expire_at_s: float
    revoked: bool
    session_id: str = ""
    last_used_at_s: float = 0.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class SessionInfo:
    """A live session as its user sees it in a list (the token's hash marks the current
    one, and never leaves the gateway)."""

    session_id: str
    token_hash: str
    created_at_s: float
    last_used_at_s: float
    expire_at_s: float
    client_address: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class TotpRecord:
    """A user's two-factor state as stored: secrets sealed (gateway/totp.py)."""

    secret: bytes | None  # on when set
    pending: bytes | None  # enrolled, not yet confirmed
    last_step: int | None  # the last time step a code was accepted for
    recovery_codes_left: int

    @property
    def enabled(self) -> bool:
        return self.secret is not None


class UserAction(enum.StrEnum):
    """What an operator did to a user (AdminService), as the audit table records it."""

    FREEZE = "freeze"
    UNFREEZE = "unfreeze"
    RESET_TWO_FACTOR = "reset_two_factor"


@dataclasses.dataclass(frozen=True, kw_only=True)
class OperatorAction:
    """One entry of the audit table: who (a certificate's name) did what, when and why."""

    at_s: float
    operator: str
    action: UserAction
    reason: str
    changed: bool  # False for a repeat that found the user as asked (freezing a frozen user)


@dataclasses.dataclass(frozen=True, kw_only=True)
class UserStatus:
    """What an operator sees of a user: nothing secret (no hash, secret or code)."""

    user: User
    created_at_s: float
    frozen: bool
    two_factor_enabled: bool
    recovery_codes_left: int
    live_sessions: int
    recent_actions: tuple[OperatorAction, ...] = ()


@dataclasses.dataclass(frozen=True, kw_only=True)
class ActionDone:
    """What an operator's change did: whether it changed anything, and the token hashes of
    the sessions it ended (for the session cache to forget)."""

    changed: bool
    ended: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True, kw_only=True)
class Principal:
    """The caller of an authenticated RPC: the user and the hash of the token used."""

    user: User
    token_hash: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class SplitRequest:
    """One part of a split payment as asked: whom to pay, and how much."""

    payee_username: str
    amount_minor: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class Split:
    """One payee's part of a split payment, as recorded (the payee's account named, as a
    payment's payee is, so that the legs never need a lookup)."""

    payee_user_id: str
    payee_username: str
    payee_bank_id: str
    payee_account: str
    amount_minor: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class PaymentRequest:
    idempotency_key: str
    payee_username: str
    amount_minor: int
    currency: str
    description: str
    # Authorize only; the payee captures (or cancels) later (transitions.py).
    manual_capture: bool = False
    # A split payment: the payees and their parts (payee_username is then empty).
    splits: tuple[SplitRequest, ...] = ()


@dataclasses.dataclass(frozen=True, kw_only=True)
class Payment:
    payment_id: str
    status: PaymentStatus
    payer_user_id: str
    payer_username: str
    payer_bank_id: str
    payer_account: str
    payee_user_id: str
    payee_username: str
    payee_bank_id: str
    payee_account: str
    amount_minor: int
    currency: str
    description: str
    create_time_us: int
    txn_state: TxnState
    failure_reason: str = ""
    # Sent as a one-phase commit: the payment's only bank decides, so recovery asks it
    # instead of presuming abort (transitions.py). Recorded before the Prepare is sent.
    one_phase: bool = False
    # An authorization (manual capture): uncaptured by then, it is cancelled (expired).
    manual_capture: bool = False
    capture_before_us: int = 0
    amount_captured_minor: int = 0  # recorded with the capture decision; 0 until then
    # A refund is a transaction of its own, from the payee of the payment it refunds back
    # to its payer (gateway/refunds.py); empty for a payment.
    refund_of: str = ""
    # The sum of the payment's refunds that were decided to commit.
    amount_refunded_minor: int = 0
    # A split payment's parts, all moved or none; the first is also the payee above.
    # Empty for a payment to one payee.
    splits: tuple[Split, ...] = ()

    @property
    def captured_minor(self) -> int:
        """How much of the payment moved (or moves): what can be refunded in all."""
        if self.status != PaymentStatus.SUCCEEDED:
            return 0
        return self.amount_captured_minor if self.manual_capture else self.amount_minor

    @property
    def participants(self) -> list[str]:
        """The banks taking part in the payment's transaction, in a fixed order."""
        return sorted({leg.bank_id for leg in self.legs})

    @property
    def legs(self) -> tuple[PartyLeg, ...]:
        """Who gives and who gets how much: the payer's debit and the payee's credit; of a
        split payment, a credit per part; of a split payment's refund, a debit per part
        given back (its splits) and the credit of the payment's payer."""
        payer = PartyLeg(user_id=self.payer_user_id, username=self.payer_username,
                         bank_id=self.payer_bank_id, account=self.payer_account,
                         direction="debit", amount_minor=self.amount_minor)
        payee = PartyLeg(user_id=self.payee_user_id, username=self.payee_username,
                         bank_id=self.payee_bank_id, account=self.payee_account,
                         direction="credit", amount_minor=self.amount_minor)  # fmt: skip
        if not self.splits:
            return payer, payee
        direction = "debit" if self.refund_of else "credit"
        parts = tuple(
            PartyLeg(user_id=s.payee_user_id, username=s.payee_username, bank_id=s.payee_bank_id,
                     account=s.payee_account, direction=direction, amount_minor=s.amount_minor)
            for s in self.splits
        )  # fmt: skip
        return (*parts, payee) if self.refund_of else (payer, *parts)

    @property
    def parties(self) -> list[str]:
        """The ids of the users the payment concerns: its payer (who asked for it) and every
        user it debits or credits."""
        return list(dict.fromkeys([self.payer_user_id, *(leg.user_id for leg in self.legs)]))


@dataclasses.dataclass(frozen=True, kw_only=True)
class PartyLeg:
    """One user's part in a payment: whose account, where, which way, how much."""

    user_id: str
    username: str
    bank_id: str
    account: str
    direction: str  # "debit" or "credit"
    amount_minor: int


class EventType(enum.StrEnum):
    """What happened to a user's money (docs/events.md): `object.change`."""

    PAYMENT_SUCCEEDED = "payment.succeeded"
    PAYMENT_FAILED = "payment.failed"
    PAYMENT_AUTHORIZED = "payment.authorized"  # held, awaiting capture
    PAYMENT_CAPTURED = "payment.captured"
    PAYMENT_CANCELED = "payment.canceled"  # by its payee
    PAYMENT_EXPIRED = "payment.expired"  # uncaptured past capture_before
    REFUND_SUCCEEDED = "refund.succeeded"
    REFUND_FAILED = "refund.failed"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Event:
    """One change a user should know about, as stored for that user: `sequence` is the
    user's own (1, 2, 3, ... with no gap), and `payment` the payment (or refund, whose
    `refund_of` is set) as it was just after the change."""

    event_id: str
    user_id: str
    sequence: int
    type: EventType
    create_time_us: int
    payment: Payment


@dataclasses.dataclass(frozen=True)
class Lease:
    """A gateway's claim on driving a transaction: `owner` (an instance id) until a time."""

    owner: str
    expires_at_s: float


class BeginOutcome(enum.Enum):
    """What recording a new payment with its idempotency key found."""

    STARTED = "started"  # the key is new: the payment was recorded and is ours to run
    REPLAY = "replay"  # the key finished before: answer as the first time
    MISMATCH = "mismatch"  # the key was used with other parameters
    IN_USE = "in_use"  # the key's first request is still running
    FROZEN = "frozen"  # the payer or the payee is frozen: nothing was written
    REFUSED = "refused"  # the key is new and the request cannot be: nothing was written


@dataclasses.dataclass(frozen=True)
class BeginResult:
    outcome: BeginOutcome
    payment_id: str = ""
    error_reason: str = ""
    error_message: str = ""
    frozen: tuple[str, ...] = ()  # FROZEN: the ids of the parties who are


@dataclasses.dataclass(frozen=True)
class OperationKey:
    """The idempotency key of a capture or a cancellation: its caller's, with the request's
    fingerprint."""

    user_id: str
    key: str
    request_hash: str


@dataclasses.dataclass(frozen=True)
class Settled:
    """What a capture or a cancellation found: the state recorded, whether this write made
    it, and what the caller's key held when it was used before (nothing was written)."""

    state: TxnState
    applied: bool
    key: BeginResult | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class Leg:
    """One account's part in a transaction at its bank."""

    account_number: str
    direction: str  # "debit" or "credit"
    amount_minor: int
    currency: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class BankAccount:
    account_number: str
    currency: str
    balance_minor: int
    available_minor: int


@dataclasses.dataclass(frozen=True)
class Vote:
    yes: bool
    reason: str = ""
    committed: bool = False  # a yes to a one-phase Prepare: the bank has posted it
