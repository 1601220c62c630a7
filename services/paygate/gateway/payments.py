"""Payments with Stripe's idempotency semantics, on top of the coordinator's 2PC.

An idempotency key belongs to the paying user and is stored with the payment in one
database transaction. Its states:

    (none) --CreatePayment--> IN_PROGRESS --commit decided--------> COMPLETED (payment)
                                   |---- final refusal (no funds) --> COMPLETED (error)
                                   +---- transient abort ----------> (deleted: a retry runs anew)

Same key and same parameters after COMPLETED: the stored answer again. Same key and other
parameters: FAILED_PRECONDITION / IDEMPOTENCY_KEY_MISMATCH. Same key while IN_PROGRESS:
ABORTED / IDEMPOTENCY_KEY_IN_USE. Requests that fail validation record nothing. A payment
within one bank whose one-phase Prepare went unanswered stays IN_PROGRESS after its caller
is answered UNAVAILABLE, until the bank is asked (transitions.py) and the key completes or
is released.

Every CreatePayment counts once in paygate_payments_total{outcome}: succeeded, failed (the
transaction aborted, or a one-phase one's outcome was unknown when answered), rejected
(refused before a transaction began: invalid, or a party frozen), replayed or conflict.

A payment whose payer or payee an operator froze (AdminService) is refused with
USER_FROZEN, checked in the transaction that would record it, and nothing is recorded (the
key neither). A payment recorded before the freeze runs to its end.

Payees found are remembered (at most PAYEE_CACHE_SIZE, oldest dropped first): a user's
name, bank, account and currency never change once registered (no RPC or tool updates or
deletes a user), so a remembered payee is always right, with several gateways too, and a
payment makes one database read less. Unknown names are not remembered.
"""

from __future__ import annotations

import base64
import binascii
import collections
import dataclasses
import hashlib
import secrets
import time
import unicodedata
from collections.abc import Callable, Sequence

from paygate.common.config import DEFAULT_AUTHORIZATION_TTL_S, DEFAULT_MAX_MESSAGE_BYTES
from paygate.common.metrics import PaymentMetrics, new_registry
from paygate.common.money import check_currency, format_amount
from paygate.errors import (
    CURRENCY_MISMATCH,
    IDEMPOTENCY_KEY_IN_USE,
    IDEMPOTENCY_KEY_MISMATCH,
    OUTCOME_FAILED,
    OUTCOME_KEY,
    OUTCOME_UNKNOWN,
    PAYMENT_ID_KEY,
    USER_FROZEN,
    Aborted,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PaygateError,
)
from paygate.gateway.accounts import USERNAME_PATTERN, user_frozen
from paygate.gateway.coordinator import Coordinator
from paygate.gateway.models import (
    Payment,
    PaymentRequest,
    PaymentStatus,
    Split,
    TxnState,
    User,
)
from paygate.gateway.store import BeginOutcome, BeginResult, GatewayStore

KEY_MAX_LENGTH = 255
DESCRIPTION_MAX_LENGTH = 500
PAYMENT_ID_MAX_LENGTH = 64
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
PAGE_TOKEN_MAX_LENGTH = 64
MAX_SEQ = 2**63 - 1  # a payment's sequence number is a signed 64-bit integer in both stores
PAYEE_CACHE_SIZE = 10_000
MIN_SPLITS, MAX_SPLITS = 2, 10


# What a payment adds to a ListPayments answer beside the payment itself (its field's tag
# and length), and the room kept for the rest of the answer (the next page's token).
PAGE_ITEM_OVERHEAD_BYTES = 4
PAGE_HEADROOM_BYTES = 256


@dataclasses.dataclass(frozen=True, kw_only=True)
class PaymentSettings:
    max_payment_minor: int
    # The largest message the gateway sends: a page of payments stops before it (page_size
    # 100 of 500-character descriptions in 4-byte characters would be ~200 KiB).
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    # How long an authorization holds the payer's money before it expires uncaptured.
    authorization_ttl_s: float = DEFAULT_AUTHORIZATION_TTL_S


def request_hash(request: PaymentRequest) -> str:
    """The fingerprint of a request's parameters, to tell a retry from a different payment."""
    parameters: tuple[object, ...] = (
        request.payee_username, request.amount_minor, request.currency, request.description
    )  # fmt: skip
    if request.manual_capture:  # (kept out otherwise: keys stored before it still match)
        parameters += ("manual",)
    if request.splits:  # (likewise)
        parameters += tuple((s.payee_username, s.amount_minor) for s in request.splits)
    canonical = repr(parameters)
    return hashlib.sha256(canonical.encode()).hexdigest()


def encode_page_token(seq: int) -> str:
    return base64.urlsafe_b64encode(f"v1:{seq}".encode()).decode().rstrip("=")


def decode_page_token(token: str) -> int | None:
    if not token:
        return None
    try:
        if len(token) > PAGE_TOKEN_MAX_LENGTH:
            raise ValueError(token)
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        version, _, seq = text.partition(":")
        if version != "v1" or not (seq.isascii() and seq.isdigit()) or int(seq) > MAX_SEQ:
            raise ValueError(text)
        return int(seq)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidArgument("page_token is not a token returned by ListPayments") from None


def has_control_characters(text: str) -> bool:
    """Control characters (NUL, line breaks, tabs, escapes) and line or paragraph
    separators; emoji sequences, no-break spaces and direction marks are text."""
    return any(unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in text)


def frozen_party(
    payer_id: str, frozen: Sequence[str], payee_username: str, *, giving: bool = False
) -> PaygateError:
    """The refusal of a payment, or of a capture, one of whose parties is frozen: the
    payer is told it is them, or that the payee cannot be paid now (with `giving`, that
    this other party cannot give its share back now: a split payment's refund)."""
    if payer_id in frozen:
        return user_frozen()
    what = "give back their share" if giving else "be paid"
    return FailedPrecondition(
        f"{payee_username} cannot {what} now: an operator froze the account",
        reason=USER_FROZEN,
    )


def payee_split(payee: User, amount_minor: int) -> Split:
    return Split(
        payee_user_id=payee.user_id,
        payee_username=payee.username,
        payee_bank_id=payee.bank_id,
        payee_account=payee.account_number,
        amount_minor=amount_minor,
    )


def frozen_payee(payment: Payment, frozen: Sequence[str]) -> str:
    """The name of a frozen party of the payment other than its payer (the first, if
    several are)."""
    names = [leg.username for leg in payment.legs[1:] if leg.user_id in frozen]
    return names[0] if names else payment.payee_username


def key_conflict(begun: BeginResult, request: str) -> None:
    """Raise what a key taken by another `request` (MISMATCH) or still running (IN_USE)
    answers; anything else passes."""
    if begun.outcome == BeginOutcome.MISMATCH:
        raise FailedPrecondition(
            f"this idempotency key was used for a {request} with different parameters",
            reason=IDEMPOTENCY_KEY_MISMATCH,
        )
    if begun.outcome == BeginOutcome.IN_USE:
        raise Aborted(
            f"a {request} with this idempotency key is still being processed; retry shortly",
            reason=IDEMPOTENCY_KEY_IN_USE,
        )


def failed_payment_error(error: PaygateError, payment_id: str, state: TxnState) -> PaygateError:
    """The coordinator's failure, saying which payment and what is known of it: FAILED once
    an abort is decided (nothing moved or will; a transient cause released the key), or
    unknown while the payment may still commit (one bank's, not yet settled: the key stays
    in use). The reason alone cannot tell these apart (docs/protocol.md)."""
    decided = state in (TxnState.ABORTING, TxnState.ABORTED)
    error.metadata[PAYMENT_ID_KEY] = payment_id
    error.metadata[OUTCOME_KEY] = OUTCOME_FAILED if decided else OUTCOME_UNKNOWN
    return error


class Payments:
    def __init__(
        self,
        store: GatewayStore,
        coordinator: Coordinator,
        settings: PaymentSettings,
        metrics: PaymentMetrics | None = None,
    ) -> None:
        self._store = store
        self._coordinator = coordinator
        self._settings = settings
        self._metrics = metrics or PaymentMetrics.build(new_registry())
        self._payees: collections.OrderedDict[str, User] = collections.OrderedDict()

    async def _payee(self, username: str) -> User:
        payee = self._payees.get(username)
        if payee is None:
            found = await self._store.user_by_username(username)
            if found is None:
                raise NotFound(f"no user {username!r}")
            payee = found[0]
            self._payees[username] = payee
            if len(self._payees) > PAYEE_CACHE_SIZE:
                self._payees.popitem(last=False)
        return payee

    def validate(self, payer: User, request: PaymentRequest) -> None:
        key = request.idempotency_key
        if not key or len(key) > KEY_MAX_LENGTH or not key.isprintable():
            raise InvalidArgument(
                f"idempotency_key must be 1 to {KEY_MAX_LENGTH} printable characters"
            )
        if not request.splits:  # (a split payment's payees: below, once the amount is good)
            if not USERNAME_PATTERN.fullmatch(request.payee_username):
                raise InvalidArgument("payee_username is not a valid username")
            if request.payee_username == payer.username:
                raise InvalidArgument("you cannot pay yourself")
        check_currency(request.currency)
        if not 0 < request.amount_minor <= self._settings.max_payment_minor:
            least, most = (
                format_amount(n, request.currency) for n in (1, self._settings.max_payment_minor)
            )
            raise InvalidArgument(
                f"amount must be from {least} to {most} {request.currency}"
                f" (1 to {self._settings.max_payment_minor} minor units)"
            )
        if len(request.description) > DESCRIPTION_MAX_LENGTH or has_control_characters(
            request.description
        ):
            raise InvalidArgument(
                f"description must be at most {DESCRIPTION_MAX_LENGTH} characters on one line"
                " (no line breaks or control characters)"
            )
        if request.splits:
            self._validate_splits(payer, request)

    @staticmethod
    def _validate_splits(payer: User, request: PaymentRequest) -> None:
        splits = request.splits
        if request.payee_username:
            raise InvalidArgument(
                "a split payment names its payees in splits: leave payee_username empty"
            )
        if request.manual_capture:
            raise InvalidArgument(
                "a split payment moves at once: capture_method MANUAL is not for splits"
            )
        if not MIN_SPLITS <= len(splits) <= MAX_SPLITS:
            raise InvalidArgument(
                f"a split payment has {MIN_SPLITS} to {MAX_SPLITS} splits, not {len(splits)}"
            )
        names = [split.payee_username for split in splits]
        for name in names:
            if not USERNAME_PATTERN.fullmatch(name):
                raise InvalidArgument(f"splits: {name!r} is not a valid username")
        if payer.username in names:
            raise InvalidArgument("splits: you cannot pay yourself")
        if len(set(names)) < len(names):
            raise InvalidArgument("splits: each payee once")
        if any(split.amount_minor <= 0 for split in splits):
            raise InvalidArgument("splits: every part must be positive")
        total = sum(split.amount_minor for split in splits)
        if total != request.amount_minor:
            raise InvalidArgument(
                f"splits add up to {format_amount(total, request.currency)}, not the amount"
                f" {format_amount(request.amount_minor, request.currency)}"
                f" ({total} and {request.amount_minor} minor units)"
            )

    async def create(
        self, payer: User, request: PaymentRequest, *, on_replay: Callable[[], None] | None = None
    ) -> Payment:
        """Make the payment, or answer again what its idempotency key was answered; then
        `on_replay` is called first (the servicer says so in the response's metadata)."""
        outcome = ["rejected"]
        try:
            return await self._create(payer, request, outcome)
        finally:
            self._metrics.payments.labels(outcome[0]).inc()
            if outcome[0] == "replayed" and on_replay is not None:
                on_replay()

    async def _create(self, payer: User, request: PaymentRequest, outcome: list[str]) -> Payment:
        """CreatePayment; sets outcome[0] to the payments_total outcome as it learns it."""
        self.validate(payer, request)
        splits = await self._splits(request)
        payee = await self._payee(splits[0].payee_username if splits else request.payee_username)
        for user in (payer, payee):
            if user.currency != request.currency:
                raise FailedPrecondition(
                    f"{user.username}'s account is in {user.currency}, not {request.currency}",
                    reason=CURRENCY_MISMATCH,
                )
        payment = Payment(
            payment_id=f"pay_{secrets.token_hex(12)}",
            status=PaymentStatus.PENDING,
            txn_state=TxnState.PREPARING,
            payer_user_id=payer.user_id,
            payer_username=payer.username,
            payer_bank_id=payer.bank_id,
            payer_account=payer.account_number,
            payee_user_id=payee.user_id,
            payee_username=payee.username,
            payee_bank_id=payee.bank_id,
            payee_account=payee.account_number,
            amount_minor=request.amount_minor,
            currency=request.currency,
            description=request.description,
            create_time_us=(now_us := time.time_ns() // 1000),
            # An authorization holds: it is never a one-phase commit.
            one_phase=not request.manual_capture
            and self._coordinator.one_phase_for(
                payer.bank_id, *([s.payee_bank_id for s in splits] or [payee.bank_id])
            ),
            manual_capture=request.manual_capture,
            capture_before_us=(
                now_us + int(self._settings.authorization_ttl_s * 1e6)
                if request.manual_capture
                else 0
            ),
            splits=splits,
        )
        with self._coordinator.claim(payment.payment_id):
            begun = await self._store.begin_payment(
                request.idempotency_key,
                request_hash(request),
                payment,
                self._coordinator.new_lease(),
            )
            if begun.outcome == BeginOutcome.FROZEN:
                raise frozen_party(payer.user_id, begun.frozen, frozen_payee(payment, begun.frozen))
            if begun.outcome == BeginOutcome.STARTED:
                outcome[0] = "failed"
                decision = await self._coordinator.run(payment)
                if decision.failure is not None:
                    raise failed_payment_error(
                        decision.failure.error(), payment.payment_id, decision.state
                    )
                # The decision is on disk and nothing else in the row changes with it, so
                # the answer is built here rather than read back (one read less on the
                # database thread every payment waits for).
                if decision.state == TxnState.AUTHORIZED:
                    outcome[0] = "authorized"
                    return dataclasses.replace(
                        payment, status=PaymentStatus.REQUIRES_CAPTURE, txn_state=decision.state
                    )
                outcome[0] = "succeeded"
                return dataclasses.replace(
                    payment, status=PaymentStatus.SUCCEEDED, txn_state=decision.state
                )
        if begun.outcome in (BeginOutcome.MISMATCH, BeginOutcome.IN_USE):
            outcome[0] = "conflict"
            reason = IDEMPOTENCY_KEY_MISMATCH
            if begun.outcome == BeginOutcome.IN_USE:
                reason = IDEMPOTENCY_KEY_IN_USE
            self._metrics.conflicts.labels(reason).inc()
        else:
            outcome[0] = "replayed"
            self._metrics.replays.inc()
        return await self._answer_again(begun)

    async def _splits(self, request: PaymentRequest) -> tuple[Split, ...]:
        """A split payment's parts with their payees' accounts (NOT_FOUND for an unknown
        payee, FAILED_PRECONDITION for one whose account is in another currency)."""
        splits = []
        for part in request.splits:
            payee = await self._payee(part.payee_username)
            if payee.currency != request.currency:
                raise FailedPrecondition(
                    f"{payee.username}'s account is in {payee.currency}, not {request.currency}",
                    reason=CURRENCY_MISMATCH,
                )
            splits.append(payee_split(payee, part.amount_minor))
        return tuple(splits)

    async def _answer_again(self, begun: BeginResult) -> Payment:
        key_conflict(begun, "payment")
        if begun.error_reason:
            raise FailedPrecondition(
                begun.error_message,
                reason=begun.error_reason,
                metadata={PAYMENT_ID_KEY: begun.payment_id, OUTCOME_KEY: OUTCOME_FAILED},
            )
        return await self.load(begun.payment_id)

    async def refuse_frozen(self, payment: Payment) -> None:
        """FAILED_PRECONDITION / USER_FROZEN when either party of the payment is frozen."""
        frozen = await self._store.frozen_parties(payment.payer_user_id, payment.payee_user_id)
        if frozen:
            raise frozen_party(payment.payer_user_id, frozen, payment.payee_username)

    async def load(self, payment_id: str) -> Payment:
        payment = await self._store.get_payment(payment_id)
        if payment is None:
            raise NotFound(f"no payment {payment_id}")
        return payment

    async def get(self, user: User, payment_id: str) -> Payment:
        if (
            not payment_id
            or len(payment_id) > PAYMENT_ID_MAX_LENGTH
            or not (payment_id.isprintable())
        ):
            raise InvalidArgument(
                f"payment_id must be 1 to {PAYMENT_ID_MAX_LENGTH} printable characters"
            )
        payment = await self._store.get_payment(payment_id)
        # Someone else's payment is indistinguishable from one that does not exist.
        # A refund is not a payment: it is read with the payment it refunds (ListRefunds).
        if (
            payment is None
            or payment.refund_of
            or user.user_id not in payment.parties
        ):
            raise NotFound(f"no payment {payment_id}")
        return payment

    async def list(
        self,
        user: User,
        page_size: int,
        page_token: str,
        size_of: Callable[[Payment], int] = lambda payment: 0,
    ) -> tuple[list[Payment], str]:
        """A page of the user's payments, newest first, and the next page's token.

        `size_of` gives a payment's encoded size: a page also ends before its payments would
        pass the largest message the gateway sends, so that nobody can make another user's
        list unreadable by paying them many payments with long descriptions."""
        if page_size < 0:
            raise InvalidArgument("page_size must not be negative")
        size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        before = decode_page_token(page_token)
        rows = await self._store.list_payments(user.user_id, before_seq=before, limit=size + 1)
        page, more = rows[:size], len(rows) > size
        # Never more than paygate.client takes in (64 KiB), even if the gateway may send more.
        largest = min(self._settings.max_message_bytes, DEFAULT_MAX_MESSAGE_BYTES)
        budget = largest - PAGE_HEADROOM_BYTES
        used = 0
        for count, (_, payment) in enumerate(page):
            used += size_of(payment) + PAGE_ITEM_OVERHEAD_BYTES
            if count > 0 and used > budget:
                page, more = page[:count], True
                break
        next_token = encode_page_token(page[-1][0]) if more else ""
        return [payment for _, payment in page], next_token
