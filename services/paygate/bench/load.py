"""The load: C concurrent callers for a warm-up and a measured window, then they stop.

Three kinds of call, over the same client stack (grpc.aio over TLS, with the interceptors of
paygate.client.AsyncClient: OpenTelemetry, logging, bearer token):

    payments   AsyncClient.pay from a bench user to another one, a fresh idempotency key each;
               with batch_size > 1, AsyncClient.pay_many of that many items (each to another
               user, a key each) in one BatchCreatePayments call: bulk payouts; with
               splits > 1, AsyncClient.pay_split to that many payees, at distinct banks
               (splits.py)
    echo       the baseline's trivial RPC on the bench's echo server (echo.py)
    ceiling    GetPayment of a payment the caller made before the run: the cheapest
               authenticated call through the same gateway (TLS, every interceptor, the
               token check, one database read, no bank call). No payment path through
               this gateway can go faster, so its rate bounds the payments' from above.

Callers share `channels` clients in turn, as an application would. A call counts in the
window when it completes inside it; calls that end after the window still end (their
deadline bounds the wait) but only count in `outcomes_all`. With `rate_per_s` the callers
together start at most that many calls a second (closed loop with a cap, so that the
latency at a chosen rate can be measured); latency is timed from the send.

Times are time.monotonic(), which is one clock for every process on Linux, so that
several processes (load_in_process) share one schedule.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc

from paygate.bench.echo import METHOD as ECHO_METHOD
from paygate.bench.splits import PayeeChooser, parts
from paygate.bench.users import BenchUser
from paygate.client import AsyncClient, BatchItem, Split
from paygate.errors import PaygateError, status_code_of
from paygate.gen.paygate.v1 import gateway_pb2

PAYMENTS = "payments"
ECHO = "echo"
CEILING = "ceiling"
# Outcomes after which the bench knows that no money moved.
NOTHING_MOVED = frozenset(
    {
        "INVALID_ARGUMENT",
        "NOT_FOUND",
        "UNAUTHENTICATED",
        "PERMISSION_DENIED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "RESOURCE_EXHAUSTED",
    }
)
STOP_MARGIN_S = 5.0
# A caller that falls behind a --rate schedule by more than this many periods starts
# afresh rather than sending a burst to catch up.
MAX_CATCH_UP_PERIODS = 4

# The baseline sends a request as large as a typical CreatePaymentRequest, with a token
# as long as a real one (not a secret: the echo server is the bench's own).
ECHO_PAYLOAD = gateway_pb2.CreatePaymentRequest(
    idempotency_key="7f0c2a5e-3b1d-4c8e-9a6f-0d2b4e6f8a1c",
    payee_username="bench-0a1b2c3d-17",
    amount=1,
    currency="USD",
).SerializeToString()
ECHO_TOKEN = "baseline-" + "x" * 34


@dataclasses.dataclass(frozen=True, kw_only=True)
class LoadSpec:
    kind: str
    target: str
    ca_cert: str
    users: tuple[BenchUser, ...]
    channels: int
    concurrency: int
    start_at: float
    measure_at: float
    stop_at: float
    timeout_s: float
    rate_per_s: float = 0.0  # 0: as fast as the callers can
    amount_minor: int = 1
    seed: int = 0
    # With kind CEILING: the id of a payment each of `users` made, in the same order.
    payment_ids: tuple[str, ...] = ()
    # Payments of one call: 1 is CreatePayment, more is BatchCreatePayments (bulk).
    batch_size: int = 1
    # Payees of one payment: 1 is a plain payment, more a split payment of amount_minor.
    splits: int = 1


@dataclasses.dataclass
class LoadResult:
    latencies_ms: list[float] = dataclasses.field(default_factory=list)
    # When each of latencies_ms completed, in seconds since the measured window opened.
    completed_s: list[float] = dataclasses.field(default_factory=list)
    outcomes: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    outcomes_all: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    net_minor: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    unknown_outcomes: int = 0
    client_cpu_s: float = 0.0
    # Bulk runs: the items of the calls that completed in the window, by outcome ("OK", or
    # the item's error's gRPC code); a call that failed whole counts its items with its code.
    item_outcomes: collections.Counter[str] = dataclasses.field(
        default_factory=collections.Counter
    )
    # The item outcomes of each caller's last bulk call, until its loop counts them.
    items_of_call: dict[int, list[str]] = dataclasses.field(default_factory=dict)
    # Per second of the window (int(completed_s)): the calls that ended OK, and in bulk runs
    # the items that did.
    ok_by_second: collections.Counter[int] = dataclasses.field(
        default_factory=collections.Counter
    )
    items_ok_by_second: collections.Counter[int] = dataclasses.field(
        default_factory=collections.Counter
    )

    def merge(self, other: LoadResult) -> None:
        self.item_outcomes.update(other.item_outcomes)
        self.ok_by_second.update(other.ok_by_second)
        self.items_ok_by_second.update(other.items_ok_by_second)
        self.latencies_ms += other.latencies_ms
        self.completed_s += other.completed_s
        self.outcomes.update(other.outcomes)
        self.outcomes_all.update(other.outcomes_all)
        self.net_minor.update(other.net_minor)
        self.unknown_outcomes += other.unknown_outcomes
        self.client_cpu_s += other.client_cpu_s


class Pacer:
    """Hands out send times `1 / rate_per_s` apart to all the callers of one process."""

    def __init__(self, rate_per_s: float, start_at: float) -> None:
        self._period_s = 1.0 / rate_per_s
        self._next = start_at

    async def wait(self) -> None:
        now = time.monotonic()
        if self._next < now - MAX_CATCH_UP_PERIODS * self._period_s:
            self._next = now
        slot, self._next = self._next, self._next + self._period_s
        if slot > now:
            await asyncio.sleep(slot - now)


Call = Callable[[int, random.Random], Awaitable[str]]


async def run_load(spec: LoadSpec) -> LoadResult:
    """Run the spec's callers until stop_at; returns what they saw."""
    result = LoadResult()
    call, close = _caller(spec, result)
    try:
        limit_s = spec.stop_at - time.monotonic() + spec.timeout_s + STOP_MARGIN_S
        async with asyncio.timeout(limit_s):
            await _sleep_until(spec.start_at)
            pacer = Pacer(spec.rate_per_s, spec.start_at) if spec.rate_per_s > 0 else None
            cpu = asyncio.create_task(_client_cpu(spec, result))
            await asyncio.gather(
                *(_caller_loop(spec, i, call, pacer, result) for i in range(spec.concurrency))
            )
            await cpu
    finally:
        await close()
    return result


def load_in_process(spec: LoadSpec) -> LoadResult:
    """run_load in a process of its own (the entry point of --processes workers)."""
    return asyncio.run(run_load(spec))


async def _caller_loop(
    spec: LoadSpec, index: int, call: Call, pacer: Pacer | None, result: LoadResult
) -> None:
    rng = random.Random(spec.seed * 1_000_003 + index)
    while True:
        if pacer is not None:
            await pacer.wait()
        sent = time.monotonic()
        if sent >= spec.stop_at:
            return
        code = await call(index, rng)
        done = time.monotonic()
        result.outcomes_all[code] += 1
        items = result.items_of_call.pop(index, ())
        if spec.measure_at <= done < spec.stop_at:
            result.outcomes[code] += 1
            result.item_outcomes.update(items)
            result.latencies_ms.append((done - sent) * 1000.0)
            result.completed_s.append(done - spec.measure_at)
            second = int(done - spec.measure_at)
            if code == "OK":
                result.ok_by_second[second] += 1
            if items:
                result.items_ok_by_second[second] += items.count("OK")


def _caller(spec: LoadSpec, result: LoadResult) -> tuple[Call, Callable[[], Awaitable[None]]]:
    if spec.kind == PAYMENTS and spec.batch_size > 1:
        return _bulk_caller(spec, result)
    if spec.kind == PAYMENTS and spec.splits > 1:
        return _split_caller(spec, result)
    if spec.kind == PAYMENTS:
        return _payment_caller(spec, result)
    if spec.kind == ECHO:
        return _echo_caller(spec)
    if spec.kind == CEILING:
        return _ceiling_caller(spec)
    raise ValueError(f"unknown load kind {spec.kind!r}")


class UserClients:
    """One client (one connection) per user, as far as `channels` goes, each logging its user
    in again when a run outlives the token's lifetime."""

    def __init__(self, spec: LoadSpec) -> None:
        self.users = spec.users[: spec.channels]
        self.clients = [
            AsyncClient(
                spec.target, ca_cert=spec.ca_cert, access_token=user.token,
                timeout_s=spec.timeout_s,
            )
            for user in self.users
        ]
        self._renewing = [asyncio.Lock() for _ in self.clients]

    async def call(self, slot: int, fn: Callable[[AsyncClient], Awaitable[Any]]) -> Any:
        """fn(the slot's client); once more after logging in again if the token was refused
        (refused at authentication, so nothing was started), as a client would."""
        client = self.clients[slot]
        token = client.access_token
        try:
            return await fn(client)
        except PaygateError as error:
            if _code_name(error) != "UNAUTHENTICATED":
                raise
        # One login per expired token, however many of the user's calls were refused.
        async with self._renewing[slot]:
            if client.access_token == token:
                await client.login(self.users[slot].username, self.users[slot].password)
        return await fn(client)

    async def close(self) -> None:
        for client in self.clients:
            await client.close()


def _payment_caller(
    spec: LoadSpec, result: LoadResult
) -> tuple[Call, Callable[[], Awaitable[None]]]:
    users = spec.users
    if len(users) < 2:
        raise ValueError("payments need at least two users")
    clients = UserClients(spec)

    async def pay(index: int, rng: random.Random) -> str:
        slot = index % len(clients.clients)
        payer = users[slot]
        payee = users[(slot + rng.randrange(1, len(users))) % len(users)]
        try:
            await clients.call(slot, lambda client: client.pay(payee.username, spec.amount_minor))
        except PaygateError as error:
            code = _code_name(error)
            if code not in NOTHING_MOVED:
                result.unknown_outcomes += 1
            return code
        result.net_minor[payer.username] -= spec.amount_minor
        result.net_minor[payee.username] += spec.amount_minor
        return "OK"

    return pay, clients.close


def _bulk_caller(
    spec: LoadSpec, result: LoadResult
) -> tuple[Call, Callable[[], Awaitable[None]]]:
    """Each call pays spec.batch_size other users, chosen at random, in one batch."""
    users = spec.users
    if len(users) < 2:
        raise ValueError("payments need at least two users")
    clients = UserClients(spec)

    async def pay_many(index: int, rng: random.Random) -> str:
        slot = index % len(clients.clients)
        payer = users[slot]
        payees = [users[(slot + rng.randrange(1, len(users))) % len(users)]
                  for _ in range(spec.batch_size)]  # fmt: skip
        items = [BatchItem(payee_username=p.username, amount_minor=spec.amount_minor)
                 for p in payees]  # fmt: skip
        outcomes: list[str]
        try:
            answered = await clients.call(slot, lambda client: client.pay_many(items))
            outcomes = ["OK" if r.ok else _item_code(r.error) for r in answered]
            code = "OK"
        except PaygateError as error:
            code = _code_name(error)
            outcomes = [code] * len(items)
        for payee, outcome in zip(payees, outcomes, strict=True):
            if outcome == "OK":
                result.net_minor[payer.username] -= spec.amount_minor
                result.net_minor[payee.username] += spec.amount_minor
            elif outcome not in NOTHING_MOVED:
                result.unknown_outcomes += 1
        result.items_of_call[index] = outcomes  # counted by the loop, with the call
        return code

    return pay_many, clients.close


def _split_caller(
    spec: LoadSpec, result: LoadResult
) -> tuple[Call, Callable[[], Awaitable[None]]]:
    """Each call is one payment of amount_minor split among spec.splits other users."""
    users = spec.users
    chooser = PayeeChooser(users, spec.splits)
    amounts = parts(spec.amount_minor, spec.splits)
    clients = UserClients(spec)

    async def pay_split(index: int, rng: random.Random) -> str:
        slot = index % len(clients.clients)
        payer = users[slot]
        payees = chooser.choose(payer, rng)
        splits = [Split(p.username, amount) for p, amount in zip(payees, amounts, strict=True)]
        try:
            await clients.call(slot, lambda client: client.pay_split(splits))
        except PaygateError as error:
            code = _code_name(error)
            if code not in NOTHING_MOVED:
                result.unknown_outcomes += 1
            return code
        result.net_minor[payer.username] -= spec.amount_minor
        for split in splits:
            result.net_minor[split.payee_username] += split.amount_minor
        return "OK"

    return pay_split, clients.close


def _item_code(error: PaygateError | None) -> str:
    return status_code_of(error).name if error is not None else "UNKNOWN"


def _ceiling_caller(spec: LoadSpec) -> tuple[Call, Callable[[], Awaitable[None]]]:
    if len(spec.payment_ids) != len(spec.users):
        raise ValueError("the ceiling needs one payment id per user")
    clients = UserClients(spec)

    async def look_up(index: int, rng: random.Random) -> str:
        slot = index % len(clients.clients)
        payment_id = spec.payment_ids[slot]
        try:
            await clients.call(slot, lambda client: client.get_payment(payment_id))
        except PaygateError as error:
            return _code_name(error)
        return "OK"

    return look_up, clients.close


def _echo_caller(spec: LoadSpec) -> tuple[Call, Callable[[], Awaitable[None]]]:
    # The echo calls go over AsyncClient's own channel: the client stack of the payments.
    clients = [
        AsyncClient(spec.target, ca_cert=spec.ca_cert, access_token=ECHO_TOKEN)
        for _ in range(spec.channels)
    ]
    calls: list[Any] = [client.channel.unary_unary(ECHO_METHOD) for client in clients]

    async def echo(index: int, rng: random.Random) -> str:
        try:
            await calls[index % len(calls)](ECHO_PAYLOAD, timeout=spec.timeout_s)
        except grpc.aio.AioRpcError as error:
            return error.code().name
        return "OK"

    async def close() -> None:
        for client in clients:
            await client.close()

    return echo, close


def _code_name(error: PaygateError) -> str:
    """The gRPC status code the call ended with (the client raises it as a PaygateError)."""
    cause = error.__cause__
    if isinstance(cause, grpc.aio.AioRpcError):
        return cause.code().name
    return status_code_of(error).name


async def _client_cpu(spec: LoadSpec, result: LoadResult) -> None:
    """This process's CPU seconds over the measured window."""
    await _sleep_until(spec.measure_at)
    start = time.process_time()
    await _sleep_until(spec.stop_at)
    result.client_cpu_s = time.process_time() - start


async def _sleep_until(at: float) -> None:
    delay = at - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


def split(spec: LoadSpec, processes: int) -> Sequence[LoadSpec]:
    """The spec for each of `processes` workers: callers, clients and rate shared out."""
    specs = []
    for k in range(processes):
        concurrency = spec.concurrency // processes + (1 if k < spec.concurrency % processes else 0)
        specs.append(
            dataclasses.replace(
                spec,
                concurrency=concurrency,
                channels=max(1, spec.channels // processes),
                rate_per_s=spec.rate_per_s / processes,
                seed=spec.seed * 101 + k,
            )
        )
    return [s for s in specs if s.concurrency > 0]
