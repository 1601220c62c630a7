"""After the whole run: no password or token that the tests used is in any log or database,
and every line of every process's log is JSON.

The file name sorts last, so this runs after every other test module has used the suites.
It searches every file the suites wrote in this pytest session (every log, every SQLite
file with its WAL, every report, every session file of `paygate`), for the passwords the
tests typed, the tokens they were given, and the TOTP secrets and recovery codes of every
user the tests turned two-factor login on for (tests/users.py collects them; this module
adds one used every way a client can, and then an operator's every action on that user,
whose log lines are searched too), and the logs also for anything shaped like a token at
all. The one-time codes the tests used (6 digits, which any number of a log could hold)
are searched for, as whole numbers, in the log lines that name their user.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import time
import uuid

import ahocorasick
import grpc
import pytest
from paygate.gen.paygate.bank.v1 import bank_pb2, bank_pb2_grpc
from paygate.gen.paygate.v1 import admin_pb2 as apb
from paygate.gen.paygate.v1 import admin_pb2_grpc as apbg
from paygate.gen.paygate.v1 import gateway_pb2 as pb
from suite import ISSUED_LINK_CODES, Suite
from totp_codes import rfc6238, step_clear_of_its_end
from users import (
    ISSUED_RECOVERY_CODES,
    ISSUED_TOKENS,
    ISSUED_TOTP_SECRETS,
    PASSWORD,
    USED_ONE_TIME_CODES,
    TestUser,
    new_user,
)

pytestmark = pytest.mark.suite

# Passwords typed by the test modules, right and wrong.
TYPED_PASSWORDS = [PASSWORD, "another password", "wrong password!"]
# secrets.token_urlsafe(32): 43 characters of the URL-safe base64 alphabet.
TOKEN_SHAPE = re.compile(rb"(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{43}(?![A-Za-z0-9_-])")
SUFFIXES = (".log", ".db", ".db-wal", ".db-shm", ".json", ".toml")


def _files(root: pathlib.Path) -> list[pathlib.Path]:
    return [p for p in root.rglob("*") if p.is_file() and p.name.endswith(SUFFIXES)]


def test_no_password_or_token_in_any_log_or_database(
    suite: Suite, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # Secrets of this test's own, unmistakable, used in every way a client can use them.
    password = f"pw-{uuid.uuid4().hex}"
    wrong_password = f"wrong-{uuid.uuid4().hex}"
    with suite.gateway_channel_sync() as channel:
        user = new_user(suite, channel, "bank-a", 10_00, "leak")
        user.stub.Register(
            pb.RegisterRequest(
                username=user.username + "x",
                password=password,
                bank_id="bank-a",
                account_number=(account := suite.admin_open_account("bank-a", 0)),
                link_code=account.link_code,
            ),
            timeout=10,
        )
        token = user.stub.Login(
            pb.LoginRequest(username=user.username + "x", password=password), timeout=10
        ).access_token
        with pytest.raises(grpc.RpcError):
            user.stub.Login(
                pb.LoginRequest(username=user.username, password=wrong_password), timeout=10
            )
        user.stub.GetBalance(
            pb.GetBalanceRequest(), metadata=[("authorization", f"Bearer {token}")], timeout=10
        )
        with pytest.raises(grpc.RpcError):
            user.stub.GetBalance(
                pb.GetBalanceRequest(), metadata=[("authorization", f"Bearer {token}x")], timeout=10
            )
        two_factor = _use_two_factor(user)
        user.stub.Logout(
            pb.LogoutRequest(), metadata=[("authorization", f"Bearer {token}")], timeout=10
        )
    _operate_on(suite, user.username)

    recovery_codes = [*ISSUED_RECOVERY_CODES, *(c.replace("-", "") for c in ISSUED_RECOVERY_CODES)]
    secrets = [
        s.encode() for s in [*TYPED_PASSWORDS, password, wrong_password, token, *ISSUED_TOKENS,
                            *ISSUED_LINK_CODES, *two_factor, *ISSUED_TOTP_SECRETS,
                            *recovery_codes]
    ]
    roots = {tmp_path_factory.getbasetemp(), suite.dir}
    files = sorted({f for root in roots for f in _files(root)})
    assert any(f.name == "gateway.log" for f in files), "the search must see the gateway's log"
    assert any(f.name == "gateway.db" for f in files)
    gateway_log = suite.log_path("gateway").read_text(errors="replace")
    assert f'"action":"reset_two_factor","username":"{user.username}"' in gateway_log, (
        "the search must see the operator's log lines"
    )

    # Thousands of secrets (a token and a link code for every user and account the tests
    # made) in a few hundred MB of files: one pass over each file for all of them at once
    # (Aho-Corasick), bytes read as Latin-1 so that every byte is one character.
    search = ahocorasick.Automaton()
    for secret in secrets:
        search.add_word(secret.decode("latin-1"), secret)
    search.make_automaton()
    leaks = []
    for path in files:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            # Gone since the listing: the -wal or -shm of a database closed meanwhile (SQLite
            # removes them with the last connection; a -shm holds page numbers, no rows).
            continue
        found = {secret for _, secret in search.iter(data.decode("latin-1"))}
        leaks += [f"{path}: {secret[:6]!r}..." for secret in sorted(found)]
        if path.suffix == ".log":
            leaks += [
                f"{path}: token-shaped {m.group()[:6]!r}..." for m in TOKEN_SHAPE.finditer(data)
            ]
            leaks += _one_time_codes_in(path, data)
    assert leaks == [], "secrets found:\n" + "\n".join(leaks[:20])


def _one_time_codes_in(path: pathlib.Path, data: bytes) -> list[str]:
    """The one-time codes the tests used that a log line naming their user holds, as a
    whole number (not within a longer run of letters and digits, such as a trace id)."""
    lines_of: dict[str, list[bytes]] = {}
    lines = data.splitlines() if USED_ONE_TIME_CODES else []
    for name, _ in USED_ONE_TIME_CODES:
        if name not in lines_of:
            named = [f'"username":"{name}"'.encode(), f'"user":"{name}"'.encode()]
            lines_of[name] = [line for line in lines if any(n in line for n in named)]
    found = []
    for name, code in USED_ONE_TIME_CODES:
        whole = re.compile(rb"(?<![0-9A-Za-z])" + code.encode() + rb"(?![0-9A-Za-z])")
        if any(whole.search(line) for line in lines_of[name]):
            found.append(f"{path}: {name}'s one-time code {code[:2]!r}....")
    return found


def _use_two_factor(user: TestUser) -> list[str]:
    """Turn two-factor login on for `user` and use it every way a client can (a code, a
    wrong code, a recovery code, new recovery codes); the secrets it saw: the TOTP secret,
    its otpauth:// URI, and every recovery code (the 6-digit codes it used go to
    USED_ONE_TIME_CODES)."""
    metadata = user.metadata
    enrolled = user.stub.EnrollTotp(pb.EnrollTotpRequest(password=PASSWORD), metadata=metadata,
                                    timeout=10)
    step = step_clear_of_its_end()
    USED_ONE_TIME_CODES.extend(
        (user.username, code) for code in (rfc6238(enrolled.secret, step),
                                           rfc6238(enrolled.secret, step + 1), "000000")
    )
    codes = list(user.stub.ConfirmTotp(
        pb.ConfirmTotpRequest(code=rfc6238(enrolled.secret, step)), metadata=metadata,
        timeout=10).recovery_codes)
    login = pb.LoginRequest(username=user.username, password=PASSWORD,
                            one_time_code=rfc6238(enrolled.secret, step + 1))
    user.stub.Login(login, timeout=10)
    for wrong in ("000000", codes[0] + "x"):
        with pytest.raises(grpc.RpcError):
            user.stub.Login(pb.LoginRequest(username=user.username, password=PASSWORD,
                                            one_time_code=wrong), timeout=10)
    user.stub.Login(pb.LoginRequest(username=user.username, password=PASSWORD,
                                    one_time_code=codes[0]), timeout=10)
    codes += user.stub.RegenerateRecoveryCodes(
        pb.RegenerateRecoveryCodesRequest(one_time_code=codes[1]), metadata=metadata, timeout=10
    ).recovery_codes
    return [enrolled.secret, enrolled.otpauth_uri, *codes,
            *(code.replace("-", "") for code in codes)]


def _operate_on(suite: Suite, username: str) -> None:
    """Every operator action on the user, through the gateway's admin port."""
    with suite.gateway_admin_channel_sync() as channel:
        admin = apbg.AdminServiceStub(channel)
        admin.GetUser(apb.GetUserRequest(username=username), timeout=10)
        admin.FreezeUser(apb.FreezeUserRequest(username=username, reason="leak test"), timeout=10)
        admin.UnfreezeUser(apb.UnfreezeUserRequest(username=username), timeout=10)
        admin.ResetTwoFactor(apb.ResetTwoFactorRequest(username=username), timeout=10)


def _process_logs(root: pathlib.Path) -> list[pathlib.Path]:
    """The logs of the suites' processes (var/log/NAME.log); supervisord.log is
    supervisord's own, in its own text format."""
    return [
        p for p in root.rglob("*.log")
        if p.parent.name == "log" and p.parent.parent.name == "var" and p.name != "supervisord.log"
    ]


def test_every_line_of_every_process_log_is_json(
    suite: Suite, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # A client without a certificate: the bank's gRPC C core logs the failed handshake
    # (natively, to standard error), which must reach the log as JSON too.
    credentials = grpc.ssl_channel_credentials((suite.config.certs_dir / "ca.pem").read_bytes())
    with grpc.secure_channel(suite.bank_target("bank-a"), credentials) as channel:
        with pytest.raises(grpc.RpcError):
            bank_pb2_grpc.BankServiceStub(channel).GetAccount(
                bank_pb2.GetAccountRequest(account_number="100001"), timeout=5
            )
    bank_log = suite.log_path("bank-a")
    if "GRPC_VERBOSITY" not in os.environ:  # gRPC logs handshake failures at INFO by default
        deadline = time.monotonic() + 10.0
        while '"logger":"grpc"' not in bank_log.read_text(errors="replace"):
            assert time.monotonic() < deadline, "the failed handshake was not logged"
            time.sleep(0.2)

    roots = {tmp_path_factory.getbasetemp(), suite.dir}
    logs = sorted({f for root in roots for f in _process_logs(root)})
    assert bank_log in logs and suite.log_path("gateway") in logs
    not_json = []
    for path in logs:
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            try:
                parsed = json.loads(line)
            except ValueError:
                parsed = None
            if not isinstance(parsed, dict):
                not_json.append(f"{path}:{number}: {line[:200]}")
    assert not_json == [], "lines that are not JSON:\n" + "\n".join(not_json[:20])
