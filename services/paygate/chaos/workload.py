"""The workload: funded users, concurrent clients paying each other, and the calls after.

Each client loops until told to stop: it picks a fresh payment (random payer, payee and
amount under a new idempotency key) or, with probability `retry_old_key_p`, an old key with
exactly its old parameters, and retries an indefinite answer a few times at once, as a
careful client would. After the run, `resolve` retries every key that never got a definite
answer, and `replay` asks keys again to compare their answers. Every call is recorded in
the History; passwords and tokens stay in memory and are never recorded.

A payment's description is `chaos:<key>`, so that the gateway's ListPayments, which does
not return idempotency keys, tells the checker which key each payment belongs to.

A share of the fresh payments (`authorize_p`) are authorizations (manual capture): once one
is answered, its payee captures part of it or cancels it at once, or leaves it to expire
(with a suite whose `authorization_ttl_s` is short); after the run, `resolve` cancels those
still waiting, so that no hold is left. Captures and cancellations are recorded as
Settlements, each under its own key (`<key>/capture`, `<key>/cancel`). A share of the
payments that move money (split payments too, by their first payee) are then refunded in
parts, concurrently (chaos/refunds.py).
A share of the fresh payments (`split_p`) are split payments, and a share of a client's
steps (`batch_p`) pay a few fresh payments in one BatchCreatePayments (chaos/many_payees.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import random
import secrets
import time
from collections.abc import Coroutine
from typing import Any

import grpc

from paygate.chaos.calls import (
    DESCRIPTION_PREFIX,
    answered_call,
    backoff_s,
    classify,
    create_request,
    failed_call,
    status_name,
)
from paygate.chaos.checker import first_definite
from paygate.chaos.connections import Connections
from paygate.chaos.history import (
    Call,
    GatewayEvent,
    GatewayPayment,
    GatewayRefund,
    History,
    Intent,
    Outcome,
    Phase,
    Settlement,
    User,
)
from paygate.chaos.many_payees import BATCH_ITEMS_MAX, BATCH_ITEMS_MIN, Bulk, split_intent
from paygate.chaos.refunds import REFUND_STATUS_NAMES, Refunder, draw_refunds
from paygate.common.rpc_errors import reason_from_metadata
from paygate.gen.paygate.bank.v1 import bank_pb2
from paygate.gen.paygate.v1 import gateway_pb2

SETUP_TIMEOUT_S = 30.0
SETUP_CONCURRENCY = 8
RELOGIN_MARGIN_S = 120.0
RESOLVE_ATTEMPTS = 40
REPLAY_ATTEMPTS = 5
AFTER_CONCURRENCY = 16
LIST_PAGE_SIZE = 100
LIST_MAX_PAGES = 10_000
SETTLE_ACTIONS = ("capture", "capture", "cancel", "expire")


@dataclasses.dataclass(frozen=True, kw_only=True)
class WorkloadSettings:
    clients: int
    users: int
    initial_minor: int = 1_000_00
    amount_max_minor: int = 200_00
    retry_old_key_p: float = 0.2
    immediate_retries: int = 3
    think_max_s: float = 0.05
    call_timeout_s: float = 10.0
    currency: str = "USD"
    authorize_p: float = 0.25
    refund_p: float = 0.2
    split_p: float = 0.15
    batch_p: float = 0.1


class Clock:
    """Seconds since the run started, on the monotonic clock."""

    def __init__(self) -> None:
        self._start = time.monotonic()

    def reset(self) -> None:
        """Start counting from now (after the setup, when the run begins)."""
        self._start = time.monotonic()

    def now(self) -> float:
        return time.monotonic() - self._start


@dataclasses.dataclass(kw_only=True)
class Session:
    """A user's credentials, in memory only."""

    user: User
    password: str = dataclasses.field(repr=False)
    token: str = dataclasses.field(repr=False, default="")
    expire_at_s: float = 0.0  # wall clock
    lock: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock, repr=False)


class Workload:
    def __init__(
        self,
        conn: Connections,
        settings: WorkloadSettings,
        history: History,
        clock: Clock,
        tag: str,
    ) -> None:
        self._conn = conn
        self.settings = settings
        self.history = history
        self._clock = clock
        self._tag = tag
        self._sessions: dict[str, Session] = {}
        self._intent_list: list[Intent] = []
        self._counter = itertools.count(1)
        self.refunder = Refunder(conn, history, self._metadata, clock.now, classify, backoff_s,
                                 settings.call_timeout_s)  # fmt: skip
        self.bulk = Bulk(conn, history, self._metadata, clock.now, currency=settings.currency,
                         call_timeout_s=settings.call_timeout_s)  # fmt: skip

    # Setup ----------------------------------------------------------------------------

    async def create_users(self) -> None:
        """Open a funded account per user, round robin over the banks, register and log in."""
        banks = sorted(self._conn.banks)
        limit = asyncio.Semaphore(SETUP_CONCURRENCY)

        async def create(index: int) -> Session:
            async with limit:
                username = f"chaos-{self._tag}-u{index:03d}"
                return await self._create_user(username, banks[index % len(banks)])

        sessions = await asyncio.gather(*(create(i) for i in range(self.settings.users)))
        for session in sessions:
            self._sessions[session.user.username] = session
            self.history.users.append(session.user)

    async def _create_user(self, username: str, bank_id: str) -> Session:
        opened: bank_pb2.OpenAccountResponse = await self._conn.banks[bank_id].OpenAccount(
            bank_pb2.OpenAccountRequest(
                currency=self.settings.currency, initial_balance=self.settings.initial_minor
            ),
            timeout=SETUP_TIMEOUT_S,
        )
        account = opened.account
        await self._conn.gateway.Register(
            gateway_pb2.RegisterRequest(
                username=username,
                password=(password := secrets.token_urlsafe(18)),
                bank_id=bank_id,
                account_number=account.account_number,
                link_code=opened.link_code,
            ),
            timeout=SETUP_TIMEOUT_S,
        )
        user = User(
            username=username,
            bank_id=bank_id,
            account_number=account.account_number,
            initial_minor=account.balance,
        )
        session = Session(user=user, password=password)
        await self._login(session)
        return session

    async def _login(self, session: Session) -> None:
        response: gateway_pb2.LoginResponse = await self._conn.gateway.Login(
            gateway_pb2.LoginRequest(username=session.user.username, password=session.password),
            timeout=SETUP_TIMEOUT_S,
        )
        session.token = response.access_token
        session.expire_at_s = response.expire_time.ToMicroseconds() / 1e6

    async def _metadata(self, username: str) -> list[tuple[str, str]]:
        session = self._sessions[username]
        if session.expire_at_s - time.time() < RELOGIN_MARGIN_S:
            async with session.lock:
                if session.expire_at_s - time.time() < RELOGIN_MARGIN_S:
                    await self._login(session)
        return [("authorization", f"Bearer {session.token}")]

    # Payments -------------------------------------------------------------------------

    def next_intent(self, rng: random.Random) -> Intent:
        if self._intent_list and rng.random() < self.settings.retry_old_key_p:
            return rng.choice(self._intent_list)
        return self.fresh_intent(rng)

    def fresh_intent(self, rng: random.Random, payer: str = "") -> Intent:
        """A new key's payment: of `payer` (a batch's), or between two random users."""
        names = sorted(self._sessions)
        if payer:
            payee = rng.choice([name for name in names if name != payer])
        else:
            payer, payee = rng.sample(names, 2)
        key = f"{self._tag}-{next(self._counter)}"
        # (No draw without split payments: a seed then makes the same payments as before.)
        if len(names) >= 3 and self.settings.split_p > 0 and rng.random() < self.settings.split_p:
            users = [self._sessions[name].user for name in names]
            intent = split_intent(
                rng, key, self._sessions[payer].user, users, self.settings.amount_max_minor,
                self.settings.refund_p,
            )  # fmt: skip
        else:
            intent = self._one_payee_intent(rng, key, payer, payee)
        self.history.intents[intent.key] = intent
        self._intent_list.append(intent)
        return intent

    def _one_payee_intent(self, rng: random.Random, key: str, payer: str, payee: str) -> Intent:
        amount_minor = rng.randint(1, self.settings.amount_max_minor)
        # (No draw without authorizations: a seed then makes the same payments as before.)
        manual = self.settings.authorize_p > 0 and rng.random() < self.settings.authorize_p
        settle = rng.choice(SETTLE_ACTIONS) if manual else ""
        capture_minor = rng.randint(1, amount_minor) if manual else 0
        moved_minor = capture_minor if settle == "capture" else 0 if manual else amount_minor
        return Intent(
            key=key,
            payer=payer,
            payee=payee,
            amount_minor=amount_minor,
            manual=manual,
            settle=settle,
            capture_minor=capture_minor,
            refund_minor=draw_refunds(rng, moved_minor, self.settings.refund_p),
        )

    async def pay(self, intent: Intent, phase: Phase) -> Call:
        """One CreatePayment call with exactly the intent's parameters, recorded."""
        request = create_request(intent, self.settings.currency)
        start_s = self._clock.now()
        try:
            metadata = await self._metadata(intent.payer)
            response: gateway_pb2.CreatePaymentResponse = await self._conn.gateway.CreatePayment(
                request, metadata=metadata, timeout=self.settings.call_timeout_s
            )
        except grpc.aio.AioRpcError as exc:
            code = exc.code().name
            reason = reason_from_metadata(exc.trailing_metadata()) or ""
            call = failed_call(intent, phase, start_s, self._clock.now(), code, reason)
        else:
            call = answered_call(intent, phase, start_s, self._clock.now(), response.payment)
        self.history.calls.append(call)
        return call

    async def client(self, rng: random.Random, stop: asyncio.Event) -> None:
        retries = self.settings.immediate_retries
        while not stop.is_set():
            # (No draw without bulk payouts: a seed then makes the same payments as before.)
            if self.settings.batch_p > 0 and rng.random() < self.settings.batch_p:
                payer = rng.choice(sorted(self._sessions))
                count = rng.randint(BATCH_ITEMS_MIN, BATCH_ITEMS_MAX)
                intents = [self.fresh_intent(rng, payer) for _ in range(count)]
                last = await self.bulk.pay_retrying(intents, Phase.RUN, retries, stop)
                await asyncio.gather(*(self._after(i, last[i.key], stop) for i in intents))
            else:
                intent = self.next_intent(rng)
                for attempt in range(retries + 1):
                    call = await self.pay(intent, Phase.RUN)
                    if call.outcome != Outcome.INDEFINITE or stop.is_set():
                        break
                    await asyncio.sleep(backoff_s(attempt))
                await self._after(intent, call, stop)
            await asyncio.sleep(rng.uniform(0, self.settings.think_max_s))

    async def _after(self, intent: Intent, call: Call, stop: asyncio.Event) -> None:
        """What the payee does once the payment is answered: settle an authorization as
        meant, then refund in parts what moved."""
        moved = call.outcome == Outcome.SUCCEEDED and not intent.manual
        if call.outcome == Outcome.SUCCEEDED and intent.settle in ("capture", "cancel"):
            settled = await self._settle_retrying(
                intent, call.payment_id, intent.settle, Phase.RUN, stop
            )
            moved = settled.outcome == Outcome.SUCCEEDED and intent.settle == "capture"
        if moved and intent.refund_minor and not stop.is_set():
            await self.refunder.refund_all(
                intent, call.payment_id, Phase.RUN, self.settings.immediate_retries, stop
            )

    # Authorizations -------------------------------------------------------------------

    async def settle(
        self, intent: Intent, payment_id: str, action: str, phase: Phase
    ) -> Settlement:
        """One CapturePayment (of the intent's capture amount) or CancelPayment, recorded."""
        key = f"{intent.key}/{action}"
        start_s = self._clock.now()
        try:
            metadata = await self._metadata(intent.payee)
            if action == "capture":
                response: Any = await self._conn.gateway.CapturePayment(
                    gateway_pb2.CapturePaymentRequest(
                        payment_id=payment_id, amount=intent.capture_minor, idempotency_key=key
                    ),
                    metadata=metadata,
                    timeout=self.settings.call_timeout_s,
                )
            else:
                response = await self._conn.gateway.CancelPayment(
                    gateway_pb2.CancelPaymentRequest(payment_id=payment_id, idempotency_key=key),
                    metadata=metadata,
                    timeout=self.settings.call_timeout_s,
                )
        except grpc.aio.AioRpcError as exc:
            code = exc.code().name
            reason = reason_from_metadata(exc.trailing_metadata()) or ""
            outcome = classify(code, reason)
            settlement = Settlement(
                key=intent.key, action=action, phase=phase, start_s=start_s,
                end_s=self._clock.now(), outcome=outcome, payment_id=payment_id,
                amount_minor=intent.capture_minor, code=code, reason=reason,
            )  # fmt: skip
        else:
            payment = response.payment
            settlement = Settlement(
                key=intent.key, action=action, phase=phase, start_s=start_s,
                end_s=self._clock.now(), outcome=Outcome.SUCCEEDED, payment_id=payment_id,
                amount_minor=intent.capture_minor,
                status=status_name(payment.status),
                amount_captured=payment.amount_captured, code="OK",
            )  # fmt: skip
        self.history.settlements.append(settlement)
        return settlement

    async def _settle_retrying(
        self,
        intent: Intent,
        payment_id: str,
        action: str,
        phase: Phase,
        stop: asyncio.Event | None = None,
        attempts: int = 0,
    ) -> Settlement:
        for attempt in range((attempts or self.settings.immediate_retries) + 1):
            settled = await self.settle(intent, payment_id, action, phase)
            if settled.outcome != Outcome.INDEFINITE or (stop is not None and stop.is_set()):
                break
            await asyncio.sleep(backoff_s(attempt))
        return settled

    async def settle_all(self, timeout_s: float) -> None:
        """After the run: finish every authorization's settlement, and cancel those left to
        expire that have not yet, so that no hold stays (a refusal, PAYMENT_NOT_CAPTURABLE,
        says it was settled otherwise: expired, or by the answer that was lost)."""
        answered = {c.key: c.payment_id for c in self.history.calls if c.payment_id}
        definite = {
            (s.key, s.action) for s in self.history.settlements if s.outcome != Outcome.INDEFINITE
        }
        jobs = []
        for key, payment_id in answered.items():
            intent = self.history.intents[key]
            action = "cancel" if intent.settle == "expire" else intent.settle
            if intent.manual and (key, action) not in definite:
                jobs.append(
                    self._settle_retrying(
                        intent, payment_id, action, Phase.RESOLVE, attempts=RESOLVE_ATTEMPTS
                    )
                )
        try:
            async with asyncio.timeout(timeout_s):
                await asyncio.gather(*jobs)
        except TimeoutError:
            pass  # what is still held is reported by the checker

    # After the run --------------------------------------------------------------------

    def _by_key(self) -> dict[str, list[Call]]:
        grouped: dict[str, list[Call]] = {}
        for call in self.history.calls:
            grouped.setdefault(call.key, []).append(call)
        return grouped

    async def resolve(self, timeout_s: float) -> int:
        """Retry every key without a definite answer until it gets one; return how many."""
        keys = [k for k, calls in self._by_key().items() if first_definite(calls) is None]
        await self._each(keys, Phase.RESOLVE, RESOLVE_ATTEMPTS, timeout_s)
        await self.settle_all(timeout_s)
        await self._bounded(self.refunder.again(Phase.RESOLVE, RESOLVE_ATTEMPTS, answered=False),
                            timeout_s)  # fmt: skip
        return len(keys)

    @staticmethod
    async def _bounded(job: Coroutine[Any, Any, None], timeout_s: float) -> None:
        try:
            async with asyncio.timeout(timeout_s):
                await job
        except TimeoutError:
            pass  # what is still indefinite is reported by the checker

    async def replay(self, limit: int, rng: random.Random, timeout_s: float) -> None:
        """Ask keys again: all that ever had an indefinite answer, then others, up to `limit`."""
        by_key = self._by_key()
        definite = [k for k, calls in by_key.items() if first_definite(calls) is not None]
        troubled = [k for k in definite if any(c.outcome != Outcome.SUCCEEDED for c in by_key[k])]
        calm = [k for k in definite if k not in set(troubled)]
        rng.shuffle(calm)
        keys = (troubled + calm)[:limit]
        self.history.replay_skipped = len(definite) - len(keys)
        await self._each(keys, Phase.REPLAY, REPLAY_ATTEMPTS, timeout_s)
        await self._bounded(self.refunder.again(Phase.REPLAY, REPLAY_ATTEMPTS, answered=True),
                            timeout_s)  # fmt: skip

    async def _each(
        self,
        keys: list[str],
        phase: Phase,
        attempts: int,
        timeout_s: float,
    ) -> None:
        limit = asyncio.Semaphore(AFTER_CONCURRENCY)

        async def one(key: str) -> None:
            async with limit:
                for attempt in range(attempts):
                    call = await self.pay(self.history.intents[key], phase)
                    if call.outcome != Outcome.INDEFINITE:
                        return
                    await asyncio.sleep(backoff_s(attempt))

        try:
            async with asyncio.timeout(timeout_s):
                await asyncio.gather(*(one(k) for k in keys))
        except TimeoutError:
            pass  # what is still indefinite is reported by the checker

    async def gateway_payments(self) -> list[GatewayPayment]:
        """Every payment the gateway lists for the users, each once (from its payer's list)."""
        payments: list[GatewayPayment] = []
        for username in sorted(self._sessions):
            token = ""
            for _ in range(LIST_MAX_PAGES):
                response: gateway_pb2.ListPaymentsResponse = await self._conn.gateway.ListPayments(
                    gateway_pb2.ListPaymentsRequest(page_size=LIST_PAGE_SIZE, page_token=token),
                    metadata=await self._metadata(username),
                    timeout=self.settings.call_timeout_s,
                )
                payments += [
                    _gateway_payment(p) for p in response.payments if p.payer_username == username
                ]
                token = response.next_page_token
                if not token:
                    break
        return payments

    async def gateway_refunds(self, payments: list[GatewayPayment]) -> list[GatewayRefund]:
        """Every refund the gateway lists of the payments that were refunded or asked to be."""
        asked = {call.payment_id for call in self.history.refunds}
        return await self.refunder.gateway_refunds(
            [
                (p.payment_id, p.payer)
                for p in payments
                if p.amount_refunded or p.payment_id in asked
            ]
        )

    async def gateway_events(self) -> list[GatewayEvent]:
        """Every event the gateway lists for each user, oldest first."""
        events: list[GatewayEvent] = []
        for username in sorted(self._sessions):
            after = 0
            for _ in range(LIST_MAX_PAGES):
                response: gateway_pb2.ListEventsResponse = await self._conn.gateway.ListEvents(
                    gateway_pb2.ListEventsRequest(starting_after=after, page_size=LIST_PAGE_SIZE),
                    metadata=await self._metadata(username),
                    timeout=self.settings.call_timeout_s,
                )
                events += [_gateway_event(username, e) for e in response.events]
                after = response.next_starting_after
                if not response.has_more:
                    break
        return events


def _gateway_event(username: str, event: gateway_pb2.Event) -> GatewayEvent:
    if event.WhichOneof("object") == "refund":
        object_id, status = event.refund.refund_id, REFUND_STATUS_NAMES[event.refund.status]
    else:
        object_id = event.payment.payment_id
        status = status_name(event.payment.status)
    return GatewayEvent(username=username, sequence=event.sequence, type=event.type,
                        object_id=object_id, status=status)  # fmt: skip


def _gateway_payment(message: gateway_pb2.Payment) -> GatewayPayment:
    return GatewayPayment(
        payment_id=message.payment_id,
        status=status_name(message.status),
        payer=message.payer_username,
        payee=message.payee_username,
        amount_minor=message.amount,
        key=message.description.removeprefix(DESCRIPTION_PREFIX),
        manual=message.capture_method == gateway_pb2.CAPTURE_METHOD_MANUAL,
        amount_captured=message.amount_captured,
        failure_reason=message.failure_reason,
        amount_refunded=message.amount_refunded,
        splits=tuple((split.payee_username, split.amount) for split in message.splits),
    )
