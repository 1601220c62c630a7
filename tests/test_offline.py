"""Offline payments against the real suite: queued while the gateway is away, delivered once.

Every client here is a separate process (the `paygate` CLI, or a small script over the
library), so that a client can really be killed. Each test has its own XDG_CONFIG_HOME
(the session) and XDG_STATE_HOME (the outbox file). A test that stops the gateway starts
it again in a `finally` block, so that a failure here does not break the tests after it.
"""

from __future__ import annotations

import collections
import json
import pathlib
import re
import subprocess
import sys
import time
from collections.abc import Iterator

import grpc
import pytest
from paygate.gen.paygate.v1 import gateway_pb2 as pb
from suite import BIN, GATEWAY, Suite
from users import PASSWORD, RPC_TIMEOUT_S, TestUser, new_user

pytestmark = pytest.mark.suite

CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
]
PROCESS_TIMEOUT_S = 60.0
POLL_S = 0.2
QUEUED = re.compile(r"^queued payment #(\d+) to (\S+) (\S+) USD \(key (\S+)\)", re.M)
DELIVERED = re.compile(
    r"^delivered #(\d+) to (\S+) (\S+) USD: payment (\S+) SUCCEEDED \(key (\S+), (\d+) attempt",
    re.M,
)
FAILED = re.compile(
    r"^failed #(\d+) to (\S+) (\S+) USD: (?:[^\n]* )?\[(\w+)\] \(key (\S+), (\d+) attempt", re.M
)

# One client process of test 4: queue `count` payments through the library, print each key.
QUEUE_SCRIPT = """
import sys
from paygate.client import Client, Outbox, QueuedPayment
target, ca, outbox, user, payee, first, count = sys.argv[1:]
token = sys.stdin.readline().strip()
with Client(target, ca_cert=ca, access_token=token, username=user, outbox=Outbox(outbox),
            timeout_s=2.0) as client:
    for amount in range(int(first), int(first) + int(count)):
        result = client.pay(payee, amount, queue_if_offline=True)
        assert isinstance(result, QueuedPayment), result
        print(result.idempotency_key, amount, flush=True)
"""


@pytest.fixture
def channel(suite: Suite) -> Iterator[grpc.Channel]:
    creds = grpc.ssl_channel_credentials(suite.config.certs_dir.joinpath("ca.pem").read_bytes())
    with grpc.secure_channel(suite.gateway_target, creds, options=CHANNEL_OPTIONS) as ch:
        yield ch


class PaygateCli:
    """`paygate` as one user runs it: their own session and outbox directories."""

    def __init__(self, suite: Suite, home: pathlib.Path, user: TestUser) -> None:
        self.suite = suite
        self.user = user
        self.env = suite.env(home / "config")
        self.env["XDG_STATE_HOME"] = str(home / "state")
        self.outbox = home / "state" / "paygate" / "outbox.db"
        self.session_file = home / "config" / "paygate" / "session.json"
        self.ok("login", user.username, "--password-stdin", input=f"{PASSWORD}\n")

    def run(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return self.suite.cli("paygate", "--timeout", "3", *args, input=input, env=self.env)

    def ok(self, *args: str, input: str | None = None) -> str:
        result = self.run(*args, input=input)
        assert result.returncode == 0, f"paygate {args}: {result.stdout}{result.stderr}"
        return result.stdout

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [str(BIN / "paygate"), "--timeout", "3", *args],
            cwd=self.suite.dir, env=self.env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )

    def queue_offline(self, payee: TestUser, amount: str) -> str:
        """Pay with --queue-if-offline while the gateway is away; returns the key."""
        out = self.ok("pay", "--queue-if-offline", payee.username, amount)
        match = QUEUED.search(out)
        assert match is not None, out
        assert (match.group(2), match.group(3)) == (payee.username, amount)
        return match.group(4)

    def queue_lines(self) -> list[str]:
        return [line for line in self.ok("queue").splitlines() if line.startswith("#")]

    def head_attempts(self) -> int:
        """The attempts of the oldest payment in `paygate queue`."""
        fields = self.queue_lines()[0].split()
        return int(fields[fields.index("attempts") + 1])


def stop_gateway(suite: Suite) -> None:
    result = suite.supervisorctl("stop", GATEWAY)
    assert result.returncode == 0, result.stdout + result.stderr
    assert suite.pid(GATEWAY) == 0


def start_gateway(suite: Suite) -> None:
    suite.supervisorctl("start", GATEWAY)  # a no-op when it already runs
    suite.wait_serving(GATEWAY)


def delivered(output: str) -> dict[str, str]:
    """key -> payment id of each `delivered` line, checking that no key is reported twice."""
    keys = [(m.group(5), m.group(4)) for m in DELIVERED.finditer(output)]
    assert len({key for key, _ in keys}) == len(keys), output
    return dict(keys)


def all_payments(user: TestUser) -> list[pb.Payment]:
    payments: list[pb.Payment] = []
    token = ""
    while True:
        page = user.list_payments(page_size=100, page_token=token)
        payments += page.payments
        token = page.next_page_token
        if not token:
            return payments


def wait_for(check, timeout_s: float = 20.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not (result := check()):
        assert time.monotonic() < deadline, f"not within {timeout_s} s: {check}"
        time.sleep(POLL_S)
    return result


def test_payments_queued_while_the_gateway_is_stopped_are_delivered_once_after_a_client_crash(
    suite: Suite, channel: grpc.Channel, tmp_path: pathlib.Path
) -> None:
    alice = new_user(suite, channel, "bank-a", 100_00, "alice")
    bob = new_user(suite, channel, "bank-b", 0, "bob")
    cli = PaygateCli(suite, tmp_path, alice)
    try:
        stop_gateway(suite)
        keys = [cli.queue_offline(bob, amount) for amount in ("1.00", "2.00", "3.00")]
        assert len(set(keys)) == 3
        assert [line.split()[3] for line in cli.queue_lines()] == ["queued"] * 3

        # A delivery process waits for the gateway, and is killed before it comes back.
        tried = cli.head_attempts()
        waiter = cli.popen("queue", "sync", "--wait", "60")
        try:
            # Its attempts show in the queue: the oldest payment has been tried again.
            wait_for(lambda: cli.head_attempts() > tried)
        finally:
            waiter.kill()
            waiter.communicate(timeout=PROCESS_TIMEOUT_S)  # reaps it and closes its pipes
        assert waiter.returncode == -9
        assert bob.bank_account().balance == 0  # nothing reached the banks
    finally:
        start_gateway(suite)

    out = cli.ok("queue", "sync")  # the restarted client
    sent = delivered(out)
    assert sorted(sent) == sorted(keys), out
    assert "no queued payments left" in out
    assert bob.bank_account().balance == 6_00
    assert alice.bank_account().balance == 94_00
    payments = all_payments(alice)
    assert sorted(p.payment_id for p in payments) == sorted(sent.values())
    assert [line.split()[3] for line in cli.queue_lines()] == ["succeeded"] * 3
    # Nothing is left to send, and a second sync sends nothing again.
    assert cli.ok("queue", "sync") == "nothing to send\n"
    assert bob.bank_account().balance == 6_00


def test_a_payment_whose_answer_was_lost_is_delivered_once(
    suite: Suite, channel: grpc.Channel, tmp_path: pathlib.Path
) -> None:
    alice = new_user(suite, channel, "bank-a", 50_00, "alice")
    bob = new_user(suite, channel, "bank-c", 0, "bob")
    cli = PaygateCli(suite, tmp_path, alice)
    old_pid = suite.pid(GATEWAY)
    suite.arm_fault(GATEWAY, "gateway.after_commits")
    try:
        # The gateway commits at both banks, then kills itself before it answers.
        key = cli.queue_offline(bob, "7.00")
        suite.wait_restarted(GATEWAY, old_pid)
    finally:
        start_gateway(suite)
    assert bob.bank_account().balance == 7_00  # the money moved, the client was not told

    out = cli.ok("queue", "sync")
    sent = delivered(out)
    assert list(sent) == [key], out
    assert "(key " + key + ", 2 attempt(s), replayed)" in out  # made by the first attempt
    assert bob.bank_account().balance == 7_00  # and not a second time
    assert alice.bank_account().balance == 43_00
    assert [p.payment_id for p in all_payments(alice)] == [sent[key]]
    # The gateway replays the same payment for the key, to anyone who asks again.
    assert alice.pay(bob, 7_00, key=key).payment_id == sent[key]
    assert bob.bank_account().balance == 7_00


def test_a_queued_payment_refused_for_insufficient_funds_is_reported_failed_and_not_retried(
    suite: Suite, channel: grpc.Channel, tmp_path: pathlib.Path
) -> None:
    alice = new_user(suite, channel, "bank-a", 1_00, "alice")
    bob = new_user(suite, channel, "bank-b", 0, "bob")
    cli = PaygateCli(suite, tmp_path, alice)
    try:
        stop_gateway(suite)
        key = cli.queue_offline(bob, "5.00")  # attempt 1: no answer
    finally:
        start_gateway(suite)

    out = cli.ok("queue", "sync")
    failed = [(m.group(5), m.group(4), m.group(6)) for m in FAILED.finditer(out)]
    # Attempt 2 got the final answer; there was no third.
    assert failed == [(key, "INSUFFICIENT_FUNDS", "2")], out
    assert "insufficient funds in the payer's account [INSUFFICIENT_FUNDS]" in out  # in words
    assert cli.ok("queue", "sync") == "nothing to send\n"
    [line] = cli.queue_lines()
    assert line.split()[3:6] == ["failed", "attempts", "2"]
    assert line.endswith("[INSUFFICIENT_FUNDS]")
    assert alice.bank_account().balance == 1_00 and bob.bank_account().balance == 0
    # The gateway recorded one refused payment: one attempt reached it, none after.
    [refused] = all_payments(alice)
    assert (refused.status, refused.failure_reason) == (
        pb.PAYMENT_STATUS_FAILED, "INSUFFICIENT_FUNDS"
    )

    # Online, the same refusal is the answer of the first and only attempt.
    result = cli.run("pay", "--queue-if-offline", bob.username, "5.00")
    assert result.returncode == 1
    assert "[INSUFFICIENT_FUNDS]" in result.stderr
    last = cli.queue_lines()[-1].split()
    assert last[3:6] == ["failed", "attempts", "1"]


def test_a_hundred_payments_queued_by_four_processes_are_each_delivered_once(
    suite: Suite, channel: grpc.Channel, tmp_path: pathlib.Path
) -> None:
    alice = new_user(suite, channel, "bank-a", 1_000_00, "alice")
    bob = new_user(suite, channel, "bank-b", 0, "bob")
    cli = PaygateCli(suite, tmp_path, alice)
    token = json.loads(cli.session_file.read_text())["access_token"]
    ca = str(suite.config.certs_dir / "ca.pem")
    amounts = {}
    try:
        stop_gateway(suite)
        clients = [
            subprocess.Popen(
                [sys.executable, "-c", QUEUE_SCRIPT, suite.gateway_target, ca, str(cli.outbox),
                 alice.username, bob.username, str(100 + 25 * n), "25"],
                cwd=suite.dir, env=cli.env, text=True,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )
            for n in range(4)
        ]
        for client in clients:
            out, err = client.communicate(token + "\n", timeout=PROCESS_TIMEOUT_S)
            assert client.returncode == 0, err
            amounts.update(line.split() for line in out.splitlines())
    finally:
        start_gateway(suite)
    assert len(amounts) == 100
    total = sum(int(amount) for amount in amounts.values())

    # Three client processes deliver at once, sharing the outbox file.
    senders = [cli.popen("queue", "sync", "--wait", "30") for _ in range(3)]
    outputs = []
    for sender in senders:
        out, err = sender.communicate(timeout=PROCESS_TIMEOUT_S)
        assert sender.returncode == 0, err
        outputs.append(out)
    reported = collections.Counter(m.group(5) for o in outputs for m in DELIVERED.finditer(o))
    assert set(reported) == set(amounts) and set(reported.values()) == {1}
    assert bob.bank_account().balance == total
    assert alice.bank_account().balance == 1_000_00 - total
    payments = all_payments(alice)
    assert len(payments) == 100
    assert sorted(p.amount for p in payments) == sorted(int(a) for a in amounts.values())


def test_a_session_refused_while_offline_is_renewed_before_delivery_without_storing_the_password(
    suite: Suite, channel: grpc.Channel, tmp_path: pathlib.Path
) -> None:
    alice = new_user(suite, channel, "bank-a", 20_00, "alice")
    bob = new_user(suite, channel, "bank-b", 0, "bob")
    cli = PaygateCli(suite, tmp_path, alice)
    stale = json.loads(cli.session_file.read_text())["access_token"]
    # The token stops being accepted (as an expired one would) while the session file keeps it.
    alice.stub.Logout(
        pb.LogoutRequest(), metadata=[("authorization", f"Bearer {stale}")], timeout=RPC_TIMEOUT_S
    )
    key = cli.queue_offline(bob, "4.00")
    assert "(last error UNAUTHENTICATED)" in cli.queue_lines()[0]

    result = cli.run("queue", "sync", "--password-stdin", input=f"{PASSWORD}\n")
    assert result.returncode == 0, result.stderr
    assert "log in again as " + alice.username in result.stderr
    assert list(delivered(result.stdout)) == [key]
    assert bob.bank_account().balance == 4_00
    session = cli.session_file.read_text()
    assert json.loads(session)["access_token"] != stale
    for path in (cli.session_file, cli.outbox, cli.outbox.with_name("outbox.db-wal")):
        if path.exists():
            assert PASSWORD.encode() not in path.read_bytes()


def test_a_payment_queued_with_an_expired_session_is_sent_after_a_new_login(
    suite: Suite, channel: grpc.Channel, tmp_path: pathlib.Path
) -> None:
    alice = new_user(suite, channel, "bank-a", 20_00, "alice")
    bob = new_user(suite, channel, "bank-b", 0, "bob")
    cli = PaygateCli(suite, tmp_path, alice)
    session = json.loads(cli.session_file.read_text())
    # The token expires: the gateway refuses it, and the session file says so.
    alice.stub.Logout(
        pb.LogoutRequest(), metadata=[("authorization", f"Bearer {session['access_token']}")],
        timeout=RPC_TIMEOUT_S,
    )
    session["expire_time"] = "2001-01-01T00:00:00+00:00"
    cli.session_file.write_text(json.dumps(session))
    assert cli.run("balance").returncode == 1  # not logged in any more
    key = cli.queue_offline(bob, "3.00")  # but the payment is kept

    result = cli.run("queue", "sync", "--password-stdin", input=f"{PASSWORD}\n")
    assert result.returncode == 0, result.stderr
    assert "your session has expired: log in again as " + alice.username in result.stderr
    assert list(delivered(result.stdout)) == [key]
    assert bob.bank_account().balance == 3_00
    assert "balance: 17.00 USD" in cli.ok("balance")
