"""HealthMonitor: keeps a server's health status in step with what it depends on.

Every `interval_s` it runs the process's probe (its database can take a write, its
ledger audit passed) and reports SERVING or NOT_SERVING. A bank being down does not make
the gateway NOT_SERVING: payments through the other banks still work, and the bank's
absence shows in metrics instead.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from paygate.common.server import Server

_log = logging.getLogger("paygate.health")

DEFAULT_INTERVAL_S = 2.0


async def monitor_health(
    server: Server,
    probe: Callable[[], Awaitable[bool]],
    interval_s: float = DEFAULT_INTERVAL_S,
) -> None:
    serving: bool | None = None
    while True:
        try:
            healthy = await probe()
        except Exception:
            _log.exception("health probe failed")
            healthy = False
        if healthy != serving:
            level = logging.INFO if healthy else logging.ERROR
            _log.log(level, "health changed", extra={"fields": {"serving": healthy}})
            serving = healthy
        await server.set_serving(healthy)
        await asyncio.sleep(interval_s)
