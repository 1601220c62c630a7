"""Suite tests of `paygate-admin user`, run as an operator runs it against the running
suite: a frozen user cannot pay, and can again once unfrozen; what the operator did is in
the gateway's log with the certificate's name."""

from __future__ import annotations

import json
import pathlib
import time

import pytest
from suite import Suite, free_ports
from test_cli import Cli
from users import PASSWORD, unique_name

pytestmark = pytest.mark.suite

LOG_WAIT_S = 5.0


@pytest.fixture
def alice_cli(suite: Suite, tmp_path: pathlib.Path) -> Cli:
    return Cli(suite, tmp_path / "alice")


def audit_lines(suite: Suite, username: str) -> list[dict[str, object]]:
    lines = []
    for line in suite.log_path("gateway").read_text(errors="replace").splitlines():
        parsed = json.loads(line)
        if parsed.get("logger") == "paygate.audit" and parsed.get("username") == username:
            lines.append(parsed)
    return lines


def test_a_frozen_user_cannot_pay_and_can_once_unfrozen(
    suite: Suite, alice_cli: Cli, tmp_path: pathlib.Path
) -> None:
    cli = alice_cli
    bob_cli = Cli(suite, tmp_path / "bob-config")
    alice, bob = unique_name("alice"), unique_name("bob")
    cli.register(alice, "bank-a", cli.open_account("bank-a", "50.00"))
    bob_account = cli.open_account("bank-b", "0.00")
    cli.register(bob, "bank-b", bob_account)
    cli.login(alice)
    bob_cli.login(bob)
    cli.ok("paygate", "pay", bob, "1.00")

    frozen = cli.ok("paygate-admin", "user", "freeze", alice, "--reason", "fraud report 7")
    assert frozen == f"{alice} is frozen; 1 session ended\n"
    shown = cli.ok("paygate-admin", "user", "show", alice)
    assert f"user:           {alice} (usr_" in shown
    assert "frozen:         yes\n" in shown and "live sessions:  0\n" in shown
    assert "  admin  freeze: fraud report 7\n" in shown
    assert PASSWORD not in shown

    refused = cli.run("paygate", "pay", bob, "2.00")
    assert refused.returncode == 1 and "[UNAUTHENTICATED]" in refused.stderr
    refused = cli.run("paygate", "login", alice, "--password-stdin", input=f"{PASSWORD}\n")
    assert refused.returncode == 1
    assert refused.stderr.startswith("error: this account is frozen")
    assert refused.stderr.endswith("[USER_FROZEN]\n")
    paid = bob_cli.run("paygate", "pay", alice, "0.50")  # nor can anyone pay her
    assert paid.returncode == 1 and "[USER_FROZEN]" in paid.stderr, paid.stderr
    assert suite.bank_account("bank-b", bob_account).balance == 1_00

    again = cli.ok("paygate-admin", "user", "freeze", alice)
    assert again == f"{alice} was frozen already: nothing changed\n"
    assert cli.ok("paygate-admin", "user", "unfreeze", alice) == f"{alice} is no longer frozen\n"
    assert cli.ok("paygate-admin", "user", "reset-mfa", alice) == (
        f"{alice} had no two-factor login: nothing changed\n"
    )
    cli.login(alice)
    cli.ok("paygate", "pay", bob, "2.00")
    bob_cli.ok("paygate", "pay", alice, "0.50")
    assert suite.bank_account("bank-b", bob_account).balance == 2_50

    deadline = time.monotonic() + LOG_WAIT_S
    while len(audit_lines(suite, alice)) < 5 and time.monotonic() < deadline:
        time.sleep(0.2)
    lines = audit_lines(suite, alice)
    logged = [(line["operator"], line["action"], line["reason"]) for line in lines]
    assert logged == [
        ("admin", "freeze", "fraud report 7"),
        ("admin", "get_user", ""),
        ("admin", "freeze", ""),
        ("admin", "unfreeze", ""),
        ("admin", "reset_two_factor", ""),
    ]


def test_an_unknown_user_and_an_admin_port_that_does_not_answer(
    suite: Suite, alice_cli: Cli
) -> None:
    unknown = alice_cli.run("paygate-admin", "user", "show", unique_name("nobody"))
    assert unknown.returncode == 1 and unknown.stdout == ""
    assert unknown.stderr.endswith("[USER_NOT_FOUND]\n"), unknown.stderr
    (port,) = free_ports(1)
    nowhere = alice_cli.run(
        "paygate-admin", "--timeout", "2", "user", "--address", f"127.0.0.1:{port}",
        "freeze", "alice",
    )  # fmt: skip
    assert nowhere.returncode == 1
    assert nowhere.stderr.startswith(
        f"error: the gateway's admin port at 127.0.0.1:{port} did not answer [UNAVAILABLE]"
    ), nowhere.stderr
