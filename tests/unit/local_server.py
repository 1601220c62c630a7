"""A server from build_server (health and reflection included) on a free port of this
machine, with local credentials, and a channel to it: for the in-process tests of the
interceptors and the health monitor."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence

import grpc
from paygate.common.server import Server, build_server

LOCAL = grpc.LocalConnectionType.LOCAL_TCP
SERVICE_NAME = "paygate.test.v1.NothingService"


@contextlib.asynccontextmanager
async def local_server(
    interceptors: Sequence[grpc.aio.ServerInterceptor], *, max_concurrent_rpcs: int = 16
) -> AsyncIterator[tuple[Server, grpc.aio.Channel]]:
    server = await build_server(
        listen="127.0.0.1:0",
        credentials=grpc.local_server_credentials(LOCAL),
        service_name=SERVICE_NAME,
        add_servicer=lambda s: None,
        interceptors=interceptors,
        max_message_bytes=64 * 1024,
        max_concurrent_rpcs=max_concurrent_rpcs,
    )
    channel = grpc.aio.secure_channel(
        f"127.0.0.1:{server.port}", grpc.local_channel_credentials(LOCAL)
    )
    try:
        yield server, channel
    finally:
        await channel.close()
        await server.grpc_server.stop(None)
