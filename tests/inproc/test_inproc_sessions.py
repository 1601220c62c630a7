"""Sessions a user can see and end, in-process: ListSessions, RevokeSession, Logout of
every session, ChangePassword. A revoked session stops working at once on this gateway,
whatever its session cache holds."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from gateway_calls import RPC_TIMEOUT_S, balance, bearer, failure, login, register
from paygate.gen.paygate.v1 import gateway_pb2 as pb
from paygate.gen.paygate.v1 import gateway_pb2_grpc as pbg
from suite import SuiteClient
from users import PASSWORD, unique_name

CODE = grpc.StatusCode
NEW_PASSWORD = "another password"


@pytest.fixture
def stub(suite: SuiteClient) -> Iterator[pbg.GatewayServiceStub]:
    with suite.gateway_channel_sync() as channel:
        yield pbg.GatewayServiceStub(channel)


def new_name(suite: SuiteClient, stub: pbg.GatewayServiceStub) -> str:
    name = unique_name("ses")
    register(stub, name, suite.admin_open_account("bank-a", 10_00))
    return name


def sessions(stub: pbg.GatewayServiceStub, token: str) -> list[pb.Session]:
    response = stub.ListSessions(pb.ListSessionsRequest(), metadata=bearer(token),
                                 timeout=RPC_TIMEOUT_S)
    return list(response.sessions)


def test_list_sessions_marks_the_current_one_and_hides_the_tokens(
    suite: SuiteClient, stub: pbg.GatewayServiceStub
) -> None:
    name = new_name(suite, stub)
    first, second = login(stub, name), login(stub, name)
    balance(stub, first)  # warm the cache
    listed = sessions(stub, second)
    assert len(listed) == 2
    assert [s.current for s in listed] == [True, False]  # newest first
    for session in listed:
        assert session.session_id.startswith("ses_")
        assert first not in session.session_id and second not in session.session_id
        assert session.client_address.startswith("ipv4:127.0.0.1")
        assert session.create_time.seconds > 0 and session.last_use_time.seconds > 0
    assert len({s.session_id for s in listed}) == 2


def test_sessions_calls_need_a_live_token(suite: SuiteClient, stub: pbg.GatewayServiceStub) -> None:
    name = new_name(suite, stub)
    token = login(stub, name)
    stub.Logout(pb.LogoutRequest(), metadata=bearer(token), timeout=RPC_TIMEOUT_S)
    error = failure(stub.ListSessions, pb.ListSessionsRequest(), metadata=bearer(token),
                    timeout=RPC_TIMEOUT_S)
    assert error.code() == CODE.UNAUTHENTICATED


def test_a_revoked_session_stops_working_at_once(
    suite: SuiteClient, stub: pbg.GatewayServiceStub
) -> None:
    name = new_name(suite, stub)
    victim, keeper = login(stub, name), login(stub, name)
    balance(stub, victim)  # now in the session cache
    target = next(s for s in sessions(stub, keeper) if not s.current)
    stub.RevokeSession(pb.RevokeSessionRequest(session_id=target.session_id),
                       metadata=bearer(keeper), timeout=RPC_TIMEOUT_S)
    assert failure(balance, stub, victim).code() == CODE.UNAUTHENTICATED
    assert [s.current for s in sessions(stub, keeper)] == [True]
    again = failure(stub.RevokeSession, pb.RevokeSessionRequest(session_id=target.session_id),
                    metadata=bearer(keeper), timeout=RPC_TIMEOUT_S)
    assert again.code() == CODE.NOT_FOUND


def test_a_user_cannot_revoke_another_users_session(
    suite: SuiteClient, stub: pbg.GatewayServiceStub
) -> None:
    alice, mallory = login(stub, new_name(suite, stub)), login(stub, new_name(suite, stub))
    target = sessions(stub, alice)[0]
    error = failure(stub.RevokeSession, pb.RevokeSessionRequest(session_id=target.session_id),
                    metadata=bearer(mallory), timeout=RPC_TIMEOUT_S)
    assert error.code() == CODE.NOT_FOUND
    balance(stub, alice)
    bad = failure(stub.RevokeSession, pb.RevokeSessionRequest(session_id="x" * 40),
                  metadata=bearer(mallory), timeout=RPC_TIMEOUT_S)
    assert bad.code() == CODE.INVALID_ARGUMENT


def test_logout_of_every_session(suite: SuiteClient, stub: pbg.GatewayServiceStub) -> None:
    name = new_name(suite, stub)
    tokens = [login(stub, name) for _ in range(3)]
    for token in tokens:
        balance(stub, token)
    stub.Logout(pb.LogoutRequest(all_sessions=True), metadata=bearer(tokens[0]),
                timeout=RPC_TIMEOUT_S)
    for token in tokens:
        assert failure(balance, stub, token).code() == CODE.UNAUTHENTICATED


def test_a_password_change_ends_the_other_sessions_and_the_old_password(
    suite: SuiteClient, stub: pbg.GatewayServiceStub
) -> None:
    name = new_name(suite, stub)
    other, current = login(stub, name), login(stub, name)
    balance(stub, other)
    response = stub.ChangePassword(
        pb.ChangePasswordRequest(current_password=PASSWORD, new_password=NEW_PASSWORD),
        metadata=bearer(current), timeout=RPC_TIMEOUT_S,
    )
    assert response.sessions_ended == 1
    assert failure(balance, stub, other).code() == CODE.UNAUTHENTICATED
    balance(stub, current)
    assert failure(login, stub, name).code() == CODE.UNAUTHENTICATED
    assert login(stub, name, NEW_PASSWORD)


def test_a_password_change_needs_the_current_password_and_a_valid_new_one(
    suite: SuiteClient, stub: pbg.GatewayServiceStub
) -> None:
    name = new_name(suite, stub)
    token = login(stub, name)
    wrong = failure(stub.ChangePassword, pb.ChangePasswordRequest(
        current_password="wrong password!", new_password=NEW_PASSWORD),
        metadata=bearer(token), timeout=RPC_TIMEOUT_S)
    assert wrong.code() == CODE.UNAUTHENTICATED
    short = failure(stub.ChangePassword, pb.ChangePasswordRequest(
        current_password=PASSWORD, new_password="short"),
        metadata=bearer(token), timeout=RPC_TIMEOUT_S)
    assert short.code() == CODE.INVALID_ARGUMENT
    assert login(stub, name)  # unchanged

