"""Two gateways sharing one PostgreSQL database (ops/supervisord-postgres.conf).

A suite of its own: gateway-1, gateway-2 and the three banks, every process in a fresh
schema of the server at PAYGATE_TEST_POSTGRES_URL, the gateways sharing theirs. It runs the
repository's ops/supervisord-postgres.conf, with gateway-2's fixed ports (50052, 9152,
50152) replaced by free ones. Without a reachable server every test is skipped, with the reason.

What a user of two replicas relies on: a retry that lands on the other gateway gets the
same answer; a key in flight on one is IDEMPOTENCY_KEY_IN_USE on the other; a payment whose
gateway died after the commit decision is finished by the other gateway, once; a client
given both addresses keeps paying while one gateway is stopped; a freeze through one
gateway's admin port holds at the other at once; paygate-chaos killing
either gateway finds every payment exactly once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import pathlib
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from typing import TypeVar

import grpc
import pytest
from paygate.client import Client
from paygate.gen.paygate.v1 import admin_pb2 as apb
from paygate.gen.paygate.v1 import admin_pb2_grpc as apbg
from paygate.gen.paygate.v1 import gateway_pb2 as pb
from paygate.gen.paygate.v1 import gateway_pb2_grpc as pbg
from pgtest import Schemas, require_postgres
from suite import BANKS, GATEWAY, REPO, Suite, free_ports
from test_chaos import results, run_chaos
from users import PASSWORD, TestUser, error_reason, new_user

pytestmark = pytest.mark.suite

OPS_CONF = REPO / "ops" / "supervisord-postgres.conf"
GATEWAYS = ("gateway-1", "gateway-2")
START_MINOR, AMOUNT_MINOR = 100_00, 10_00
# The lease and a recovery interval (4 s in a suite, suite.SUITE_GATEWAY_TIMING; 8 s with
# the defaults) and a restart.
HANDOVER_WITHIN_S = 20.0
POLL_S = 0.2

T = TypeVar("T")


def supervisor_conf(folder: pathlib.Path) -> tuple[pathlib.Path, str]:
    """The ops config with gateway-2 on free ports and the repository's venv; its target."""
    listen_port, metrics_port, admin_port = free_ports(3)
    text = OPS_CONF.read_text()
    for fixed, free in (
        ("127.0.0.1:50052", listen_port),
        ("127.0.0.1:9152", metrics_port),
        ("127.0.0.1:50152", admin_port),
    ):
        assert fixed in text, f"{OPS_CONF} no longer runs gateway-2 on {fixed}"
        text = text.replace(fixed, f"127.0.0.1:{free}")
    text = text.replace("%(here)s/..", str(REPO))
    path = folder / "supervisord-postgres.conf"
    path.write_text(text)
    return path, f"127.0.0.1:{listen_port}"


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    schemas = Schemas(require_postgres())
    try:
        folder = tmp_path_factory.mktemp("suite-two-gateways")
        conf, second = supervisor_conf(folder)
        urls = {program: schemas.url_for(program).url for program in (GATEWAY, *BANKS)}
        started = Suite.start(
            folder,
            programs=(*BANKS, *GATEWAYS),
            database_urls=urls,
            supervisor_conf=conf,
            gateway_targets={"gateway-1": None, "gateway-2": second},
        )
        try:
            yield started
        finally:
            started.stop()
    finally:
        schemas.close()


@pytest.fixture
def channels(suite: Suite) -> Iterator[dict[str, grpc.Channel]]:
    opened = {program: suite.gateway_channel_sync(program) for program in GATEWAYS}
    try:
        yield opened
    finally:
        for channel in opened.values():
            channel.close()


def within(timeout_s: float, attempt: Callable[[], T]) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return attempt()
        except (AssertionError, grpc.RpcError):
            if time.monotonic() > deadline:
                raise
        time.sleep(POLL_S)


def on(user: TestUser, channel: grpc.Channel) -> TestUser:
    """The same user, with the same token, talking to another gateway."""
    return TestUser(
        user.suite, pbg.GatewayServiceStub(channel), user.username, user.bank_id,
        user.account_number, user.token,
    )  # fmt: skip


def pair(suite: Suite, channel: grpc.Channel) -> tuple[TestUser, TestUser]:
    return new_user(suite, channel, "bank-a", START_MINOR), new_user(suite, channel, "bank-b", 0)


def settled(user: TestUser) -> tuple[int, int, int]:
    account = user.bank_account()
    return account.balance, account.pending_debit, account.pending_credit


def test_a_retry_on_the_other_gateway_gets_the_same_answer(
    suite: Suite, channels: dict[str, grpc.Channel]
) -> None:
    alice, bob = pair(suite, channels["gateway-1"])
    key = uuid.uuid4().hex
    first = alice.pay(bob, AMOUNT_MINOR, key=key)
    again = on(alice, channels["gateway-2"]).pay(bob, AMOUNT_MINOR, key=key)
    assert again.SerializeToString() == first.SerializeToString()
    assert first.status == pb.PAYMENT_STATUS_SUCCEEDED
    assert settled(alice) == (START_MINOR - AMOUNT_MINOR, 0, 0)
    # The same key with other parameters is refused on either gateway.
    with pytest.raises(grpc.RpcError) as refused:
        on(alice, channels["gateway-2"]).pay(bob, AMOUNT_MINOR + 1, key=key)
    assert error_reason(refused.value) == "IDEMPOTENCY_KEY_MISMATCH"


def test_a_freeze_through_one_gateways_admin_port_holds_at_the_other_at_once(
    suite: Suite, channels: dict[str, grpc.Channel]
) -> None:
    alice, bob = pair(suite, channels["gateway-2"])
    with suite.gateway_admin_channel_sync() as admin_channel:  # gateway-1's admin port
        admin = apbg.AdminServiceStub(admin_channel)
        frozen = admin.FreezeUser(apb.FreezeUserRequest(username=alice.username), timeout=10)
        assert frozen.sessions_ended == 1
        with pytest.raises(grpc.RpcError) as revoked:
            alice.pay(bob, AMOUNT_MINOR)  # on gateway-2, with its token from gateway-2
        assert revoked.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as refused:
            alice.stub.Login(
                pb.LoginRequest(username=alice.username, password=PASSWORD), timeout=10
            )
        assert error_reason(refused.value) == "USER_FROZEN"
        admin.UnfreezeUser(apb.UnfreezeUserRequest(username=alice.username), timeout=10)
    login = alice.stub.Login(
        pb.LoginRequest(username=alice.username, password=PASSWORD), timeout=10
    )
    alice.token = login.access_token
    assert alice.pay(bob, AMOUNT_MINOR).status == pb.PAYMENT_STATUS_SUCCEEDED


def test_a_key_in_flight_on_one_gateway_is_in_use_on_the_other(
    suite: Suite, channels: dict[str, grpc.Channel]
) -> None:
    alice, bob = pair(suite, channels["gateway-1"])
    key = uuid.uuid4().hex
    # bob's bank is paused: gateway-1's payment waits in its prepare phase (up to 2 s).
    suite.kill("bank-b", signal.SIGSTOP)
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            first = pool.submit(alice.pay, bob, AMOUNT_MINOR, key=key)
            time.sleep(0.5)
            with pytest.raises(grpc.RpcError) as in_use:
                on(alice, channels["gateway-2"]).pay(bob, AMOUNT_MINOR, key=key)
            with pytest.raises(grpc.RpcError) as timed_out:
                first.result(timeout=10)
    finally:
        suite.kill("bank-b", signal.SIGCONT)
    assert in_use.value.code() == grpc.StatusCode.ABORTED
    assert error_reason(in_use.value) == "IDEMPOTENCY_KEY_IN_USE"
    assert timed_out.value.code() == grpc.StatusCode.UNAVAILABLE
    # The transient failure released the key: a retry on the other gateway pays, once.
    paid = within(10, lambda: on(alice, channels["gateway-2"]).pay(bob, AMOUNT_MINOR, key=key))
    assert paid.status == pb.PAYMENT_STATUS_SUCCEEDED
    within(10, lambda: _assert(settled(bob) == (AMOUNT_MINOR, 0, 0)))


def _assert(condition: bool) -> None:
    assert condition


def test_a_gateway_killed_after_its_commit_decision_is_finished_by_the_other(
    suite: Suite, channels: dict[str, grpc.Channel]
) -> None:
    alice, bob = pair(suite, channels["gateway-1"])
    key = uuid.uuid4().hex
    old_pid = suite.pid("gateway-1")
    armed = suite.arm_fault("gateway-1", "gateway.after_decision")
    try:
        with pytest.raises(grpc.RpcError) as died:
            alice.pay(bob, AMOUNT_MINOR, key=key)
        assert not armed.exists(), "gateway-1 never reached gateway.after_decision"
    finally:
        armed.unlink(missing_ok=True)
    assert died.value.code() == grpc.StatusCode.UNAVAILABLE
    # Keep gateway-1 down, so that only gateway-2 can finish the payment.
    within(10, lambda: _assert(suite.pid("gateway-1") not in (0, old_pid)))
    assert suite.supervisorctl("stop", "gateway-1").returncode == 0
    try:
        expected = ((START_MINOR - AMOUNT_MINOR, 0, 0), (AMOUNT_MINOR, 0, 0))
        within(HANDOVER_WITHIN_S, lambda: _assert((settled(alice), settled(bob)) == expected))
        retried = on(alice, channels["gateway-2"]).pay(bob, AMOUNT_MINOR, key=key)
        assert retried.status == pb.PAYMENT_STATUS_SUCCEEDED
        # Committed exactly once: one payment in the history, the money moved once.
        assert [
            p.payment_id for p in on(alice, channels["gateway-2"]).list_payments().payments
        ] == [retried.payment_id]
        assert settled(alice)[0] + settled(bob)[0] == START_MINOR
    finally:
        assert suite.supervisorctl("start", "gateway-1").returncode == 0
        suite.wait_serving("gateway-1")


def test_a_client_with_both_addresses_keeps_paying_while_one_gateway_is_stopped(
    suite: Suite, channels: dict[str, grpc.Channel]
) -> None:
    alice, bob = pair(suite, channels["gateway-2"])
    both = ",".join(suite.gateway_targets[program] for program in GATEWAYS)
    ca = suite.config.certs_dir / "ca.pem"
    with Client(both, ca_cert=ca, timeout_s=10) as client:
        client.login(alice.username, PASSWORD)
        for _ in range(4):
            assert client.pay(bob.username, 1_00).status == "SUCCEEDED"
        assert suite.supervisorctl("stop", "gateway-1").returncode == 0
        try:
            for _ in range(6):
                assert client.pay(bob.username, 1_00).status == "SUCCEEDED"
        finally:
            assert suite.supervisorctl("start", "gateway-1").returncode == 0
            suite.wait_serving("gateway-1")
        assert client.balance().available_minor == START_MINOR - 10 * 1_00
    assert settled(bob) == (10 * 1_00, 0, 0)


def test_a_watcher_resuming_on_alternating_gateways_sees_every_event_once(
    suite: Suite, channels: dict[str, grpc.Channel]
) -> None:
    """Payments through both gateways at once; a watcher of their payee that drops its
    stream every few events and resumes on the other gateway: it sees each event once, in
    sequence order, the same as ListEvents holds, one per payment ListPayments shows."""
    bob = new_user(suite, channels["gateway-1"], "bank-b", 0)
    payers = [new_user(suite, channels[GATEWAYS[i % 2]], ("bank-a", "bank-c")[i % 2],
                       START_MINOR) for i in range(4)]  # fmt: skip
    payments = 40
    credentials = grpc.ssl_channel_credentials(
        suite.config.certs_dir.joinpath("ca.pem").read_bytes()
    )

    def pay(n: int) -> None:
        payer = on(payers[n % len(payers)], channels[GATEWAYS[n % 2]])
        within(HANDOVER_WITHIN_S, lambda: payer.pay(bob, 1_00 + n, key=f"watch-{n}-{bob.username}"))

    async def watch() -> list[tuple[int, str]]:
        seen: list[tuple[int, str]] = []
        aio = {g: grpc.aio.secure_channel(suite.target(g), credentials) for g in GATEWAYS}
        try:
            turn = 0
            while len(seen) < payments:
                stub = pbg.GatewayServiceStub(aio[GATEWAYS[turn % 2]])
                after = seen[-1][0] if seen else 0
                stream = stub.WatchEvents(pb.WatchEventsRequest(starting_after=after),
                                          metadata=bob.metadata, timeout=60)  # fmt: skip
                for _ in range(1 + turn % 4):  # a few events, then drop the stream
                    message = await stream.read()
                    seen.append((message.event.sequence, message.event.event_id))
                    if len(seen) == payments:
                        break
                stream.cancel()
                turn += 1
        finally:
            for channel in aio.values():
                await channel.close()
        return seen

    async def run() -> list[tuple[int, str]]:
        watcher = asyncio.create_task(watch())
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            await asyncio.gather(*(asyncio.get_running_loop().run_in_executor(pool, pay, n)
                                   for n in range(payments)))  # fmt: skip
        return await asyncio.wait_for(watcher, HANDOVER_WITHIN_S)

    seen = asyncio.run(run())
    assert [n for n, _ in seen] == list(range(1, payments + 1))
    listed = bob.stub.ListEvents(pb.ListEventsRequest(page_size=100), metadata=bob.metadata,
                                 timeout=10).events  # fmt: skip
    assert [(e.sequence, e.event_id) for e in listed] == seen
    paid = {p.payment_id for p in bob.list_payments(page_size=100).payments}
    assert {e.payment.payment_id for e in listed} == paid and len(paid) == payments
    assert {e.type for e in listed} == {"payment.succeeded"}


def test_a_watcher_on_one_gateway_sees_a_payment_made_through_the_other_within_a_second(
    suite: Suite, channels: dict[str, grpc.Channel]
) -> None:
    alice, bob = pair(suite, channels["gateway-1"])
    alice.pay(bob, 1_00)
    stream = pbg.GatewayServiceStub(channels["gateway-2"]).WatchEvents(
        pb.WatchEventsRequest(starting_after=1), metadata=bob.metadata, timeout=30
    )
    try:
        paid = alice.pay(bob, 2_00)  # through gateway-1
        answered = time.monotonic()
        event = next(stream).event  # from gateway-2
        assert time.monotonic() - answered < 1.0
        assert (event.sequence, event.payment.payment_id) == (2, paid.payment_id)
    finally:
        stream.cancel()


def test_chaos_killing_either_gateway_is_valid(suite: Suite, tmp_path: pathlib.Path) -> None:
    out = tmp_path / "out"
    gateways = ",".join(f"{p}={suite.gateway_targets[p]}" for p in GATEWAYS)
    done = run_chaos(
        suite, out, "--duration", "40", "--fault-interval", "4", "--seed", "11",
        "--faults", "kill-gateway,kill-bank", "--gateways", gateways,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    report = results(out)
    assert report["valid"] is True, report
    killed = {f["target"] for f in report["faults"] if f["kind"] == "kill-gateway"}
    assert killed == set(GATEWAYS), "each gateway was killed at least once"
