"""Two-factor login (TOTP, RFC 6238) in-process: enrolment, login with a code, codes used
once, drift, recovery codes, the throttle, turning it off.

The codes are computed here by a small RFC 6238 implementation of the test's own (hmac and
struct), from the secret EnrollTotp returned; the gateway's TOTP clock is set by the test
(tests/inproc/totp_clock.py), so that no test waits for a 30-second step.
"""

from __future__ import annotations

import base64
import pathlib
from collections.abc import Iterator

import grpc
import pytest
from gateway_calls import RPC_TIMEOUT_S, balance, bearer, failure, login, register
from paygate.common.database_url import PostgresUrl
from paygate.gen.paygate.v1 import gateway_pb2 as pb
from paygate.gen.paygate.v1 import gateway_pb2_grpc as pbg
from servers import Servers
from totp_clock import Clock, set_clock
from totp_codes import STEP_S, rfc6238
from users import PASSWORD, error_reason, unique_name

CODE = grpc.StatusCode


def test_the_tests_own_totp_matches_rfc_6238_appendix_b() -> None:
    secret = base64.b32encode(b"12345678901234567890").decode()
    assert rfc6238(secret, 59 // STEP_S, digits=8) == "94287082"
    assert rfc6238(secret, 1111111109 // STEP_S, digits=8) == "07081804"


@pytest.fixture
def clock(servers: Servers) -> Iterator[Clock]:
    with set_clock(servers) as clock:
        yield clock


@pytest.fixture
def stub(servers: Servers) -> Iterator[pbg.GatewayServiceStub]:
    with servers.gateway_channel_sync() as channel:
        yield pbg.GatewayServiceStub(channel)


class Enrolled:
    def __init__(self, servers: Servers, stub: pbg.GatewayServiceStub, clock: Clock) -> None:
        self.stub, self.clock = stub, clock
        self.name = unique_name("mfa")
        register(stub, self.name, servers.admin_open_account("bank-a", 10_00))
        self.token = login(stub, self.name)
        enrolled = stub.EnrollTotp(pb.EnrollTotpRequest(password=PASSWORD),
                                   metadata=bearer(self.token), timeout=RPC_TIMEOUT_S)
        self.secret = enrolled.secret
        assert enrolled.otpauth_uri.startswith("otpauth://totp/")
        assert f"secret={self.secret}" in enrolled.otpauth_uri
        confirmed = stub.ConfirmTotp(pb.ConfirmTotpRequest(code=self.code()),
                                     metadata=bearer(self.token), timeout=RPC_TIMEOUT_S)
        self.recovery_codes = list(confirmed.recovery_codes)
        clock.advance()  # the confirming code's step is used

    def code(self, steps_back: int = 0) -> str:
        return rfc6238(self.secret, self.clock.step - steps_back)

    def login(self, code: str) -> pb.LoginResponse:
        request = pb.LoginRequest(username=self.name, password=PASSWORD, one_time_code=code)
        return self.stub.Login(request, timeout=RPC_TIMEOUT_S)

    def login_error(self, code: str) -> grpc.RpcError:
        return failure(self.login, code)


@pytest.fixture
def user(servers: Servers, stub: pbg.GatewayServiceStub, clock: Clock) -> Enrolled:
    return Enrolled(servers, stub, clock)


def test_enrolment_changes_nothing_until_confirmed(
    servers: Servers, stub: pbg.GatewayServiceStub, clock: Clock
) -> None:
    name = unique_name("mfa")
    register(stub, name, servers.admin_open_account("bank-a", 10_00))
    token = login(stub, name)
    enrolled = stub.EnrollTotp(pb.EnrollTotpRequest(password=PASSWORD), metadata=bearer(token),
                               timeout=RPC_TIMEOUT_S)
    assert login(stub, name)  # no code needed yet
    wrong = failure(stub.ConfirmTotp, pb.ConfirmTotpRequest(code="000000"),
                    metadata=bearer(token), timeout=RPC_TIMEOUT_S)
    assert (wrong.code(), error_reason(wrong)) == (CODE.INVALID_ARGUMENT, "INVALID_ONE_TIME_CODE")
    assert login(stub, name)
    bad_password = failure(stub.EnrollTotp, pb.EnrollTotpRequest(password="wrong password!"),
                           metadata=bearer(token), timeout=RPC_TIMEOUT_S)
    assert bad_password.code() == CODE.UNAUTHENTICATED
    codes = stub.ConfirmTotp(pb.ConfirmTotpRequest(code=rfc6238(enrolled.secret, clock.step)),
                             metadata=bearer(token), timeout=RPC_TIMEOUT_S).recovery_codes
    assert len(codes) == 10 and len(set(codes)) == 10
    again = failure(stub.ConfirmTotp, pb.ConfirmTotpRequest(code="123456"),
                    metadata=bearer(token), timeout=RPC_TIMEOUT_S)
    assert (again.code(), error_reason(again)) == (CODE.FAILED_PRECONDITION,
                                                   "TOTP_ALREADY_ENABLED")


def test_a_confirm_without_an_enrolment_is_refused(
    servers: Servers, stub: pbg.GatewayServiceStub
) -> None:
    name = unique_name("mfa")
    register(stub, name, servers.admin_open_account("bank-a", 10_00))
    error = failure(stub.ConfirmTotp, pb.ConfirmTotpRequest(code="123456"),
                    metadata=bearer(login(stub, name)), timeout=RPC_TIMEOUT_S)
    assert (error.code(), error_reason(error)) == (CODE.FAILED_PRECONDITION, "TOTP_NOT_ENROLLED")


def test_the_right_password_without_a_code_is_mfa_required(user: Enrolled) -> None:
    error = user.login_error("")
    assert (error.code(), error_reason(error)) == (CODE.UNAUTHENTICATED, "MFA_REQUIRED")
    assert not any(key == "access-token" for key, _ in error.trailing_metadata() or ())
    wrong_password = failure(login, user.stub, user.name, "wrong password!")
    assert error_reason(wrong_password) != "MFA_REQUIRED"  # says nothing of two-factor


def test_a_valid_code_gives_a_token_once(user: Enrolled) -> None:
    code = user.code()
    token = user.login(code).access_token
    assert balance(user.stub, token).currency == "USD"
    again = user.login_error(code)
    assert (again.code(), error_reason(again)) == (CODE.UNAUTHENTICATED, "INVALID_ONE_TIME_CODE")


def test_a_code_one_step_old_is_accepted_three_steps_old_refused(
    user: Enrolled, clock: Clock
) -> None:
    clock.advance(5)
    assert user.login_error(user.code(steps_back=3)).code() == CODE.UNAUTHENTICATED
    assert user.login(user.code(steps_back=1)).access_token
    # The step after it is still good; the step before, no longer (each step once, in order).
    assert user.login(user.code()).access_token
    assert user.login_error(user.code(steps_back=1)).code() == CODE.UNAUTHENTICATED


def test_a_recovery_code_works_once(user: Enrolled) -> None:
    code = user.recovery_codes[0]
    assert user.login(code.upper().replace("-", " ")).access_token  # as typed by a person
    assert user.login_error(code).code() == CODE.UNAUTHENTICATED
    assert user.login(user.recovery_codes[1]).access_token


def test_wrong_codes_trip_the_login_throttle(user: Enrolled) -> None:
    codes = []
    for _ in range(8):
        try:
            user.login("000000" if user.code() != "000000" else "111111")
            codes.append(CODE.OK)
        except grpc.RpcError as error:
            codes.append(error.code())
    assert CODE.RESOURCE_EXHAUSTED in codes
    assert codes[0] == CODE.UNAUTHENTICATED
    assert user.login_error(user.code()).code() == CODE.RESOURCE_EXHAUSTED  # even a good one


def test_disable_needs_the_password_and_a_code(user: Enrolled, clock: Clock) -> None:
    token = user.login(user.code()).access_token
    clock.advance()
    no_code = failure(user.stub.DisableTotp, pb.DisableTotpRequest(password=PASSWORD),
                      metadata=bearer(token), timeout=RPC_TIMEOUT_S)
    assert no_code.code() == CODE.UNAUTHENTICATED
    wrong_password = failure(user.stub.DisableTotp, pb.DisableTotpRequest(
        password="wrong password!", one_time_code=user.code()), metadata=bearer(token),
        timeout=RPC_TIMEOUT_S)
    assert wrong_password.code() == CODE.UNAUTHENTICATED
    user.stub.DisableTotp(pb.DisableTotpRequest(password=PASSWORD, one_time_code=user.code()),
                          metadata=bearer(token), timeout=RPC_TIMEOUT_S)
    assert login(user.stub, user.name)  # no code needed any more
    off = failure(user.stub.DisableTotp, pb.DisableTotpRequest(
        password=PASSWORD, one_time_code="123456"), metadata=bearer(token),
        timeout=RPC_TIMEOUT_S)
    assert (off.code(), error_reason(off)) == (CODE.FAILED_PRECONDITION, "TOTP_NOT_ENABLED")


def test_new_recovery_codes_replace_the_old(user: Enrolled) -> None:
    token = user.login(user.code()).access_token
    refused = failure(user.stub.RegenerateRecoveryCodes,
                      pb.RegenerateRecoveryCodesRequest(one_time_code="999999x"),
                      metadata=bearer(token), timeout=RPC_TIMEOUT_S)
    assert refused.code() == CODE.UNAUTHENTICATED
    new = user.stub.RegenerateRecoveryCodes(
        pb.RegenerateRecoveryCodesRequest(one_time_code=user.recovery_codes[0]),
        metadata=bearer(token), timeout=RPC_TIMEOUT_S,
    ).recovery_codes
    assert len(new) == 10 and not set(new) & set(user.recovery_codes)
    assert user.login_error(user.recovery_codes[1]).code() == CODE.UNAUTHENTICATED
    assert user.login(new[0]).access_token


def test_the_secret_is_not_in_the_database_in_clear(servers: Servers, user: Enrolled) -> None:
    database = servers.config.gateway.database
    if isinstance(database, PostgresUrl):
        pytest.skip("the SQLite tier; the PostgreSQL one greps its table")
    files = [pathlib.Path(f"{database}{suffix}") for suffix in ("", "-wal")]
    found = [f for f in files if f.exists() and user.secret.encode() in f.read_bytes()]
    assert found == []
    assert any(f.exists() for f in files)
    codes = [c.replace("-", "").encode() for c in user.recovery_codes]
    assert [f for f in files if f.exists() and any(c in f.read_bytes() for c in codes)] == []
