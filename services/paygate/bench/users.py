"""The bench's users: funded accounts at the banks, registered and logged in at the gateway.

Accounts are opened as paygate-admin does it (OpenAccount with the `admin` certificate),
spread over the banks in turn so that most payments cross two banks. Each run makes new
users with a random password that is never printed; their tokens stay in memory (BenchUser
does not show its token in its repr).

Balances are read the same way, for the money check at the end of a run.
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

import grpc

from paygate.client import AsyncClient
from paygate.common.config import SuiteConfig
from paygate.common.tls import channel_credentials
from paygate.gen.paygate.bank.v1 import bank_pb2, bank_pb2_grpc

ADMIN_IDENTITY = "admin"
SETUP_CONCURRENCY = 4  # registrations in flight: bcrypt runs on two threads at the gateway
SNAPSHOT_CONCURRENCY = 16
CURRENCY = "USD"


def client_target(listen: str) -> str:
    """The address a client on this machine dials for a server's listen address."""
    host, _, port = listen.rpartition(":")
    if host in ("", "0.0.0.0", "[::]", "::"):
        host = "127.0.0.1"
    return f"{host}:{port}"


@dataclasses.dataclass(frozen=True)
class BenchUser:
    username: str
    bank_id: str
    account_number: str
    token: str = dataclasses.field(repr=False)
    # To log in again when the token expires in a run longer than its lifetime.
    password: str = dataclasses.field(repr=False)


@dataclasses.dataclass(frozen=True)
class AccountState:
    balance_minor: int
    pending_debit_minor: int
    pending_credit_minor: int


class BankAdmin:
    """Mutual-TLS channels to every bank as `admin`; create inside the running event loop."""

    def __init__(self, config: SuiteConfig, timeout_s: float) -> None:
        credentials = channel_credentials(
            config.certs_dir / "ca.pem", client=config.tls_for(ADMIN_IDENTITY)
        )
        self._timeout_s = timeout_s
        self._channels = {
            bank_id: grpc.aio.secure_channel(client_target(bank.listen), credentials)
            for bank_id, bank in config.banks.items()
        }
        # The generated stubs are untyped; responses are annotated where they are used.
        self._stubs: dict[str, Any] = {
            bank_id: bank_pb2_grpc.BankServiceStub(channel)  # type: ignore[no-untyped-call]
            for bank_id, channel in self._channels.items()
        }

    @property
    def bank_ids(self) -> list[str]:
        return sorted(self._stubs)

    async def open_account(self, bank_id: str, balance_minor: int) -> tuple[str, str]:
        """A new funded account: its number and its link code."""
        request = bank_pb2.OpenAccountRequest(currency=CURRENCY, initial_balance=balance_minor)
        response: bank_pb2.OpenAccountResponse = await self._stubs[bank_id].OpenAccount(
            request, timeout=self._timeout_s
        )
        return str(response.account.account_number), str(response.link_code)

    async def account(self, bank_id: str, account_number: str) -> AccountState:
        request = bank_pb2.GetAccountRequest(account_number=account_number)
        response: bank_pb2.GetAccountResponse = await self._stubs[bank_id].GetAccount(
            request, timeout=self._timeout_s
        )
        account = response.account
        return AccountState(account.balance, account.pending_debit, account.pending_credit)

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()


async def create_users(
    admin: BankAdmin,
    *,
    gateway_target: str,
    ca_cert: str,
    count: int,
    balance_minor: int,
    timeout_s: float,
) -> list[BenchUser]:
    """Open `count` funded accounts over the banks in turn; register and log in a user each."""
    run_id = secrets.token_hex(4)
    password = secrets.token_urlsafe(18)
    banks = admin.bank_ids
    slots = asyncio.Semaphore(SETUP_CONCURRENCY)

    async def one(index: int) -> BenchUser:
        bank_id = banks[index % len(banks)]
        async with slots:
            account, link_code = await admin.open_account(bank_id, balance_minor)
            username = f"bench-{run_id}-{index}"
            async with AsyncClient(gateway_target, ca_cert=ca_cert, timeout_s=timeout_s) as c:
                await c.register(username, password, bank_id, account, link_code=link_code)
                session = await c.login(username, password)
        return BenchUser(username, bank_id, account, session.access_token, password)

    return list(await asyncio.gather(*(one(i) for i in range(count))))


async def snapshot(
    admin: BankAdmin, users: Sequence[BenchUser]
) -> dict[str, AccountState]:
    """Each user's account as its bank sees it, by username."""
    slots = asyncio.Semaphore(SNAPSHOT_CONCURRENCY)

    async def one(user: BenchUser) -> AccountState:
        async with slots:
            return await admin.account(user.bank_id, user.account_number)

    states = await asyncio.gather(*(one(u) for u in users))
    return {user.username: state for user, state in zip(users, states, strict=True)}


def pending_minor(states: Mapping[str, AccountState]) -> int:
    return sum(s.pending_debit_minor + s.pending_credit_minor for s in states.values())


def check_money(
    before: Mapping[str, AccountState],
    after: Mapping[str, AccountState],
    net_minor: Mapping[str, int],
    unknown_outcomes: int,
) -> dict[str, object]:
    """Money conservation over the bench's users, and no holds left behind.

    When every payment's outcome is known (no deadline passed, no connection broke), each
    balance must also have moved by exactly the payments the gateway said succeeded.
    """
    total_before = sum(s.balance_minor for s in before.values())
    total_after = sum(s.balance_minor for s in after.values())
    problems = []
    if total_before != total_after:
        problems.append(f"total balance changed from {total_before} to {total_after}")
    pending = pending_minor(after)
    if pending:
        problems.append(f"{pending} minor units still held in pending holds")
    exact = "skipped: some outcomes are unknown" if unknown_outcomes else "ok"
    if not unknown_outcomes:
        wrong = [
            name
            for name, state in after.items()
            if state.balance_minor != before[name].balance_minor + net_minor.get(name, 0)
        ]
        if wrong:
            exact = f"{len(wrong)} balances differ from the acknowledged payments"
            problems.append(f"{exact}, e.g. {sorted(wrong)[:3]}")
    return {
        "ok": not problems,
        "total_before_minor": total_before,
        "total_after_minor": total_after,
        "pending_after_minor": pending,
        "balances_match_acknowledged_payments": exact,
        "problems": problems,
    }
