"""Delivery of queued payments with a scripted gateway: order, retries with full-jitter
backoff and a bound, final answers settled once, notification, metrics, and the key window
(payments that may have reached the gateway too long ago are held for review)."""

from __future__ import annotations

import asyncio
import datetime
import pathlib
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

import prometheus_client
import pytest
from paygate.client import Outbox, Outcome, Payment, PaymentStatus, QueuedPayment
from paygate.client.delivery import (
    Deliverer,
    DeliverySettings,
    RunEnd,
    Verdict,
    backoff_s,
    maybe_delivered,
    verdict_of_error,
)
from paygate.client.outbox_models import DEFAULT_KEY_TTL_S, EntryState, PaymentOrder
from paygate.client.outbox_store import Lease, OutboxStore
from paygate.errors import (
    BANK_TIMEOUT,
    BANK_UNAVAILABLE,
    IDEMPOTENCY_KEY_IN_USE,
    INSUFFICIENT_FUNDS,
    Aborted,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PaygateError,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)

T = TypeVar("T")
GATEWAY = "gw:1"
Answer = Payment | PaygateError
HOUR_S = 3600.0
# What grpc-core reports when the channel could not connect: the request never left.
REFUSED = Unavailable(
    "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: Failed to"
    " connect to remote host: Connection refused",
    reason="UNAVAILABLE",
)
NO_ANSWER = Unavailable("Deadline Exceeded", reason="DEADLINE_EXCEEDED")


class Clock:
    """Wall time for the outbox, moved by the test."""

    def __init__(self) -> None:
        self.now_s = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now_s


def payment_for(entry: QueuedPayment, status: PaymentStatus = PaymentStatus.SUCCEEDED) -> Payment:
    return Payment(
        payment_id=f"pay_{entry.idempotency_key}",
        status=status,
        payer_username="alice",
        payee_username=entry.payee_username,
        amount_minor=entry.amount_minor,
        currency=entry.currency,
        description=entry.description,
        create_time=datetime.datetime.now(datetime.UTC),
        failure_reason="",
    )


class FakeGateway:
    """Answers each send from a script (an error, or "ok"), checking that the row being
    sent is already on disk, as another process would read it."""

    def __init__(self, path: pathlib.Path, script: list[str | PaygateError]) -> None:
        self.path = path
        self.script = list(script)
        self.sent: list[str] = []
        self.health: list[bool] = []

    async def send(self, entry: QueuedPayment) -> Payment:
        self.sent.append(entry.idempotency_key)
        store = OutboxStore(self.path)
        await store.open()
        try:
            on_disk = await store.find(GATEWAY, "alice", entry.idempotency_key)
        finally:
            await store.close()
        assert on_disk is not None and on_disk.state == EntryState.DELIVERING
        answer = self.script.pop(0) if self.script else "ok"
        if isinstance(answer, PaygateError):
            raise answer
        return payment_for(entry)

    async def reachable(self) -> bool:
        return self.health.pop(0) if self.health else True


class Sleeps:
    def __init__(self) -> None:
        self.seconds: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.seconds.append(seconds)
        await asyncio.sleep(0)


def order(key: str, amount_minor: int = 100) -> PaymentOrder:
    return PaymentOrder(
        idempotency_key=key,
        gateway=GATEWAY,
        payer_username="alice",
        payee_username="bob",
        amount_minor=amount_minor,
        currency="USD",
        description="",
    )


def with_deliverer(
    tmp_path: pathlib.Path,
    script: list[str | PaygateError],
    body: Callable[[Deliverer, FakeGateway, Outbox, Sleeps], Awaitable[T]],
    settings: DeliverySettings | None = None,
    clock: Clock | None = None,
) -> T:
    path = tmp_path / "outbox.db"

    async def main() -> T:
        outbox = Outbox(path, clock=clock or Clock())
        gateway = FakeGateway(path, script)
        sleeps = Sleeps()
        deliverer = Deliverer(
            outbox,
            gateway,
            gateway=GATEWAY,
            payer="alice",
            call_timeout_s=1.0,
            settings=settings,
            sleep=sleeps,
        )
        try:
            return await body(deliverer, gateway, outbox, sleeps)
        finally:
            await outbox.close()

    return asyncio.run(main())


async def queue(outbox: Outbox, *keys: str) -> None:
    await outbox.open()
    for key in keys:
        await outbox.store.enqueue(order(key))


def metric(outbox: Outbox, name: str, **labels: str) -> float:
    value = outbox.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


@pytest.mark.parametrize(
    ("error", "verdict"),
    [
        (Unavailable("no answer", reason="UNAVAILABLE"), Verdict.RETRY),
        (Unavailable("deadline", reason="DEADLINE_EXCEEDED"), Verdict.RETRY),
        (Unavailable("bank", reason="BANK_TIMEOUT"), Verdict.RETRY),
        (Aborted("in flight", reason=IDEMPOTENCY_KEY_IN_USE), Verdict.RETRY),
        (ResourceExhausted("throttled"), Verdict.RETRY),
        (PaygateError("unknown status", reason="INTERNAL"), Verdict.RETRY),
        (Unauthenticated("expired"), Verdict.UNAUTHENTICATED),
        (FailedPrecondition("poor", reason=INSUFFICIENT_FUNDS), Verdict.FAILED),
        (InvalidArgument("bad"), Verdict.FAILED),
        (NotFound("no such payee"), Verdict.FAILED),
    ],
)
def test_only_transient_errors_are_retried(error: PaygateError, verdict: Verdict) -> None:
    assert verdict_of_error(error) == verdict


def test_backoff_is_exponential_with_full_jitter_and_capped() -> None:
    rng = random.Random(7)
    for failures, cap in [(1, 0.25), (2, 0.5), (3, 1.0), (6, 4.0), (30, 4.0)]:
        samples = [backoff_s(failures, initial_s=0.25, max_s=4.0, rng=rng) for _ in range(200)]
        assert all(0 <= s <= cap for s in samples)
        assert max(samples) > cap * 0.8 and min(samples) < cap * 0.2  # spread over [0, cap]


def test_payments_are_sent_in_queue_order_and_each_outcome_reported_once(
    tmp_path: pathlib.Path,
) -> None:
    async def body(d: Deliverer, gw: FakeGateway, outbox: Outbox, _: Sleeps) -> None:
        called: list[Outcome] = []
        outbox.add_callback(called.append)
        iterated: list[Outcome] = []

        async def read() -> None:
            async for outcome in outbox.outcomes():
                iterated.append(outcome)

        reader = asyncio.create_task(read())
        await asyncio.sleep(0)
        await queue(outbox, "k1", "k2", "k3")
        report = await d.deliver()
        await outbox.close()  # ends the iterator
        await reader
        assert gw.sent == ["k1", "k2", "k3"]
        assert (report.end, report.pending) == (RunEnd.EMPTY, 0)
        assert [o.entry.idempotency_key for o in report.outcomes] == ["k1", "k2", "k3"]
        assert called == report.outcomes == iterated
        assert all(o.succeeded and o.payment is not None for o in called)
        assert metric(outbox, "paygate_client_outbox_outcomes_total", state="succeeded") == 3
        assert metric(outbox, "paygate_client_outbox_depth") == 0

    with_deliverer(tmp_path, [], body)


def test_transient_failures_are_retried_with_backoff_and_the_same_key(
    tmp_path: pathlib.Path,
) -> None:
    script: list[str | PaygateError] = [
        Unavailable("down", reason="UNAVAILABLE"),
        Aborted("in flight", reason=IDEMPOTENCY_KEY_IN_USE),
        Unavailable("bank", reason="BANK_UNAVAILABLE"),
    ]

    async def body(d: Deliverer, gw: FakeGateway, outbox: Outbox, sleeps: Sleeps) -> None:
        await queue(outbox, "k1")
        report = await d.deliver()
        assert gw.sent == ["k1"] * 4
        [outcome] = report.outcomes
        assert (outcome.entry.state, outcome.entry.attempts) == (EntryState.SUCCEEDED, 4)
        assert len(sleeps.seconds) == 3
        assert all(0 <= s <= cap for s, cap in zip(sleeps.seconds, [0.25, 0.5, 1.0], strict=True))
        assert metric(outbox, "paygate_client_outbox_attempts_total", result="retry") == 3

    with_deliverer(tmp_path, script, body)


def test_a_run_gives_up_after_its_attempts_and_keeps_the_payment(tmp_path: pathlib.Path) -> None:
    down = [Unavailable("down", reason="UNAVAILABLE")] * 10

    async def body(d: Deliverer, gw: FakeGateway, outbox: Outbox, _: Sleeps) -> None:
        await queue(outbox, "k1", "k2")
        report = await d.deliver()
        assert gw.sent == ["k1"] * 3  # k2 waits its turn
        assert (report.end, report.pending, report.last_error) == (
            RunEnd.RETRY_LATER,
            2,
            "UNAVAILABLE",
        )
        [first, second] = await d.entries(limit=10)
        assert (first.state, first.attempts, first.last_error) == ("queued", 3, "UNAVAILABLE")
        assert (second.state, second.attempts) == ("queued", 0)
        assert metric(outbox, "paygate_client_outbox_depth") == 2

    with_deliverer(tmp_path, list(down), body, DeliverySettings(max_attempts_per_run=3))


def test_a_final_refusal_is_recorded_as_failed_and_never_sent_again(
    tmp_path: pathlib.Path,
) -> None:
    refusal = FailedPrecondition("insufficient funds", reason=INSUFFICIENT_FUNDS)

    async def body(d: Deliverer, gw: FakeGateway, outbox: Outbox, _: Sleeps) -> None:
        await queue(outbox, "k1", "k2")
        report = await d.deliver()
        failed, succeeded = report.outcomes
        assert (failed.entry.state, failed.entry.attempts) == (EntryState.FAILED, 1)
        assert failed.entry.failure_reason == INSUFFICIENT_FUNDS and failed.error is refusal
        assert succeeded.succeeded
        assert (await d.deliver()).outcomes == []
        assert gw.sent == ["k1", "k2"]
        assert metric(outbox, "paygate_client_outbox_outcomes_total", state="failed") == 1

    with_deliverer(tmp_path, [refusal], body)


def test_a_refused_token_stops_the_run_and_keeps_every_payment(tmp_path: pathlib.Path) -> None:
    async def body(d: Deliverer, gw: FakeGateway, outbox: Outbox, _: Sleeps) -> None:
        await queue(outbox, "k1", "k2")
        report = await d.deliver(wait_s=30)
        assert (report.end, report.pending) == (RunEnd.NEEDS_LOGIN, 2)
        assert gw.sent == ["k1"]
        assert [e.last_error for e in await d.entries(limit=10)] == ["UNAUTHENTICATED", ""]
        assert (await d.deliver()).end == RunEnd.EMPTY  # after a new login
        assert gw.sent == ["k1", "k1", "k2"]

    with_deliverer(tmp_path, [Unauthenticated("expired")], body)


def test_pay_or_queue_returns_the_queued_row_when_the_gateway_cannot_be_reached(
    tmp_path: pathlib.Path,
) -> None:
    async def body(d: Deliverer, gw: FakeGateway, outbox: Outbox, sleeps: Sleeps) -> None:
        queued = await d.pay_or_queue(order("k1", 500))
        assert isinstance(queued, QueuedPayment)
        assert (queued.state, queued.attempts, queued.last_error) == ("queued", 1, "UNAVAILABLE")
        assert sleeps.seconds == []  # pay() itself does not wait: one attempt
        # Queued behind it, the next one is not sent before it.
        behind = await d.pay_or_queue(order("k2", 700))
        assert isinstance(behind, QueuedPayment) and behind.attempts == 0
        assert gw.sent == ["k1", "k1"]
        paid = await d.pay_or_queue(order("k3"))
        assert isinstance(paid, Payment) and paid.payment_id == "pay_k3"
        assert gw.sent == ["k1", "k1", "k1", "k2", "k3"]

    down = Unavailable("down", reason="UNAVAILABLE")
    with_deliverer(tmp_path, [down, down], body)


def test_pay_or_queue_raises_a_final_error_like_pay(tmp_path: pathlib.Path) -> None:
    async def body(d: Deliverer, gw: FakeGateway, outbox: Outbox, _: Sleeps) -> None:
        with pytest.raises(FailedPrecondition):
            await d.pay_or_queue(order("k1"))
        [entry] = await d.entries(limit=10)
        assert (entry.state, entry.attempts) == ("failed", 1)

    with_deliverer(tmp_path, [FailedPrecondition("no", reason=INSUFFICIENT_FUNDS)], body)


def test_waiting_delivery_asks_the_gateways_health_until_it_is_back(
    tmp_path: pathlib.Path,
) -> None:
    async def body(d: Deliverer, gw: FakeGateway, outbox: Outbox, sleeps: Sleeps) -> None:
        await queue(outbox, "k1")
        gw.health = [False, False, False]
        report = await d.deliver(wait_s=60)
        assert report.end == RunEnd.EMPTY and gw.sent == ["k1", "k1"]
        # One failed attempt (budget 1), then three health checks a poll interval apart.
        assert sleeps.seconds == [1.0, 1.0, 1.0]

    settings = DeliverySettings(max_attempts_per_run=1, poll_interval_s=1.0)
    with_deliverer(tmp_path, [Unavailable("down", reason="UNAVAILABLE")], body, settings)


def test_background_delivery_sends_what_another_process_queued(tmp_path: pathlib.Path) -> None:
    async def body(d: Deliverer, gw: FakeGateway, outbox: Outbox, _: Sleeps) -> None:
        seen: list[Outcome] = []
        arrived = asyncio.Event()
        outbox.add_callback(lambda outcome: (seen.append(outcome), arrived.set()))
        await outbox.open()
        other = OutboxStore(outbox.path)  # another client process of the same user
        # Opened before the loop runs: `PRAGMA journal_mode = WAL` in common/sqlite.py can
        # answer "database is locked" (no busy wait) while a writer spins with fake sleeps.
        await other.open()
        task = asyncio.create_task(d.deliver_forever())
        await other.enqueue(order("k1"))
        await other.close()
        await asyncio.wait_for(arrived.wait(), timeout=10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert [o.entry.idempotency_key for o in seen] == ["k1"]

    with_deliverer(tmp_path, [], body)


def test_metrics_live_on_the_outboxs_own_registry(tmp_path: pathlib.Path) -> None:
    one, two = Outbox(tmp_path / "a.db"), Outbox(tmp_path / "b.db")  # no duplicate error
    assert one.registry is not two.registry
    names = {metric.name for metric in one.registry.collect()}
    assert names == {
        "paygate_client_outbox_depth",
        "paygate_client_outbox_attempts",
        "paygate_client_outbox_outcomes",
    }
    global_names = {metric.name for metric in prometheus_client.REGISTRY.collect()}
    assert not names & global_names


# The key window ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (REFUSED, False),
        (
            Unavailable(
                "errors resolving gw.invalid:443: Domain name not found", reason="UNAVAILABLE"
            ),
            False,
        ),
        (Unauthenticated("expired"), False),
        # A payment within one bank may still commit after these answers (one-phase).
        (Unavailable("bank away", reason=BANK_UNAVAILABLE), True),
        (Unavailable("bank slow", reason=BANK_TIMEOUT), True),
        (NO_ANSWER, True),
        (Unavailable("Socket closed", reason="UNAVAILABLE"), True),
        (Unavailable("failed to connect to all addresses", reason="SHUTTING_DOWN"), True),
        (Aborted("in flight", reason=IDEMPOTENCY_KEY_IN_USE), True),
        (ResourceExhausted("throttled"), True),
        (PaygateError("Cancelled", reason="CANCELLED"), True),
    ],
)
def test_only_attempts_known_not_to_have_run_are_not_maybe_delivered(
    error: PaygateError, expected: bool
) -> None:
    assert maybe_delivered(error) is expected


@pytest.mark.parametrize(
    "unknown",
    # BANK_TIMEOUT: a payment within one bank may commit after the gateway answered.
    [NO_ANSWER, Unavailable("bank slow", reason=BANK_TIMEOUT)],
    ids=["no-answer", "bank-timeout"],
)
def test_a_payment_that_may_have_reached_the_gateway_is_held_for_review_past_the_window(
    tmp_path: pathlib.Path,
    unknown: PaygateError,
) -> None:
    clock = Clock()

    async def body(d: Deliverer, gw: FakeGateway, outbox: Outbox, _: Sleeps) -> None:
        seen: list[Outcome] = []
        outbox.add_callback(seen.append)
        await queue(outbox, "k1")
        first_s = clock.now_s
        assert (await d.deliver()).end == RunEnd.RETRY_LATER  # the call got no answer
        clock.now_s += DEFAULT_KEY_TTL_S + 1
        await queue(outbox, "k2")
        report = await d.deliver()
        assert gw.sent == ["k1", "k2"]  # k1 not again; k2, queued behind it, goes out
        held, paid = report.outcomes
        assert held.needs_review and (held.payment, held.error) == (None, None)
        assert (held.entry.idempotency_key, held.entry.state) == ("k1", "needs_review")
        assert held.entry.maybe_delivered_at is not None
        assert held.entry.maybe_delivered_at.timestamp() == first_s
        assert paid.succeeded and seen == [held, paid]
        assert (report.end, report.pending, report.needs_review) == (RunEnd.EMPTY, 0, 1)
        # Held, not retried and not reported again by later runs.
        clock.now_s += 10 * HOUR_S
        assert (await d.deliver()).outcomes == [] and gw.sent == ["k1", "k2"]
        assert metric(outbox, "paygate_client_outbox_outcomes_total", state="needs_review") == 1
        assert (await d.find("k1")).state == EntryState.NEEDS_REVIEW

    settings = DeliverySettings(max_attempts_per_run=1)
    with_deliverer(tmp_path, [unknown], body, settings, clock)


@pytest.mark.parametrize(
    "never_left",
    [REFUSED, Unauthenticated("expired")],
)
def test_a_payment_whose_attempts_never_ran_is_sent_at_any_age(
    tmp_path: pathlib.Path, never_left: PaygateError
) -> None:
    clock = Clock()

    async def body(d: Deliverer, gw: FakeGateway, outbox: Outbox, _: Sleeps) -> None:
        await queue(outbox, "k1")
        assert (await d.deliver()).outcomes == []
        assert (await d.find("k1")).maybe_delivered_at is None
        clock.now_s += 3 * 24 * HOUR_S
        [outcome] = (await d.deliver()).outcomes
        assert outcome.succeeded and outcome.entry.attempts == 2
        assert gw.sent == ["k1", "k1"]

    settings = DeliverySettings(max_attempts_per_run=1)
    with_deliverer(tmp_path, [never_left], body, settings, clock)


def test_a_payment_that_may_have_reached_the_gateway_is_resent_within_the_window(
    tmp_path: pathlib.Path,
) -> None:
    clock = Clock()

    async def body(d: Deliverer, gw: FakeGateway, outbox: Outbox, _: Sleeps) -> None:
        await queue(outbox, "k1")
        await d.deliver()
        clock.now_s += DEFAULT_KEY_TTL_S - 60
        [outcome] = (await d.deliver()).outcomes
        assert outcome.succeeded and outcome.payment is not None
        assert outcome.payment.payment_id == "pay_k1"
        assert gw.sent == ["k1", "k1"]  # the same key both times

    settings = DeliverySettings(max_attempts_per_run=1)
    with_deliverer(tmp_path, [NO_ANSWER], body, settings, clock)


def test_the_window_runs_from_the_first_attempt_that_may_have_reached_the_gateway(
    tmp_path: pathlib.Path,
) -> None:
    clock = Clock()
    window_s = 10 * HOUR_S

    async def body(d: Deliverer, gw: FakeGateway, outbox: Outbox, _: Sleeps) -> None:
        await queue(outbox, "early", "late")
        await d.deliver()  # early: refused, never left
        clock.now_s += 5 * HOUR_S
        await d.deliver()  # early: no answer; its window starts now
        ambiguous_s = clock.now_s
        clock.now_s += 1 * HOUR_S
        await d.deliver()  # early: refused; the earlier attempt's mark stays
        entry = await d.find("early")
        assert entry.maybe_delivered_at is not None
        assert entry.maybe_delivered_at.timestamp() == ambiguous_s
        clock.now_s = ambiguous_s + window_s - 1
        assert [o.entry.state for o in (await d.deliver()).outcomes] == ["succeeded"] * 2
        assert gw.sent == ["early"] * 4 + ["late"]

    settings = DeliverySettings(max_attempts_per_run=1, key_ttl_s=window_s)
    with_deliverer(tmp_path, [REFUSED, NO_ANSWER, REFUSED], body, settings, clock)


def test_a_claim_whose_process_died_counts_as_maybe_delivered(tmp_path: pathlib.Path) -> None:
    clock = Clock()

    async def body(d: Deliverer, gw: FakeGateway, outbox: Outbox, _: Sleeps) -> None:
        await queue(outbox, "k1")
        # Another process claimed it, may have sent it, and was never heard of again.
        gone = Lease(owner="gone", host="elsewhere", pid=1, duration_s=60)
        await outbox.store.claim_head(GATEWAY, "alice", gone, key_ttl_s=HOUR_S)
        clock.now_s += HOUR_S
        [held] = (await d.deliver()).outcomes
        assert held.needs_review and gw.sent == []

    settings = DeliverySettings(key_ttl_s=HOUR_S)
    with_deliverer(tmp_path, [], body, settings, clock)


def test_the_key_window_must_be_positive() -> None:
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="key_ttl_s"):
            DeliverySettings(key_ttl_s=bad)
    assert DeliverySettings().key_ttl_s == 23 * HOUR_S
