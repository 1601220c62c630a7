"""StreamLimitInterceptor on a server from build_server (health and reflection, in-process).

Health Watch and reflection need no token: without the limit, a few open streams would
take every call slot of the server and leave none for unary calls (payments).
"""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from paygate.common.server import build_server
from paygate.common.stream_limit_interceptor import StreamLimitInterceptor

LOCAL = grpc.LocalConnectionType.LOCAL_TCP
SLOTS = 4  # the server's max_concurrent_rpcs
MAX_OPEN = 3
TIMEOUT_S = 10.0
RETRIES = 100
RETRY_PAUSE_S = 0.05


def test_streams_beyond_the_limit_are_refused_and_unary_calls_still_served() -> None:
    async def scenario() -> None:
        limit = StreamLimitInterceptor(max_open=MAX_OPEN)
        server = await build_server(
            listen="127.0.0.1:0",
            credentials=grpc.local_server_credentials(LOCAL),
            service_name="paygate.test.v1.NothingService",
            add_servicer=lambda s: None,
            interceptors=[limit],
            max_message_bytes=64 * 1024,
            max_concurrent_rpcs=SLOTS,
        )
        await server.set_serving(True)
        channel = grpc.aio.secure_channel(
            f"127.0.0.1:{server.port}", grpc.local_channel_credentials(LOCAL)
        )
        health = health_pb2_grpc.HealthStub(channel)
        everything = health_pb2.HealthCheckRequest(service="")
        try:
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
            for _ in range(RETRIES):
                again = health.Watch(everything, timeout=TIMEOUT_S)
                try:
                    first = await again.read()
                    break
                except grpc.aio.AioRpcError as error:
                    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
                    await asyncio.sleep(RETRY_PAUSE_S)
            else:
                pytest.fail("the place of the cancelled stream was never freed")
            assert first.status == health_pb2.HealthCheckResponse.SERVING
            for watch in (*watches[1:], again):
                watch.cancel()
        finally:
            await channel.close()
            await server.grpc_server.stop(None)

    asyncio.run(scenario())


def test_a_cancelled_reflection_stream_gives_its_place_back() -> None:
    # Reflection's handler is an async generator (Watch's a coroutine): a stream of that
    # kind, cancelled by its caller, gives its place back too.
    async def scenario() -> None:
        limit = StreamLimitInterceptor(max_open=1)
        server = await build_server(
            listen="127.0.0.1:0",
            credentials=grpc.local_server_credentials(LOCAL),
            service_name="paygate.test.v1.NothingService",
            add_servicer=lambda s: None,
            interceptors=[limit],
            max_message_bytes=64 * 1024,
            max_concurrent_rpcs=SLOTS,
        )
        await server.set_serving(True)
        channel = grpc.aio.secure_channel(
            f"127.0.0.1:{server.port}", grpc.local_channel_credentials(LOCAL)
        )
        health = health_pb2_grpc.HealthStub(channel)
        everything = health_pb2.HealthCheckRequest(service="")
        try:
            listing = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
                timeout=TIMEOUT_S
            )
            await listing.write(reflection_pb2.ServerReflectionRequest(list_services=""))
            assert (await listing.read()).list_services_response.service
            listing.cancel()
            for _ in range(RETRIES):
                watch = health.Watch(everything, timeout=TIMEOUT_S)
                try:
                    first = await watch.read()
                    break
                except grpc.aio.AioRpcError as error:
                    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
                    await asyncio.sleep(RETRY_PAUSE_S)
            else:
                pytest.fail("the cancelled reflection stream kept its place")
            assert first.status == health_pb2.HealthCheckResponse.SERVING
            watch.cancel()
        finally:
            await channel.close()
            await server.grpc_server.stop(None)

    asyncio.run(scenario())
