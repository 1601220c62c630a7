"""Events in-process: the API's refusals (an expired cursor is OUT_OF_RANGE with
EVENTS_EXPIRED, once housekeeping pruned the events it pointed into), and a watch that the
gateway's shutdown ends cleanly, so that the client resumes elsewhere. The suite tier shows
the rest (tests/test_events.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import pytest
from paygate.client import AsyncClient
from paygate.gateway.main import housekeeping_pass
from paygate.gen.paygate.v1 import gateway_pb2 as pb
from paygate.gen.paygate.v1 import gateway_pb2_grpc as pbg
from servers import Servers
from users import error_reason, new_user

CODE = grpc.StatusCode


@pytest.fixture
def channel(suite: Servers) -> Iterator[grpc.Channel]:
    with suite.gateway_channel_sync() as ch:
        yield ch


def test_an_expired_cursor_is_out_of_range_and_zero_lists_what_is_kept(
    suite: Servers, channel: grpc.Channel
) -> None:
    alice, bob = new_user(suite, channel, "bank-a", 50_00), new_user(suite, channel, "bank-b", 0)
    for amount in (1_00, 2_00, 3_00):
        alice.pay(bob, amount)
    listed = alice.stub.ListEvents(pb.ListEventsRequest(), metadata=alice.metadata, timeout=10)
    assert [e.sequence for e in listed.events] == [1, 2, 3]
    # Housekeeping with a retention that has passed for every event so far.
    config = suite.gateway.config
    later_s = time.time() + config.event_retention_s + 1
    suite.run(housekeeping_pass(suite.gateway.store, config, later_s))
    alice.pay(bob, 4_00)
    for call in (
        lambda: alice.stub.ListEvents(pb.ListEventsRequest(starting_after=1),
                                      metadata=alice.metadata, timeout=10),
        lambda: next(iter(alice.stub.WatchEvents(pb.WatchEventsRequest(starting_after=2),
                                                 metadata=alice.metadata, timeout=10))),
    ):  # fmt: skip
        with pytest.raises(grpc.RpcError) as caught:
            call()
        assert (caught.value.code(), error_reason(caught.value)) == (
            CODE.OUT_OF_RANGE, "EVENTS_EXPIRED"
        )  # fmt: skip
    # From the last one seen nothing is missing; from 0, the client gets what is kept.
    kept = alice.stub.ListEvents(pb.ListEventsRequest(starting_after=3),
                                 metadata=alice.metadata, timeout=10)  # fmt: skip
    assert [e.sequence for e in kept.events] == [4]
    with pytest.raises(grpc.RpcError) as caught:
        next(iter(alice.stub.WatchEvents(pb.WatchEventsRequest(), timeout=10)))  # no token
    assert caught.value.code() == CODE.UNAUTHENTICATED


def test_the_client_library_lists_every_page_and_watches_on(
    suite: Servers, channel: grpc.Channel
) -> None:
    alice, bob = new_user(suite, channel, "bank-a", 500_00), new_user(suite, channel, "bank-b", 0)
    for n in range(130):  # more than a page of 100
        alice.pay(bob, 1_00 + n)

    async def read() -> tuple[list[int], list[int]]:
        ca = suite.config.certs_dir / "ca.pem"
        async with AsyncClient(suite.gateway_target, ca_cert=ca, access_token=bob.token) as client:
            listed = [e.sequence async for e in client.iter_events(starting_after=5)]
            watched = []
            async for event in client.watch_events(starting_after=127):
                watched.append(event.sequence)
                if event.sequence == 130:
                    break
            return listed, watched

    listed, watched = suite.run(read())
    assert listed == list(range(6, 131))
    assert watched == [128, 129, 130]  # (new ones as they come: tests/test_events.py)


# Last in the module: it ends the module's gateway's event streams for good.
def test_a_watch_ends_cleanly_when_the_gateway_shuts_down(
    suite: Servers, channel: grpc.Channel
) -> None:
    alice, bob = new_user(suite, channel, "bank-a", 50_00), new_user(suite, channel, "bank-b", 0)
    alice.pay(bob, 1_00)
    stream = pbg.GatewayServiceStub(channel).WatchEvents(
        pb.WatchEventsRequest(), metadata=bob.metadata, timeout=30
    )
    assert next(stream).event.type == "payment.succeeded"
    registry = suite.gateway.registry
    assert registry.get_sample_value("paygate_event_watchers") == 1
    written = {"type": "payment.succeeded"}
    assert (registry.get_sample_value("paygate_events_written_total", written) or 0) >= 2
    suite.gateway.events.close()  # what serve() does as draining starts
    assert list(stream) == []  # the stream ends, with OK: the client resumes elsewhere
    assert stream.code() == CODE.OK
