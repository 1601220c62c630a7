"""HealthMonitor: keeps a server's health status in step with what it depends on.

Every `interval_s` it runs the process's probe (its database can take a write, its
ledger audit passed) and reports SERVING or NOT_SERVING. A probe that has not answered
within `probe_timeout_s` counts as a failure: a database stuck in a write would otherwise
keep the last SERVING forever. A bank being down does not make
the gateway NOT_SERVING: payments through the other banks still work, and the bank's
absence shows in metrics instead.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from paygate.common.server import Server

_log = logging.getLogger("paygate.health")

DEFAULT_INTERVAL_S = 2.0
# Longer than a payment waits for a bank (prepare_timeout_s, 2 s): a database that slow is
# failing its callers already, and a load spike shorter than this does not flap the status.
DEFAULT_PROBE_TIMEOUT_S = 5.0


async def monitor_health(
    server: Server,
    probe: Callable[[], Awaitable[bool]],
    interval_s: float = DEFAULT_INTERVAL_S,
    probe_timeout_s: float = DEFAULT_PROBE_TIMEOUT_S,
    also: Sequence[Server] = (),
) -> None:
    """Probe every `interval_s`; `server`, and the servers `also` (another port of the
    process), report what the probe found."""
    serving: bool | None = None
    while True:
        try:
            async with asyncio.timeout(probe_timeout_s):
                healthy = await probe()
        except TimeoutError:
            _log.error("health probe timed out", extra={"fields": {"after_s": probe_timeout_s}})
            healthy = False
        except Exception:
            _log.exception("health probe failed")
            healthy = False
        if healthy != serving:
            level = logging.INFO if healthy else logging.ERROR
            _log.log(level, "health changed", extra={"fields": {"serving": healthy}})
            serving = healthy
        for each in (server, *also):
            await each.set_serving(healthy)
        await asyncio.sleep(interval_s)
