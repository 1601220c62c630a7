"""The real gateway and banks inside the test process: the in-process tier.

`Servers.start(folder, certs_dir)` builds the three banks and the gateway with their own
factories (`paygate.bank.main.build_bank`, `paygate.gateway.main.build_gateway`), each on
port 0 with its metrics on port 0, its SQLite file under `folder` (or a PostgreSQL URL),
the suite's real certificates, and its background jobs running, as `serve()` runs them.
No supervisord and no subprocess: one event loop, owned by the test module, runs every
server; a thread of this process drives it, so that a synchronous test (with blocking
stubs, as the suite tests use) and an asynchronous one (`servers.run(coroutine)`, for the
client library and grpc.aio stubs) both work against the same servers.

`Servers` is a `SuiteClient`: channels, health, the operator's calls and `config` (with
the ports the servers got) work as they do against the processes of tests/suite.py.

What the servers answered, method by method and status code, is read from their own gRPC
server metrics when they stop (`answered_calls`), for tests/inproc/test_zz_every_rpc.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import pathlib
import threading
from collections.abc import Coroutine, Mapping
from typing import Any, TypeVar

from paygate.bank.main import Bank, build_bank
from paygate.common.config import SuiteConfig, config_from_mapping
from paygate.common.metrics import MetricsServer
from paygate.common.server import Server
from paygate.gateway.main import Gateway, build_gateway
from prometheus_client import CollectorRegistry
from suite import BANKS, DEMO_ACCOUNTS, GATEWAY, SHARED_GATEWAY_SETTINGS, SuiteClient

T = TypeVar("T")

LOCAL_PORT_0 = "127.0.0.1:0"
BCRYPT_ROUNDS = 4  # the lowest bcrypt allows: logins in the tier take a millisecond
RUN_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0
HANDLED = "grpc_server_handled_total"
STOP_POKE_INTERVAL_S = 0.02
STOP_POKES_MAX = 100  # 2 s of them; then the servers' own poll stops them

# (service, method, status code name) of every call a server of the tier answered in this
# pytest session, filled as each module's servers stop.
ANSWERED: set[tuple[str, str, str]] = set()
# True when some tests of the tier were deselected (-k, --lf): ANSWERED is then partial.
PARTIAL_RUN = False


class LoopThread:
    """An event loop running in a thread of this process until close()."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout_s: float = RUN_TIMEOUT_S) -> T:
        """Run `coroutine` on the loop and return its result (or raise its exception)."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        try:
            return future.result(timeout_s)
        except TimeoutError:
            future.cancel()
            raise

    def close(self) -> None:
        self.run(self._cancel_leftovers(), STOP_TIMEOUT_S)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(STOP_TIMEOUT_S)
        self.loop.close()

    async def _cancel_leftovers(self) -> None:
        current = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.loop.shutdown_asyncgens()
        await self.loop.shutdown_default_executor()


def tier_config(
    folder: pathlib.Path,
    certs_dir: pathlib.Path,
    *,
    gateway_settings: Mapping[str, object] = SHARED_GATEWAY_SETTINGS,
    database_urls: Mapping[str, str] | None = None,
) -> SuiteConfig:
    """The configuration of the tier: every address on port 0, files under `folder`."""
    urls = database_urls or {}
    # A round trip through JSON: the settings are what a TOML file could hold.
    gateway: dict[str, Any] = {
        "listen": LOCAL_PORT_0,
        "metrics": LOCAL_PORT_0,
        "admin_listen": LOCAL_PORT_0,
        "bcrypt_rounds": BCRYPT_ROUNDS,
        **json.loads(json.dumps(dict(gateway_settings))),
    }
    if GATEWAY in urls:
        gateway["database"] = urls[GATEWAY]
    banks: dict[str, dict[str, Any]] = {}
    for bank_id in BANKS:
        banks[bank_id] = {
            "listen": LOCAL_PORT_0,
            "metrics": LOCAL_PORT_0,
            "demo_accounts": str(DEMO_ACCOUNTS / f"{bank_id}.toml"),
        }
        if bank_id in urls:
            banks[bank_id]["database"] = urls[bank_id]
    data = {"var_dir": "var", "certs_dir": str(certs_dir), "gateway": gateway, "banks": banks}
    return config_from_mapping(data, base=folder)


def _local(port: int) -> str:
    return f"127.0.0.1:{port}"


def with_bound_ports(config: SuiteConfig, banks: Mapping[str, Bank]) -> SuiteConfig:
    """`config` with each bank's listen and metrics addresses replaced by the ports it got,
    and the gateway's bank addresses with them."""
    bound = {
        bank_id: dataclasses.replace(
            config.banks[bank_id],
            listen=_local(bank.server.port),
            metrics=_local(bank.metrics_server.port),
        )
        for bank_id, bank in banks.items()
    }
    gateway = dataclasses.replace(
        config.gateway,
        bank_addresses={bank_id: bank.listen for bank_id, bank in bound.items()},
    )
    return dataclasses.replace(config, banks=bound, gateway=gateway)


def with_gateway_ports(config: SuiteConfig, gateway: Gateway) -> SuiteConfig:
    bound = dataclasses.replace(
        config.gateway,
        listen=_local(gateway.server.port),
        metrics=_local(gateway.metrics_server.port),
        admin_listen=_local(gateway.admin_server.port),
    )
    return dataclasses.replace(config, gateway=bound)


def handled_calls(registry: CollectorRegistry) -> set[tuple[str, str, str]]:
    """(service, method, code) of every call a server answered, from its own metrics."""
    return {
        (s.labels["grpc_service"], s.labels["grpc_method"], s.labels["grpc_code"])
        for family in registry.collect()
        for s in family.samples
        if s.name == HANDLED and s.value > 0
    }


@dataclasses.dataclass
class Running:
    """The servers of the tier and the tasks of their background jobs, on one loop."""

    config: SuiteConfig
    banks: dict[str, Bank]
    gateway: Gateway
    tasks: list[asyncio.Task[Any]]

    @classmethod
    async def start(cls, config: SuiteConfig) -> Running:
        banks: dict[str, Bank] = {}
        try:
            for bank_id in BANKS:
                banks[bank_id] = await build_bank(config, config.banks[bank_id])
            config = with_bound_ports(config, banks)
            gateway = await build_gateway(config)
        except BaseException:
            for bank in banks.values():
                await _stop(bank.server, bank.close)
            raise
        config = with_gateway_ports(config, gateway)
        tasks: list[asyncio.Task[Any]] = []
        # As serve() does: SERVING first, then the jobs (health monitor included).
        for part in (*banks.values(), gateway):
            await part.server.set_serving(True)
        await gateway.admin_server.set_serving(True)
        for part in (*banks.values(), gateway):
            tasks += [asyncio.create_task(job()) for job in part.background()]
        return cls(config, banks, gateway, tasks)

    async def stop(self) -> None:
        """The gateway first (it calls the banks), then the banks; then the jobs."""
        self.gateway.events.close()
        await self.gateway.server.grpc_server.stop(None)
        await self.gateway.admin_server.grpc_server.stop(None)
        for bank in self.banks.values():
            await bank.server.grpc_server.stop(None)
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        parts = [self.gateway, *self.banks.values()]
        await _close_metrics_servers([part.metrics_server for part in parts])
        await self.gateway.close()
        for bank in self.banks.values():
            await bank.close()

    def answered(self) -> set[tuple[str, str, str]]:
        parts = [self.gateway.registry, *(bank.registry for bank in self.banks.values())]
        return {call for registry in parts for call in handled_calls(registry)}


async def _close_metrics_servers(servers: list[MetricsServer]) -> None:
    """Close /metrics servers, all at once. Each notices its shutdown at its next poll, every
    0.5 s, unless a connection wakes it first: one every 20 ms until they have all stopped
    (one that arrives first is an empty request, answered at once)."""
    ports = [server.port for server in servers]
    closing = asyncio.gather(*(asyncio.to_thread(server.close) for server in servers))
    for _ in range(STOP_POKES_MAX):
        if closing.done():
            break
        for port in ports:
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                await writer.wait_closed()
        await asyncio.wait([closing], timeout=STOP_POKE_INTERVAL_S)
    await closing


async def _stop(server: Server, close: Any) -> None:
    await server.grpc_server.stop(None)
    await close()


class Servers(SuiteClient):
    """The running servers of one test module, as a SuiteClient."""

    def __init__(self, loop: LoopThread, running: Running) -> None:
        super().__init__(running.config)
        self._loop = loop
        self.running = running

    @classmethod
    def start(
        cls,
        folder: pathlib.Path,
        certs_dir: pathlib.Path,
        *,
        gateway_settings: Mapping[str, object] = SHARED_GATEWAY_SETTINGS,
        database_urls: Mapping[str, str] | None = None,
    ) -> Servers:
        config = tier_config(
            folder, certs_dir, gateway_settings=gateway_settings, database_urls=database_urls
        )
        loop = LoopThread(f"inproc-{folder.name}")
        try:
            running = loop.run(Running.start(config))
        except BaseException:
            loop.close()
            raise
        return cls(loop, running)

    @property
    def gateway(self) -> Gateway:
        return self.running.gateway

    @property
    def banks(self) -> dict[str, Bank]:
        return self.running.banks

    def run(self, coroutine: Coroutine[Any, Any, T], timeout_s: float = RUN_TIMEOUT_S) -> T:
        """Run `coroutine` on the servers' event loop (create grpc.aio channels in it)."""
        return self._loop.run(coroutine, timeout_s)

    def stop(self) -> None:
        try:
            ANSWERED.update(self.running.answered())
            self._loop.run(self.running.stop(), STOP_TIMEOUT_S)
        finally:
            self._loop.close()
