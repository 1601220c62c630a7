"""Account security against the real gateway under supervisord: two-factor login on the
real clock, the password, sessions, and what the gateway's database keeps of a TOTP secret.

The codes are computed by the tests' own RFC 6238 (totp_codes.py) from the secret EnrollTotp
returned, for steps the test chooses; the gateway reads the real clock and accepts the
current 30-second step or one either side, each step once per user. So a user's codes go
forward one step at a time from one step old (totp_codes.Authenticator), and a code one
step old at login needs a step boundary after the confirmation: the user of the last test
confirms first thing, and that test waits for the boundary if the others were quicker.
(tests/inproc/test_inproc_two_factor.py sets the gateway's clock instead, for the rest.)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import grpc
import pytest
from gateway_calls import RPC_TIMEOUT_S, bearer, failure
from paygate.gen.paygate.v1 import gateway_pb2 as pb
from suite import Suite
from totp_codes import Authenticator, rfc6238, step_clear_of_its_end, wait_for_step
from two_factor_db import gateway_database_text, secrets_in
from users import (
    ISSUED_RECOVERY_CODES,
    ISSUED_TOKENS,
    ISSUED_TOTP_SECRETS,
    PASSWORD,
    USED_ONE_TIME_CODES,
    TestUser,
    error_reason,
    new_user,
)

pytestmark = pytest.mark.suite

CODE = grpc.StatusCode
NEW_PASSWORD = "another password"
ENROLLED: list[Enrolled] = []  # every user this module enrolled, for the database test


@dataclasses.dataclass
class Enrolled:
    user: TestUser
    secret: str
    app: Authenticator
    recovery_codes: list[str]
    confirmed_step: int  # the step of the code that confirmed

    def code(self, steps_back: int = 1) -> str:
        code = self.app.code(steps_back)
        USED_ONE_TIME_CODES.append((self.user.username, code))
        return code

    def login(self, code: str = "", password: str = PASSWORD) -> pb.LoginResponse:
        request = pb.LoginRequest(
            username=self.user.username, password=password, one_time_code=code
        )
        response = self.user.stub.Login(request, timeout=RPC_TIMEOUT_S)
        ISSUED_TOKENS.append(response.access_token)
        return response

    def refused(self, code: str = "", password: str = PASSWORD) -> tuple[CODE, str]:
        error = failure(self.login, code, password)
        return error.code(), error_reason(error)


def enroll(user: TestUser) -> Enrolled:
    """EnrollTotp, then ConfirmTotp with a code one step old (as typed just after the app
    moved on to the next code), after one three steps old, refused: no step was used yet,
    so its age alone refuses it."""
    enrolled = user.stub.EnrollTotp(
        pb.EnrollTotpRequest(password=PASSWORD), metadata=user.metadata, timeout=RPC_TIMEOUT_S
    )
    ISSUED_TOTP_SECRETS.append(enrolled.secret)
    assert f"secret={enrolled.secret}" in enrolled.otpauth_uri
    app = Authenticator(enrolled.secret)
    too_old = rfc6238(enrolled.secret, step_clear_of_its_end() - 3)
    USED_ONE_TIME_CODES.append((user.username, too_old))
    refused = failure(
        user.stub.ConfirmTotp,
        pb.ConfirmTotpRequest(code=too_old),
        metadata=user.metadata,
        timeout=RPC_TIMEOUT_S,
    )
    assert (refused.code(), error_reason(refused)) == (
        CODE.INVALID_ARGUMENT,
        "INVALID_ONE_TIME_CODE",
    )
    code = app.code(steps_back=1)
    USED_ONE_TIME_CODES.append((user.username, code))
    confirmed = user.stub.ConfirmTotp(
        pb.ConfirmTotpRequest(code=code), metadata=user.metadata, timeout=RPC_TIMEOUT_S
    )
    ISSUED_RECOVERY_CODES.extend(confirmed.recovery_codes)
    assert app.last_step is not None
    result = Enrolled(user, enrolled.secret, app, list(confirmed.recovery_codes), app.last_step)
    ENROLLED.append(result)
    return result


@pytest.fixture(scope="module")
def channel(suite: Suite) -> Iterator[grpc.Channel]:
    with suite.gateway_channel_sync() as channel:
        yield channel


@pytest.fixture(scope="module")
def early(suite: Suite, channel: grpc.Channel) -> Enrolled:
    """A user enrolled when the module starts: its last test needs a step boundary since."""
    return enroll(new_user(suite, channel, "bank-a", 1_00, "mfa"))


def test_enrol_confirm_then_each_code_once_a_recovery_code_once_and_disable(
    suite: Suite, channel: grpc.Channel, early: Enrolled
) -> None:
    user = new_user(suite, channel, "bank-b", 5_00, "mfa")
    pending = user.stub.EnrollTotp(
        pb.EnrollTotpRequest(password=PASSWORD), metadata=user.metadata, timeout=RPC_TIMEOUT_S
    )
    ISSUED_TOTP_SECRETS.append(pending.secret)
    assert user.stub.Login(  # nothing changes before ConfirmTotp
        pb.LoginRequest(username=user.username, password=PASSWORD), timeout=RPC_TIMEOUT_S
    ).access_token
    mfa = enroll(user)  # enrolling again replaces the pending secret
    assert mfa.secret != pending.secret and len(set(mfa.recovery_codes)) == 10

    assert mfa.refused() == (CODE.UNAUTHENTICATED, "MFA_REQUIRED")
    code = mfa.code()
    token = mfa.login(code).access_token
    balance = user.stub.GetBalance(
        pb.GetBalanceRequest(), metadata=bearer(token), timeout=RPC_TIMEOUT_S
    )
    assert balance.balance == 5_00
    assert mfa.refused(code) == (CODE.UNAUTHENTICATED, "INVALID_ONE_TIME_CODE")  # used

    recovery = mfa.recovery_codes[0]
    assert mfa.login(recovery).access_token
    assert mfa.refused(recovery) == (CODE.UNAUTHENTICATED, "INVALID_ONE_TIME_CODE")

    def disable(password: str, code: str) -> None:
        user.stub.DisableTotp(
            pb.DisableTotpRequest(password=password, one_time_code=code),
            metadata=bearer(token),
            timeout=RPC_TIMEOUT_S,
        )

    no_code = failure(disable, PASSWORD, "")
    assert (no_code.code(), error_reason(no_code)) == (
        CODE.UNAUTHENTICATED,
        "INVALID_ONE_TIME_CODE",
    )
    code = mfa.code()
    assert failure(disable, "wrong password!", code).code() == CODE.UNAUTHENTICATED
    disable(PASSWORD, code)  # the password is checked first: the code was not used up
    assert mfa.login().access_token  # the password alone, again


def test_wrong_codes_trip_the_login_throttle(suite: Suite, channel: grpc.Channel) -> None:
    mfa = enroll(new_user(suite, channel, "bank-c", 1_00, "mfa"))
    now = step_clear_of_its_end()
    good = {rfc6238(mfa.secret, step) for step in range(now - 2, now + 3)}
    wrong = next(c for c in ("000000", "111111", "222222") if c not in good)
    answers = [mfa.refused(wrong) for _ in range(7)]
    assert answers[0] == (CODE.UNAUTHENTICATED, "INVALID_ONE_TIME_CODE")
    assert (CODE.RESOURCE_EXHAUSTED, "RESOURCE_EXHAUSTED") in answers
    # Then even a good code is refused until the throttle's window passes.
    assert mfa.refused(mfa.code())[0] == CODE.RESOURCE_EXHAUSTED


def test_a_password_change_ends_the_other_sessions_and_the_old_password_stops_working(
    suite: Suite, channel: grpc.Channel
) -> None:
    user = new_user(suite, channel, "bank-a", 2_00, "pwd")
    login = pb.LoginRequest(username=user.username, password=PASSWORD)
    other = user.stub.Login(login, timeout=RPC_TIMEOUT_S).access_token
    ISSUED_TOKENS.append(other)
    changed = user.stub.ChangePassword(
        pb.ChangePasswordRequest(current_password=PASSWORD, new_password=NEW_PASSWORD),
        metadata=user.metadata,
        timeout=RPC_TIMEOUT_S,
    )
    assert changed.sessions_ended == 1
    ended = failure(
        user.stub.GetBalance, pb.GetBalanceRequest(), metadata=bearer(other), timeout=RPC_TIMEOUT_S
    )
    assert ended.code() == CODE.UNAUTHENTICATED
    assert user.balance().balance == 2_00  # the session that changed it stays
    assert failure(user.stub.Login, login, timeout=RPC_TIMEOUT_S).code() == CODE.UNAUTHENTICATED
    renewed = pb.LoginRequest(username=user.username, password=NEW_PASSWORD)
    ISSUED_TOKENS.append(user.stub.Login(renewed, timeout=RPC_TIMEOUT_S).access_token)


def test_sessions_are_listed_and_one_is_revoked(suite: Suite, channel: grpc.Channel) -> None:
    user = new_user(suite, channel, "bank-b", 1_00, "ses")
    login = pb.LoginRequest(username=user.username, password=PASSWORD)
    other = user.stub.Login(login, timeout=RPC_TIMEOUT_S).access_token
    ISSUED_TOKENS.append(other)

    def sessions(token: str) -> list[pb.Session]:
        response = user.stub.ListSessions(
            pb.ListSessionsRequest(), metadata=bearer(token), timeout=RPC_TIMEOUT_S
        )
        return list(response.sessions)

    listed = sessions(user.token)
    assert [s.current for s in listed] == [False, True]  # newest first: `other` is newer
    assert all(s.client_address.startswith("ipv4:127.0.0.1") for s in listed)
    assert not any(user.token in s.session_id or other in s.session_id for s in listed)
    revoke = pb.RevokeSessionRequest(session_id=listed[0].session_id)
    user.stub.RevokeSession(revoke, metadata=user.metadata, timeout=RPC_TIMEOUT_S)
    assert failure(sessions, other).code() == CODE.UNAUTHENTICATED
    assert [s.current for s in sessions(user.token)] == [True]
    again = failure(user.stub.RevokeSession, revoke, metadata=user.metadata, timeout=RPC_TIMEOUT_S)
    assert again.code() == CODE.NOT_FOUND


def test_the_gateway_database_holds_no_totp_secret_or_recovery_code_in_clear(
    suite: Suite, early: Enrolled
) -> None:
    """The raw bytes of the gateway's SQLite file and its WAL (or, on PostgreSQL, every row
    of its tables as text): the user's name is there, the secrets are not."""
    text = gateway_database_text(suite.config.gateway.database)
    assert early.user.username.encode() in text, "the search must see the users' rows"
    secrets = [e.secret for e in ENROLLED] + [c for e in ENROLLED for c in e.recovery_codes]
    assert secrets_in(text, secrets) == []


def test_a_code_one_step_old_is_accepted_and_three_steps_old_refused(early: Enrolled) -> None:
    """After a step boundary since the confirmation (waited for here if need be). A code of
    three steps ago is also of a step at or below the one the confirmation used; the
    in-process test, whose gateway clock it sets, shows its age alone refuses it."""
    wait_for_step(early.confirmed_step + 2)
    now = step_clear_of_its_end()
    three_old = rfc6238(early.secret, now - 3)
    USED_ONE_TIME_CODES.append((early.user.username, three_old))
    assert early.refused(three_old) == (CODE.UNAUTHENTICATED, "INVALID_ONE_TIME_CODE")
    assert early.login(early.code(steps_back=1)).access_token
