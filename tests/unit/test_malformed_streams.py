"""Bytes that do not parse, sent to a streaming method (health Watch, reflection, which
anyone who reaches a port may call), are INVALID_ARGUMENT as for a unary method: never
gRPC's UNKNOWN naming a Python exception. In-process, on a server from build_server."""

from __future__ import annotations

import asyncio

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from paygate.common.error_interceptor import ErrorInterceptor
from paygate.common.server import build_server

LOCAL = grpc.LocalConnectionType.LOCAL_TCP
GARBAGE = b"\xff\xff\xff"
WATCH = "/grpc.health.v1.Health/Watch"
REFLECTION = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
TIMEOUT_S = 10.0


def test_unparsable_stream_requests_are_invalid_argument_and_good_ones_served() -> None:
    async def scenario() -> list[tuple[grpc.StatusCode, str]]:
        server = await build_server(
            listen="127.0.0.1:0",
            credentials=grpc.local_server_credentials(LOCAL),
            service_name="paygate.test.v1.NothingService",
            add_servicer=lambda s: None,
            interceptors=[ErrorInterceptor()],
            max_message_bytes=64 * 1024,
            max_concurrent_rpcs=16,
        )
        await server.set_serving(True)
        channel = grpc.aio.secure_channel(
            f"127.0.0.1:{server.port}", grpc.local_channel_credentials(LOCAL)
        )
        refusals = []
        try:
            watch = channel.unary_stream(WATCH)(GARBAGE, timeout=TIMEOUT_S)
            try:
                await watch.read()
            except grpc.aio.AioRpcError as error:
                refusals.append((error.code(), error.details() or ""))
            listing = channel.stream_stream(REFLECTION)(timeout=TIMEOUT_S)
            await listing.write(GARBAGE)
            try:
                await listing.read()
            except grpc.aio.AioRpcError as error:
                refusals.append((error.code(), error.details() or ""))

            # Well-formed calls of both kinds still work through the interceptor.
            health = health_pb2_grpc.HealthStub(channel)
            good_watch = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=TIMEOUT_S)
            assert (await good_watch.read()).status == health_pb2.HealthCheckResponse.SERVING
            good_watch.cancel()
            reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
            good_listing = reflection.ServerReflectionInfo(timeout=TIMEOUT_S)
            await good_listing.write(reflection_pb2.ServerReflectionRequest(list_services=""))
            services = (await good_listing.read()).list_services_response.service
            assert "grpc.health.v1.Health" in {s.name for s in services}
            await good_listing.done_writing()
        finally:
            await channel.close()
            await server.grpc_server.stop(None)
        return refusals

    refusals = asyncio.run(scenario())
    assert refusals == [
        (grpc.StatusCode.INVALID_ARGUMENT, "the request is not a valid protobuf message")
    ] * 2
