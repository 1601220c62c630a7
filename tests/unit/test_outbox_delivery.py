"""Delivery of queued payments with a scripted gateway: order, retries with full-jitter
backoff and a bound, final answers settled once, notification, metrics."""

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
    verdict_of_error,
)
from paygate.client.outbox_models import EntryState, PaymentOrder
from paygate.client.outbox_store import OutboxStore
from paygate.errors import (
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


def payment_for(entry: QueuedPayment, status: PaymentStatus = PaymentStatus.SUCCEEDED) -> Payment:
    return Payment(
        payment_id=f"pay_{entry.idempotency_key}", status=status, payer_username="alice",
        payee_username=entry.payee_username, amount_minor=entry.amount_minor,
        currency=entry.currency, description=entry.description,
        create_time=datetime.datetime.now(datetime.UTC), failure_reason="",
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
        idempotency_key=key, gateway=GATEWAY, payer_username="alice", payee_username="bob",
        amount_minor=amount_minor, currency="USD", description="",
    )


def with_deliverer(
    tmp_path: pathlib.Path,
    script: list[str | PaygateError],
    body: Callable[[Deliverer, FakeGateway, Outbox, Sleeps], Awaitable[T]],
    settings: DeliverySettings | None = None,
) -> T:
    path = tmp_path / "outbox.db"

    async def main() -> T:
        outbox = Outbox(path)
        gateway = FakeGateway(path, script)
        sleeps = Sleeps()
        deliverer = Deliverer(
            outbox, gateway, gateway=GATEWAY, payer="alice", call_timeout_s=1.0,
            settings=settings, sleep=sleeps,
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
            RunEnd.RETRY_LATER, 2, "UNAVAILABLE"
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
        task = asyncio.create_task(d.deliver_forever())
        other = OutboxStore(outbox.path)  # another client process of the same user
        await other.open()
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
