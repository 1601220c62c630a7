"""Suite tests of the gateway as a client sees it: accounts, login, sessions, every bad input,
who may call what, health, reflection, TLS, its log lines, and surviving SIGKILL.

Every test makes its own users and accounts, so the tests share one suite safely.
"""

from __future__ import annotations

import datetime
import json
import secrets
import signal
import time
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from paygate.gen.paygate.v1 import gateway_pb2 as pb
from paygate.gen.paygate.v1 import gateway_pb2_grpc as pbg
from suite import GATEWAY, Suite, link_code_of, load_gen_certs
from users import PASSWORD, error_reason, new_user, unique_name

pytestmark = pytest.mark.suite

GATEWAY_SERVICE = "paygate.v1.GatewayService"
HEALTH_SERVICE = "grpc.health.v1.Health"
REFLECTION_SERVICE = "grpc.reflection.v1alpha.ServerReflection"
PUBLIC_RPCS = {"Register", "Login", "Logout", "GetBalance"}
PAYMENT_RPCS = {"CreatePayment", "GetPayment", "ListPayments"}
RPC_TIMEOUT_S = 10.0
LOG_WAIT_S = 5.0
TOKEN_TTL_S = 3600  # the default; the test config does not change it
CODE = grpc.StatusCode


@pytest.fixture
def channel(suite: Suite) -> Iterator[grpc.Channel]:
    with suite.gateway_channel_sync() as ch:
        yield ch


@pytest.fixture
def stub(channel: grpc.Channel) -> pbg.GatewayServiceStub:
    return pbg.GatewayServiceStub(channel)


def bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


def register(
    stub: pbg.GatewayServiceStub, username: str, account: str,
    password: str = PASSWORD, bank_id: str = "bank-a", link_code: str | None = None,
) -> pb.RegisterResponse:
    request = pb.RegisterRequest(
        username=username, password=password, bank_id=bank_id, account_number=account,
        link_code=link_code_of(account) if link_code is None else link_code,
    )
    return stub.Register(request, timeout=RPC_TIMEOUT_S)


def login(stub: pbg.GatewayServiceStub, username: str, password: str = PASSWORD) -> str:
    request = pb.LoginRequest(username=username, password=password)
    return str(stub.Login(request, timeout=RPC_TIMEOUT_S).access_token)


def balance(stub: pbg.GatewayServiceStub, token: str) -> pb.GetBalanceResponse:
    return stub.GetBalance(pb.GetBalanceRequest(), metadata=bearer(token), timeout=RPC_TIMEOUT_S)


def failure(call: Any, *args: Any, **kwargs: Any) -> grpc.RpcError:
    """The RpcError that call(*args, **kwargs) must raise."""
    with pytest.raises(grpc.RpcError) as caught:
        call(*args, **kwargs)
    return caught.value


# Register, Login, GetBalance, Logout --------------------------------------------------------


def test_register_login_balance_logout(suite: Suite, stub: pbg.GatewayServiceStub) -> None:
    account = suite.admin_open_account("bank-a", 123_45)
    name = unique_name("flow")
    registered = register(stub, name, account)
    assert (registered.bank_id, registered.account_number) == ("bank-a", account)
    assert registered.user_id

    response = stub.Login(pb.LoginRequest(username=name, password=PASSWORD), timeout=RPC_TIMEOUT_S)
    token = response.access_token
    assert len(token) >= 22  # at least 128 random bits in URL-safe base64
    expires = response.expire_time.ToDatetime(tzinfo=datetime.UTC)
    now = datetime.datetime.now(datetime.UTC)
    assert now < expires <= now + datetime.timedelta(seconds=TOKEN_TTL_S + 60)

    got = balance(stub, token)
    assert (got.currency, got.balance, got.available) == ("USD", 123_45, 123_45)

    other_token = login(stub, name)
    assert other_token != token
    stub.Logout(pb.LogoutRequest(), metadata=bearer(token), timeout=RPC_TIMEOUT_S)
    revoked = failure(balance, stub, token)
    assert revoked.code() == CODE.UNAUTHENTICATED
    assert "revoked" in revoked.details()
    again = failure(stub.Logout, pb.LogoutRequest(), metadata=bearer(token), timeout=RPC_TIMEOUT_S)
    assert again.code() == CODE.UNAUTHENTICATED
    # Logout revokes that token only: the user's other session still works.
    assert balance(stub, other_token).balance == 123_45


INVALID, NOT_FOUND = CODE.INVALID_ARGUMENT, CODE.NOT_FOUND


def bad(case_id: str, code: grpc.StatusCode, words: list[str], **fields: str) -> Any:
    """A refused registration: the fields that differ from a valid one (username, password,
    bank_id, account), the status code, and words the message must hold to say what is wrong."""
    return pytest.param(fields, code, words, id=case_id)


BAD_REGISTRATIONS = [
    bad("empty-username", INVALID, ["username"], username=""),
    bad("uppercase-username", INVALID, ["username", "a-z"], username="Alice1"),
    bad("two-character-username", INVALID, ["username", "3"], username="ab"),
    bad("33-character-username", INVALID, ["username", "32"], username="a" * 33),
    bad("username-with-space", INVALID, ["username"], username="al ice"),
    bad("username-with-leading-space", INVALID, ["username"], username=" alice"),
    bad("username-with-punctuation", INVALID, ["username"], username="al!ce"),
    bad("over-long-username", INVALID, ["username"], username="a" * 2000),
    bad("username-with-trailing-newline", INVALID, ["username"], username="newline.user\n"),
    bad("username-with-nul", INVALID, ["username"], username="nul\x00user"),
    bad("empty-password", INVALID, ["password", "8"], password=""),
    bad("7-byte-password", INVALID, ["password", "8"], password="x" * 7),
    bad("73-byte-password", INVALID, ["password", "72"], password="x" * 73),
    bad("37-characters-74-bytes-password", INVALID, ["password", "72"], password="é" * 37),
    bad("over-long-password", INVALID, ["password"], password="x" * 2000),
    bad("empty-bank-id", INVALID, ["bank_id"], bank_id=""),
    bad("65-character-bank-id", INVALID, ["bank_id", "64"], bank_id="b" * 65),
    bad("over-long-bank-id", INVALID, ["bank_id"], bank_id="b" * 2000),
    bad("unknown-bank", NOT_FOUND, ["bank-z"], bank_id="bank-z"),
    bad("empty-account-number", INVALID, ["account_number"], account=""),
    bad("non-digit-account-number", INVALID, ["account_number", "digits"], account="10a001"),
    bad("35-digit-account-number", INVALID, ["account_number", "34"], account="1" * 35),
    bad("account-number-with-newline", INVALID, ["account_number"], account="100001\n"),
    bad(
        "unknown-account-at-known-bank", NOT_FOUND, ["987654321", "at bank-a"],
        account="987654321",
    ),
    # The proof of holding the account: its bank's link code.
    bad("no-link-code", INVALID, ["link_code"], link_code=""),
    bad("65-character-link-code", INVALID, ["link_code", "64"], link_code="C" * 65),
    bad("link-code-with-newline", INVALID, ["link_code"], link_code="ABCD\n"),
    bad("wrong-link-code", NOT_FOUND, ["with this link code", "at bank-a"],
        link_code="AAAA-AAAA-AAAA-AAAA"),
]


@pytest.mark.parametrize(("fields", "code", "words"), BAD_REGISTRATIONS)
def test_bad_registration_is_refused_and_creates_nothing(
    suite: Suite, stub: pbg.GatewayServiceStub, fields: dict[str, str],
    code: grpc.StatusCode, words: list[str],
) -> None:
    fresh_account = suite.admin_open_account("bank-a", 1_00)
    valid_name = unique_name("bad")
    username = fields.get("username", valid_name)
    error = failure(
        register, stub, username, fields.get("account", fresh_account),
        password=fields.get("password", PASSWORD), bank_id=fields.get("bank_id", "bank-a"),
        link_code=fields.get("link_code"),
    )
    assert error.code() == code, error.details()
    for word in words:
        assert word in error.details(), f"{word!r} not in {error.details()!r}"

    # Nothing was created: the valid name and the fresh account can still be registered,
    # and a refused name cannot log in.
    name = valid_name if username == valid_name else unique_name("bad")
    registered = register(stub, name, fresh_account)
    assert registered.account_number == fresh_account
    assert balance(stub, login(stub, name)).balance == 1_00
    if username and username != valid_name:
        assert failure(login, stub, username).code() == CODE.UNAUTHENTICATED


@pytest.mark.parametrize(
    "password",
    [
        pytest.param("x" * 72, id="72-ascii-bytes"),
        pytest.param("é" * 36, id="36-characters-72-bytes"),
        pytest.param("éééé", id="4-characters-8-bytes"),
    ],
)
def test_password_length_is_counted_in_bytes(
    suite: Suite, stub: pbg.GatewayServiceStub, password: str
) -> None:
    name = unique_name("pw")
    register(stub, name, suite.admin_open_account("bank-a", 2_00), password=password)
    assert balance(stub, login(stub, name, password)).balance == 2_00


def test_a_wrong_link_code_is_answered_as_an_unknown_account(
    suite: Suite, stub: pbg.GatewayServiceStub
) -> None:
    """Whether the account exists must not show: otherwise Register would list the bank's
    accounts for anyone who asks."""
    real = suite.admin_open_account("bank-b", 5_00)
    unknown = str(int(real) + 10_000)
    answers = []
    for account in (real, unknown):
        error = failure(register, stub, unique_name("guess"), account, bank_id="bank-b",
                        link_code="AAAA-AAAA-AAAA-AAAA")
        answers.append((error.code(), error.details().replace(account, "N"),
                        error_reason(error)))
    assert answers[0] == answers[1] == (
        CODE.NOT_FOUND, "no account N with this link code at bank-b", "ACCOUNT_NOT_FOUND"
    )


def test_a_demo_account_registers_with_its_published_link_code(
    suite: Suite, stub: pbg.GatewayServiceStub
) -> None:
    """ops/demo-accounts/ gives each demo account a code (as the README's quick start uses)."""
    assert failure(
        register, stub, unique_name("demo"), "300004", bank_id="bank-c", link_code="DEMO-300003"
    ).code() == CODE.NOT_FOUND  # another account's code
    name = unique_name("demo")
    register(stub, name, "300004", bank_id="bank-c", link_code="DEMO-300004")
    assert balance(stub, login(stub, name)).balance == 0  # the fourth demo account is empty


def test_account_already_linked_is_already_exists(
    suite: Suite, stub: pbg.GatewayServiceStub
) -> None:
    account = suite.admin_open_account("bank-b", 3_00)
    first = unique_name("own")
    register(stub, first, account, bank_id="bank-b")
    second = unique_name("thief")
    error = failure(register, stub, second, account, bank_id="bank-b")
    assert error.code() == CODE.ALREADY_EXISTS
    assert account in error.details() and "linked" in error.details()
    # The refused user was not created, and the account still belongs to the first.
    assert failure(login, stub, second).code() == CODE.UNAUTHENTICATED
    register(stub, second, suite.admin_open_account("bank-b", 0), bank_id="bank-b")
    assert balance(stub, login(stub, first)).balance == 3_00


def test_duplicate_username_is_already_exists(suite: Suite, stub: pbg.GatewayServiceStub) -> None:
    name = unique_name("dup")
    register(stub, name, suite.admin_open_account("bank-a", 4_00))
    other_account = suite.admin_open_account("bank-a", 9_00)
    error = failure(register, stub, name, other_account, password="another password")
    assert error.code() == CODE.ALREADY_EXISTS
    assert name in error.details() and "taken" in error.details()
    # The first user is unchanged, and the second account was not linked.
    assert balance(stub, login(stub, name)).balance == 4_00
    assert failure(login, stub, name, "another password").code() == CODE.UNAUTHENTICATED
    register(stub, unique_name("dup"), other_account)


# Login and tokens ----------------------------------------------------------------------------


def test_unknown_user_and_wrong_password_get_the_same_answer(
    suite: Suite, stub: pbg.GatewayServiceStub
) -> None:
    name = unique_name("who")
    register(stub, name, suite.admin_open_account("bank-c", 0), bank_id="bank-c")
    wrong_password = failure(login, stub, name, "not the password")
    unknown_user = failure(login, stub, unique_name("nobody"), PASSWORD)
    assert wrong_password.code() == unknown_user.code() == CODE.UNAUTHENTICATED
    assert wrong_password.details() == unknown_user.details()
    assert error_reason(wrong_password) == error_reason(unknown_user)
    assert name not in wrong_password.details()


@pytest.mark.parametrize(
    ("username_suffix", "password"),
    [
        pytest.param("", "x" * 73, id="73-byte-password"),
        pytest.param("", "x" * 5000, id="5000-byte-password"),
        pytest.param("\n", PASSWORD, id="name-with-trailing-newline"),
        pytest.param("\x00", PASSWORD, id="name-with-nul"),
    ],
)
def test_login_that_no_user_can_match_is_a_bad_login(
    suite: Suite, stub: pbg.GatewayServiceStub, username_suffix: str, password: str
) -> None:
    """bcrypt raises on passwords over 72 bytes; a name with a newline is not the name."""
    name = unique_name("odd")
    register(stub, name, suite.admin_open_account("bank-a", 0))
    error = failure(login, stub, name + username_suffix, password)
    assert error.code() == CODE.UNAUTHENTICATED, error.details()
    assert error.details() == "invalid username or password"
    assert login(stub, name)  # and the user can still log in


PROTECTED_CALLS = {
    "GetBalance": pb.GetBalanceRequest(),
    "Logout": pb.LogoutRequest(),
    "ListPayments": pb.ListPaymentsRequest(),
    "CreatePayment": pb.CreatePaymentRequest(
        idempotency_key="k-unauthenticated", payee_username="nobody", amount=1, currency="USD"
    ),
}


@pytest.mark.parametrize("method", sorted(PROTECTED_CALLS))
@pytest.mark.parametrize(
    "metadata",
    [
        pytest.param([], id="no-token"),
        pytest.param([("authorization", "Basic x")], id="basic-scheme"),
        pytest.param([("authorization", "Bearer")], id="bearer-without-token"),
        pytest.param([("authorization", "Bearer ")], id="bearer-with-blank-token"),
        pytest.param(bearer(secrets.token_urlsafe(32)), id="random-token"),
    ],
)
def test_calls_without_a_valid_token_are_unauthenticated(
    stub: pbg.GatewayServiceStub, method: str, metadata: list[tuple[str, str]]
) -> None:
    call = getattr(stub, method)
    error = failure(call, PROTECTED_CALLS[method], metadata=metadata, timeout=RPC_TIMEOUT_S)
    assert error.code() == CODE.UNAUTHENTICATED
    assert error.details()


# Health, reflection, TLS ---------------------------------------------------------------------


@pytest.mark.parametrize("service", ["", GATEWAY_SERVICE])
def test_gateway_reports_serving(suite: Suite, service: str) -> None:
    assert suite.health(GATEWAY, service) == health_pb2.HealthCheckResponse.SERVING


def reflect(channel: grpc.Channel, **request: str) -> reflection_pb2.ServerReflectionResponse:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    requests = iter([reflection_pb2.ServerReflectionRequest(**request)])
    responses = list(stub.ServerReflectionInfo(requests, timeout=RPC_TIMEOUT_S))
    assert len(responses) == 1
    return responses[0]


def test_reflection_lists_and_describes_the_gateway(channel: grpc.Channel) -> None:
    listed = reflect(channel, list_services="").list_services_response.service
    assert {s.name for s in listed} == {GATEWAY_SERVICE, HEALTH_SERVICE, REFLECTION_SERVICE}

    found = reflect(channel, file_containing_symbol=GATEWAY_SERVICE).file_descriptor_response
    files = [descriptor_pb2.FileDescriptorProto.FromString(b) for b in found.file_descriptor_proto]
    services = {
        f"{f.package}.{s.name}": {m.name for m in s.method} for f in files for s in f.service
    }
    assert services[GATEWAY_SERVICE] >= PUBLIC_RPCS | PAYMENT_RPCS
    messages = {m.name: {fld.name for fld in m.field} for f in files for m in f.message_type}
    assert messages["RegisterRequest"] >= {"username", "password", "bank_id", "account_number"}


def test_client_that_does_not_trust_the_ca_cannot_connect(
    suite: Suite, tmp_path: Any
) -> None:
    load_gen_certs().generate(tmp_path / "other-ca", identities=())
    other_ca = grpc.ssl_channel_credentials((tmp_path / "other-ca" / "ca.pem").read_bytes())
    for channel in (
        grpc.secure_channel(suite.gateway_target, other_ca),
        grpc.insecure_channel(suite.gateway_target),
    ):
        with channel, pytest.raises(grpc.RpcError) as caught:
            health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=RPC_TIMEOUT_S
            )
        assert caught.value.code() == CODE.UNAVAILABLE


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


def login_lines(suite: Suite) -> list[dict[str, Any]]:
    method = f"/{GATEWAY_SERVICE}/Login"
    lines = []
    for text in suite.log_path(GATEWAY).read_text(errors="replace").splitlines():
        if method in text:
            lines.append(dict(json.loads(text)))
    return lines


def test_a_login_name_that_is_no_user_is_never_logged(
    suite: Suite, stub: pbg.GatewayServiceStub
) -> None:
    """A password typed into the username field must not reach the log: a name is logged
    only once it names a user, else a fingerprint that ties attempts together."""
    name = unique_name("logname")
    register(stub, name, suite.admin_open_account("bank-a", 0))
    looks_like_a_name = f"hunter2-{secrets.token_hex(6)}"  # fits the username pattern
    does_not = f"Tr0ub4dor&3-{secrets.token_hex(6)}"
    before = len(login_lines(suite))
    for typed in (looks_like_a_name, looks_like_a_name, does_not):
        assert failure(login, stub, typed).code() == grpc.StatusCode.UNAUTHENTICATED
    assert failure(login, stub, name, "wrong password!").code() == (
        grpc.StatusCode.UNAUTHENTICATED
    )

    deadline = time.monotonic() + LOG_WAIT_S
    while len(lines := login_lines(suite)[before:]) < 4:
        assert time.monotonic() < deadline, "the logins were not logged"
        time.sleep(0.1)
    first, second, third, known = lines
    for line in (first, second, third):
        assert line["code"] == "UNAUTHENTICATED" and line["username"] == "<not a user>"
        assert "username" not in line["request"]
    assert first["username_fingerprint"] == second["username_fingerprint"]
    assert third["username_fingerprint"] != first["username_fingerprint"]
    assert known["username"] == name and known["code"] == "UNAUTHENTICATED"
    text = suite.log_path(GATEWAY).read_text(errors="replace")
    assert looks_like_a_name not in text and does_not not in text


def test_log_lines_of_payments_name_the_payment_its_status_and_a_replay(
    suite: Suite, channel: grpc.Channel
) -> None:
    payer = new_user(suite, channel, "bank-a", 10_00, "logpay")
    payee = new_user(suite, channel, "bank-b", 0, "logget")
    key, refused_key = f"log-{uuid.uuid4()}", f"log-{uuid.uuid4()}"
    payment = payer.pay(payee, 1_00, key=key)
    payer.pay(payee, 1_00, key=key)  # answered again
    with pytest.raises(grpc.RpcError) as caught:
        payer.pay(payee, 50_00, key=refused_key)
    assert error_reason(caught.value) == "INSUFFICIENT_FUNDS"

    first, again = rpc_lines(suite, "CreatePayment", key, 2)
    assert (first["code"], again["code"]) == ("OK", "OK")
    assert first["response"]["status"] == "PAYMENT_STATUS_SUCCEEDED"  # a name, not a number
    assert "replayed" not in first and again["replayed"] is True
    (refused,) = rpc_lines(suite, "CreatePayment", refused_key, 1)
    assert refused["code"] == "FAILED_PRECONDITION"
    assert refused["reason"] == "INSUFFICIENT_FUNDS" and refused["outcome"] == "failed"
    assert refused["payment_id"].startswith("pay_")

    # The bank's batch lines name the transactions they carry.
    def batch_line(method: str) -> dict[str, Any] | None:
        for text in suite.log_path("bank-a").read_text(errors="replace").splitlines():
            if payment.payment_id in text and f"/{method}" in text:
                return dict(json.loads(text))
        return None

    deadline = time.monotonic() + LOG_WAIT_S
    while (prepared := batch_line("PrepareBatch")) is None or batch_line("CommitBatch") is None:
        assert time.monotonic() < deadline, "no batch line names the payment"
        time.sleep(0.1)
    assert payment.payment_id in prepared["request"]["transaction_ids"]
    assert prepared["request"]["transactions"] >= 1


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
