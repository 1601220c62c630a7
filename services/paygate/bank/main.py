"""paygate-bank: run one bank server.

paygate-bank --bank-id bank-a [--config paygate.toml]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from prometheus_client import CollectorRegistry

from paygate.bank.demo_accounts import load_demo_accounts
from paygate.bank.participant import Participant
from paygate.bank.peer_identity_interceptor import PeerIdentityInterceptor
from paygate.bank.servicer import SERVICE_NAME, BankServicer
from paygate.bank.store import LedgerStore
from paygate.bank.stores import open_ledger_store
from paygate.common import tracing
from paygate.common.config import BankConfig, ConfigError, SuiteConfig, load_config
from paygate.common.faults import FaultInjector
from paygate.common.health_monitor import monitor_health
from paygate.common.interceptors import server_interceptors
from paygate.common.logs import setup_logging
from paygate.common.metrics import (
    BankMetrics,
    GrpcMetrics,
    MetricsServer,
    new_registry,
    start_metrics_server,
)
from paygate.common.process import EXIT_REFUSED, run_until_stopped
from paygate.common.server import Server, build_server, serve
from paygate.common.tls import server_credentials
from paygate.gen.paygate.bank.v1 import bank_pb2_grpc

_log = logging.getLogger("paygate.bank")

AUDIT_INTERVAL_S = 30.0
# Every audit sums the journal posted since the one before; every 120th (once an hour) sums
# the whole journal again, to see an entry changed behind the bank's back.
FULL_AUDIT_EVERY = 120
METRICS_REFRESH_INTERVAL_S = 2.0


@dataclasses.dataclass
class Bank:
    """A bank's parts, built once at start and passed down explicitly."""

    config: BankConfig
    server: Server
    participant: Participant
    store: LedgerStore
    registry: CollectorRegistry
    metrics_server: MetricsServer

    async def close(self) -> None:
        await self.store.close()
        self.metrics_server.close()

    def background(self) -> list[Callable[[], Coroutine[Any, Any, None]]]:
        """The jobs that run beside the server while it serves."""
        return [
            lambda: audit_forever(self.participant),
            lambda: monitor_health(self.server, self.participant.healthy),
            lambda: _refresh_metrics_forever(self.participant),
        ]


async def build_bank(suite: SuiteConfig, config: BankConfig) -> Bank:
    """Open the bank's database, load its demo accounts, start its server and /metrics."""
    registry = new_registry()
    store = await open_ledger_store(config)
    participant = Participant(
        store,
        FaultInjector(
            enabled=config.fault_injection, var_dir=suite.var_dir, process=config.bank_id
        ),
        BankMetrics.build(registry),
    )
    await participant.audit(full=True)
    if config.demo_accounts is not None and config.demo_accounts.exists():
        opened = await load_demo_accounts(participant, config.demo_accounts)
        _log.info("demo accounts loaded", extra={"fields": {"opened": opened}})
    servicer = BankServicer(participant)
    server = await build_server(
        listen=config.listen,
        credentials=server_credentials(config.tls, require_client_cert=True),
        service_name=SERVICE_NAME,
        add_servicer=lambda s: bank_pb2_grpc.add_BankServiceServicer_to_server(servicer, s),  # type: ignore[no-untyped-call]
        # Innermost: which certificate may call which method.
        interceptors=server_interceptors(
            GrpcMetrics.build(registry, "server"), PeerIdentityInterceptor(SERVICE_NAME)
        ),
        max_message_bytes=config.max_message_bytes,
        max_concurrent_rpcs=config.max_concurrent_rpcs,
    )
    metrics_server = start_metrics_server(config.metrics, registry)
    return Bank(config, server, participant, store, registry, metrics_server)


async def audit_forever(
    participant: Participant,
    *,
    interval_s: float = AUDIT_INTERVAL_S,
    full_every: int = FULL_AUDIT_EVERY,
) -> None:
    """Audit every interval_s, the whole journal every full_every-th time (the audit at
    start, in build_bank, is a full one)."""
    if full_every < 1:
        raise ValueError(f"full_every must be at least 1, not {full_every}")
    passes = 0
    while True:
        await asyncio.sleep(interval_s)
        passes += 1
        try:
            await participant.audit(full=passes % full_every == 0)
        except Exception:
            _log.exception("ledger audit failed")


async def _refresh_metrics_forever(participant: Participant) -> None:
    while True:
        try:
            await participant.refresh_metrics()
        except Exception:
            _log.exception("refreshing the ledger metrics failed")
        await asyncio.sleep(METRICS_REFRESH_INTERVAL_S)


async def run(suite: SuiteConfig, bank_id: str) -> None:
    bank = await build_bank(suite, suite.banks[bank_id])
    await serve(
        bank.server, grace_s=bank.config.grace_s, background=bank.background(), on_stop=bank.close
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="paygate-bank", description=__doc__)
    parser.add_argument("--bank-id", required=True, help="which bank of the configuration to run")
    parser.add_argument("--config", help="TOML configuration file (default: $PAYGATE_CONFIG)")
    args = parser.parse_args()
    try:
        suite = load_config(args.config)
    except ConfigError as exc:
        parser.exit(EXIT_REFUSED, f"paygate-bank: bad configuration: {exc}\n")
    if args.bank_id not in suite.banks:
        parser.error(f"unknown bank {args.bank_id!r}; configured: {', '.join(suite.banks)}")
    setup_logging(args.bank_id)
    provider = tracing.setup_tracing(f"paygate-{args.bank_id}")
    try:
        run_until_stopped(run(suite, args.bank_id))
    finally:
        if provider is not None:
            provider.shutdown()  # flush the last spans


if __name__ == "__main__":
    main()
