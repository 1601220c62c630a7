"""paygate-relay: publish every event of the gateway's database to RabbitMQ.

paygate-relay [--config paygate.toml] [--metrics HOST:PORT] [--name NAME]

It reads the database the gateway writes ([gateway] database: the SQLite file or the
PostgreSQL URL) and publishes to the broker of [relay] amqp_url (docs/events.md). Several
relays may run against one database: one publishes, the others wait for its lease. Give
each its own --metrics and --name (the prefix of its lease owner id).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import secrets
import signal
import sqlite3

from paygate.common.config import ConfigError, SuiteConfig, load_config
from paygate.common.config_checks import check_address
from paygate.common.logs import setup_logging
from paygate.common.metrics import new_registry
from paygate.common.process import EXIT_REFUSED, run_until_stopped
from paygate.errors import Unavailable
from paygate.relay.broker import Broker
from paygate.relay.metrics import RelayMetrics, start_health_server
from paygate.relay.relay import Backoff, Relay
from paygate.relay.store import RelayStore, relay_store

_log = logging.getLogger("paygate.relay")

DEFAULT_NAME = "relay"
OPEN_BACKOFF_FIRST_S = 0.5


async def open_store(suite: SuiteConfig, stop: asyncio.Event) -> RelayStore | None:
    """The store, opened; while the database does not answer (or the gateway, starting at
    the same time, holds its SQLite file to migrate it), tried again with backoff (None:
    asked to stop meanwhile)."""
    backoff = Backoff(OPEN_BACKOFF_FIRST_S, suite.relay.reconnect_max_s)
    while not stop.is_set():
        store = relay_store(suite.gateway)
        try:
            await store.open()
            return store
        except (Unavailable, OSError, sqlite3.OperationalError) as exc:
            wait_s = backoff.next_s()
            _log.warning(
                "database unavailable; trying again",
                extra={"fields": {"error": str(exc), "retry_in_s": round(wait_s, 3)}},
            )
            await store.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), wait_s)
    return None


async def run(suite: SuiteConfig, name: str) -> None:
    """Relay until SIGTERM or SIGINT; then let the lease go and close everything."""
    config = suite.relay
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    store = await open_store(suite, stop)
    if store is None:
        return
    registry = new_registry()
    broker = Broker(config.amqp_url, config.exchange, timeout_s=config.timeout_s, name=name)
    relay = Relay(
        store, broker, config, RelayMetrics.build(registry), owner=f"{name}-{secrets.token_hex(6)}"
    )
    server = start_health_server(config.metrics, registry, lambda: relay.health)
    _log.info(
        "relaying events",
        extra={
            "fields": {
                "database": str(suite.gateway.database),
                "broker": broker.where,
                "exchange": config.exchange,
                "owner": relay.owner,
                "metrics_port": server.port,
            }
        },
    )
    jobs = [asyncio.create_task(relay.run_forever()), asyncio.create_task(relay.lag_forever())]
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait([*jobs, stopping], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (*jobs, stopping):
            task.cancel()
        results = await asyncio.gather(*jobs, stopping, return_exceptions=True)
        _log.info("stopping: letting the lease go")
        await relay.close()
        await store.close()
        server.close()
        for sig in (signal.SIGTERM, signal.SIGINT):  # on the way out: a second one waits
            loop.remove_signal_handler(sig)
            signal.signal(sig, signal.SIG_IGN)
    failed = [r for r in results if isinstance(r, Exception)]
    if failed:  # a job ended by itself: a bug, which must not pass for a clean stop
        raise failed[0]
    _log.info("stopped")


def main() -> None:
    parser = argparse.ArgumentParser(prog="paygate-relay", description=__doc__)
    parser.add_argument("--config", help="TOML configuration file (default: $PAYGATE_CONFIG)")
    parser.add_argument("--metrics", help="HOST:PORT of /metrics and /healthz")
    parser.add_argument(
        "--name", default=DEFAULT_NAME, help="this relay's name (default: %(default)s)"
    )
    args = parser.parse_args()
    try:
        suite = load_config(args.config)
        if args.metrics:
            check_address("--metrics", args.metrics)
            suite = with_relay_metrics(suite, args.metrics)
    except ConfigError as exc:
        parser.exit(EXIT_REFUSED, f"paygate-relay: bad configuration: {exc}\n")
    setup_logging("relay")
    run_until_stopped(run(suite, args.name))


def with_relay_metrics(suite: SuiteConfig, metrics: str) -> SuiteConfig:
    return dataclasses.replace(suite, relay=dataclasses.replace(suite.relay, metrics=metrics))


if __name__ == "__main__":
    main()
