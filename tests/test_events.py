"""Events through the real suite: each party of a payment gets one event, in order; pages;
a watcher sees a new payment within a second, resumes after the gateway was killed with
SIGKILL and gets every event after its cursor exactly once (`paygate events --follow`);
the per-user stream limit; and a payment the gateway crashed on before its decision leaves
a failure event, never a success. (Expired cursors and the shutdown of streams:
tests/inproc/test_inproc_events.py.)
"""

from __future__ import annotations

import asyncio
import pathlib
import queue
import subprocess
import threading
import time
import uuid

import grpc
import pytest
from paygate.gen.paygate.v1 import gateway_pb2 as pb
from paygate.gen.paygate.v1 import gateway_pb2_grpc as pbg
from suite import BIN, SHARED_GATEWAY_SETTINGS, Suite, started_suite
from test_cli import Cli
from test_crash_points import channel, within
from users import TestUser, error_reason, new_user, unique_name

__all__ = ["channel"]
pytestmark = pytest.mark.suite
CODE = grpc.StatusCode
WITHIN_S = 20.0


def events_of(
    user: TestUser, after: int = 0, page_size: int = 0, types=()
) -> pb.ListEventsResponse:  # type: ignore[no-untyped-def]
    request = pb.ListEventsRequest(starting_after=after, page_size=page_size, types=list(types))
    return user.stub.ListEvents(request, metadata=user.metadata, timeout=10.0)


def test_each_party_gets_one_event_per_change_in_order_and_pages(
    suite: Suite, channel: grpc.Channel
) -> None:
    alice, bob = new_user(suite, channel, "bank-a", 50_00), new_user(suite, channel, "bank-b", 0)
    first, second = alice.pay(bob, 10_00), alice.pay(bob, 20_00)
    with pytest.raises(grpc.RpcError) as refused:
        alice.pay(bob, 90_00)
    assert error_reason(refused.value) == "INSUFFICIENT_FUNDS"
    for user in (alice, bob):
        listed = events_of(user)
        assert [e.sequence for e in listed.events] == [1, 2, 3]
        assert [e.type for e in listed.events] == [
            "payment.succeeded", "payment.succeeded", "payment.failed"
        ]  # fmt: skip
        assert [e.payment.payment_id for e in listed.events][:2] == [
            first.payment_id, second.payment_id
        ]  # fmt: skip
        assert listed.events[0].payment == user.get_payment(first.payment_id)
        assert not listed.has_more
    # One change, two parties: an event each, of its own.
    assert events_of(alice).events[0].event_id != events_of(bob).events[0].event_id
    page = events_of(alice, page_size=2)
    assert ([e.sequence for e in page.events], page.next_starting_after, page.has_more) == (
        [1, 2], 2, True
    )  # fmt: skip
    rest = events_of(alice, after=page.next_starting_after, page_size=2)
    assert ([e.sequence for e in rest.events], rest.has_more) == ([3], False)
    failed = events_of(alice, types=["payment.failed"])
    assert [e.sequence for e in failed.events] == [3]
    bad = [("types", lambda: events_of(alice, types=["payment.nope"])),
           ("after", lambda: events_of(alice, after=99)),
           ("page", lambda: events_of(alice, page_size=-1))]  # fmt: skip
    for _, call in bad:
        with pytest.raises(grpc.RpcError) as caught:
            call()
        assert caught.value.code() == CODE.INVALID_ARGUMENT


def test_a_watcher_sees_a_new_payment_within_a_second_and_the_stream_limit_holds(
    suite: Suite, channel: grpc.Channel
) -> None:
    alice, bob = new_user(suite, channel, "bank-a", 50_00), new_user(suite, channel, "bank-b", 0)
    alice.pay(bob, 1_00)

    async def watch() -> None:
        async with suite.gateway_channel() as aio:
            stub = pbg.GatewayServiceStub(aio)
            meta = bob.metadata
            streams = [stub.WatchEvents(pb.WatchEventsRequest(), metadata=meta) for _ in range(4)]
            for stream in streams:  # each has sent event 1: all four are open
                assert (await stream.read()).event.sequence == 1
            fifth = stub.WatchEvents(pb.WatchEventsRequest(), metadata=meta)
            with pytest.raises(grpc.RpcError) as caught:
                await fifth.read()
            assert caught.value.code() == CODE.RESOURCE_EXHAUSTED
            paid = await asyncio.to_thread(alice.pay, bob, 2_00)
            answered = time.monotonic()
            event = await asyncio.wait_for(streams[0].read(), timeout=1.0)
            assert time.monotonic() - answered < 1.0
            assert (event.event.sequence, event.event.payment.payment_id) == (2, paid.payment_id)
            for stream in streams:
                stream.cancel()

    asyncio.run(watch())


class Follower:
    """`paygate events --follow` running, its lines read as they come."""

    def __init__(self, cli: Cli, errors: pathlib.Path) -> None:
        self.errors = errors
        self.lines: queue.Queue[str] = queue.Queue()
        with errors.open("a") as stderr:
            self.process = subprocess.Popen(
                [str(BIN / "paygate"), "events", "--follow"], cwd=cli.suite.dir, env=cli.env,
                stdout=subprocess.PIPE, stderr=stderr, text=True,
            )  # fmt: skip
        out = self.process.stdout
        assert out is not None
        threading.Thread(target=lambda: [self.lines.put(x) for x in out], daemon=True).start()

    def printed(self, count: int) -> list[int]:
        """The sequences of the next `count` lines printed."""
        try:
            return [int(self.lines.get(timeout=WITHIN_S).split()[0]) for _ in range(count)]
        except queue.Empty:
            pytest.fail(f"nothing printed; its errors: {self.errors.read_text()}")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        assert self.process.stdout is not None
        self.process.stdout.close()


def test_follow_resumes_after_the_gateway_is_killed_and_prints_each_event_once(
    suite: Suite, channel: grpc.Channel, tmp_path: pathlib.Path
) -> None:
    cli = Cli(suite, tmp_path / "watcher")
    bob_name = unique_name("bob")
    cli.register(bob_name, "bank-b", cli.open_account("bank-b", "0"))
    cli.login(bob_name)
    alice = new_user(suite, channel, "bank-a", 50_00)
    follower = Follower(cli, tmp_path / "follow.err")
    try:
        alice.pay(bob_name, 1_00)
        alice.pay(bob_name, 2_00)
        assert follower.printed(2) == [1, 2]
        old = suite.kill("gateway")
        suite.wait_restarted("gateway", old)
        within(WITHIN_S, lambda: alice.pay(bob_name, 3_00, key=f"k3-{old}"))
        alice.pay(bob_name, 4_00)
        assert follower.printed(2) == [3, 4]
    finally:
        follower.stop()
    assert follower.lines.empty()
    alice.pay(bob_name, 5_00)  # while nobody watches
    follower = Follower(cli, tmp_path / "follow.err")  # resumes after 4, the last printed
    try:
        assert follower.printed(1) == [5]
        alice.pay(bob_name, 6_00)
        assert follower.printed(1) == [6]
    finally:
        follower.stop()
    assert follower.lines.empty()


def test_a_payment_cut_short_before_its_decision_has_no_success_event(
    suite: Suite, channel: grpc.Channel
) -> None:
    alice = within(WITHIN_S, lambda: new_user(suite, channel, "bank-a", 50_00))
    bob = within(WITHIN_S, lambda: new_user(suite, channel, "bank-b", 0))
    old = suite.pid("gateway")
    armed = suite.arm_fault("gateway", "gateway.after_prepares")
    try:
        with pytest.raises(grpc.RpcError):
            alice.pay(bob, 10_00, key=uuid.uuid4().hex)
    finally:
        armed.unlink(missing_ok=True)
    suite.wait_restarted("gateway", old)

    def failed() -> list[str]:
        listed = [e.type for e in events_of(alice).events]
        assert listed == ["payment.failed"], listed  # recovery presumed abort
        return listed

    within(WITHIN_S, failed)
    assert [e.type for e in events_of(bob).events] == ["payment.failed"]


def test_a_cursor_into_pruned_events_is_out_of_range(tmp_path: pathlib.Path) -> None:
    """A suite of its own, whose gateway keeps events 2 s and prunes every 0.5 s."""
    settings = {**SHARED_GATEWAY_SETTINGS, "event_retention_s": 2.0,
                "housekeeping_interval_s": 0.5}  # fmt: skip
    with started_suite(tmp_path / "suite", gateway_settings=settings) as suite:
        with suite.gateway_channel_sync() as channel:
            alice = new_user(suite, channel, "bank-a", 50_00)
            bob = new_user(suite, channel, "bank-b", 0)
            alice.pay(bob, 1_00)
            alice.pay(bob, 2_00)

            def pruned() -> None:
                assert events_of(alice).events == []  # both older than 2 s: gone (from 0:
                # what is kept, never expired)

            within(WITHIN_S, pruned)
            alice.pay(bob, 3_00)
            with pytest.raises(grpc.RpcError) as caught:
                events_of(alice, after=1)
            assert (caught.value.code(), error_reason(caught.value)) == (
                CODE.OUT_OF_RANGE, "EVENTS_EXPIRED"
            )  # fmt: skip
            stream = alice.stub.WatchEvents(pb.WatchEventsRequest(starting_after=1),
                                            metadata=alice.metadata, timeout=10)  # fmt: skip
            with pytest.raises(grpc.RpcError) as watched:
                next(stream)
            assert error_reason(watched.value) == "EVENTS_EXPIRED"
            # From the last one seen nothing is missing: the cursor 2 goes on; 0 lists
            # what is kept.
            assert [e.sequence for e in events_of(alice, after=2).events] == [3]
            assert [e.sequence for e in events_of(alice).events] == [3]

