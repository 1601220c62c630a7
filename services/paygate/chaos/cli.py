"""paygate-chaos: a bank test of a running Paygate suite under kills, pauses and restarts.

    paygate-chaos --duration 60                      against `make run`'s suite (repo root)
    paygate-chaos --config paygate.toml --supervisor-dir /srv/paygate --duration 600

It creates funded users across all banks, runs concurrent clients that pay each other
(fresh idempotency keys, and retries of old ones) while a fault schedule kills, pauses and
restarts the suite's processes through its supervisord, then heals everything, lets the
gateway recover, and checks the claims listed in paygate.chaos.checker. It prints a
one-screen summary and writes results.json, history.json and chaos.png to --out.

Exit status: 0 when every check holds, 1 when one is violated, 2 when the run could not
be made (the suite is not reachable, bad flags).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import os
import pathlib
import random
import secrets
import signal
import sys
from collections.abc import Sequence
from typing import Any

import grpc

from paygate.chaos import report
from paygate.chaos.checker import CheckSettings, check_history
from paygate.chaos.connections import Connections
from paygate.chaos.faults import (
    CRASH_POINT,
    DEFAULT_KINDS,
    KINDS,
    FaultSchedule,
    ScheduleSettings,
    Supervisor,
    SupervisorError,
)
from paygate.chaos.history import History
from paygate.chaos.journals import JournalError, read_journals
from paygate.chaos.observer import Observer
from paygate.chaos.workload import Clock, Workload, WorkloadSettings
from paygate.common.config import CONFIG_ENV, ConfigError, SuiteConfig, read_config_file
from paygate.common.faults import PAYMENT_POINTS, POINTS

DEFAULT_DURATION_S = 60.0
DEFAULT_CLIENTS = 8
DEFAULT_USERS = 12
DEFAULT_FAULT_INTERVAL_S = 8.0
PAUSE_BEYOND_PREPARE_TIMEOUT_S = 3.0
SERVING_TIMEOUT_S = 60.0
HEAL_TIMEOUT_S = 90.0
RESOLVE_TIMEOUT_S = 120.0
REPLAY_TIMEOUT_S = 300.0
SAMPLE_INTERVAL_S = 0.5
PENDING_LIMIT_S = 10.0
DEFAULT_REPLAY_MAX = 5000
# The workload's shares: a flag, its default, what it is a share of.
SHARES = (
    ("--authorize-p", 0.25, "share of payments made as authorizations, which their payees"
     " capture in part, cancel or leave to expire"),
    ("--refund-p", 0.2, "share of payments their payees refund (a split payment: its first"
     " payee), in one to three parts sent at once, as soon as money moved"),
    ("--split-p", 0.15, "share of payments split among two or three payees, one at each"
     " other bank first, all paid or none (with at least 3 users)"),
    ("--batch-p", 0.1, "share of a client's steps that pay two to four new payments of one"
     " payer in one BatchCreatePayments"),
)  # fmt: skip
# How long after an indefinite answer the gateway may still decide that payment, beyond
# the call's own deadline and decided_within_s (see checker: totals during the run).
SETTLE_MARGIN_S = 5.0
MAX_GATEWAYS = 16


class ChaosError(Exception):
    """The run could not be made; reported as `error: ...`, exit status 2."""


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = read_config_file(args.config, base=args.supervisor_dir.resolve())
        kinds = fault_kinds(args, config)
        return asyncio.run(run(args, config, kinds))
    except (ChaosError, SupervisorError, OSError, ConfigError, JournalError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except grpc.aio.AioRpcError as error:
        # Setup calls and the final listing are not part of the history: no verdict.
        print(
            f"error: a call to the suite failed: {error.code().name} {error.details()}",
            file=sys.stderr,
        )
        return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="paygate-chaos",
        description="Check a running Paygate suite under faults (Jepsen's bank test).",
    )
    add = parser.add_argument
    add(
        "--duration",
        type=positive,
        default=DEFAULT_DURATION_S,
        metavar="SECONDS",
        help=f"how long the clients pay and faults happen (default {DEFAULT_DURATION_S:.0f})",
    )
    add(
        "--clients",
        type=positive_int,
        default=DEFAULT_CLIENTS,
        help=f"concurrent clients (default {DEFAULT_CLIENTS})",
    )
    add(
        "--users",
        type=positive_int,
        default=DEFAULT_USERS,
        help=f"funded users, spread over the banks (default {DEFAULT_USERS}; at least 2)",
    )
    add("--seed", type=int, default=None, help="random seed (default: a random one, printed)")
    add(
        "--config",
        default=os.environ.get(CONFIG_ENV) or None,
        metavar="TOML",
        help=f"the suite's config file (default ${CONFIG_ENV}, else the built-in defaults)",
    )
    add(
        "--supervisor-conf",
        type=pathlib.Path,
        default=pathlib.Path("supervisord.conf"),
        metavar="CONF",
        help="the suite's supervisord.conf (default ./supervisord.conf)",
    )
    add(
        "--supervisor-dir",
        type=pathlib.Path,
        default=pathlib.Path.cwd(),
        metavar="DIR",
        help="the directory the suite's supervisord was started from (default: here); "
        "relative paths of the config resolve against it",
    )
    add(
        "--out",
        type=pathlib.Path,
        default=None,
        metavar="DIR",
        help="where to write results (default var/chaos/<UTC time>)",
    )
    add(
        "--gateways",
        type=gateway_map,
        default=None,
        dest="gateway_map",
        metavar="PROGRAM=IP:PORT,...",
        help="the suite's gateway programs and their addresses, when it runs several "
        "(default: the program 'gateway' at the config's address)",
    )
    add("--no-faults", action="store_true", help="run the workload without any fault")
    add(
        "--fault-interval",
        type=positive,
        default=DEFAULT_FAULT_INTERVAL_S,
        metavar="SECONDS",
        help=f"mean time between faults (default {DEFAULT_FAULT_INTERVAL_S:.0f})",
    )
    add(
        "--faults",
        default=",".join(DEFAULT_KINDS),
        metavar="KINDS",
        help=f"comma-separated fault kinds among {', '.join(KINDS)} (default: all but "
        f"{CRASH_POINT}, which --crash-points adds)",
    )
    add(
        "--crash-points",
        default="",
        metavar="POINTS",
        help="comma-separated crash points to arm, or 'all' (every point a payment passes);"
        " needs fault_injection = true",
    )
    add(
        "--replay-max",
        type=positive_int,
        default=DEFAULT_REPLAY_MAX,
        metavar="N",
        help=f"most keys asked again after recovery (default {DEFAULT_REPLAY_MAX})",
    )
    for flag, default, what in SHARES:
        add(flag, type=probability, default=default, metavar="P",
            help=f"{what} (default {default})")  # fmt: skip
    return parser


def probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 1")
    return value


def positive(text: str) -> float:
    value = float(text)
    if not 0 < value < 10**7:
        raise argparse.ArgumentTypeError(f"expected a positive number, not {text}")
    return value


def positive_int(text: str) -> int:
    value = int(text)
    if not 0 < value <= 10_000:
        raise argparse.ArgumentTypeError(f"expected an integer from 1 to 10000, not {text}")
    return value


def gateway_map(text: str) -> dict[str, str]:
    """ "gateway-1=127.0.0.1:50051,gateway-2=127.0.0.1:50052" -> {program: address}."""
    pairs = [part.partition("=") for part in text.split(",") if part]
    if not pairs or any(not name or not sep or not address for name, sep, address in pairs):
        raise argparse.ArgumentTypeError("expected PROGRAM=IP:PORT[,PROGRAM=IP:PORT...]")
    if len(pairs) > MAX_GATEWAYS:
        raise argparse.ArgumentTypeError(f"at most {MAX_GATEWAYS} gateways")
    return {name: address for name, _, address in pairs}


def fault_kinds(args: argparse.Namespace, config: SuiteConfig) -> tuple[str, ...]:
    if args.users < 2:
        raise ChaosError("--users must be at least 2")
    kinds = tuple(k for k in args.faults.split(",") if k)
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ChaosError(f"unknown fault kinds {sorted(unknown)}; known: {', '.join(KINDS)}")
    points = crash_point_list(args.crash_points)
    if points and CRASH_POINT not in kinds:
        kinds += (CRASH_POINT,)
    if CRASH_POINT in kinds and not points:
        raise ChaosError(f"fault kind {CRASH_POINT} needs --crash-points")
    if points and not config.gateway.fault_injection:
        raise ChaosError("--crash-points needs a suite started with fault_injection = true")
    args.crash_point_list = points
    return () if args.no_faults else kinds


def crash_point_list(text: str) -> tuple[str, ...]:
    # 'all': every point its workload passes (it makes payments, not authorizations).
    points = PAYMENT_POINTS if text == "all" else tuple(p for p in text.split(",") if p)
    unknown = set(points) - set(POINTS)
    if unknown:
        raise ChaosError(f"unknown crash points {sorted(unknown)}; known: {', '.join(POINTS)}")
    return points


def settings_json(
    args: argparse.Namespace, config: SuiteConfig, kinds: tuple[str, ...], seed: int
) -> dict[str, Any]:
    return {
        "seed": seed,
        "duration_s": args.duration,
        "clients": args.clients,
        "users": args.users,
        "fault_interval_s": args.fault_interval,
        "fault_kinds": list(kinds),
        "crash_points": list(args.crash_point_list),
        "authorize_p": args.authorize_p,
        "refund_p": args.refund_p,
        "split_p": args.split_p,
        "batch_p": args.batch_p,
        "pause_s": pause_s(config),
        "gateways": args.gateway_map or {"gateway": config.gateway.listen},
        "started_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def decided_within_s(config: SuiteConfig) -> float:
    """How long a payment may stay undecided: its prepare phase, or, when its gateway died,
    until the lease expires and the next recovery pass (of any gateway) takes it over."""
    gateway = config.gateway
    return max(gateway.prepare_timeout_s, gateway.effective_lease_s + gateway.recovery_interval_s)


def pause_s(config: SuiteConfig) -> float:
    return config.gateway.prepare_timeout_s + PAUSE_BEYOND_PREPARE_TIMEOUT_S


async def run(args: argparse.Namespace, config: SuiteConfig, kinds: tuple[str, ...]) -> int:
    seed = args.seed if args.seed is not None else secrets.randbelow(2**31)
    settings = settings_json(args, config, kinds, seed)
    history = History()
    conn = Connections(config, args.gateway_map)
    try:
        if not await conn.wait_serving(conn.programs, SERVING_TIMEOUT_S):
            raise ChaosError(
                f"the suite at {config.gateway.listen} is not serving (or does not trust "
                f"{config.certs_dir / 'ca.pem'}); check --config and --supervisor-dir"
            )
        await experiment(args, config, kinds, random.Random(seed), conn, history)
    finally:
        await conn.close()
    call_timeout_s = WorkloadSettings(clients=1, users=2).call_timeout_s
    result = check_history(
        history,
        CheckSettings(
            pending_limit_s=PENDING_LIMIT_S,
            indefinite_settle_s=call_timeout_s + decided_within_s(config) + SETTLE_MARGIN_S,
        ),
    )
    data = report.results(history, result, settings)
    out = args.out or pathlib.Path("var", "chaos", settings["started_at"].replace(":", ""))
    files = report.write(out, history, data)
    print(report.summary(data, history, files))
    return 0 if result.valid else 1


async def experiment(
    args: argparse.Namespace,
    config: SuiteConfig,
    kinds: tuple[str, ...],
    rng: random.Random,
    conn: Connections,
    history: History,
) -> None:
    """Set up, run under faults, heal, resolve, settle, replay, and read the gateway's view."""
    clock = Clock()
    workload = Workload(
        conn,
        WorkloadSettings(
            clients=args.clients,
            users=args.users,
            authorize_p=args.authorize_p,
            refund_p=args.refund_p,
            split_p=args.split_p,
            batch_p=args.batch_p,
        ),
        history,
        clock,
        tag=secrets.token_hex(3),
    )
    progress(f"creating {args.users} users")
    await workload.create_users()
    clock.reset()
    progress(
        f"running {args.clients} clients for {args.duration:.0f} s, faults: "
        f"{', '.join(kinds) or 'none'}"
    )
    observer = Observer(conn, history, clock)
    supervisor = Supervisor(args.supervisor_conf.resolve(), args.supervisor_dir.resolve())
    schedule = FaultSchedule(
        supervisor,
        conn,
        ScheduleSettings(
            interval_s=args.fault_interval,
            pause_s=pause_s(config),
            kinds=kinds,
            crash_points=args.crash_point_list,
        ),
        config.var_dir,
        random.Random(rng.random()),
        clock,
        history,
        progress,
    )
    stop, sampling = asyncio.Event(), asyncio.Event()
    sampler = asyncio.create_task(observer.sample_until(sampling, SAMPLE_INTERVAL_S))
    try:
        await run_for(
            args.duration,
            stop,
            [
                *(workload.client(random.Random(rng.random()), stop) for _ in range(args.clients)),
                *([schedule.run(stop)] if kinds else []),
            ],
        )
        history.run_end_s = clock.now()
    finally:
        progress("healing: resuming, disarming, starting what is stopped")
        healed = await schedule.heal(HEAL_TIMEOUT_S)
    if not healed:
        sampling.set()
        await sampler
        raise ChaosError("the suite did not serve again after healing")
    progress("retrying every key that has no definite answer yet")
    await workload.resolve(RESOLVE_TIMEOUT_S)
    history.recovered_s = clock.now()
    sampling.set()
    await sampler
    progress("waiting for the holds to settle")
    await observer.wait_settled(PENDING_LIMIT_S)
    progress("asking keys again")
    await workload.replay(args.replay_max, rng, REPLAY_TIMEOUT_S)
    progress("listing payments at the gateway")
    history.gateway_payments = await workload.gateway_payments()
    history.gateway_refunds = await workload.gateway_refunds(history.gateway_payments)
    history.gateway_events = await workload.gateway_events()
    history.events_read = True
    splits = {p.payment_id for p in history.gateway_payments if p.splits}
    refunds = [r.refund_id for r in history.gateway_refunds if r.payment_id in splits]
    progress(
        f"reading the banks' journals of {len(splits)} split payments and their"
        f" {len(refunds)} refunds"
    )
    history.journal = await read_journals(config, history.users, [*splits, *refunds])
    history.journal_read = True


def progress(text: str) -> None:
    """A line on standard error, so that a long run shows where it is."""
    now = datetime.datetime.now().strftime("%H:%M:%S")
    print(f"[{now}] {text}", file=sys.stderr, flush=True)


async def run_for(duration_s: float, stop: asyncio.Event, jobs: list[Any]) -> None:
    """Run the jobs until `duration_s` passes or SIGINT/SIGTERM; let each finish its step."""
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    tasks = [asyncio.create_task(job) for job in jobs]
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=duration_s)
        stop.set()
        await asyncio.gather(*tasks)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


if __name__ == "__main__":
    sys.exit(main())
