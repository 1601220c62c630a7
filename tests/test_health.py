"""Health that means something: a process whose database cannot take writes says NOT_SERVING;
a bank that is down does not make the gateway NOT_SERVING."""

from __future__ import annotations

import sqlite3
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2
from suite import Suite
from users import error_reason, new_user

pytestmark = pytest.mark.suite

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
WITHIN_S = 10.0


def wait_status(suite: Suite, program: str, status: int, timeout_s: float = WITHIN_S) -> None:
    deadline = time.monotonic() + timeout_s
    while (seen := suite.health(program)) != status:
        assert time.monotonic() < deadline, f"{program} stayed {seen}, expected {status}"
        time.sleep(0.2)


def test_gateway_is_not_serving_while_its_database_file_is_gone(suite: Suite) -> None:
    database = suite.config.gateway.database
    moved = database.with_name(database.name + ".moved")
    wait_status(suite, "gateway", SERVING)
    database.rename(moved)
    try:
        wait_status(suite, "gateway", NOT_SERVING)
    finally:
        moved.rename(database)
    wait_status(suite, "gateway", SERVING)


def test_bank_is_not_serving_while_its_database_is_locked(suite: Suite) -> None:
    wait_status(suite, "bank-b", SERVING)
    intruder = sqlite3.connect(suite.config.banks["bank-b"].database, isolation_level=None)
    intruder.execute("BEGIN IMMEDIATE")  # holds the only write lock
    try:
        wait_status(suite, "bank-b", NOT_SERVING)
        assert suite.health("gateway") == SERVING
    finally:
        intruder.execute("ROLLBACK")
        intruder.close()
    wait_status(suite, "bank-b", SERVING)


def test_a_bank_down_leaves_the_gateway_serving_for_other_banks(suite: Suite) -> None:
    with suite.gateway_channel_sync() as channel:
        alice = new_user(suite, channel, "bank-a", 10_00)
        bob = new_user(suite, channel, "bank-b", 0)
        carol = new_user(suite, channel, "bank-c", 0)
        assert suite.supervisorctl("stop", "bank-c").returncode == 0
        try:
            time.sleep(3)  # a few health rounds
            assert suite.health("gateway") == SERVING
            assert alice.pay(bob, 1_00).payment_id
            with pytest.raises(grpc.RpcError) as info:
                alice.pay(carol, 1_00)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            assert error_reason(info.value) == "BANK_UNAVAILABLE"  # down, not slow
        finally:
            suite.supervisorctl("start", "bank-c")
            suite.wait_serving("bank-c")
