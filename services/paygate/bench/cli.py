"""paygate-bench: payments per second and latency of a running suite, against a baseline.

    paygate-bench                                     the suite `make run` runs (repo root)
    paygate-bench --config paygate.toml --supervisor-dir /srv/paygate \
        --concurrency 64 --duration 20 --warmup 5 --out bench.json
    paygate-bench seed --config paygate.toml ...      stored payments for a scale run (seed.py)

A run: make and fund --users bench users; measure the baseline (the same client stack
calling a trivial RPC on an echo server the bench starts, at the same concurrency); run
--concurrency payers for --warmup then --duration seconds, sampling the CPU time of every
suite process (pids from `supervisorctl pid`) over the measured window, and the resident
memory of the programs every --memory-interval seconds in it; wait for the
last holds to resolve and check that the bench users' money is conserved. It prints a
summary, writes a JSON report (--out) and draws it (--plot, beside the report by default:
payments/s and latency per second, the baseline's calls/s beside them; plot.py).

With --batch-size N the payers make bulk payouts: each call is a BatchCreatePayments of N
payments, each to another user; `payments` then times and counts the calls, and `bulk` the
payments in them (`items_ok_per_s`, and `items_ratio` over the same baseline).

With --splits K each payment is a split payment: its amount (--amount, default K) divided
among K other users in equal parts, the remainder on the first, at K distinct banks when
K is at most the number of banks (a split run makes at least two users per bank for that);
the report's `splits` says so and sets its payments/s beside the baseline.

With --ceiling, one more phase before the payments: the same callers, with the same client
stack and one connection per user as the payers, call GetPayment on the gateway (each a
payment its user made before the run: the users pay each other in a ring, one minor unit
each, so every balance ends where it began). That is the cheapest authenticated call the
gateway serves, through every piece a payment passes on its way in and out, with no bank
call and no write; its rate over the baseline's is the most that payments/s over baseline
calls/s could reach with this gateway's per-call stack, whatever the payment protocol did.

Exit status: 0 when the money check holds and payments succeeded, 1 when not, 2 when the
run could not be made (the suite is not reachable, bad flags).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import dataclasses
import datetime
import functools
import multiprocessing
import os
import pathlib
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import grpc

from paygate.bench import batches, plot, procstat, report
from paygate.bench.echo import start_echo_server
from paygate.bench.load import (
    CEILING,
    ECHO,
    PAYMENTS,
    LoadResult,
    LoadSpec,
    UserClients,
    load_in_process,
    run_load,
    split,
)
from paygate.bench.splits import MAX_SPLITS, PayeeChooser
from paygate.bench.users import (
    AccountState,
    BankAdmin,
    BenchUser,
    check_money,
    client_target,
    create_users,
    pending_minor,
    snapshot,
)
from paygate.client import MAX_BATCH_ITEMS, AsyncClient, Payment, PaymentStatus
from paygate.common.config import CONFIG_ENV, ConfigError, SuiteConfig, read_config_file
from paygate.common.gateway_targets import channel_target
from paygate.errors import PaygateError

DEFAULT_CONCURRENCY = 64
DEFAULT_DURATION_S = 20.0
DEFAULT_WARMUP_S = 5.0
DEFAULT_TIMEOUT_S = 10.0
MAX_CONCURRENCY = 1024
MAX_PROCESSES = 32
MAX_USERS = 1000
MAX_DURATION_S = 3600.0
USERS_PER_RUN_DEFAULT_MAX = 64
MAX_BATCH_SIZE = MAX_BATCH_ITEMS  # the gateway's limit on a BatchCreatePayments call
BALANCE_MINOR = 1_000_000_000  # 10,000,000.00 USD each: a bench never runs out of funds
SETUP_TIMEOUT_S = 30.0  # registration waits for bcrypt at the gateway
START_DELAY_S = 0.2
SETTLE_TIMEOUT_S = 60.0  # unfinished payments are resolved by the gateway's recovery
SETTLE_POLL_S = 0.5


class BenchError(Exception):
    """The run could not be made; reported as `error: ...`, exit status 2."""


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["seed"]:
        from paygate.bench import seed  # only the seeding tool needs the stores' modules

        return seed.main(arguments[1:])
    args = build_parser().parse_args(arguments)
    try:
        check_args(args)
        config = read_config_file(args.config, base=args.supervisor_dir.resolve())
        args.users = args.users or default_users(args, len(config.banks))
        result = asyncio.run(run(args, config))
    except (BenchError, OSError, ConfigError, PaygateError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except grpc.aio.AioRpcError as error:
        print(f"error: a setup call failed: {error.code().name} {error.details()}",
              file=sys.stderr)
        return 2
    out = args.out or default_out()
    result["command"] = ["paygate-bench", *arguments]
    report.write(result, out)
    print(report.text(result))
    print(f"report: {out}")
    draw(result, args.plot or plot.default_path(out))
    return 0 if result["money"]["ok"] and result["payments"]["ok"] > 0 else 1


def draw(result: Mapping[str, Any], path: pathlib.Path) -> None:
    """The run's plot; without matplotlib (an optional dependency) the report stands alone."""
    try:
        plot.write(result, path)
    except ImportError:
        print("plot: not drawn, matplotlib is not installed (pip install -e '.[bench]')",
              file=sys.stderr)
        return
    print(f"plot:   {path}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="paygate-bench", description="Measure a running Paygate suite against a baseline."
    )
    add = parser.add_argument
    add("--concurrency", type=int, default=DEFAULT_CONCURRENCY,
        help=f"concurrent payers, and callers of the baseline (default {DEFAULT_CONCURRENCY})")
    add("--duration", type=float, default=DEFAULT_DURATION_S, metavar="SECONDS",
        help=f"measured window of each phase (default {DEFAULT_DURATION_S:.0f})")
    add("--warmup", type=float, default=DEFAULT_WARMUP_S, metavar="SECONDS",
        help=f"load before the window, not measured (default {DEFAULT_WARMUP_S:.0f})")
    add("--processes", type=int, default=1,
        help="client processes sharing the callers (default 1)")
    add("--users", type=int, default=0,
        help=f"bench users to make (default: the concurrency, at most "
        f"{USERS_PER_RUN_DEFAULT_MAX}, and for --splits at least two per bank); each has its "
        "own client connection")
    add("--rate", type=float, default=0.0, metavar="PER_S",
        help="start at most this many payments a second (default: as fast as possible)")
    add("--amount", type=int, default=None, metavar="MINOR",
        help="each payment's amount (default 1; with --splits K, K)")
    add("--batch-size", type=int, default=1, metavar="N",
        help="bulk payouts: each call pays N users with BatchCreatePayments (1 to "
        f"{MAX_BATCH_SIZE}; default 1, a CreatePayment a call); the report's `bulk` counts "
        "the payments, its `payments` the calls")
    add("--splits", type=int, default=1, metavar="K",
        help=f"split payments: each pays K other users (2 to {MAX_SPLITS}) equal parts of "
        "its amount, the remainder to the first, at K distinct banks when K is at most the "
        "number of banks (default 1: one payee a payment)")
    add("--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="SECONDS",
        help=f"deadline of every call (default {DEFAULT_TIMEOUT_S:.0f})")
    add("--no-baseline", action="store_true", help="skip the baseline (e.g. for --rate runs)")
    add("--ceiling", action="store_true",
        help="also measure GetPayment through the gateway, the bound of any payment path "
        "through its per-call stack (one more warm-up and window, before the payments)")
    add("--seed", type=int, default=0, help="seed of the payees' choice (default 0)")
    add("--config", default=os.environ.get(CONFIG_ENV) or None, metavar="TOML",
        help=f"the suite's config file (default ${CONFIG_ENV}, else the built-in defaults)")
    add("--supervisor-conf", type=pathlib.Path, default=pathlib.Path("supervisord.conf"),
        metavar="CONF", help="the suite's supervisord.conf (default ./supervisord.conf)")
    add("--supervisor-dir", type=pathlib.Path, default=pathlib.Path.cwd(), metavar="DIR",
        help="the directory the suite's supervisord was started from (default: here); "
        "relative paths of the config resolve against it")
    add("--gateway", default=None, metavar="TARGETS",
        help="the gateway to pay through; a comma-separated list (IP:PORT,IP:PORT) spreads "
        "the payments over several, round robin (default: the config's [gateway] listen)")
    add("--programs", default=None, metavar="NAMES",
        help="comma-separated supervisor programs whose CPU to sample (default: gateway "
        "and the config's banks)")
    add("--memory-interval", type=float, default=procstat.DEFAULT_MEMORY_INTERVAL_S,
        metavar="SECONDS", help="how often to sample the programs' resident memory in the "
        f"window (default {procstat.DEFAULT_MEMORY_INTERVAL_S:.0f}; widened to keep at most "
        f"{procstat.MAX_MEMORY_SAMPLES} samples)")
    add("--cpu-of-command", default=None, metavar="NAME",
        help="also sample the total CPU of every process whose command is NAME "
        "(e.g. postgres: the database server's backends)")
    add("--out", type=pathlib.Path, default=None, metavar="FILE",
        help="where to write the JSON report (default var/bench/<UTC time>.json)")
    add("--plot", type=pathlib.Path, default=None, metavar="FILE",
        help="where to draw the run as a PNG (default: beside the report, with its stem: "
        "bench.json -> bench.png)")
    return parser


def check_args(args: argparse.Namespace) -> None:
    if args.amount is None:
        args.amount = max(1, args.splits)
    limits = [
        (1 <= args.concurrency <= MAX_CONCURRENCY, f"--concurrency: 1 to {MAX_CONCURRENCY}"),
        (1 <= args.processes <= min(MAX_PROCESSES, args.concurrency),
         f"--processes: 1 to {MAX_PROCESSES}, and at most --concurrency"),
        (0 < args.duration <= MAX_DURATION_S, f"--duration: above 0, at most {MAX_DURATION_S}"),
        (0 <= args.warmup <= MAX_DURATION_S, f"--warmup: 0 to {MAX_DURATION_S}"),
        (args.users == 0 or 2 <= args.users <= MAX_USERS, f"--users: 2 to {MAX_USERS}"),
        (args.rate >= 0, "--rate must not be negative"),
        (args.amount >= 1, "--amount must be at least 1"),
        (1 <= args.batch_size <= MAX_BATCH_SIZE, f"--batch-size: 1 to {MAX_BATCH_SIZE}"),
        (1 <= args.splits <= MAX_SPLITS, f"--splits: 2 to {MAX_SPLITS} (1: one payee)"),
        (args.splits == 1 or args.batch_size == 1, "--splits: not with --batch-size"),
        (args.amount >= args.splits, "--amount: at least --splits (a part is at least 1)"),
        (args.splits == 1 or args.users == 0 or args.users > args.splits,
         "--users: more than --splits (a payer and its payees)"),
        (0 < args.timeout <= 60, "--timeout: above 0, at most 60"),
        (0.1 <= args.memory_interval <= 60, "--memory-interval: 0.1 to 60"),
    ]
    for ok, message in limits:
        if not ok:
            raise BenchError(message)
    if args.plot is not None and args.out is not None and args.plot.resolve() == args.out.resolve():
        raise BenchError("--plot: not the report's own file (--out)")
    if args.gateway is not None:
        try:
            channel_target(args.gateway)
        except ValueError as error:
            raise BenchError(f"--gateway: {error}") from None


def default_users(args: argparse.Namespace, banks: int) -> int:
    """One a payer up to USERS_PER_RUN_DEFAULT_MAX; for split payments enough payees, and
    two users a bank, so that each payer finds a payee at every bank, its own included."""
    users: int = max(2, min(args.concurrency, USERS_PER_RUN_DEFAULT_MAX))
    if args.splits > 1:
        users = max(users, args.splits + 1, 2 * banks)
    return min(users, MAX_USERS)


def split_names(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def default_out() -> pathlib.Path:
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    return pathlib.Path("var") / "bench" / f"{stamp}.json"


async def run(args: argparse.Namespace, config: SuiteConfig) -> dict[str, Any]:
    ca_cert = str(config.certs_dir / "ca.pem")
    gateway = args.gateway or client_target(config.gateway.listen)
    async with AsyncClient(gateway, ca_cert=ca_cert, timeout_s=args.timeout) as probe:
        if not await probe.reachable():
            raise BenchError(f"the gateway at {gateway} does not answer as SERVING")
    admin = BankAdmin(config, SETUP_TIMEOUT_S)
    try:
        users = await create_users(
            admin, gateway_target=gateway, ca_cert=ca_cert, count=args.users,
            balance_minor=BALANCE_MINOR, timeout_s=SETUP_TIMEOUT_S,
        )
        before = await snapshot(admin, users)
        spec = base_spec(args, gateway, ca_cert, users)
        baseline = None if args.no_baseline else await run_baseline(args, config, spec)
        programs = split_names(args.programs) or ["gateway", *sorted(config.banks)]
        ceiling = await run_ceiling(args, spec, programs) if args.ceiling else None
        pids, pid_problem = await asyncio.to_thread(
            procstat.supervisor_pids, args.supervisor_conf, args.supervisor_dir, programs
        )
        spec = scheduled(spec, args)
        batches_first = asyncio.create_task(_batch_totals_at(config, spec.measure_at))
        try:
            result, window_s, samples = await measured(
                spec, args.processes, pids, args.cpu_of_command or "",
                memory_interval_s=args.memory_interval,
            )
        except BaseException:
            batches_first.cancel()
            raise
        batches_last = await asyncio.to_thread(batches.read_totals, config.gateway.metrics)
        batch_window = batches.window(await batches_first, batches_last)
        pids_after, _ = await asyncio.to_thread(
            procstat.supervisor_pids, args.supervisor_conf, args.supervisor_dir, programs
        )
        cpu = procstat.fold_commands(
            procstat.window(samples.first, samples.last, pids_after, samples.seconds)
        )
        memory = procstat.memory_window(samples.memory, pids_after)
        machine_load = procstat.machine_window(samples.first, samples.last, samples.seconds)
        after = await settle(admin, users)
    finally:
        await admin.close()
    payments = report.summarize(result, window_s)
    bulk = report.bulk(result, window_s, args.batch_size, baseline)
    distinct = args.splits > 1 and PayeeChooser(users, args.splits).all_distinct()
    cpu["bench"] = {"pid": os.getpid(), "cpu_s": payments["client_cpu_s"],
                    "cores": round(payments["client_cpu_s"] / window_s, 3)}
    ours = sum(v.get("cores", 0.0) for v in cpu.values())
    machine_load["other_cores"] = round(max(0.0, machine_load.get("busy_cores", 0.0) - ours), 3)
    return {
        "version": 1,
        "machine": report.machine(),
        "settings": settings(args, config),
        "payments": payments,
        "bulk": bulk,
        "splits": report.splits(payments, args.splits, distinct, baseline),
        "baseline": baseline,
        "ratio": report.ratio(payments, baseline),
        "ceiling": ceiling,
        "ceiling_ratio": report.ratio(ceiling, baseline) if ceiling else None,
        "payments_per_ceiling": report.ratio(payments, ceiling),
        "cpu": cpu,
        "cpu_problem": pid_problem or None,
        "memory": memory,
        "machine_load": machine_load,
        "cpu_ms_per_payment": cpu_per_payment(cpu, bulk["items_ok"] if bulk else payments["ok"]),
        "batches": batch_window,
        "money": check_money(before, after, result.net_minor, result.unknown_outcomes),
    }


def base_spec(
    args: argparse.Namespace, gateway: str, ca_cert: str, users: list[BenchUser]
) -> LoadSpec:
    return LoadSpec(
        kind=PAYMENTS, target=gateway, ca_cert=ca_cert, users=tuple(users),
        channels=min(len(users), args.concurrency), concurrency=args.concurrency,
        start_at=0.0, measure_at=0.0, stop_at=0.0, timeout_s=args.timeout,
        rate_per_s=args.rate, amount_minor=args.amount, seed=args.seed,
        batch_size=args.batch_size, splits=args.splits,
    )


def scheduled(spec: LoadSpec, args: argparse.Namespace) -> LoadSpec:
    start_at = time.monotonic() + START_DELAY_S
    return dataclasses.replace(
        spec, start_at=start_at, measure_at=start_at + args.warmup,
        stop_at=start_at + args.warmup + args.duration,
    )


async def run_baseline(
    args: argparse.Namespace, config: SuiteConfig, spec: LoadSpec
) -> dict[str, Any]:
    """The same callers and client stack on the echo server, as fast as they can."""
    echo = await start_echo_server(config.gateway.tls)
    try:
        echo_spec = dataclasses.replace(spec, kind=ECHO, target=echo.target, rate_per_s=0.0)
        pids = {"echo-server": echo.pid}
        result, window_s, samples = await measured(
            scheduled(echo_spec, args), args.processes, pids
        )
    finally:
        await echo.stop()
    summary = report.summarize(result, window_s)
    summary["cpu"] = procstat.window(samples.first, samples.last, pids, samples.seconds)
    summary["machine_load"] = procstat.machine_window(
        samples.first, samples.last, samples.seconds
    )
    return summary


async def run_ceiling(
    args: argparse.Namespace, spec: LoadSpec, programs: Sequence[str]
) -> dict[str, Any]:
    """The same callers calling GetPayment on the gateway, as fast as they can."""
    payment_ids = await ring_payments(spec)
    ceiling_spec = dataclasses.replace(
        spec, kind=CEILING, rate_per_s=0.0, payment_ids=tuple(payment_ids)
    )
    pids, _ = await asyncio.to_thread(
        procstat.supervisor_pids, args.supervisor_conf, args.supervisor_dir, programs
    )
    result, window_s, samples = await measured(
        scheduled(ceiling_spec, args), args.processes, pids
    )
    summary = report.summarize(result, window_s)
    summary["cpu"] = procstat.fold_commands(
        procstat.window(samples.first, samples.last, pids, samples.seconds)
    )
    summary["cpu_ms_per_call"] = cpu_per_payment(summary["cpu"], summary["ok"])
    return summary


async def ring_payments(spec: LoadSpec) -> list[str]:
    """Each user pays the next one a minor unit (the last pays the first): every balance
    ends where it began. The ids, in the users' order, are what the ceiling looks up."""
    users = spec.users
    clients = UserClients(dataclasses.replace(spec, channels=len(users)))
    ids = []
    try:
        for index in range(len(users)):
            pay_next = functools.partial(_pay_one_unit, users[(index + 1) % len(users)].username)
            payment = await clients.call(index, pay_next)
            if payment.status != PaymentStatus.SUCCEEDED:
                raise BenchError(f"a payment for the ceiling ended {payment.status}")
            ids.append(payment.payment_id)
    finally:
        await clients.close()
    return ids


async def _pay_one_unit(payee: str, client: AsyncClient) -> Payment:
    return await client.pay(payee, 1)


@dataclasses.dataclass(frozen=True)
class WindowSamples:
    """What was sampled over a measured window: CPU at its ends, memory all along."""

    first: procstat.CpuSample
    last: procstat.CpuSample
    seconds: float
    memory: procstat.MemorySeries


async def measured(
    spec: LoadSpec,
    processes: int,
    pids: Mapping[str, int],
    command: str = "",
    *,
    memory_interval_s: float | None = None,
) -> tuple[LoadResult, float, WindowSamples]:
    """Run the load (here, or in worker processes) while sampling the CPU of `pids`, and
    of every process named `command` that runs when the window opens; with an interval,
    the resident memory of `pids` too."""
    sampling = asyncio.create_task(_sample_window(spec, pids, command, memory_interval_s))
    if processes == 1:
        result = await run_load(spec)
    else:
        result = await _run_in_processes(spec, processes)
    return result, spec.stop_at - spec.measure_at, await sampling


async def _run_in_processes(spec: LoadSpec, processes: int) -> LoadResult:
    loop = asyncio.get_running_loop()
    # grpc must not be forked once it runs: workers are spawned, and started before the
    # schedule is set so that their start-up does not eat into the warm-up.
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(processes, mp_context=context) as pool:
        await asyncio.gather(*(loop.run_in_executor(pool, _ready, 1.0) for _ in range(processes)))
        shifted = time.monotonic() + START_DELAY_S - spec.start_at
        spec = dataclasses.replace(
            spec, start_at=spec.start_at + shifted, measure_at=spec.measure_at + shifted,
            stop_at=spec.stop_at + shifted,
        )
        parts = split(spec, processes)
        results = await asyncio.gather(
            *(loop.run_in_executor(pool, load_in_process, part) for part in parts)
        )
    merged = LoadResult()
    for part_result in results:
        merged.merge(part_result)
    return merged


def _ready(hold_s: float) -> bool:
    """Runs once in each worker: holding it a moment makes every worker take one."""
    time.sleep(hold_s)
    return True


async def _sample_window(
    spec: LoadSpec, pids: Mapping[str, int], command: str, memory_interval_s: float | None
) -> WindowSamples:
    await _sleep_until(spec.measure_at)
    memory = procstat.MemorySeries(dict(pids) if memory_interval_s else {})
    # Scanned now, not before the warm-up: a server's pool opens connections under load.
    pids = {**pids, **procstat.command_pids(command)}
    first, start = procstat.sample(pids), time.monotonic()
    if memory_interval_s:
        # On a fixed grid from the window's start, so that a slow wake-up does not drift.
        interval_s = procstat.memory_interval_s(spec.stop_at - spec.measure_at, memory_interval_s)
        while (
            start + len(memory.times_s) * interval_s < spec.stop_at
            and len(memory.times_s) < procstat.MAX_MEMORY_SAMPLES - 1
        ):
            await _sleep_until(start + len(memory.times_s) * interval_s)
            memory.add(time.monotonic() - start)
    await _sleep_until(spec.stop_at)
    if memory_interval_s:
        memory.add(time.monotonic() - start)
    return WindowSamples(first, procstat.sample(pids), time.monotonic() - start, memory)


async def _batch_totals_at(config: SuiteConfig, at: float) -> batches.Totals | None:
    """The gateway's batch totals when the window opens (that of the config's gateway)."""
    await _sleep_until(at)
    return await asyncio.to_thread(batches.read_totals, config.gateway.metrics)


async def _sleep_until(at: float) -> None:
    delay = at - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


async def settle(admin: BankAdmin, users: list[BenchUser]) -> dict[str, AccountState]:
    """The users' accounts once no hold is pending (or after SETTLE_TIMEOUT_S)."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while True:
        states = await snapshot(admin, users)
        if pending_minor(states) == 0 or time.monotonic() > deadline:
            return states
        await asyncio.sleep(SETTLE_POLL_S)


def cpu_per_payment(cpu: Mapping[str, Mapping[str, Any]], ok: int) -> dict[str, float] | None:
    if ok <= 0:
        return None
    return {name: round(v["cpu_s"] * 1000 / ok, 3) for name, v in cpu.items() if "cpu_s" in v}


def settings(args: argparse.Namespace, config: SuiteConfig) -> dict[str, Any]:
    return {
        "concurrency": args.concurrency,
        "processes": args.processes,
        "users": args.users,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "rate_per_s": args.rate,
        "amount_minor": args.amount,
        "batch_size": args.batch_size,
        "splits": args.splits,
        "timeout_s": args.timeout,
        "seed": args.seed,
        "ceiling": args.ceiling,
        "gateway": args.gateway or client_target(config.gateway.listen),
        "programs": split_names(args.programs) or ["gateway", *sorted(config.banks)],
        "bcrypt_rounds": config.gateway.bcrypt_rounds,
        "prepare_timeout_s": config.gateway.prepare_timeout_s,
        "memory_interval_s": args.memory_interval,
    }


if __name__ == "__main__":
    sys.exit(main())
