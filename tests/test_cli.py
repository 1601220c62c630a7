"""Suite tests of the console scripts `paygate` and `paygate-admin`, run as a user runs them:
real subprocesses against the running suite, each test with its own XDG_CONFIG_HOME."""

from __future__ import annotations

import json
import os
import pathlib
import re
import signal
import stat
import subprocess
import time
import uuid

import grpc
import pytest
from paygate.gen.paygate.v1 import gateway_pb2 as pb
from paygate.gen.paygate.v1 import gateway_pb2_grpc as pbg
from suite import BIN, GATEWAY, ISSUED_LINK_CODES, OpenedAccount, Suite, link_code_of
from users import PASSWORD, RPC_TIMEOUT_S, unique_name

pytestmark = pytest.mark.suite

NOT_LOGGED_IN = "not logged in: run `paygate login USER`\n"
LOG_WAIT_S = 5.0


class Cli:
    """Runs the console scripts in one environment (one user's config directory)."""

    def __init__(self, suite: Suite, config_home: pathlib.Path) -> None:
        self.suite = suite
        self.env = suite.env(config_home)
        self.session_file = config_home / "paygate" / "session.json"

    def run(
        self, program: str, *args: str, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return self.suite.cli(program, *args, input=input, env=self.env)

    def ok(self, program: str, *args: str, input: str | None = None) -> str:
        """Run a command that must succeed; return its standard output."""
        result = self.run(program, *args, input=input)
        assert result.returncode == 0, f"{program} {args}: {result.stderr}"
        return result.stdout

    def open_account(self, bank_id: str, balance: str) -> OpenedAccount:
        printed = self.ok("paygate-admin", "open-account", "--bank", bank_id, "--balance", balance)
        found = re.fullmatch(r"([0-9]+) ([0-9A-Z]{4}(?:-[0-9A-Z]{4}){3})\n", printed)
        assert found, printed
        ISSUED_LINK_CODES.append(found.group(2))
        return OpenedAccount(found.group(1), found.group(2))

    def register(self, username: str, bank_id: str, account: str) -> str:
        return self.ok(
            "paygate", "register", username, "--bank", bank_id, "--account", account,
            "--link-code", link_code_of(account), "--password-stdin", input=f"{PASSWORD}\n",
        )

    def login(self, username: str) -> str:
        return self.ok("paygate", "login", username, "--password-stdin", input=f"{PASSWORD}\n")


@pytest.fixture
def cli(suite: Suite, tmp_path: pathlib.Path) -> Cli:
    return Cli(suite, tmp_path / "xdg-config")


def gateway_balance(suite: Suite, token: str) -> pb.GetBalanceResponse:
    with suite.gateway_channel_sync() as channel:
        return pbg.GatewayServiceStub(channel).GetBalance(
            pb.GetBalanceRequest(), metadata=[("authorization", f"Bearer {token}")],
            timeout=RPC_TIMEOUT_S,
        )


def test_open_account_prints_the_number_of_a_funded_account(suite: Suite, cli: Cli) -> None:
    number = cli.open_account("bank-a", "100.00")
    account = suite.bank_account("bank-a", number)
    assert (account.currency, account.balance) == ("USD", 100_00)


def test_register_login_balance_pay_payments_logout(suite: Suite, cli: Cli) -> None:
    alice, bob = unique_name("alice"), unique_name("bob")
    alice_account = cli.open_account("bank-a", "100.00")
    bob_account = cli.open_account("bank-b", "5.00")
    assert cli.register(alice, "bank-a", alice_account) == (
        f"registered {alice}: bank-a account {alice_account}\n"
    )
    cli.register(bob, "bank-b", bob_account)

    assert cli.login(alice).startswith(f"logged in as {alice} until ")
    mode = stat.S_IMODE(cli.session_file.stat().st_mode)
    assert mode == 0o600, oct(mode)
    saved = cli.session_file.read_text()
    assert PASSWORD not in saved
    token = json.loads(saved)["access_token"]

    assert cli.ok("paygate", "balance") == "balance: 100.00 USD (available 100.00 USD)\n"
    paid = cli.ok("paygate", "pay", bob, "12.50")
    match = re.fullmatch(rf"paid {bob} 12\.50 USD: payment (\S+) SUCCEEDED\n", paid)
    assert match, paid
    payment_id = match.group(1)
    (line,) = cli.ok("paygate", "payments").splitlines()
    assert payment_id in line and "SUCCEEDED" in line
    assert line.rstrip().endswith(f"-12.50 USD  to {bob}")
    assert cli.ok("paygate", "balance") == "balance: 87.50 USD (available 87.50 USD)\n"
    assert suite.bank_account("bank-b", bob_account).balance == 17_50

    assert cli.ok("paygate", "logout") == f"logged out {alice}\n"
    assert not cli.session_file.exists()
    after = cli.run("paygate", "balance")
    assert (after.returncode, after.stdout, after.stderr) == (1, "", NOT_LOGGED_IN)
    # The gateway revoked the token too: a copy of the old file would be useless.
    with pytest.raises(grpc.RpcError) as caught:
        gateway_balance(suite, token)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_wrong_password_fails_and_saves_no_session(suite: Suite, cli: Cli) -> None:
    name = unique_name("carol")
    cli.register(name, "bank-c", cli.open_account("bank-c", "1.00"))
    result = cli.run("paygate", "login", name, "--password-stdin", input="not the password\n")
    assert result.returncode == 1
    assert result.stderr == "error: invalid username or password [UNAUTHENTICATED]\n"
    assert not cli.session_file.exists()


def create_payment_lines(suite: Suite, username: str) -> tuple[int, int]:
    """How many CreatePayment and GetBalance lines of `username` the gateway logged."""
    counts = {"CreatePayment": 0, "GetBalance": 0}
    for text in suite.log_path(GATEWAY).read_text(errors="replace").splitlines():
        if username in text and text.startswith("{"):
            method = str(json.loads(text).get("method", "")).rpartition("/")[2]
            if method in counts:
                counts[method] += 1
    return counts["CreatePayment"], counts["GetBalance"]


def test_amount_with_too_many_decimals_is_refused_without_a_call(suite: Suite, cli: Cli) -> None:
    payer, payee = unique_name("dave"), unique_name("erin")
    payer_account = cli.open_account("bank-a", "20.00")
    cli.register(payer, "bank-a", payer_account)
    cli.register(payee, "bank-b", cli.open_account("bank-b", "0"))
    cli.login(payer)

    result = cli.run("paygate", "pay", payee, "12.505")
    assert result.returncode == 1
    assert result.stdout == ""
    assert "12.505" in result.stderr and "more than 2 digits" in result.stderr

    # A later call of this user shows up in the gateway's log; the payment never did.
    cli.ok("paygate", "balance")
    deadline = time.monotonic() + LOG_WAIT_S
    while create_payment_lines(suite, payer)[1] < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert create_payment_lines(suite, payer) == (0, 1)
    assert suite.bank_account("bank-a", payer_account).balance == 20_00


def test_paying_again_with_the_same_key_says_replayed_and_moves_money_once(
    suite: Suite, cli: Cli
) -> None:
    payer, payee = unique_name("max"), unique_name("ned")
    payer_account = cli.open_account("bank-a", "10.00")
    cli.register(payer, "bank-a", payer_account)
    cli.register(payee, "bank-b", cli.open_account("bank-b", "0"))
    cli.login(payer)
    key = str(uuid.uuid4())
    first = cli.ok("paygate", "pay", payee, "2.00", "--idempotency-key", key)
    again = cli.ok("paygate", "pay", payee, "2.00", "--idempotency-key", key)
    assert "replayed" not in first
    assert again.startswith(first.rstrip("\n")) and "(replayed: " in again
    assert suite.bank_account("bank-a", payer_account).balance == 8_00


def test_an_operator_replaces_a_lost_link_code(suite: Suite, cli: Cli) -> None:
    account = cli.open_account("bank-a", "3.00")
    printed = cli.ok("paygate-admin", "link-code", "--bank", "bank-a", "--account", account)
    assert re.fullmatch(r"[0-9A-Z]{4}(-[0-9A-Z]{4}){3}\n", printed), printed
    ISSUED_LINK_CODES.append(printed.strip())
    refused = cli.run(
        "paygate", "register", unique_name("oli"), "--bank", "bank-a", "--account", account,
        "--link-code", account.link_code, "--password-stdin", input=f"{PASSWORD}\n",
    )
    assert refused.returncode == 1 and "with this link code" in refused.stderr
    renewed = OpenedAccount(account, printed.strip())
    assert cli.register(unique_name("oli"), "bank-a", renewed).startswith("registered ")


def test_a_failed_payment_is_listed_without_a_sign(suite: Suite, cli: Cli) -> None:
    """A signed amount reads as money that moved; a failed payment moved none."""
    payer, payee = unique_name("fay"), unique_name("gus")
    cli.register(payer, "bank-a", cli.open_account("bank-a", "10.00"))
    cli.register(payee, "bank-b", cli.open_account("bank-b", "0"))
    cli.login(payer)
    refused = cli.run("paygate", "pay", payee, "50.00")
    assert refused.returncode == 1 and "INSUFFICIENT_FUNDS" in refused.stderr
    cli.ok("paygate", "pay", payee, "1.00")
    succeeded, failed = cli.ok("paygate", "payments").splitlines()  # newest first
    assert "FAILED" in failed and f"  50.00 USD  to {payee}  [INSUFFICIENT_FUNDS]" in failed
    assert "SUCCEEDED" in succeeded and f" -1.00 USD  to {payee}" in succeeded
    assert " UTC  " in failed  # the time says its zone


@pytest.mark.parametrize(
    ("amount", "words"),
    [("-5", "negative"), ("0", "zero"), ("0.00", "zero"), ("1000000.01", "0.01 to 1000000.00 USD")],
)
def test_an_amount_out_of_range_says_what_is_wrong_in_units_the_user_typed(
    suite: Suite, cli: Cli, amount: str, words: str
) -> None:
    payer, payee = unique_name("hal"), unique_name("ida")
    cli.register(payer, "bank-a", cli.open_account("bank-a", "10.00"))
    cli.register(payee, "bank-b", cli.open_account("bank-b", "0"))
    cli.login(payer)
    result = cli.run("paygate", "pay", payee, amount)
    assert result.returncode == 1 and result.stdout == ""
    assert words in result.stderr, result.stderr


def test_a_session_at_another_gateway_is_named(suite: Suite, cli: Cli) -> None:
    name = unique_name("jo")
    cli.register(name, "bank-a", cli.open_account("bank-a", "1.00"))
    cli.login(name)
    result = cli.run("paygate", "--gateway", "127.0.0.1:1", "balance")
    assert result.returncode == 1
    assert result.stderr.startswith("not logged in at 127.0.0.1:1: the saved session is")
    assert name in result.stderr


def test_an_unreachable_gateway_is_said_to_have_received_nothing(
    suite: Suite, cli: Cli
) -> None:
    """Connection refused: the request never left, so 'it may still go through' would be
    wrong and alarming."""
    name = unique_name("kim")
    cli.register(name, "bank-a", cli.open_account("bank-a", "1.00"))
    cli.login(name)
    saved = json.loads(cli.session_file.read_text())
    cli.session_file.write_text(json.dumps({**saved, "gateway": "127.0.0.1:1"}))
    result = cli.run("paygate", "--gateway", "127.0.0.1:1", "pay", "someone", "1.00")
    assert result.returncode == 1
    assert "could not be reached: nothing was paid" in result.stderr, result.stderr
    assert "may still go through" not in result.stderr


def test_a_payment_failed_by_a_paused_bank_is_said_to_have_moved_nothing(
    suite: Suite, cli: Cli
) -> None:
    """Between two banks a bank that does not answer aborts the payment: the gateway knows
    nothing moved and released the key, and the CLI says so rather than 'it may still go
    through'."""
    payer, payee = unique_name("quinn"), unique_name("rae")
    payer_account = cli.open_account("bank-a", "10.00")
    cli.register(payer, "bank-a", payer_account)
    cli.register(payee, "bank-c", cli.open_account("bank-c", "0"))
    cli.login(payer)
    key = str(uuid.uuid4())
    pid = suite.kill("bank-c", signal.SIGSTOP)
    try:
        failed = cli.run("paygate", "pay", payee, "2.00", "--idempotency-key", key)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert (failed.returncode, failed.stdout) == (1, ""), failed.stderr
    said = re.search(r"payment (pay_\w+) FAILED: nothing was paid", failed.stderr)
    assert said, failed.stderr
    assert re.search(r"\[BANK_(TIMEOUT|UNAVAILABLE)\]\n$", failed.stderr), failed.stderr
    assert "may still go through" not in failed.stderr
    # The key was released: the same command makes a new payment, not a replay.
    again = cli.ok("paygate", "pay", payee, "2.00", "--idempotency-key", key)
    assert again.endswith(" SUCCEEDED\n") and said.group(1) not in again, again
    assert suite.bank_account("bank-a", payer_account).balance == 8_00


def test_a_payment_within_a_paused_bank_is_said_to_be_unknown_and_its_key_answers_it(
    suite: Suite, cli: Cli
) -> None:
    """Within one bank the bank may post the payment after the gateway answered: the CLI
    says it may still go through, and the same command with the key answers it, once."""
    payer, payee = unique_name("sam"), unique_name("tia")
    payer_account = cli.open_account("bank-c", "10.00")
    cli.register(payer, "bank-c", payer_account)
    cli.register(payee, "bank-c", cli.open_account("bank-c", "0"))
    cli.login(payer)
    key = str(uuid.uuid4())
    pid = suite.kill("bank-c", signal.SIGSTOP)
    try:
        unknown = cli.run("paygate", "pay", payee, "3.00", "--idempotency-key", key)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert unknown.returncode == 1, unknown.stderr
    assert f"it may still go through. Retry with --idempotency-key {key}" in unknown.stderr
    assert "FAILED" not in unknown.stderr
    deadline = time.monotonic() + 30.0
    while "IDEMPOTENCY_KEY_IN_USE" in (retry := cli.run(
        "paygate", "pay", payee, "3.00", "--idempotency-key", key
    )).stderr:
        assert time.monotonic() < deadline, "the payment was not settled in time"
        time.sleep(0.2)
    assert retry.returncode == 0, retry.stderr
    assert re.fullmatch(
        rf"paid {payee} 3\.00 USD: payment pay_\w+ SUCCEEDED( \(replayed: .*\))?\n", retry.stdout
    ), retry.stdout
    assert suite.bank_account("bank-c", payer_account).balance == 7_00


def test_register_without_a_terminal_asks_for_password_stdin(suite: Suite, cli: Cli) -> None:
    account = cli.open_account("bank-a", "1.00")
    # A session of its own: no controlling terminal, as under cron or CI.
    result = subprocess.run(
        [str(BIN / "paygate"), "register", unique_name("lee"), "--bank", "bank-a",
         "--account", account, "--link-code", account.link_code],
        cwd=suite.dir, env=cli.env, input=f"{PASSWORD}\n", capture_output=True, text=True,
        timeout=60, check=False, start_new_session=True,
    )
    assert result.returncode == 1
    assert result.stderr == (
        "error: no terminal to ask for the password: pipe it in with --password-stdin\n"
    )


def test_register_without_a_link_code_or_a_terminal_says_to_pass_one(
    suite: Suite, cli: Cli
) -> None:
    account = cli.open_account("bank-a", "1.00")
    result = subprocess.run(
        [str(BIN / "paygate"), "register", unique_name("pat"), "--bank", "bank-a",
         "--account", account, "--password-stdin"],
        cwd=suite.dir, env=cli.env, input=f"{PASSWORD}\n", capture_output=True, text=True,
        timeout=60, check=False, start_new_session=True,
    )
    assert (result.returncode, result.stderr) == (
        1, "error: no terminal to ask for the account's link code: pass --link-code\n"
    )


def test_a_corrupt_session_file_says_what_to_do(suite: Suite, cli: Cli) -> None:
    cli.session_file.parent.mkdir(parents=True)
    cli.session_file.write_text("{not json")
    result = cli.run("paygate", "balance")
    assert result.returncode == 1
    assert "delete it and log in again" in result.stderr
    assert "Traceback" not in result.stderr


def test_deposit_twice_with_one_reference_moves_money_once(suite: Suite, cli: Cli) -> None:
    number = cli.open_account("bank-a", "10.00")
    deposit = ("deposit", "--bank", "bank-a", "--account", number, "--amount", "5.25")
    reference = f"cli-{uuid.uuid4()}"
    first = cli.ok("paygate-admin", *deposit, "--reference", reference)
    assert first == "balance: 15.25 USD (applied)\n"
    second = cli.ok("paygate-admin", *deposit, "--reference", reference)
    assert second == "balance: 15.25 USD (replayed: reference already applied, nothing changed)\n"
    assert suite.bank_account("bank-a", number).balance == 15_25
