"""Suite tests of the bank servers: health and reflection (which tests/test_attach.py also
runs against a suite it attaches to), and a bank's state surviving SIGKILL and supervisord's
restart. (The operator's RPCs and who may call what are tested in-process:
tests/inproc/test_inproc_banks.py.)"""

from __future__ import annotations

import signal
import uuid

import grpc
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from suite import BANKS, Suite

pytestmark = pytest.mark.suite

BANK_SERVICE = "paygate.bank.v1.BankService"
HEALTH_SERVICE = "grpc.health.v1.Health"
REFLECTION_SERVICE = "grpc.reflection.v1alpha.ServerReflection"
RPC_TIMEOUT_S = 5.0


def reference() -> str:
    return f"test-{uuid.uuid4()}"


@pytest.mark.parametrize("bank_id", BANKS)
@pytest.mark.parametrize("service", ["", BANK_SERVICE])
def test_bank_reports_serving(suite: Suite, bank_id: str, service: str) -> None:
    assert suite.health(bank_id, service) == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize("bank_id", BANKS)
def test_bank_health_of_unknown_service_is_not_found(suite: Suite, bank_id: str) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        suite.health(bank_id, "no.such.Service")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("bank_id", BANKS)
def test_bank_reflection_lists_its_services(suite: Suite, bank_id: str) -> None:
    with suite.bank_channel_sync(bank_id) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        requests = iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        responses = list(stub.ServerReflectionInfo(requests, timeout=RPC_TIMEOUT_S))
    assert len(responses) == 1
    names = {service.name for service in responses[0].list_services_response.service}
    assert names == {BANK_SERVICE, HEALTH_SERVICE, REFLECTION_SERVICE}


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
