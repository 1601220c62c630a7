"""StreamLimitInterceptor on a server from build_server (health and reflection, in-process).

Health Watch and reflection need no token: without the limit, a few open streams would
take every call slot of the server and leave none for unary calls (payments).
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from local_server import local_server
from paygate.common.stream_limit_interceptor import StreamLimitInterceptor, peer_address

SLOTS = 4  # the server's max_concurrent_rpcs
MAX_OPEN = 3
TIMEOUT_S = 10.0
RETRIES = 100
RETRY_PAUSE_S = 0.05


async def watch_once_a_place_is_free(health: health_pb2_grpc.HealthStub) -> Any:
    """A Watch, retried as a client would while the server refuses it for want of a place
    (the server sees a cancelled stream end a moment after its caller does)."""
    for _ in range(RETRIES):
        watch = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=TIMEOUT_S)
        try:
            first = await watch.read()
        except grpc.aio.AioRpcError as error:
            assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            await asyncio.sleep(RETRY_PAUSE_S)
            continue
        assert first.status == health_pb2.HealthCheckResponse.SERVING
        return watch
    pytest.fail("no place was freed for a new stream")


def test_streams_beyond_the_limit_are_refused_and_unary_calls_still_served() -> None:
    async def scenario() -> None:
        limit = StreamLimitInterceptor(max_open=MAX_OPEN)
        async with local_server([limit], max_concurrent_rpcs=SLOTS) as (server, channel):
            await server.set_serving(True)
            health = health_pb2_grpc.HealthStub(channel)
            everything = health_pb2.HealthCheckRequest(service="")
            watches = [health.Watch(everything, timeout=TIMEOUT_S) for _ in range(MAX_OPEN)]
            for watch in watches:
                assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
            assert limit.open_streams == MAX_OPEN

            # One more stream of either kind is refused at once...
            refused = health.Watch(everything, timeout=TIMEOUT_S)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await refused.read()
            assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "streaming calls open" in (info.value.details() or "")
            reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
            listing = reflection.ServerReflectionInfo(timeout=TIMEOUT_S)
            await listing.write(reflection_pb2.ServerReflectionRequest(list_services=""))
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await listing.read()
            assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED

            # ...while a unary call still finds a free slot.
            check = await health.Check(everything, timeout=TIMEOUT_S)
            assert check.status == health_pb2.HealthCheckResponse.SERVING

            # A stream that ends frees its place (once the server has seen it end).
            watches[0].cancel()
            again = await watch_once_a_place_is_free(health)
            for watch in (*watches[1:], again):
                watch.cancel()

    asyncio.run(scenario())


def test_a_cancelled_reflection_stream_gives_its_place_back() -> None:
    # Reflection's handler is an async generator (Watch's a coroutine): a stream of that
    # kind, cancelled by its caller, gives its place back too.
    async def scenario() -> None:
        limit = StreamLimitInterceptor(max_open=1)
        async with local_server([limit], max_concurrent_rpcs=SLOTS) as (server, channel):
            await server.set_serving(True)
            health = health_pb2_grpc.HealthStub(channel)
            listing = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
                timeout=TIMEOUT_S
            )
            await listing.write(reflection_pb2.ServerReflectionRequest(list_services=""))
            assert (await listing.read()).list_services_response.service
            listing.cancel()
            (await watch_once_a_place_is_free(health)).cancel()

    asyncio.run(scenario())


def test_one_address_holds_at_most_its_share_of_the_streams() -> None:
    # Every channel of this test comes from 127.0.0.1: past the per-address cap its next
    # stream is refused although the server-wide cap leaves room.
    async def scenario() -> None:
        limit = StreamLimitInterceptor(max_open=10, max_open_per_peer=2)
        async with local_server([limit], max_concurrent_rpcs=16) as (server, channel):
            await server.set_serving(True)
            health = health_pb2_grpc.HealthStub(channel)
            everything = health_pb2.HealthCheckRequest(service="")
            watches = [health.Watch(everything, timeout=TIMEOUT_S) for _ in range(2)]
            for watch in watches:
                assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
            refused = health.Watch(everything, timeout=TIMEOUT_S)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await refused.read()
            assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "your address has 2 streaming calls open" in (info.value.details() or "")
            assert limit.open_streams == 2
            watches[0].cancel()
            again = await watch_once_a_place_is_free(health)
            for watch in (watches[1], again):
                watch.cancel()

    asyncio.run(scenario())


class FakeContext:
    """What the interceptor uses of a call's context: its peer, abort and done callbacks."""

    def __init__(self, peer: str) -> None:
        self._peer = peer
        self.callbacks: list[Any] = []

    def peer(self) -> str:
        return self._peer

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise grpc.aio.AbortError(details)

    def add_done_callback(self, callback: Any) -> None:
        self.callbacks.append(callback)

    def end(self) -> None:
        for callback in self.callbacks:
            callback(self)


def test_the_cap_per_address_counts_each_address_apart_whatever_its_port() -> None:
    async def scenario() -> None:
        limit = StreamLimitInterceptor(max_open=10, max_open_per_peer=2)
        first = [FakeContext(f"ipv4:10.0.0.1:{port}") for port in (4001, 4002)]
        for context in first:
            await limit._enter(None, context)
        with pytest.raises(grpc.aio.AbortError):
            await limit._enter(None, FakeContext("ipv4:10.0.0.1:4003"))
        other = FakeContext("ipv6:[::1]:4001")
        await limit._enter(None, other)  # another address still gets its place
        assert limit.open_streams == 3 and limit.open_streams_of("ipv4:10.0.0.1:9") == 2
        first[0].end()
        await limit._enter(None, FakeContext("ipv4:10.0.0.1:4004"))
        other.end()
        assert limit.open_streams_of("ipv6:[::1]:1") == 0 and limit._open_by_peer.keys() == {
            "ipv4:10.0.0.1"
        }

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("peer", "address"),
    [
        ("ipv4:127.0.0.1:51234", "ipv4:127.0.0.1"),
        ("ipv6:[::1]:51234", "ipv6:[::1]"),
        ("ipv6:[2001:db8::7]:443", "ipv6:[2001:db8::7]"),
        ("unix:/tmp/s.sock", "unix:/tmp/s.sock"),
        ("", ""),
    ],
)
def test_peer_address_drops_only_the_port(peer: str, address: str) -> None:
    assert peer_address(peer) == address
