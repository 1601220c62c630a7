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
from paygate.common.stream_limit_interceptor import StreamLimitInterceptor

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
