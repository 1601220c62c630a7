"""Bytes that do not parse, sent to a streaming method (health Watch, reflection, which
anyone who reaches a port may call), are INVALID_ARGUMENT as for a unary method: never
gRPC's UNKNOWN naming a Python exception. In-process, on a server from build_server."""

from __future__ import annotations

import asyncio

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from local_server import local_server
from paygate.common.error_interceptor import ErrorInterceptor

GARBAGE = b"\xff\xff\xff"
WATCH = "/grpc.health.v1.Health/Watch"
REFLECTION = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
TIMEOUT_S = 10.0


def test_unparsable_stream_requests_are_invalid_argument_and_good_ones_served() -> None:
    async def scenario() -> list[tuple[grpc.StatusCode, str]]:
        refusals = []
        async with local_server([ErrorInterceptor()]) as (server, channel):
            await server.set_serving(True)
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
        return refusals

    refusals = asyncio.run(scenario())
    assert (
        refusals
        == [(grpc.StatusCode.INVALID_ARGUMENT, "the request is not a valid protobuf message")] * 2
    )
