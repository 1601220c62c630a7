"""`paygate` and `paygate-admin` where no gateway answers: prompts, addresses, certificates.

Each test runs the real console script as a subprocess, with its own XDG_CONFIG_HOME and,
where it matters, from a directory that is not the repository. No suite is started: the
gateway is a free port with nothing on it, or a TLS server signed by another CA.
"""

from __future__ import annotations

import concurrent.futures
import datetime
import json
import os
import pathlib
import pty
import select
import subprocess
import sys
import time

import grpc
import pytest
from interactive import ON_TERMINAL
from suite import BIN, free_ports, load_gen_certs

TIMEOUT_S = 60.0
PROMPT_WAIT_S = 20.0
RAW_GRPC = "failed to connect to all addresses"
CTRL_D = b"\x04"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    folder = tmp_path_factory.mktemp("certs")
    load_gen_certs().generate(folder)
    return folder


@pytest.fixture
def home(tmp_path: pathlib.Path) -> pathlib.Path:
    folder = tmp_path / "xdg-config"
    folder.mkdir()
    return folder


def environment(home: pathlib.Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYGATE_")}
    env.update(XDG_CONFIG_HOME=str(home), XDG_STATE_HOME=str(home / "state"), **extra)
    return env


def run(
    program: str, *args: str, env: dict[str, str], cwd: pathlib.Path, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / program), *args], cwd=cwd, env=env, input=stdin, capture_output=True,
        text=True, timeout=TIMEOUT_S, check=False, start_new_session=True,
    )


def save_session(home: pathlib.Path, gateway: str) -> pathlib.Path:
    path = home / "paygate" / "session.json"
    path.parent.mkdir(mode=0o700, exist_ok=True)
    expires = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)
    session = {"gateway": gateway, "username": "alice", "access_token": "a-token",
               "expire_time": expires.isoformat()}
    path.write_text(json.dumps(session))
    path.chmod(0o600)
    return path


# Ctrl-D, or no input at all, where a password is asked ----------------------------------


def run_on_terminal(
    args: list[str], env: dict[str, str], cwd: pathlib.Path, answers: list[bytes]
) -> tuple[int, str, str]:
    """Run paygate on a pseudo-terminal; at each prompt (ending in ": "), type the next
    answer. Returns the exit status, what the terminal showed, and stderr."""
    master, slave = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-c", ON_TERMINAL, str(BIN / "paygate"), *args],
        stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=cwd,
    )
    os.close(slave)
    shown = b""
    try:
        for asked, answer in enumerate(answers, start=1):
            deadline = time.monotonic() + PROMPT_WAIT_S
            while shown.count(b": ") < asked:
                assert time.monotonic() < deadline, f"no prompt; the terminal shows {shown!r}"
                ready, _, _ = select.select([master], [], [], 0.2)
                if ready:
                    shown += os.read(master, 1024)
            os.write(master, answer)
        _, err = process.communicate(timeout=TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(master)
    return process.returncode, shown.decode(errors="replace"), err.decode(errors="replace")


@pytest.mark.parametrize(
    ("args", "answers", "said"),
    [
        (["login", "alice"], [CTRL_D], "no password given"),
        (["register", "alice", "--bank", "bank-a", "--account", "100001"], [CTRL_D],
         "no link code given"),
        (["register", "alice", "--bank", "bank-a", "--account", "100001", "--link-code", "C"],
         [b"a-password\n", CTRL_D], "no password given"),
    ],
    ids=["login", "register-link-code", "register-password-again"],
)
def test_ctrl_d_at_a_prompt_says_nothing_was_done(
    certs: pathlib.Path, home: pathlib.Path, tmp_path: pathlib.Path,
    args: list[str], answers: list[bytes], said: str,
) -> None:
    port = free_ports(1)[0]
    env = environment(home, PAYGATE_CA_CERT=str(certs / "ca.pem"))
    status, shown, err = run_on_terminal(
        ["--gateway", f"127.0.0.1:{port}", *args], env, tmp_path, answers
    )
    assert status == 1, (shown, err)
    assert "Traceback" not in err and "EOFError" not in err, err
    assert said in err and "the input ended" in err, err
    assert "nothing was done" in err
    assert not (home / "paygate" / "session.json").exists()


@pytest.mark.parametrize("command", ["login", "register"])
def test_no_password_on_a_closed_or_empty_stdin_is_an_error_not_a_traceback(
    certs: pathlib.Path, home: pathlib.Path, tmp_path: pathlib.Path, command: str
) -> None:
    port = free_ports(1)[0]
    env = environment(home, PAYGATE_CA_CERT=str(certs / "ca.pem"))
    args = ["--gateway", f"127.0.0.1:{port}", command, "alice", "--password-stdin"]
    if command == "register":
        args += ["--bank", "bank-a", "--account", "100001", "--link-code", "C"]
    empty = run("paygate", *args, env=env, cwd=tmp_path, stdin="")
    # Standard input closed outright (`<&-`): Python then has no sys.stdin at all.
    closed = subprocess.run(
        ["sh", "-c", 'exec "$0" "$@" <&-', str(BIN / "paygate"), *args], cwd=tmp_path,
        env=env, capture_output=True, text=True, timeout=TIMEOUT_S, check=False,
        start_new_session=True,
    )
    for result in (empty, closed):
        assert (result.returncode, result.stdout) == (1, ""), result.stderr
        assert result.stderr == "error: empty password\n"


# No gateway at the address: every command says so, and what to do ----------------------


COMMANDS = {
    "register": (["register", "alice", "--bank", "bank-a", "--account", "100001",
                  "--link-code", "C", "--password-stdin"], "nobody was registered"),
    "login": (["login", "alice", "--password-stdin"], "you are not logged in"),
    "balance": (["balance"], ""),
    "payments": (["payments"], ""),
    "pay": (["pay", "bob", "1.00"], "nothing was paid"),
    "logout": (["logout"], "the session was not revoked"),
    "capture": (["capture", "pay_0", "1.00"], "nothing was captured"),
    "cancel": (["cancel", "pay_0"], "nothing was cancelled"),
    "mfa-enable": (["mfa", "enable", "--password-stdin"], "two-factor login is as it was"),
    "mfa-disable": (["mfa", "disable", "--password-stdin", "--code", "123456"],
                    "two-factor login is as it was"),
    "mfa-recovery-codes": (["mfa", "recovery-codes", "--code", "123456"], "nothing was changed"),
    "password": (["password", "--password-stdin"], "the password was not changed"),
    "sessions": (["sessions"], ""),
    "sessions-revoke": (["sessions", "revoke", "ses_0"], "no session was ended"),
    "logout-all": (["logout", "--all"], "your other sessions were not ended"),
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_says_the_gateway_cannot_be_reached_and_what_to_do(
    certs: pathlib.Path, home: pathlib.Path, tmp_path: pathlib.Path, command: str
) -> None:
    args, consequence = COMMANDS[command]
    target = f"127.0.0.1:{free_ports(1)[0]}"
    session = save_session(home, target)
    env = environment(home, PAYGATE_CA_CERT=str(certs / "ca.pem"), PAYGATE_GATEWAY=target)
    # The password, and a new one for `paygate password`.
    result = run("paygate", *args, env=env, cwd=tmp_path, stdin="a-password\nnew-password\n")
    assert (result.returncode, result.stdout) == (1, ""), result.stderr
    first, advice = result.stderr.splitlines()
    assert first.startswith(f"error: the gateway at {target} could not be reached"), first
    assert first.endswith("[UNAVAILABLE]") and consequence in first, first
    assert "nothing listens there. Is the gateway running?" in advice, advice
    assert "--gateway (env PAYGATE_GATEWAY)" in advice
    assert RAW_GRPC not in result.stderr and "Traceback" not in result.stderr
    if command == "pay":
        assert "could not be reached: nothing was paid" in first
        assert "--queue-if-offline" in advice
    if command in ("logout", "logout-all"):
        assert not session.exists()  # forgotten here all the same, as asked


def test_a_gateway_signed_by_another_ca_is_named_with_the_flag_to_fix_it(
    certs: pathlib.Path, home: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    other = tmp_path / "other-certs"
    load_gen_certs().generate(other)
    credentials = grpc.ssl_server_credentials(
        [((other / "gateway-key.pem").read_bytes(), (other / "gateway.pem").read_bytes())]
    )
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=1))
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    try:
        target = f"127.0.0.1:{port}"
        save_session(home, target)
        env = environment(home, PAYGATE_CA_CERT=str(certs / "ca.pem"), PAYGATE_GATEWAY=target)
        result = run("paygate", "balance", env=env, cwd=tmp_path)
    finally:
        server.stop(None)
    assert result.returncode == 1, result.stderr
    assert f"the gateway at {target} could not be reached [UNAVAILABLE]" in result.stderr
    assert "is --ca-cert (env PAYGATE_CA_CERT) the CA that signed its certificate?" in (
        result.stderr
    )


# Run from another directory: the message names the flag and the variable -----------


def test_outside_the_repository_a_missing_ca_names_its_flag_and_variable(
    home: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    save_session(home, "127.0.0.1:50051")
    result = run("paygate", "balance", env=environment(home), cwd=tmp_path)
    assert (result.returncode, result.stdout) == (1, ""), result.stderr
    assert result.stderr.startswith("error: cannot read the CA certificate certs/ca.pem")
    assert "--ca-cert or PAYGATE_CA_CERT" in result.stderr
    assert str(tmp_path) in result.stderr  # where a relative path was looked for


def test_outside_the_repository_admin_names_the_configuration_to_pass(
    home: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    result = run("paygate-admin", "account", "--bank", "bank-a", "--account", "100001",
                 env=environment(home), cwd=tmp_path)
    assert (result.returncode, result.stdout) == (1, ""), result.stderr
    assert f"cannot read {tmp_path / 'certs' / 'ca.pem'}" in result.stderr
    assert "--config or PAYGATE_CONFIG" in result.stderr
    assert "gen_certs" not in result.stderr  # certificates may well exist elsewhere


# Version, usage and errors that need no gateway -----------------------------------------


@pytest.mark.parametrize("program", ["paygate", "paygate-admin"])
def test_version_comes_from_the_package(
    home: pathlib.Path, tmp_path: pathlib.Path, program: str
) -> None:
    import importlib.metadata

    result = run(program, "--version", env=environment(home), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{program} {importlib.metadata.version('paygate')}\n"


def test_queue_usage_shows_its_action_as_optional(
    home: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    result = run("paygate", "queue", "--help", env=environment(home), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: paygate queue [-h] [--limit N] [ACTION ...]\n")


def test_a_zero_amount_is_refused_with_its_reason_like_other_amounts(
    home: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    env = environment(home)
    zero = run("paygate", "pay", "bob", "0", env=env, cwd=tmp_path)
    negative = run("paygate", "pay", "bob", "-1", env=env, cwd=tmp_path)
    assert zero.stderr == (
        "error: amount '0' is zero: a payment moves more than nothing [INVALID_ARGUMENT]\n"
    )
    assert negative.stderr.endswith(" [INVALID_ARGUMENT]\n")
    assert zero.returncode == negative.returncode == 1
