"""Account security through the client library (Client and AsyncClient) against the real
servers in this process: two-factor login turned on, used, renewed and turned off; the
password changed; sessions listed, ended one at a time or all at once. Every refusal
arrives as the exception and reason of paygate.errors. The gateway's TOTP clock is the
test's (totp_clock.py); codes come from the test's own RFC 6238 (totp_codes.py).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from paygate.client import (
    AsyncClient,
    Client,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PaygateError,
    SessionInfo,
    TotpEnrollment,
    Unauthenticated,
)
from servers import Servers
from totp_clock import Clock, set_clock
from totp_codes import rfc6238
from users import PASSWORD, unique_name

TIMEOUT_S = 10.0
NEW_PASSWORD = "another password"


@pytest.fixture
def clock(servers: Servers) -> Iterator[Clock]:
    with set_clock(servers) as clock:
        yield clock


def client(servers: Servers) -> Client:
    return Client(
        servers.gateway_target, ca_cert=servers.config.certs_dir / "ca.pem", timeout_s=TIMEOUT_S
    )


def signed_up(servers: Servers) -> tuple[Client, str]:
    """A logged-in client of a new user, and the user's name."""
    account = servers.admin_open_account("bank-a", 10_00)
    user, name = client(servers), unique_name("sec")
    user.register(name, PASSWORD, "bank-a", account, link_code=account.link_code)
    user.login(name, PASSWORD)
    return user, name


def refused(call: object, error_class: type[PaygateError], *args: object) -> str:
    """The reason of a refusal raised as `error_class` by call(*args)."""
    with pytest.raises(error_class) as caught:
        call(*args)  # type: ignore[operator]
    return caught.value.reason


def test_two_factor_on_used_renewed_and_off(servers: Servers, clock: Clock) -> None:
    user, name = signed_up(servers)
    with user, client(servers) as other:
        enrollment = user.enroll_totp(PASSWORD)
        assert isinstance(enrollment, TotpEnrollment)
        assert enrollment.secret not in repr(enrollment)  # never in a log or traceback
        assert enrollment.otpauth_uri.startswith("otpauth://totp/Paygate:")
        assert refused(user.confirm_totp, InvalidArgument, "000000") == "INVALID_ONE_TIME_CODE"
        recovery = user.confirm_totp(rfc6238(enrollment.secret, clock.step))
        assert len(recovery) == 10
        assert refused(user.enroll_totp, FailedPrecondition, PASSWORD) == "TOTP_ALREADY_ENABLED"

        assert refused(other.login, Unauthenticated, name, PASSWORD) == "MFA_REQUIRED"
        assert other.access_token is None
        clock.advance()
        other.login(name, PASSWORD, one_time_code=rfc6238(enrollment.secret, clock.step))
        assert other.balance().currency == "USD"
        with pytest.raises(Unauthenticated) as again:
            other.login(name, PASSWORD, one_time_code=rfc6238(enrollment.secret, clock.step))
        assert again.value.reason == "INVALID_ONE_TIME_CODE"
        other.login(name, PASSWORD, one_time_code=recovery[0])

        renewed = user.regenerate_recovery_codes(recovery[1])
        assert len(renewed) == 10 and not set(renewed) & set(recovery)
        with pytest.raises(Unauthenticated):
            other.login(name, PASSWORD, one_time_code=recovery[2])  # an old one
        clock.advance()
        user.disable_totp(PASSWORD, rfc6238(enrollment.secret, clock.step))
        other.login(name, PASSWORD)  # no code needed any more
        assert refused(user.disable_totp, FailedPrecondition, PASSWORD, "123456") == (
            "TOTP_NOT_ENABLED"
        )


def test_password_change_and_sessions(servers: Servers) -> None:
    user, name = signed_up(servers)
    with user, client(servers) as other, client(servers) as third:
        other.login(name, PASSWORD)
        third.login(name, PASSWORD)
        listed = user.list_sessions()
        assert all(isinstance(s, SessionInfo) for s in listed)
        assert [s.current for s in listed] == [False, False, True]  # newest first
        assert {s.client_address.rpartition(":")[0] for s in listed} == {"ipv4"}

        user.revoke_session(listed[0].session_id)  # third's, the newest
        assert refused(third.balance, Unauthenticated) == "UNAUTHENTICATED"
        assert refused(user.revoke_session, NotFound, listed[0].session_id) == "NOT_FOUND"
        assert refused(user.revoke_session, InvalidArgument, "not-an-id") == "INVALID_ARGUMENT"

        wrong = refused(user.change_password, Unauthenticated, "wrong password!", NEW_PASSWORD)
        assert wrong == "UNAUTHENTICATED"
        assert user.change_password(PASSWORD, NEW_PASSWORD) == 1  # other's session ended
        assert refused(other.balance, Unauthenticated) == "UNAUTHENTICATED"
        assert user.balance().currency == "USD"  # this one stays
        assert refused(other.login, Unauthenticated, name, PASSWORD) == "UNAUTHENTICATED"
        other.login(name, NEW_PASSWORD)

        user.logout(all_sessions=True)
        assert user.access_token is None
        assert refused(other.balance, Unauthenticated) == "UNAUTHENTICATED"


def test_the_async_client_has_the_same_calls(servers: Servers) -> None:
    account = servers.admin_open_account("bank-b", 0)
    name = unique_name("sec")

    async def scenario() -> tuple[list[SessionInfo], str]:
        async with AsyncClient(
            servers.gateway_target,
            ca_cert=servers.config.certs_dir / "ca.pem",
            timeout_s=TIMEOUT_S,
        ) as user:
            await user.register(name, PASSWORD, "bank-b", account, link_code=account.link_code)
            await user.login(name, PASSWORD, one_time_code="")
            enrollment = await user.enroll_totp(PASSWORD)
            sessions = await user.list_sessions()
            assert await user.change_password(PASSWORD, NEW_PASSWORD) == 0
            await user.logout(all_sessions=True)
            return sessions, enrollment.secret

    sessions, secret = servers.run(scenario())
    assert [s.current for s in sessions] == [True] and len(secret) == 32
