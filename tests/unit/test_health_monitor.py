"""monitor_health on a server from build_server (in-process): a probe that hangs, as a
database stuck in a write would, turns the server NOT_SERVING instead of leaving it
SERVING forever; once the probe answers again, the server is SERVING again."""

from __future__ import annotations

import asyncio
import contextlib

from grpc_health.v1 import health_pb2, health_pb2_grpc
from local_server import local_server
from paygate.common.health_monitor import monitor_health

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
TIMEOUT_S = 10.0


def test_a_probe_that_never_answers_makes_the_server_not_serving() -> None:
    answering = asyncio.Event()
    answering.set()

    async def probe() -> bool:
        await answering.wait()  # a write that never completes while the event is clear
        return True

    async def scenario() -> None:
        async with local_server([]) as (server, channel):
            monitor = asyncio.create_task(
                monitor_health(server, probe, interval_s=0.05, probe_timeout_s=0.2)
            )
            health = health_pb2_grpc.HealthStub(channel)
            # As a load balancer follows it: the stream sends each change of status.
            watch = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=3 * TIMEOUT_S)

            async def status_becomes(status: int) -> None:
                async with asyncio.timeout(TIMEOUT_S):
                    while (await watch.read()).status != status:
                        pass

            try:
                await status_becomes(SERVING)
                answering.clear()
                await status_becomes(NOT_SERVING)
                answering.set()
                await status_becomes(SERVING)
            finally:
                watch.cancel()
                monitor.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await monitor

    asyncio.run(scenario())
