"""The relay in-process: real payments through the tier's gateway write events, and the
relay (paygate.relay's own parts, on the gateway's SQLite file) publishes each of them to a
RabbitMQ exchange, where a consumer finds it as the database holds it; two relays at once
never publish an event twice. Skipped when no broker answers (tests/rabbitmq.py).
"""

from __future__ import annotations

import asyncio
import datetime
import json
import threading
from collections.abc import Iterator

import grpc
import pytest
from paygate.common.database_url import DatabaseLocation
from paygate.gateway import store_events
from rabbitmq import Bound, Received, by_message_id, require_rabbitmq, unique_exchange
from relay_helpers import InProcessRelay, StoredEvent, relay_settings, stored_events, until_drained
from servers import Servers
from test_authorizations import authorize, cancel, capture
from users import TestUser, new_user

DRAINED_WITHIN_S = 30.0


@pytest.fixture(scope="module")
def amqp() -> str:
    return require_rabbitmq()


@pytest.fixture
def channel(suite: Servers) -> Iterator[grpc.Channel]:
    with suite.gateway_channel_sync() as ch:
        yield ch


def gateway_database(suite: Servers) -> DatabaseLocation:
    return suite.config.gateway.database


def parse_time_us(text: str) -> int:
    assert text.endswith("Z"), text
    moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return round(moment.timestamp() * 1_000_000)


def check_message(message: Received, event: StoredEvent) -> dict[str, object]:
    """The message carries the event as stored: properties, and a body of its fields."""
    assert message.routing_key == event.type
    assert (message.content_type, message.delivery_mode) == ("application/json", 2)
    assert (message.type, message.app_id) == (event.type, "paygate-relay")
    document = json.loads(message.body)
    assert (document["event_id"], document["type"]) == (event.event_id, event.type)
    assert (document["username"], document["sequence"]) == (event.username, event.sequence)
    assert parse_time_us(document["create_time"]) == event.create_time_us
    stored = store_events.load(event.body)
    payment = document["payment"]
    assert payment["payment_id"] == stored.payment_id
    assert payment["refund_of"] == stored.refund_of
    assert payment["status"] == str(stored.status)
    assert (payment["payer_username"], payment["payee_username"]) == (
        stored.payer_username,
        stored.payee_username,
    )
    assert (payment["amount"], payment["currency"]) == (stored.amount_minor, stored.currency)
    assert payment["amount_refunded"] == stored.amount_refunded_minor
    assert payment["failure_reason"] == stored.failure_reason
    # Nothing that identifies an account or a user but the usernames.
    for private in (stored.payer_user_id, stored.payer_account, stored.payee_account):
        assert private not in message.body.decode()
    return dict(document)


def test_real_payments_reach_a_bound_queue_once_each_as_the_database_holds_them(
    amqp: str, suite: Servers, channel: grpc.Channel
) -> None:
    exchange = unique_exchange("inproc")
    bound = asyncio.run(Bound.declare(amqp, exchange, {"all": "#", "refunds": "refund.*"}))
    try:
        alice = new_user(suite, channel, "bank-a", 100_00, "alice")
        bob = new_user(suite, channel, "bank-b", 0, "bob")
        paid = alice.pay(bob, 10_00)
        with pytest.raises(grpc.RpcError):
            alice.pay(bob, 1_000_00)  # refused: insufficient funds
        held = authorize(alice, bob, 20_00)
        capture(bob, held.payment_id, 12_50)
        dropped = authorize(alice, bob, 5_00)
        cancel(bob, dropped.payment_id)
        refund = bob.refund(paid.payment_id, 3_00)

        database = gateway_database(suite)

        async def relay_all() -> int:
            relay = await InProcessRelay.open(
                suite.config, relay_settings(amqp, exchange), "inproc"
            )
            task = asyncio.create_task(relay.relay.run_forever())
            try:
                await until_drained(database, DRAINED_WITHIN_S)
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                await relay.close()
            return relay.published

        published = asyncio.run(relay_all())
        events = stored_events(database)
        everything = asyncio.run(bound.drain("all"))
        refunds = asyncio.run(bound.drain("refunds"))
    finally:
        asyncio.run(bound.close())

    # Every event exactly once (no fault in this run), each as the database holds it.
    received = by_message_id(everything)
    assert sorted(received) == sorted(e.event_id for e in events)
    assert all(len(copies) == 1 for copies in received.values())
    assert published == len(events) == 14  # 7 changes, each with two parties
    documents = {e.event_id: check_message(received[e.event_id][0], e) for e in events}

    # What each user reads from the queue, in their own order.
    for user in (alice, bob):
        mine = sorted(
            (d for d in documents.values() if d["username"] == user.username),
            key=lambda d: d["sequence"],  # type: ignore[arg-type,return-value]
        )
        assert [d["sequence"] for d in mine] == list(range(1, 8))
        assert [(d["type"], d["payment"]["payment_id"]) for d in mine] == [  # type: ignore[index]
            ("payment.succeeded", paid.payment_id),
            ("payment.failed", mine[1]["payment"]["payment_id"]),  # type: ignore[index]
            ("payment.authorized", held.payment_id),
            ("payment.captured", held.payment_id),
            ("payment.authorized", dropped.payment_id),
            ("payment.canceled", dropped.payment_id),
            ("refund.succeeded", refund.refund_id),
        ]
        failed, captured, refunded = mine[1]["payment"], mine[3]["payment"], mine[6]["payment"]
        assert (failed["status"], failed["failure_reason"]) == ("failed", "INSUFFICIENT_FUNDS")  # type: ignore[index]
        assert (captured["amount_captured"], captured["capture_method"]) == (12_50, "manual")  # type: ignore[index]
        assert (refunded["refund_of"], refunded["amount"]) == (paid.payment_id, 3_00)  # type: ignore[index]
        assert refunded["payer_username"] == bob.username  # type: ignore[index]
    # A queue bound to refund.* got the refund's two events, and nothing else.
    assert sorted(m.routing_key for m in refunds) == ["refund.succeeded"] * 2


def pay_in_a_loop(payer: TestUser, payee: TestUser, count: int, errors: list[str]) -> None:
    for _ in range(count):
        try:
            payer.pay(payee, 1_00)
        except grpc.RpcError as exc:  # not expected: the test fails on it
            errors.append(repr(exc))


def test_two_relays_at_once_publish_each_event_once_and_hand_over_the_lease(
    amqp: str, suite: Servers, channel: grpc.Channel
) -> None:
    exchange = unique_exchange("lease")
    bound = asyncio.run(Bound.declare(amqp, exchange, {"all": "#"}))
    alice = new_user(suite, channel, "bank-a", 100_00, "alice")
    bob = new_user(suite, channel, "bank-c", 0, "bob")
    errors: list[str] = []
    settings = relay_settings(amqp, exchange, batch_size=3)
    database = gateway_database(suite)

    async def pay_and_drain(count: int, watched: list[InProcessRelay]) -> set[tuple[bool, ...]]:
        """Pay while the relays run; which of them held the lease, sampled meanwhile."""
        payer = threading.Thread(target=pay_in_a_loop, args=(alice, bob, count, errors))
        payer.start()
        holders = set()
        while payer.is_alive():
            holders.add(tuple(r.lease_held for r in watched))
            await asyncio.sleep(0.01)
        await until_drained(database, DRAINED_WITHIN_S)
        return holders

    async def two_relays() -> tuple[list[int], list[int], set[tuple[bool, ...]]]:
        relays = [await InProcessRelay.open(suite.config, settings, n) for n in ("a", "b")]
        tasks = [asyncio.create_task(r.relay.run_forever()) for r in relays]
        try:
            # Both run: one holds the lease and publishes everything, the other waits.
            holders = await pay_and_drain(20, relays)
            before = [r.published for r in relays]
            # The holder stops and lets the lease go: the other takes over at once.
            holder = 0 if relays[0].lease_held else 1
            tasks[holder].cancel()
            await relays[holder].close()
            await pay_and_drain(20, [])
            after = [r.published for r in relays]
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for relay in relays:
                await relay.close()
        return before, after, holders

    try:
        before, after, holders = asyncio.run(two_relays())
        received = asyncio.run(bound.drain("all"))
    finally:
        asyncio.run(bound.close())
    assert errors == []
    mine = (alice.username, bob.username)
    events = [e for e in stored_events(database) if e.username in mine]
    assert len(events) == 80  # 40 payments, two parties each
    copies = by_message_id(received)
    assert sorted(copies) == sorted(e.event_id for e in events)
    assert [m for m, c in copies.items() if len(c) > 1] == []  # none published twice
    assert sorted(before) == [0, 40]  # while both ran, one published
    assert sorted(after[i] - before[i] for i in range(2)) == [0, 40]  # then the other
    assert after[before.index(0)] == 40
    assert (True, True) not in holders  # never two holders at once
