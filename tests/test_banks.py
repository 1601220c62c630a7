"""Suite tests of the bank servers that need their processes: a bank's state surviving
SIGKILL and supervisord's restart. (Health, reflection, the operator's RPCs and who may call
what are tested in-process: tests/inproc/test_inproc_banks.py.)"""

from __future__ import annotations

import signal
import uuid

import pytest
from grpc_health.v1 import health_pb2
from suite import Suite

pytestmark = pytest.mark.suite

BANK_SERVICE = "paygate.bank.v1.BankService"


def reference() -> str:
    return f"test-{uuid.uuid4()}"


def test_bank_state_survives_sigkill_and_restart(suite: Suite) -> None:
    number = suite.admin_open_account("bank-b", 40_00)
    ref = reference()
    suite.admin_deposit("bank-b", number, 2_25, ref)
    before = suite.bank_account("bank-b", number)
    assert before.balance == 42_25

    old_pid = suite.kill("bank-b", signal.SIGKILL)
    new_pid = suite.wait_restarted("bank-b", old_pid, timeout_s=30)

    assert new_pid != old_pid
    assert suite.health("bank-b", BANK_SERVICE) == health_pb2.HealthCheckResponse.SERVING
    assert suite.bank_account("bank-b", number) == before
    # The deposit's reference survived too: repeating it moves no money.
    replay = suite.admin_deposit("bank-b", number, 2_25, ref)
    assert replay.replayed
    assert replay.account.balance == 42_25
    # The other banks were not touched.
    for bank_id in ("bank-a", "bank-c"):
        assert suite.health(bank_id) == health_pb2.HealthCheckResponse.SERVING
