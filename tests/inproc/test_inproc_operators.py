"""Operators in-process: AdminService on the gateway's admin port, who may call it, and
what freezing, unfreezing and resetting two-factor login do to a user, as the user, the
operator, the audit table and the log see it.
"""

from __future__ import annotations

import logging
import sqlite3
import time
import uuid
from collections.abc import Iterator

import grpc
import pytest
from gateway_calls import RPC_TIMEOUT_S, balance, failure, login, register
from paygate.common.logs import JsonFormatter
from paygate.gen.paygate.v1 import admin_pb2 as apb
from paygate.gen.paygate.v1 import admin_pb2_grpc as apbg
from paygate.gen.paygate.v1 import gateway_pb2 as pb
from paygate.gen.paygate.v1 import gateway_pb2_grpc as pbg
from servers import Servers
from totp_codes import rfc6238
from users import PASSWORD, TestUser, error_reason, new_user, unique_name

CODE = grpc.StatusCode


@pytest.fixture
def admin(servers: Servers) -> Iterator[apbg.AdminServiceStub]:
    with servers.gateway_admin_channel_sync() as channel:
        yield apbg.AdminServiceStub(channel)


@pytest.fixture
def gateway(servers: Servers) -> Iterator[grpc.Channel]:
    with servers.gateway_channel_sync() as channel:
        yield channel


def freeze(admin: apbg.AdminServiceStub, name: str, reason: str = "") -> apb.FreezeUserResponse:
    request = apb.FreezeUserRequest(username=name, reason=reason)
    return admin.FreezeUser(request, timeout=RPC_TIMEOUT_S)


def unfreeze(admin: apbg.AdminServiceStub, name: str) -> apb.UnfreezeUserResponse:
    return admin.UnfreezeUser(apb.UnfreezeUserRequest(username=name), timeout=RPC_TIMEOUT_S)


def show(admin: apbg.AdminServiceStub, name: str) -> apb.UserDetails:
    return admin.GetUser(apb.GetUserRequest(username=name), timeout=RPC_TIMEOUT_S).user


def relogin(user: TestUser) -> TestUser:
    user.token = login(user.stub, user.username)
    return user


def audit_rows(servers: Servers, name: str) -> list[tuple[str, str, str, int]]:
    with sqlite3.connect(servers.config.gateway.database) as conn:  # type: ignore[arg-type]
        rows = conn.execute(
            "SELECT operator, action, reason, changed FROM operator_actions"
            " WHERE username = ? ORDER BY seq",
            (name,),
        ).fetchall()
    return [tuple(row) for row in rows]


# Who may call AdminService -------------------------------------------------------------


def test_admin_service_refuses_a_customer_token_on_the_public_port(
    servers: Servers, gateway: grpc.Channel
) -> None:
    alice = new_user(servers, gateway, "bank-a", 10_00, "op")
    public = apbg.AdminServiceStub(gateway)
    for metadata in (alice.metadata, None):
        refused = failure(
            public.FreezeUser,
            apb.FreezeUserRequest(username=alice.username),
            metadata=metadata,
            timeout=RPC_TIMEOUT_S,
        )
        assert refused.code() == CODE.PERMISSION_DENIED
        assert "admin port" in refused.details()
    alice.balance()  # nothing happened to her


def test_the_admin_port_refuses_a_caller_without_the_admin_certificate(
    servers: Servers,
) -> None:
    name = new_user(servers, servers.gateway_channel_sync(), "bank-a", 0, "op").username
    with servers.gateway_admin_channel_sync(identity=None) as channel:
        refused = failure(
            apbg.AdminServiceStub(channel).GetUser,
            apb.GetUserRequest(username=name),
            timeout=RPC_TIMEOUT_S,
        )
        assert refused.code() == CODE.UNAVAILABLE  # the TLS handshake fails
    for identity in ("gateway", "bank-a"):
        with servers.gateway_admin_channel_sync(identity=identity) as channel:
            stub = apbg.AdminServiceStub(channel)
            refused = failure(
                stub.FreezeUser, apb.FreezeUserRequest(username=name), timeout=RPC_TIMEOUT_S
            )
            assert refused.code() == CODE.PERMISSION_DENIED
            assert f"{identity} may not call FreezeUser" in refused.details()
    with servers.gateway_admin_channel_sync() as channel:
        assert not show(apbg.AdminServiceStub(channel), name).frozen
    assert audit_rows(servers, name) == []


def test_the_admin_port_serves_health_and_only_admin_service(
    servers: Servers, admin: apbg.AdminServiceStub
) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with servers.gateway_admin_channel_sync() as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "paygate.v1.AdminService"):
            answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
        refused = failure(
            pbg.GatewayServiceStub(channel).Login,
            pb.LoginRequest(username="alice", password=PASSWORD),
            timeout=RPC_TIMEOUT_S,
        )
        assert refused.code() == CODE.UNIMPLEMENTED


# What each action does ------------------------------------------------------------------


def test_get_user_describes_the_user_and_no_secret(
    servers: Servers, admin: apbg.AdminServiceStub, gateway: grpc.Channel
) -> None:
    alice = new_user(servers, gateway, "bank-b", 10_00, "op")
    second = login(alice.stub, alice.username)
    user = show(admin, alice.username)
    assert (user.username, user.bank_id, user.account_number, user.currency) == (
        alice.username, "bank-b", alice.account_number, "USD",
    )  # fmt: skip
    assert user.user_id.startswith("usr_") and user.create_time.seconds > time.time() - 600
    assert (user.frozen, user.two_factor_enabled, user.live_sessions) == (False, False, 2)
    assert list(user.recent_actions) == []
    data = user.SerializeToString()
    assert all(s.encode() not in data for s in (PASSWORD, alice.token, second))
    for request, code, reason in (
        (apb.GetUserRequest(username="nobody-" + uuid.uuid4().hex[:8]), CODE.NOT_FOUND,
         "USER_NOT_FOUND"),
        (apb.GetUserRequest(username="Not A Name"), CODE.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
    ):  # fmt: skip
        refused = failure(admin.GetUser, request, timeout=RPC_TIMEOUT_S)
        assert (refused.code(), error_reason(refused)) == (code, reason)


def test_freeze_ends_every_session_and_refuses_login_paying_and_being_paid(
    servers: Servers, admin: apbg.AdminServiceStub, gateway: grpc.Channel
) -> None:
    alice = new_user(servers, gateway, "bank-a", 100_00, "op")
    bob = new_user(servers, gateway, "bank-b", 100_00, "op")
    other_session = login(alice.stub, alice.username)

    frozen = freeze(admin, alice.username, "card reported stolen")
    assert (frozen.changed, frozen.sessions_ended, frozen.user.frozen) == (True, 2, True)
    assert frozen.user.live_sessions == 0
    for token in (alice.token, other_session):
        refused = failure(balance, alice.stub, token)
        assert refused.code() == CODE.UNAUTHENTICATED
    refused = failure(alice.pay, bob, 1_00)
    assert refused.code() == CODE.UNAUTHENTICATED
    refused = failure(login, alice.stub, alice.username)
    assert (refused.code(), error_reason(refused)) == (CODE.FAILED_PRECONDITION, "USER_FROZEN")
    # A wrong password is answered as for anybody: the freeze shows only to the user.
    refused = failure(login, alice.stub, alice.username, "wrong password!")
    assert (refused.code(), error_reason(refused)) == (CODE.UNAUTHENTICATED, "UNAUTHENTICATED")
    refused = failure(bob.pay, alice, 5_00)
    assert (refused.code(), error_reason(refused)) == (CODE.FAILED_PRECONDITION, "USER_FROZEN")
    assert "cannot be paid" in refused.details()
    assert (alice.bank_account().balance, bob.bank_account().balance) == (100_00, 100_00)
    assert bob.list_payments().payments == []

    again = freeze(admin, alice.username, "still stolen")
    assert (again.changed, again.sessions_ended, again.user.frozen) == (False, 0, True)

    thawed = unfreeze(admin, alice.username)
    assert (thawed.changed, thawed.user.frozen) == (True, False)
    assert unfreeze(admin, alice.username).changed is False
    assert failure(balance, alice.stub, other_session).code() == CODE.UNAUTHENTICATED
    relogin(alice)
    assert alice.pay(bob, 10_00).status == pb.PAYMENT_STATUS_SUCCEEDED
    assert bob.pay(alice, 3_00).status == pb.PAYMENT_STATUS_SUCCEEDED
    assert alice.bank_account().balance == 93_00


def test_no_capture_moves_money_to_or_from_a_frozen_user(
    servers: Servers, admin: apbg.AdminServiceStub, gateway: grpc.Channel
) -> None:
    alice = new_user(servers, gateway, "bank-a", 100_00, "op")
    shop = new_user(servers, gateway, "bank-c", 0, "op")

    def authorize(amount_minor: int) -> str:
        request = pb.CreatePaymentRequest(
            idempotency_key=uuid.uuid4().hex, payee_username=shop.username,
            amount=amount_minor, currency="USD", capture_method=pb.CAPTURE_METHOD_MANUAL,
        )  # fmt: skip
        answer = alice.stub.CreatePayment(request, metadata=alice.metadata, timeout=RPC_TIMEOUT_S)
        return str(answer.payment.payment_id)

    def capture(payment_id: str) -> pb.Payment:
        request = pb.CapturePaymentRequest(payment_id=payment_id, idempotency_key=uuid.uuid4().hex)
        return shop.stub.CapturePayment(request, metadata=shop.metadata, timeout=RPC_TIMEOUT_S)

    held, released = authorize(20_00), authorize(30_00)
    freeze(admin, alice.username, "dispute")  # the payer
    refused = failure(capture, held)
    assert (refused.code(), error_reason(refused)) == (CODE.FAILED_PRECONDITION, "USER_FROZEN")
    assert alice.bank_account().pending_debit == 50_00  # left alone: still held
    cancel = pb.CancelPaymentRequest(payment_id=released, idempotency_key=uuid.uuid4().hex)
    shop.stub.CancelPayment(cancel, metadata=shop.metadata, timeout=RPC_TIMEOUT_S)
    assert alice.bank_account().pending_debit == 20_00  # a cancellation releases the payer's

    unfreeze(admin, alice.username)
    freeze(admin, shop.username, "the payee now")
    assert failure(capture, held).code() == CODE.UNAUTHENTICATED  # its sessions ended
    unfreeze(admin, shop.username)
    relogin(shop)
    assert capture(held).payment.status == pb.PAYMENT_STATUS_SUCCEEDED
    assert (alice.bank_account().balance, shop.bank_account().balance) == (80_00, 20_00)


def test_no_refund_moves_money_to_or_from_a_frozen_user(
    servers: Servers, admin: apbg.AdminServiceStub, gateway: grpc.Channel
) -> None:
    alice = new_user(servers, gateway, "bank-a", 100_00, "op")
    shop = new_user(servers, gateway, "bank-c", 0, "op")
    paid = alice.pay(shop, 30_00)
    freeze(admin, alice.username, "dispute")  # the payer, to whom a refund would go
    refused = failure(shop.refund, paid.payment_id, 10_00)
    assert (refused.code(), error_reason(refused)) == (CODE.FAILED_PRECONDITION, "USER_FROZEN")
    assert "cannot be paid now" in refused.details()
    unfreeze(admin, alice.username)
    assert shop.get_payment(paid.payment_id).amount_refunded == 0  # nothing was written
    freeze(admin, shop.username, "the payee now")
    unfreeze(admin, shop.username)
    relogin(shop)
    assert shop.refund(paid.payment_id, 10_00).status == pb.REFUND_STATUS_SUCCEEDED
    assert (alice.bank_account().balance, shop.bank_account().balance) == (80_00, 20_00)


def test_reset_two_factor_lets_the_user_log_in_with_the_password_alone(
    servers: Servers, admin: apbg.AdminServiceStub, gateway: grpc.Channel
) -> None:
    alice = new_user(servers, gateway, "bank-a", 0, "op")
    clock = servers.gateway.accounts.two_factor.clock
    enrolled = alice.stub.EnrollTotp(
        pb.EnrollTotpRequest(password=PASSWORD), metadata=alice.metadata, timeout=RPC_TIMEOUT_S
    )
    code = rfc6238(enrolled.secret, clock.step())
    confirmed = alice.stub.ConfirmTotp(
        pb.ConfirmTotpRequest(code=code), metadata=alice.metadata, timeout=RPC_TIMEOUT_S
    )
    assert show(admin, alice.username).two_factor_enabled
    assert show(admin, alice.username).recovery_codes_left == 10
    refused = failure(login, alice.stub, alice.username)
    assert error_reason(refused) == "MFA_REQUIRED"

    reset = admin.ResetTwoFactor(
        apb.ResetTwoFactorRequest(username=alice.username, reason="lost phone"),
        timeout=RPC_TIMEOUT_S,
    )
    assert reset.changed and not reset.user.two_factor_enabled
    assert reset.user.recovery_codes_left == 0
    assert reset.user.live_sessions == 1  # sessions are left as they are
    relogin(alice).balance()
    again = admin.ResetTwoFactor(
        apb.ResetTwoFactorRequest(username=alice.username), timeout=RPC_TIMEOUT_S
    )
    assert not again.changed
    data = reset.SerializeToString() + again.SerializeToString()
    assert all(s.encode() not in data for s in (enrolled.secret, *confirmed.recovery_codes))


# The trail -----------------------------------------------------------------------------


def test_every_action_is_in_the_audit_table_the_log_and_the_metrics(
    servers: Servers,
    admin: apbg.AdminServiceStub,
    gateway: grpc.Channel,
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = servers.gateway.registry

    def counted(action: str, outcome: str) -> float:
        labels = {"action": action, "outcome": outcome}
        return registry.get_sample_value("paygate_admin_actions_total", labels) or 0.0

    alice = new_user(servers, gateway, "bank-a", 0, "op")
    before = {
        key: counted(*key)
        for key in [
            ("freeze", "done"),
            ("freeze", "unchanged"),
            ("get_user", "done"),
            ("unfreeze", "not_found"),
        ]
    }
    caplog.set_level(logging.INFO, logger="paygate")
    freeze(admin, alice.username, "fraud report 42")
    freeze(admin, alice.username, "fraud report 42, again")
    unfreeze(admin, alice.username)
    admin.ResetTwoFactor(
        apb.ResetTwoFactorRequest(username=alice.username, reason="asked"), timeout=RPC_TIMEOUT_S
    )
    user = show(admin, alice.username)
    failure(unfreeze, admin, "nobody-" + uuid.uuid4().hex[:8])

    expected = [
        ("admin", "freeze", "fraud report 42", 1),
        ("admin", "freeze", "fraud report 42, again", 0),
        ("admin", "unfreeze", "", 1),
        ("admin", "reset_two_factor", "asked", 0),
    ]
    assert audit_rows(servers, alice.username) == expected
    assert [(a.operator, a.action, a.reason, a.changed) for a in user.recent_actions] == [
        ("admin", apb.USER_ACTION_RESET_TWO_FACTOR, "asked", False),
        ("admin", apb.USER_ACTION_UNFREEZE, "", True),
        ("admin", apb.USER_ACTION_FREEZE, "fraud report 42, again", False),
        ("admin", apb.USER_ACTION_FREEZE, "fraud report 42", True),
    ]

    lines = [r for r in caplog.records if r.name == "paygate.audit"]
    logged = [
        (r.fields["operator"], r.fields["action"], r.fields["username"], r.fields["reason"])  # type: ignore[attr-defined]
        for r in lines
        if r.fields["username"] == alice.username  # type: ignore[attr-defined]
    ]
    assert logged == [(o, a, alice.username, why) for o, a, why, _ in expected] + [
        ("admin", "get_user", alice.username, "")
    ]
    text = "\n".join(JsonFormatter().format(r) for r in caplog.records)
    assert '"operator":"admin","action":"freeze"' in text
    assert PASSWORD not in text and alice.token not in text

    assert counted("freeze", "done") - before[("freeze", "done")] == 1
    assert counted("freeze", "unchanged") - before[("freeze", "unchanged")] == 1
    assert counted("get_user", "done") - before[("get_user", "done")] == 1
    assert counted("unfreeze", "not_found") - before[("unfreeze", "not_found")] == 1


def test_bad_requests_change_nothing(
    servers: Servers, admin: apbg.AdminServiceStub, gateway: grpc.Channel
) -> None:
    name = unique_name("op")
    register(pbg.GatewayServiceStub(gateway), name, servers.admin_open_account("bank-a", 0))
    unknown = "nobody-" + uuid.uuid4().hex[:8]
    calls = [
        (admin.FreezeUser, apb.FreezeUserRequest(username=name, reason="two\nlines")),
        (admin.FreezeUser, apb.FreezeUserRequest(username=name, reason="x" * 201)),
        (admin.UnfreezeUser, apb.UnfreezeUserRequest(username="")),
        (admin.ResetTwoFactor, apb.ResetTwoFactorRequest(username="x" * 2000)),
    ]
    for call, request in calls:
        refused = failure(call, request, timeout=RPC_TIMEOUT_S)
        assert refused.code() == CODE.INVALID_ARGUMENT, request
    for call, request in [
        (admin.FreezeUser, apb.FreezeUserRequest(username=unknown)),
        (admin.UnfreezeUser, apb.UnfreezeUserRequest(username=unknown)),
        (admin.ResetTwoFactor, apb.ResetTwoFactorRequest(username=unknown)),
    ]:
        refused = failure(call, request, timeout=RPC_TIMEOUT_S)
        assert (refused.code(), error_reason(refused)) == (CODE.NOT_FOUND, "USER_NOT_FOUND")
    assert not show(admin, name).frozen
    assert audit_rows(servers, name) == audit_rows(servers, unknown) == []
    login(pbg.GatewayServiceStub(gateway), name)
