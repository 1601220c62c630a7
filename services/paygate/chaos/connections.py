"""The chaos tool's channels to a suite: the gateways over TLS, each bank as `admin`.

A suite may run several gateways (`--gateways gateway-1=IP:PORT,gateway-2=IP:PORT`): the
workload's calls go over one channel balancing across all of them (round_robin, as the
client library does for a list of addresses), and each gateway program has a channel of
its own for its health checks.

The channels reconnect quickly (within a second) after a process restarts, because the
default backoff grows to minutes and would hide a recovered suite from the workload.
Every call made on them passes a deadline.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from paygate.common.config import SuiteConfig
from paygate.common.gateway_targets import channel_target
from paygate.common.tls import channel_credentials
from paygate.gen.paygate.bank.v1 import bank_pb2_grpc
from paygate.gen.paygate.v1 import gateway_pb2_grpc

GATEWAY = "gateway"
ADMIN_IDENTITY = "admin"
HEALTH_TIMEOUT_S = 2.0
HEALTH_POLL_S = 0.2

CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


def client_target(listen: str) -> str:
    """The address a client on this machine dials for a server's listen address."""
    host, _, port = listen.rpartition(":")
    if host in ("", "0.0.0.0", "[::]", "::"):
        host = "127.0.0.1"
    return f"{host}:{port}"


class Connections:
    """One gateway channel and one channel per bank; create inside the running event loop."""

    def __init__(self, config: SuiteConfig, gateways: Mapping[str, str] | None = None) -> None:
        self.config = config
        ca = config.certs_dir / "ca.pem"
        # Gateway program -> address; by default the one gateway of the config.
        self.gateway_targets = dict(gateways or {GATEWAY: client_target(config.gateway.listen)})
        self.gateway_channels = {
            program: grpc.aio.secure_channel(
                target, channel_credentials(ca), options=CHANNEL_OPTIONS
            )
            for program, target in self.gateway_targets.items()
        }
        balanced, balancing = channel_target(",".join(self.gateway_targets.values()))
        self.gateway_channel = grpc.aio.secure_channel(
            balanced, channel_credentials(ca), options=[*CHANNEL_OPTIONS, *balancing]
        )
        admin = channel_credentials(ca, client=config.tls_for(ADMIN_IDENTITY))
        self.bank_channels = {
            bank_id: grpc.aio.secure_channel(
                client_target(bank.listen), admin, options=CHANNEL_OPTIONS
            )
            for bank_id, bank in config.banks.items()
        }
        # The generated stubs are untyped; responses are annotated where they are used.
        self.gateway = gateway_pb2_grpc.GatewayServiceStub(self.gateway_channel)  # type: ignore[no-untyped-call]
        self.banks = {
            bank_id: bank_pb2_grpc.BankServiceStub(channel)  # type: ignore[no-untyped-call]
            for bank_id, channel in self.bank_channels.items()
        }

    @property
    def programs(self) -> list[str]:
        """The supervisord programs of the suite: its banks, then its gateways."""
        return [*sorted(self.bank_channels), *self.gateway_programs]

    @property
    def gateway_programs(self) -> list[str]:
        return sorted(self.gateway_targets)

    def channel(self, program: str) -> grpc.aio.Channel:
        if program in self.gateway_channels:
            return self.gateway_channels[program]
        return self.bank_channels[program]

    async def serving(self, program: str) -> bool:
        # grpcio-health-checking's stub has no type hints for its methods.
        stub: Any = health_pb2_grpc.HealthStub(self.channel(program))
        try:
            response = await stub.Check(
                health_pb2.HealthCheckRequest(service=""), timeout=HEALTH_TIMEOUT_S
            )
        except grpc.aio.AioRpcError:
            return False
        return bool(response.status == health_pb2.HealthCheckResponse.SERVING)

    async def wait_serving(self, programs: list[str], timeout_s: float) -> bool:
        """Wait until every program serves; False when one did not within `timeout_s`."""
        try:
            async with asyncio.timeout(timeout_s):
                for program in programs:
                    while True:
                        if await self.serving(program):
                            break
                        await asyncio.sleep(HEALTH_POLL_S)
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        await self.gateway_channel.close()
        for channel in self.gateway_channels.values():
            await channel.close()
        for channel in self.bank_channels.values():
            await channel.close()
