"""The security boundary that needs processes: the login throttle (which outlives a gateway
restart), and a process refusing to start with a readable key. (Who may call a bank and what
a user can reach are tested in-process: tests/inproc/test_inproc_security.py.)

The adversarial fuzz test is in test_fuzz.py; the search for leaked secrets in
test_zz_no_secrets_leaked.py (it runs last, after every other test has used the suite).
"""

from __future__ import annotations

import pathlib
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator

import grpc
import pytest
from paygate.gen.paygate.v1 import gateway_pb2 as pb
from paygate.gen.paygate.v1 import gateway_pb2_grpc as pbg
from suite import BIN, Suite, load_gen_certs, started_suite
from users import PASSWORD, error_reason, new_user

pytestmark = pytest.mark.suite

RPC_TIMEOUT_S = 10.0


# The login throttle, on a suite of its own with a short window --------------------------

WINDOW_S = 4.0
PER_USER = 3
PER_ADDRESS = 10


@pytest.fixture(scope="module")
def throttled_suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    settings = {
        "login_failure_window_s": WINDOW_S,
        "login_max_failures_per_user": PER_USER,
        "login_max_failures_per_address": PER_ADDRESS,
    }
    with started_suite(tmp_path_factory.mktemp("throttle"), gateway_settings=settings) as suite:
        yield suite


def _login(stub: pbg.GatewayServiceStub, username: str, password: str) -> tuple[str, str]:
    try:
        stub.Login(pb.LoginRequest(username=username, password=password), timeout=RPC_TIMEOUT_S)
    except grpc.RpcError as exc:
        return exc.code().name, (exc.details() or "")
    return "OK", ""


def _shape(answer: tuple[str, str]) -> tuple[str, str]:
    """An answer with the wait time blanked, to compare answers about different names."""
    code, message = answer
    return code, "".join("N" if c.isdigit() else c for c in message)


def test_login_throttle_engages_and_releases_alike_for_known_and_unknown_names(
    throttled_suite: Suite,
) -> None:
    suite = throttled_suite
    with suite.gateway_channel_sync() as channel:
        known = new_user(suite, channel, "bank-a", 0, "known")
        stub = known.stub
        unknown = "unknown" + uuid.uuid4().hex[:8]
        histories = {}
        for name in (known.username, unknown):
            wrong = [_login(stub, name, "wrong password!") for _ in range(PER_USER)]
            throttled = _login(stub, name, PASSWORD)  # even the right password now waits
            histories[name] = [*wrong, throttled]
        assert [a[0] for a in histories[known.username]] == ["UNAUTHENTICATED"] * PER_USER + [
            "RESOURCE_EXHAUSTED"
        ]
        assert [_shape(a) for a in histories[known.username]] == [
            _shape(a) for a in histories[unknown]
        ], "the throttle must not reveal whether a username exists"
        assert "retry in" in histories[unknown][-1][1]

        # The throttle is on disk: a restarted gateway still enforces it.
        old_pid = suite.kill("gateway", signal.SIGKILL)
        suite.wait_restarted("gateway", old_pid)
        assert _login(stub, known.username, PASSWORD)[0] == "RESOURCE_EXHAUSTED"
        # ... and so is the session made before the restart.
        assert known.balance().currency == "USD"

        time.sleep(WINDOW_S + 0.5)
        assert _login(stub, known.username, PASSWORD) == ("OK", "")


def test_login_throttle_per_address(throttled_suite: Suite) -> None:
    suite = throttled_suite
    with suite.gateway_channel_sync() as channel:
        time.sleep(WINDOW_S + 0.5)  # start from a clean window
        user = new_user(suite, channel, "bank-b", 0, "addr")
        # Many names, each below its own limit, from one address.
        for i in range(PER_ADDRESS):
            assert _login(user.stub, f"guess{i}-{uuid.uuid4().hex[:6]}", "wrong password!")[0] == (
                "UNAUTHENTICATED"
            )
        assert _login(user.stub, user.username, PASSWORD)[0] == "RESOURCE_EXHAUSTED"
        time.sleep(WINDOW_S + 0.5)
        assert _login(user.stub, user.username, PASSWORD) == ("OK", "")


def test_throttled_answers_carry_a_reason(throttled_suite: Suite) -> None:
    suite = throttled_suite
    with suite.gateway_channel_sync() as channel:
        stub = pbg.GatewayServiceStub(channel)
        name = "nobody" + uuid.uuid4().hex[:8]
        for _ in range(PER_USER):
            _login(stub, name, "wrong password!")
        with pytest.raises(grpc.RpcError) as info:
            stub.Login(pb.LoginRequest(username=name, password="x" * 10), timeout=RPC_TIMEOUT_S)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error_reason(info.value) == "RESOURCE_EXHAUSTED"


@pytest.mark.parametrize(("program", "identity"), [("bank", "bank-a"), ("gateway", "gateway")])
def test_a_process_refuses_a_readable_key(
    tmp_path: pathlib.Path, program: str, identity: str
) -> None:
    load_gen_certs().generate(tmp_path / "certs")
    key = tmp_path / "certs" / f"{identity}-key.pem"
    key.chmod(0o640)
    config = tmp_path / "paygate.toml"
    config.write_text(
        'var_dir = "var"\ncerts_dir = "certs"\n'
        '[gateway]\nlisten = "127.0.0.1:0"\nmetrics = "127.0.0.1:0"\n'
        '[banks.bank-a]\nlisten = "127.0.0.1:0"\nmetrics = "127.0.0.1:0"\ndemo_accounts = ""\n'
    )
    command = [str(BIN / f"paygate-{program}"), "--config", str(config)]
    if program == "bank":
        command += ["--bank-id", "bank-a"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "refusing to start" in result.stderr
    assert f"chmod 600 {key}" in result.stderr
    assert "PRIVATE KEY" not in result.stderr
