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
from users import new_user, unique_name

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
