"""build_server gives every server its keepalive and connection-age options."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from local_server import local_server
from paygate.common import server as server_module
from paygate.common.server import CONNECTION_OPTIONS

EXPECTED = {
    "grpc.keepalive_time_ms",
    "grpc.keepalive_timeout_ms",
    "grpc.max_connection_idle_ms",
    "grpc.max_connection_age_ms",
    "grpc.max_connection_age_grace_ms",
    "grpc.http2.min_ping_interval_without_data_ms",
    "grpc.http2.max_ping_strikes",
}


def test_every_server_is_built_with_keepalive_and_connection_age(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[dict[str, Any]] = []
    real_server = grpc.aio.server

    def recording_server(**kwargs: Any) -> grpc.aio.Server:
        seen.append(dict(kwargs.get("options", [])))
        return real_server(**kwargs)

    monkeypatch.setattr(server_module.grpc.aio, "server", recording_server)

    async def scenario() -> None:
        async with local_server([]) as (server, channel):
            await server.set_serving(True)

    asyncio.run(scenario())
    (options,) = seen
    assert options.keys() >= EXPECTED
    assert options == {**options, **dict(CONNECTION_OPTIONS)}
    # A ping is given up on sooner than the next one is due; a connection asked to end
    # leaves its calls longer than their default deadline to finish.
    assert options["grpc.keepalive_timeout_ms"] < options["grpc.keepalive_time_ms"]
    assert options["grpc.max_connection_age_grace_ms"] > 10_000  # a call's default deadline
