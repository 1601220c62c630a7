"""The relay under crashes: while payments run, the relay and the gateway are killed with
SIGKILL and the broker is restarted, and still every event the database holds reaches a
bound durable queue (at least once), and nothing reaches it that the database does not hold.

Real processes: the gateway and banks of a suite of their own (the kills must not disturb
the shared suite), the relay as `paygate-relay` in a subprocess, and the machine's RabbitMQ,
restarted with `rabbitmqctl stop_app` / `start_app` (the node keeps running; durable queues
and persistent messages survive, as they do a restart of the server). Skipped when no
broker answers or rabbitmqctl is not on this machine.
"""

from __future__ import annotations

import asyncio
import pathlib
import random
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator

import grpc
import pytest
from rabbitmq import Bound, by_message_id, require_rabbitmq, unique_exchange
from relay_helpers import stored_events
from suite import BIN, Suite, started_suite, tail
from users import TestUser, new_user

WORKLOAD_S = 14.0
DRAINED_WITHIN_S = 30.0
RABBITMQCTL_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
PAYMENT_TIMEOUT_S = 5.0


def rabbitmqctl(*args: str) -> None:
    subprocess.run(
        ["rabbitmqctl", *args], check=True, capture_output=True, timeout=RABBITMQCTL_TIMEOUT_S
    )


class RelayProcess:
    """`paygate-relay` on the suite's config, started again after each kill."""

    def __init__(self, suite: Suite, log: pathlib.Path) -> None:
        self._suite = suite
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        assert self._suite.config_path is not None
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [str(BIN / "paygate-relay"), "--config", str(self._suite.config_path),
                 "--name", f"crash{self.starts}"],
                cwd=self._suite.dir, env=self._suite.env(), stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        self.starts += 1

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(STOP_TIMEOUT_S)

    def stop(self) -> int:
        """SIGTERM, as supervisord stops it; its exit status."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(STOP_TIMEOUT_S)


def pay_until(stop: threading.Event, users: list[TestUser], seed: int) -> list[str]:
    """Payments between the users until `stop`; what failed other than by the faults."""
    chance = random.Random(seed)
    unexpected: list[str] = []
    while not stop.is_set():
        payer, payee = chance.sample(users, 2)
        try:
            payer.pay(payee, chance.randint(1, 50), timeout_s=PAYMENT_TIMEOUT_S)
        except grpc.RpcError as exc:
            # The gateway's restart: calls fail UNAVAILABLE (or time out) and are retried by
            # their clients; a refusal for lack of funds is a payment like another.
            if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                                  grpc.StatusCode.FAILED_PRECONDITION):  # fmt: skip
                unexpected.append(f"{exc.code()}: {exc.details()}")
            time.sleep(0.1)
    return unexpected


@pytest.fixture
def broker() -> Iterator[str]:
    url = require_rabbitmq()
    if shutil.which("rabbitmqctl") is None:
        pytest.skip("rabbitmqctl is not on this machine: the test restarts the broker with it")
    try:
        yield url
    finally:
        rabbitmqctl("start_app")  # whatever happened, the broker is left running


@pytest.mark.suite
def test_every_event_reaches_the_queue_through_kills_and_a_broker_restart(
    tmp_path: pathlib.Path, broker: str
) -> None:
    exchange = unique_exchange("crash")
    bound = asyncio.run(Bound.declare(broker, exchange, {"all": "#"}))
    try:
        with started_suite(tmp_path / "suite") as suite:
            assert suite.config_path is not None
            with suite.config_path.open("a") as config:
                config.write(
                    f'\n[relay]\namqp_url = "{broker}"\nexchange = "{exchange}"\n'
                    'metrics = "127.0.0.1:0"\nbatch_size = 10\npoll_interval_s = 0.05\n'
                    "timeout_s = 1.0\nlease_s = 3.0\nreconnect_max_s = 1.0\n"
                )
            relay = RelayProcess(suite, suite.dir / "var" / "log" / "relay.log")
            relay.start()
            with suite.gateway_channel_sync() as channel:
                users = [
                    new_user(suite, channel, bank, 1_000_00, "crash")
                    for bank in ("bank-a", "bank-b", "bank-c", "bank-a")
                ]
                stop = threading.Event()
                unexpected: list[str] = []
                workload = threading.Thread(
                    target=lambda: unexpected.extend(pay_until(stop, users, seed=11))
                )
                workload.start()
                try:
                    time.sleep(2.0)
                    relay.kill()  # in the middle of its batches
                    relay.start()
                    time.sleep(2.0)
                    suite.wait_restarted("gateway", suite.kill("gateway"))
                    time.sleep(1.0)
                    rabbitmqctl("stop_app")  # the relay's publications fail meanwhile
                    time.sleep(2.0)
                    rabbitmqctl("start_app")
                    time.sleep(2.0)
                    relay.kill()
                    time.sleep(0.5)
                    relay.start()
                    time.sleep(max(0.0, WORKLOAD_S - 9.5))
                finally:
                    stop.set()
                    workload.join(60)
            database = suite.config.gateway.database
            assert isinstance(database, pathlib.Path)
            drained = wait_drained(database)
            status = relay.stop()
            events = stored_events(database)
        received = asyncio.run(bound.drain("all"))
    finally:
        asyncio.run(bound.close())

    log = relay.log.read_text()
    assert drained, f"events left unpublished; tail of the relay's log:\n{tail(relay.log)}"
    assert status == 0, tail(relay.log)
    assert unexpected == []
    assert len(events) >= 40, "the workload made too few payments to show anything"
    copies = by_message_id(received)
    stored = {e.event_id for e in events}
    assert stored - copies.keys() == set(), "events the broker never got"
    assert copies.keys() - stored == set(), "messages of no event"
    # The faults happened as the relay saw them: the broker went away, and came back.
    assert '"msg":"broker unavailable; trying again"' in log
    assert log.count('"msg":"connected to the broker"') >= relay.starts + 1
    duplicates = sum(len(c) - 1 for c in copies.values())
    print(f"{len(events)} events, {len(received)} messages, {duplicates} delivered again")


def wait_drained(database: pathlib.Path) -> bool:
    deadline = time.monotonic() + DRAINED_WITHIN_S
    while time.monotonic() < deadline:
        if all(e.published for e in stored_events(database)):
            return True
        time.sleep(0.2)
    return False
