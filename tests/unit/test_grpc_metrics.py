"""The gRPC metrics interceptors on a real grpc.aio server and channel (in this process)."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from paygate.common.client_metrics_interceptor import ClientMetricsInterceptor
from paygate.common.metrics import GrpcMetrics, new_registry
from paygate.common.metrics_interceptor import MetricsInterceptor

SERVICE = "grpc.health.v1.Health"


def labels(method: str, code: str | None = None) -> dict[str, str]:
    out = {"grpc_type": "unary", "grpc_service": SERVICE, "grpc_method": method}
    if code is not None:
        out["grpc_code"] = code
    return out


def test_each_call_is_counted_once_by_method_and_code_on_both_sides() -> None:
    registry = new_registry()

    async def scenario() -> None:
        server = grpc.aio.server(
            interceptors=[MetricsInterceptor(GrpcMetrics.build(registry, "server"))]
        )
        servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
        await servicer.set("known", health_pb2.HealthCheckResponse.SERVING)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        channel = grpc.aio.insecure_channel(
            f"127.0.0.1:{port}",
            interceptors=[ClientMetricsInterceptor(GrpcMetrics.build(registry, "client"))],
        )
        stub = health_pb2_grpc.HealthStub(channel)
        for _ in range(3):
            await stub.Check(health_pb2.HealthCheckRequest(service="known"), timeout=5)
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await stub.Check(health_pb2.HealthCheckRequest(service="unknown"), timeout=5)
        assert unknown.value.code() is grpc.StatusCode.NOT_FOUND
        watch = stub.Watch(health_pb2.HealthCheckRequest(service="known"), timeout=5)
        first = await watch.read()
        assert first.status == health_pb2.HealthCheckResponse.SERVING
        watch.cancel()
        missing = channel.unary_unary("/no.such.Service/Nothing")
        with pytest.raises(grpc.aio.AioRpcError) as unimplemented:
            await missing(b"", timeout=5)
        assert unimplemented.value.code() is grpc.StatusCode.UNIMPLEMENTED
        await channel.close()
        await server.stop(None)

    asyncio.run(scenario())
    for side in ("server", "client"):
        value = registry.get_sample_value
        assert value(f"grpc_{side}_started_total", labels("Check")) == 4
        assert value(f"grpc_{side}_handled_total", labels("Check", "OK")) == 3
        assert value(f"grpc_{side}_handled_total", labels("Check", "NOT_FOUND")) == 1
        assert value(f"grpc_{side}_handling_seconds_count", labels("Check")) == 4
    # Streaming methods (health Watch, reflection) are not measured: no series at all.
    names = {
        sample.labels.get("grpc_method")
        for family in registry.collect()
        for sample in family.samples
        if sample.name.startswith("grpc_server_")
    }
    assert names == {"Check"}, names
    # A method the server does not have is recorded by the client only.
    nothing = {"grpc_type": "unary", "grpc_service": "no.such.Service", "grpc_method": "Nothing"}
    assert registry.get_sample_value("grpc_server_started_total", nothing) is None
    assert registry.get_sample_value("grpc_client_started_total", nothing) == 1
    assert (
        registry.get_sample_value(
            "grpc_client_handled_total", {**nothing, "grpc_code": "UNIMPLEMENTED"}
        )
        == 1
    )
