"""Suite tests of the gateway that need its process: its log lines, and surviving SIGKILL.

What the gateway answers (accounts, login, sessions, every bad input, who may call what,
health, reflection, TLS) is tested in-process: tests/inproc/test_inproc_gateway.py.
Every test makes its own users and accounts, so the tests share one suite safely.
"""

from __future__ import annotations

import json
import secrets
import signal
import time
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from gateway_calls import RPC_TIMEOUT_S, balance, bearer, failure, login, register
from paygate.gen.paygate.v1 import gateway_pb2 as pb
from paygate.gen.paygate.v1 import gateway_pb2_grpc as pbg
from suite import GATEWAY, Suite
from users import error_reason, new_user, unique_name

pytestmark = pytest.mark.suite

GATEWAY_SERVICE = "paygate.v1.GatewayService"
LOG_WAIT_S = 5.0
CODE = grpc.StatusCode


@pytest.fixture
def channel(suite: Suite) -> Iterator[grpc.Channel]:
    with suite.gateway_channel_sync() as ch:
        yield ch


@pytest.fixture
def stub(channel: grpc.Channel) -> pbg.GatewayServiceStub:
    return pbg.GatewayServiceStub(channel)


# Log lines -----------------------------------------------------------------------------------


def find_field(value: Any, key: str) -> Any:
    """The value of `key` anywhere in a parsed JSON line (top level or nested), or None."""
    if isinstance(value, dict):
        if key in value:
            return value[key]
        for inner in value.values():
            found = find_field(inner, key)
            if found is not None:
                return found
    return None


def rpc_lines(suite: Suite, method: str, mentioning: str, count: int) -> list[dict[str, Any]]:
    """The gateway's JSON log lines for `method` that mention `mentioning`, once there are
    at least `count` of them (they are written as the calls end)."""
    deadline = time.monotonic() + LOG_WAIT_S
    while True:
        lines = []
        for text in suite.log_path(GATEWAY).read_text(errors="replace").splitlines():
            if mentioning in text and text.startswith("{"):
                line = json.loads(text)
                if line.get("method") == f"/{GATEWAY_SERVICE}/{method}":
                    lines.append(line)
        if len(lines) >= count or time.monotonic() > deadline:
            return lines
        time.sleep(0.1)


def assert_call_line(line: dict[str, Any], code: str) -> None:
    assert line["code"] == code
    assert isinstance(line["duration_ms"], int | float) and line["duration_ms"] >= 0


def test_log_has_one_line_per_call_and_no_secrets(
    suite: Suite, stub: pbg.GatewayServiceStub
) -> None:
    name = unique_name("log")
    password = f"pw-{secrets.token_hex(16)}"
    wrong_password = f"wrong-{secrets.token_hex(16)}"
    register(stub, name, suite.admin_open_account("bank-a", 5_00), password=password)
    token = login(stub, name, password)
    failure(login, stub, name, wrong_password)
    balance(stub, token)

    (registered,) = rpc_lines(suite, "Register", name, 1)
    assert_call_line(registered, "OK")
    logins = rpc_lines(suite, "Login", name, 2)
    assert sorted(line["code"] for line in logins) == ["OK", "UNAUTHENTICATED"]
    for line in logins:
        assert_call_line(line, line["code"])
    (balance_line,) = rpc_lines(suite, "GetBalance", name, 1)
    assert_call_line(balance_line, "OK")

    text = suite.log_path(GATEWAY).read_text(errors="replace")
    for secret in (password, wrong_password, token):
        assert secret not in text


def test_log_line_of_a_payment_has_amount_and_idempotency_key(
    suite: Suite, channel: grpc.Channel
) -> None:
    payer = new_user(suite, channel, "bank-a", 50_00, "logpayer")
    payee = new_user(suite, channel, "bank-b", 0, "logpayee")
    key = f"log-{uuid.uuid4()}"
    payer.pay(payee, 12_34, key=key)

    (line,) = rpc_lines(suite, "CreatePayment", key, 1)
    assert_call_line(line, "OK")
    assert find_field(line, "amount") == 12_34
    assert find_field(line, "idempotency_key") == key
    text = suite.log_path(GATEWAY).read_text(errors="replace")
    assert payer.token not in text and payee.token not in text


def login_lines(suite: Suite) -> list[dict[str, Any]]:
    method = f"/{GATEWAY_SERVICE}/Login"
    lines = []
    for text in suite.log_path(GATEWAY).read_text(errors="replace").splitlines():
        if method in text:
            lines.append(dict(json.loads(text)))
    return lines


def test_a_login_name_that_is_no_user_is_never_logged(
    suite: Suite, stub: pbg.GatewayServiceStub
) -> None:
    """A password typed into the username field must not reach the log: a name is logged
    only once it names a user, else a fingerprint that ties attempts together."""
    name = unique_name("logname")
    register(stub, name, suite.admin_open_account("bank-a", 0))
    looks_like_a_name = f"hunter2-{secrets.token_hex(6)}"  # fits the username pattern
    does_not = f"Tr0ub4dor&3-{secrets.token_hex(6)}"
    before = len(login_lines(suite))
    for typed in (looks_like_a_name, looks_like_a_name, does_not):
        assert failure(login, stub, typed).code() == grpc.StatusCode.UNAUTHENTICATED
    assert failure(login, stub, name, "wrong password!").code() == (
        grpc.StatusCode.UNAUTHENTICATED
    )

    deadline = time.monotonic() + LOG_WAIT_S
    while len(lines := login_lines(suite)[before:]) < 4:
        assert time.monotonic() < deadline, "the logins were not logged"
        time.sleep(0.1)
    first, second, third, known = lines
    for line in (first, second, third):
        assert line["code"] == "UNAUTHENTICATED" and line["username"] == "<not a user>"
        assert "username" not in line["request"]
    assert first["username_fingerprint"] == second["username_fingerprint"]
    assert third["username_fingerprint"] != first["username_fingerprint"]
    assert known["username"] == name and known["code"] == "UNAUTHENTICATED"
    text = suite.log_path(GATEWAY).read_text(errors="replace")
    assert looks_like_a_name not in text and does_not not in text


def test_log_lines_of_payments_name_the_payment_its_status_and_a_replay(
    suite: Suite, channel: grpc.Channel
) -> None:
    payer = new_user(suite, channel, "bank-a", 10_00, "logpay")
    payee = new_user(suite, channel, "bank-b", 0, "logget")
    key, refused_key = f"log-{uuid.uuid4()}", f"log-{uuid.uuid4()}"
    payment = payer.pay(payee, 1_00, key=key)
    payer.pay(payee, 1_00, key=key)  # answered again
    with pytest.raises(grpc.RpcError) as caught:
        payer.pay(payee, 50_00, key=refused_key)
    assert error_reason(caught.value) == "INSUFFICIENT_FUNDS"

    first, again = rpc_lines(suite, "CreatePayment", key, 2)
    assert (first["code"], again["code"]) == ("OK", "OK")
    assert first["response"]["status"] == "PAYMENT_STATUS_SUCCEEDED"  # a name, not a number
    assert "replayed" not in first and again["replayed"] is True
    (refused,) = rpc_lines(suite, "CreatePayment", refused_key, 1)
    assert refused["code"] == "FAILED_PRECONDITION"
    assert refused["reason"] == "INSUFFICIENT_FUNDS" and refused["outcome"] == "failed"
    assert refused["payment_id"].startswith("pay_")

    # The bank's batch lines name the transactions they carry.
    def batch_line(method: str) -> dict[str, Any] | None:
        for text in suite.log_path("bank-a").read_text(errors="replace").splitlines():
            if payment.payment_id in text and f"/{method}" in text:
                return dict(json.loads(text))
        return None

    deadline = time.monotonic() + LOG_WAIT_S
    while (prepared := batch_line("PrepareBatch")) is None or batch_line("CommitBatch") is None:
        assert time.monotonic() < deadline, "no batch line names the payment"
        time.sleep(0.1)
    assert payment.payment_id in prepared["request"]["transaction_ids"]
    assert prepared["request"]["transactions"] >= 1


# Crash and restart ---------------------------------------------------------------------------


def test_users_and_sessions_survive_gateway_sigkill(suite: Suite) -> None:
    with suite.gateway_channel_sync() as channel:
        stub = pbg.GatewayServiceStub(channel)
        name = unique_name("crash")
        register(stub, name, suite.admin_open_account("bank-c", 6_00), bank_id="bank-c")
        token = login(stub, name)
        logged_out = login(stub, name)
        stub.Logout(pb.LogoutRequest(), metadata=bearer(logged_out), timeout=RPC_TIMEOUT_S)

    old_pid = suite.kill(GATEWAY, signal.SIGKILL)
    suite.wait_restarted(GATEWAY, old_pid, timeout_s=30)

    with suite.gateway_channel_sync() as channel:
        stub = pbg.GatewayServiceStub(channel)
        assert balance(stub, token).balance == 6_00
        assert failure(balance, stub, logged_out).code() == CODE.UNAUTHENTICATED
        assert balance(stub, login(stub, name)).balance == 6_00
        spare_account = suite.admin_open_account("bank-c", 0)
        taken = failure(register, stub, name, spare_account, bank_id="bank-c")
        assert taken.code() == CODE.ALREADY_EXISTS
