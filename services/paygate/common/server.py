"""Building and running a Paygate gRPC server: interceptors, health, reflection, shutdown.

Each process (gateway, bank) calls `build_server` with its servicer and interceptors, and
then `serve` to run until SIGTERM or SIGINT. Health reports SERVING for the empty service
name and the process's own service once started, and NOT_SERVING as soon as a graceful
shutdown begins, so that load balancers stop sending before the port closes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

_log = logging.getLogger("paygate.server")

# Every server's connections (docs/operations.md, "Connections"): a ping after a minute
# without traffic, the connection closed if unanswered in 20 s (a peer that vanished stops
# holding call slots); an idle connection closed after 10 minutes; every connection asked
# to end after an hour (gRPC adds +-10 % jitter), its calls given a minute to finish, so that
# clients spread again over gateways and banks that restarted or were added. A client may
# ping at most every 20 s without data (two more are a strike-out: GOAWAY).
CONNECTION_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.http2.min_ping_interval_without_data_ms", 20_000),
    ("grpc.http2.max_ping_strikes", 2),
    ("grpc.max_connection_idle_ms", 10 * 60_000),
    ("grpc.max_connection_age_ms", 60 * 60_000),
    ("grpc.max_connection_age_grace_ms", 60_000),
)


@dataclasses.dataclass
class Server:
    """A started gRPC server, the port it listens on and its health servicer."""

    grpc_server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    service_name: str

    async def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", self.service_name):
            await self.health.set(name, status)


async def build_server(
    *,
    listen: str,
    credentials: grpc.ServerCredentials,
    service_name: str,
    add_servicer: Callable[[grpc.aio.Server], None],
    interceptors: Sequence[grpc.aio.ServerInterceptor],
    max_message_bytes: int,
    max_concurrent_rpcs: int,
) -> Server:
    """Start a server on `listen` (port 0 picks a free one) with health and reflection."""
    server = grpc.aio.server(
        interceptors=list(interceptors),
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.so_reuseport", 0),
            *CONNECTION_OPTIONS,
        ],
        maximum_concurrent_rpcs=max_concurrent_rpcs,
    )
    add_servicer(server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [service_name, health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    port = server.add_secure_port(listen, credentials)
    if port == 0:
        raise OSError(f"cannot listen on {listen}")
    await server.start()
    result = Server(
        grpc_server=server, port=port, health=health_servicer, service_name=service_name
    )
    await result.set_serving(False)
    return result


async def serve(
    server: Server,
    *,
    grace_s: float,
    background: Sequence[Callable[[], Coroutine[Any, Any, Any]]] = (),
    on_stop: Callable[[], Awaitable[None]] | None = None,
    also: Sequence[Server] = (),
    on_draining: Callable[[], None] | None = None,
) -> None:
    """Report SERVING, run until SIGTERM/SIGINT, then drain for `grace_s` and stop; the
    servers `also` (another port of the process) alongside `server`.

    `on_draining` is called as draining starts: it ends the calls that would otherwise
    run for the whole grace period (the gateway's event streams), cleanly."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tasks = [asyncio.create_task(job()) for job in background]
    servers = (server, *also)
    for each in servers:
        await each.set_serving(True)
        _log.info("serving", extra={"fields": {"port": each.port, "service": each.service_name}})
    await stop.wait()
    for each in servers:
        await each.set_serving(False)
    if on_draining is not None:
        on_draining()
    _log.info(
        "shutting down: health NOT_SERVING, draining calls",
        extra={"fields": {"grace_s": grace_s}},
    )
    await asyncio.gather(*(each.grpc_server.stop(grace_s) for each in servers))
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    if on_stop is not None:
        await on_stop()
    # Already on the way out: a second request to stop (a second Ctrl-C when the process
    # runs in a terminal, or a SIGTERM after a SIGINT) must not kill the process mid-exit.
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.remove_signal_handler(sig)
        signal.signal(sig, signal.SIG_IGN)
    _log.info("stopped")
