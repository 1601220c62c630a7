"""paygate-gateway: run the gateway.

paygate-gateway [--config paygate.toml] [--listen HOST:PORT] [--metrics HOST:PORT]
                [--admin-listen HOST:PORT] [--name NAME]

The gateway serves GatewayService on `listen` (TLS, for clients) and AdminService on
`admin_listen` (mutual TLS, for the operators' certificate: gateway/operators.py).
Several gateways may share one PostgreSQL database (docs/storage.md): give each its own
--listen, --metrics, --admin-listen and --name (the name of its fault folder and the
prefix of its lease id).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import grpc
from prometheus_client import CollectorRegistry

from paygate.common import tracing
from paygate.common.config import (
    ConfigError,
    GatewayConfig,
    SuiteConfig,
    load_config,
    with_gateway_addresses,
)
from paygate.common.database_url import PostgresUrl
from paygate.common.faults import FaultInjector
from paygate.common.health_monitor import monitor_health
from paygate.common.interceptors import server_interceptors
from paygate.common.logs import setup_logging
from paygate.common.metrics import (
    CoordinatorMetrics,
    GrpcMetrics,
    MetricsServer,
    PaymentMetrics,
    admin_actions,
    auth_failures,
    event_metrics,
    new_registry,
    start_metrics_server,
)
from paygate.common.process import EXIT_REFUSED, run_until_stopped
from paygate.common.request_size_interceptor import RequestSizeInterceptor
from paygate.common.server import Server, build_server, serve
from paygate.common.tls import server_credentials
from paygate.gateway import refunds, transitions
from paygate.gateway.accounts import Accounts, AccountSettings
from paygate.gateway.admin_servicer import SERVICE_NAME as ADMIN_SERVICE_NAME
from paygate.gateway.admin_servicer import AdminServicer
from paygate.gateway.auth_interceptor import AuthInterceptor
from paygate.gateway.authorizations import Authorizations
from paygate.gateway.banks import BankClients, BatchSettings
from paygate.gateway.bulk_payments import BulkPayments
from paygate.gateway.coordinator import Coordinator, CoordinatorSettings
from paygate.gateway.events import Events
from paygate.gateway.login_throttle import LoginThrottle, ThrottleSettings
from paygate.gateway.models import EventType, User
from paygate.gateway.operator_interceptor import OperatorInterceptor
from paygate.gateway.operators import ACTIONS, OUTCOMES, Operators
from paygate.gateway.payments import Payments, PaymentSettings
from paygate.gateway.refunds import Refunds
from paygate.gateway.servicer import SERVICE_NAME, GatewayServicer
from paygate.gateway.store import GatewayStore
from paygate.gateway.stores import open_gateway_store
from paygate.gateway.totp import KeyFileError, SecretBox
from paygate.gateway.transitions import ABORT_REASONS
from paygate.gen.paygate.v1 import admin_pb2_grpc, gateway_pb2_grpc

_log = logging.getLogger("paygate.gateway")

PRUNE_BATCH = 1000  # rows deleted per transaction by housekeeping
# An expired session is kept a day, so that its token is answered "has expired" (log in
# again) rather than "invalid" for a while; then it goes, or every login would stay forever.
SESSION_KEPT_AFTER_EXPIRY_S = 24 * 3600.0
DEFAULT_NAME = "gateway"
# Operators are few: the admin port takes few calls at once, and keeps the rest for payments.
ADMIN_MAX_CONCURRENT_RPCS = 16


def account_settings(config: GatewayConfig) -> AccountSettings:
    """Sessions are cached in memory unless the database is shared with other gateways.

    A replica cannot see another one's logout in its cache, so on PostgreSQL (shared by
    design) the cache is off unless the config sets session_cache_ttl_s explicitly.
    """
    settings = AccountSettings(
        bcrypt_rounds=config.bcrypt_rounds,
        token_ttl_s=config.token_ttl_s,
        bank_call_timeout_s=config.bank_call_timeout_s,
    )
    ttl_s = config.session_cache_ttl_s
    if ttl_s is None and isinstance(config.database, PostgresUrl):
        ttl_s = 0.0
    if ttl_s is None:
        return settings
    return dataclasses.replace(settings, session_cache_ttl_s=ttl_s)


@dataclasses.dataclass
class Gateway:
    """The gateway's parts, built once at start and passed down explicitly."""

    config: GatewayConfig
    server: Server
    admin_server: Server  # AdminService, on config.admin_listen
    store: GatewayStore
    banks: BankClients
    accounts: Accounts
    coordinator: Coordinator
    registry: CollectorRegistry
    metrics_server: MetricsServer
    events: Events

    async def close(self) -> None:
        await self.coordinator.close()
        await self.banks.close()
        self.accounts.close()
        await self.store.close()
        self.metrics_server.close()

    def background(self) -> list[Callable[[], Coroutine[Any, Any, None]]]:
        """The jobs that run beside the server while it serves."""
        return [
            self.coordinator.recover_forever,
            self.coordinator.count_in_doubt_forever,
            self.housekeeping_forever,
            lambda: monitor_health(self.server, self.store.healthy, also=[self.admin_server]),
        ]

    async def housekeeping_forever(self) -> None:
        """Every housekeeping_interval_s, one housekeeping pass."""
        while True:
            try:
                await housekeeping_pass(self.store, self.config, time.time())
            except Exception:
                _log.exception("housekeeping failed")
            await asyncio.sleep(self.config.housekeeping_interval_s)


async def housekeeping_pass(store: GatewayStore, config: GatewayConfig, now_s: float) -> None:
    """Prune idempotency keys, login failures, sessions and events past their time."""
    await prune_in_batches(store.prune_idempotency_keys, now_s - config.idempotency_ttl_s)
    await prune_in_batches(store.prune_login_failures, now_s - config.login_failure_window_s)
    await prune_in_batches(store.prune_sessions, now_s - SESSION_KEPT_AFTER_EXPIRY_S)
    events_before_us = int((now_s - config.event_retention_s) * 1e6)
    await prune_in_batches(
        lambda *, older_than_s, limit: store.prune_events(older_than_us=events_before_us,
                                                          limit=limit),
        0.0,
    )  # fmt: skip


async def prune_in_batches(prune: Callable[..., Awaitable[int]], older_than_s: float) -> int:
    """Delete what `prune` deletes, PRUNE_BATCH rows per transaction, until none is left.

    After a long downtime there can be millions of expired rows: one transaction for all of
    them would hold the database (and every payment waiting for it) for seconds."""
    total = 0
    while True:
        deleted = await prune(older_than_s=older_than_s, limit=PRUNE_BATCH)
        total += deleted
        if deleted < PRUNE_BATCH:
            return total


def totp_box(config: GatewayConfig) -> SecretBox:
    """The key that seals two-factor secrets; the gateway refuses to start without it."""
    if config.totp_key_file is None:
        raise ConfigError("[gateway] totp_key_file is not set")
    try:
        return SecretBox.from_file(config.totp_key_file)
    except KeyFileError as exc:
        raise ConfigError(f"[gateway] totp_key_file: {exc}") from None


def transition_function(config: GatewayConfig) -> transitions.Step:
    """The protocol's transition function: the real one, or a broken variant for a test
    (a broken refund path keeps the real one: refunds.BROKEN_VARIANTS)."""
    if not config.broken_protocol:
        return transitions.step
    known = {*transitions.BROKEN_VARIANTS, *refunds.BROKEN_VARIANTS}
    if config.broken_protocol not in known or not config.fault_injection:
        raise ConfigError(
            f"[gateway] broken_protocol = {config.broken_protocol!r}: a test-only variant, one"
            f" of {sorted(known)}, with fault_injection = true"
        )
    _log.warning(
        "running a deliberately broken protocol",
        extra={"fields": {"variant": config.broken_protocol}},
    )
    variant = transitions.BROKEN_VARIANTS.get(config.broken_protocol)
    return transitions.step if variant is None else variant(transitions.step)


async def build_gateway(suite: SuiteConfig, name: str = DEFAULT_NAME) -> Gateway:
    config = suite.gateway
    store = await open_gateway_store(config)
    # Observability: one registry, served on config.metrics.
    registry = new_registry()
    coordinator_metrics = CoordinatorMetrics.build(
        registry, banks=config.bank_addresses, abort_reasons=ABORT_REASONS
    )
    banks = BankClients(
        config.bank_addresses,
        config.tls,
        interceptors=tracing.client_interceptors_if_recording(),
        metrics=GrpcMetrics.build(registry, "client"),
        batching=BatchSettings(
            max_size=config.batch_max_size,
            max_in_flight=config.batch_max_in_flight,
            prepare_linger_s=config.batch_prepare_linger_s,
            commit_linger_s=config.batch_commit_linger_s,
            size_histogram=coordinator_metrics.batch_size,
        ),
    )
    accounts = Accounts(
        store,
        banks,
        account_settings(config),
        LoginThrottle(
            store,
            ThrottleSettings(
                window_s=config.login_failure_window_s,
                max_failures_per_user=config.login_max_failures_per_user,
                max_failures_per_address=config.login_max_failures_per_address,
            ),
        ),
        totp_box=totp_box(config),
    )
    coordinator = Coordinator(
        store,
        banks,
        CoordinatorSettings(
            prepare_timeout_s=config.prepare_timeout_s,
            bank_call_timeout_s=config.bank_call_timeout_s,
            recovery_interval_s=config.recovery_interval_s,
            lease_s=config.effective_lease_s,
            one_phase=config.one_phase_commit,
        ),
        FaultInjector(enabled=config.fault_injection, var_dir=suite.var_dir, process=name),
        coordinator_metrics,
        owner=f"{name}-{secrets.token_hex(6)}",
        step=transition_function(config),
    )
    payment_metrics = PaymentMetrics.build(registry)
    payments = Payments(
        store,
        coordinator,
        PaymentSettings(
            max_payment_minor=config.max_payment_minor,
            max_message_bytes=config.max_message_bytes,
            authorization_ttl_s=config.authorization_ttl_s,
        ),
        payment_metrics,
    )
    events = Events(store)
    store.events_written = event_metrics(
        registry, [str(kind) for kind in EventType], lambda: events.watchers
    )
    servicer = GatewayServicer(
        accounts,
        payments,
        Authorizations(payments, coordinator),
        Refunds(
            store,
            payments,
            coordinator,
            payment_metrics,
            forget_keys=config.broken_protocol == refunds.REFUNDS_TWICE,
        ),
        events,
        BulkPayments(
            payments,
            lambda user: available_minor(accounts, user),
            payment_metrics,
            max_payment_minor=config.max_payment_minor,
        ),
    )
    admin = AdminServicer(Operators(store, accounts, admin_actions(registry, ACTIONS, OUTCOMES)))
    grpc_metrics = GrpcMetrics.build(registry, "server")  # both ports'

    def add_servicers(s: grpc.aio.Server) -> None:
        gateway_pb2_grpc.add_GatewayServiceServicer_to_server(servicer, s)  # type: ignore[no-untyped-call]
        # Here only to refuse: no caller of this port has an operator's certificate.
        admin_pb2_grpc.add_AdminServiceServicer_to_server(admin, s)  # type: ignore[no-untyped-call]

    server = await build_server(
        listen=config.listen,
        credentials=server_credentials(config.tls, require_client_cert=False),
        service_name=SERVICE_NAME,
        add_servicer=add_servicers,
        # Innermost: who holds the bearer token (the user goes into a context variable).
        interceptors=server_interceptors(
            grpc_metrics,
            request_sizes(config),
            AuthInterceptor(accounts, SERVICE_NAME, auth_failures(registry)),
            OperatorInterceptor(ADMIN_SERVICE_NAME),
        ),
        # The largest message of the port: BatchCreatePayments' (request_sizes keeps every
        # other method's request at max_message_bytes).
        max_message_bytes=max(config.max_message_bytes, config.max_batch_message_bytes),
        max_concurrent_rpcs=config.max_concurrent_rpcs,
    )
    try:
        admin_server = await build_admin_server(config, admin, grpc_metrics)
    except BaseException:
        await server.grpc_server.stop(None)
        raise
    metrics_server = start_metrics_server(config.metrics, registry)
    return Gateway(
        config,
        server,
        admin_server,
        store,
        banks,
        accounts,
        coordinator,
        registry,
        metrics_server,
        events,
    )


def request_sizes(config: GatewayConfig) -> RequestSizeInterceptor:
    """Every request of the public port at most max_message_bytes, BatchCreatePayments'
    at most max_batch_message_bytes."""
    batch = f"/{SERVICE_NAME}/BatchCreatePayments"
    return RequestSizeInterceptor(config.max_message_bytes, {batch: config.max_batch_message_bytes})


async def available_minor(accounts: Accounts, user: User) -> int:
    """The user's available balance at their bank (for a batch's waves: bulk_payments.py)."""
    return (await accounts.balance(user)).available_minor


async def build_admin_server(
    config: GatewayConfig, servicer: AdminServicer, grpc_metrics: GrpcMetrics
) -> Server:
    """The admin port: AdminService (with health and reflection) over mutual TLS, where a
    client certificate of the suite's CA is required and only an operator's is answered."""
    return await build_server(
        listen=config.admin_listen,
        credentials=server_credentials(config.tls, require_client_cert=True),
        service_name=ADMIN_SERVICE_NAME,
        add_servicer=lambda s: admin_pb2_grpc.add_AdminServiceServicer_to_server(servicer, s),  # type: ignore[no-untyped-call]
        interceptors=server_interceptors(grpc_metrics, OperatorInterceptor(ADMIN_SERVICE_NAME)),
        max_message_bytes=config.max_message_bytes,
        max_concurrent_rpcs=ADMIN_MAX_CONCURRENT_RPCS,
    )


async def run(suite: SuiteConfig, name: str) -> None:
    gateway = await build_gateway(suite, name)
    await serve(
        gateway.server,
        grace_s=gateway.config.grace_s,
        background=gateway.background(),
        on_stop=gateway.close,
        also=[gateway.admin_server],
        on_draining=gateway.events.close,
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="paygate-gateway", description=__doc__)
    parser.add_argument("--config", help="TOML configuration file (default: $PAYGATE_CONFIG)")
    parser.add_argument("--listen", help="HOST:PORT to serve on (default: [gateway] listen)")
    parser.add_argument("--metrics", help="HOST:PORT of /metrics (default: [gateway] metrics)")
    parser.add_argument(
        "--admin-listen",
        help="HOST:PORT of AdminService, for operators (default: [gateway] admin_listen)",
    )
    parser.add_argument(
        "--name",
        default=DEFAULT_NAME,
        help="this gateway's name among its replicas (default: %(default)s)",
    )
    args = parser.parse_args()
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        parser.exit(EXIT_REFUSED, f"paygate-gateway: bad configuration: {exc}\n")
    suite = with_gateway_addresses(
        config, listen=args.listen, metrics=args.metrics, admin_listen=args.admin_listen
    )
    setup_logging("gateway")
    provider = tracing.setup_tracing("paygate-gateway")
    try:
        run_until_stopped(run(suite, args.name))
    finally:
        if provider is not None:
            provider.shutdown()  # flush the last spans


if __name__ == "__main__":
    main()
