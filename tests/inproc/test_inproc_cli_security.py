"""`paygate` account-security commands run as a user runs them: the real console script, a
subprocess, against the real gateway and banks of this process (tests/inproc), each user in
a config directory of its own.

At a terminal (a pseudo-terminal made the command's controlling terminal, as in
tests/test_cli_no_gateway.py) the password and codes are typed at prompts; a script gives
them on standard input, or the code with --code. The gateway's TOTP clock is the test's
(totp_clock.py), and the test computes each code with its own RFC 6238 (totp_codes.py) from
the key `paygate mfa enable` printed.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import re
import subprocess
from collections.abc import Iterator

import pytest
import segno
from interactive import Interaction
from servers import Servers
from suite import BIN, ISSUED_LINK_CODES
from totp_clock import Clock, set_clock
from totp_codes import rfc6238
from users import ISSUED_RECOVERY_CODES, ISSUED_TOTP_SECRETS, PASSWORD, unique_name

TIMEOUT_S = 60.0
NEW_PASSWORD = "another password"
KEY = re.compile(r"^key: ([A-Z2-7]{32})$", re.MULTILINE)
URI = re.compile(r"^uri: (otpauth://totp/\S+)$", re.MULTILINE)
RECOVERY_CODE = re.compile(r"^  ([a-z2-7]{4}(?:-[a-z2-7]{4}){3})$", re.MULTILINE)
STORE_THEM = "Store them now where you keep passwords"
QR_LINE = re.compile(r"^[█▀▄ ]+$")
TIME = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC"


@pytest.fixture
def clock(servers: Servers) -> Iterator[Clock]:
    with set_clock(servers) as clock:
        yield clock


@dataclasses.dataclass
class Paygate:
    """`paygate` in one config directory: one user's saved session."""

    servers: Servers
    home: pathlib.Path

    @property
    def session_file(self) -> pathlib.Path:
        return self.home / "paygate" / "session.json"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PAYGATE_")}
        env.update(
            PAYGATE_GATEWAY=self.servers.gateway_target,
            PAYGATE_CA_CERT=str(self.servers.config.certs_dir / "ca.pem"),
            XDG_CONFIG_HOME=str(self.home),
            XDG_STATE_HOME=str(self.home / "state"),
        )
        return env

    def start(self, *args: str, terminal: bool = False) -> Interaction:
        self.home.mkdir(parents=True, exist_ok=True)
        return Interaction([str(BIN / "paygate"), *args], self.env(), self.home, terminal)

    def run(self, *args: str, input: str = "") -> subprocess.CompletedProcess[str]:
        self.home.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            [str(BIN / "paygate"), *args],
            cwd=self.home,
            env=self.env(),
            input=input,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            check=False,
            start_new_session=True,  # no controlling terminal, as a script under cron
        )
        assert "Traceback" not in done.stderr, done.stderr
        return done

    def ok(self, *args: str, input: str = "") -> str:
        done = self.run(*args, input=input)
        assert done.returncode == 0, f"paygate {args}: {done.stderr}"
        return done.stdout

    def refused(self, *args: str, input: str = "") -> str:
        """The error of a command that must fail with status 1 and print nothing."""
        done = self.run(*args, input=input)
        assert (done.returncode, done.stdout) == (1, ""), (done.stdout, done.stderr)
        return done.stderr

    def login(self, name: str, *extra: str, password: str = PASSWORD, code: str = "") -> str:
        lines = f"{password}\n" + (f"{code}\n" if code else "")
        return self.ok("login", name, "--password-stdin", *extra, input=lines)


def new_user(servers: Servers, home: pathlib.Path) -> tuple[Paygate, str]:
    """A registered user, logged in with `paygate` in `home`."""
    account = servers.admin_open_account("bank-a", 10_00)
    ISSUED_LINK_CODES.append(account.link_code)
    cli, name = Paygate(servers, home), unique_name("sec")
    cli.ok(
        "register",
        name,
        "--bank",
        "bank-a",
        "--account",
        account,
        "--link-code",
        account.link_code,
        "--password-stdin",
        input=f"{PASSWORD}\n",
    )
    cli.login(name)
    return cli, name


@dataclasses.dataclass
class TwoFactor:
    secret: str
    recovery_codes: list[str]
    clock: Clock

    def code(self) -> str:
        """A code of a step not used yet: the clock moves on one step first."""
        self.clock.advance()
        return rfc6238(self.secret, self.clock.step)


def enable_by_script(cli: Paygate, clock: Clock) -> TwoFactor:
    """`paygate mfa enable --password-stdin`, answered as a script would: the password, then
    a code of the key it printed, on the line after."""
    running = cli.start("-v", "mfa", "enable", "--password-stdin")  # -v: each call logged
    running.answer("", PASSWORD)
    secret = running.printed(KEY).group(1)
    code = rfc6238(secret, clock.step)
    running.answer("", code)
    done = running.finish()
    assert done.returncode == 0, done.stderr
    codes = issued(secret, done.stdout)
    assert "rpc /paygate.v1.GatewayService/ConfirmTotp OK" in done.stderr
    assert not [s for s in (secret, code, *codes) if s in done.stderr]
    return TwoFactor(secret, codes, clock)


def issued(secret: str, printed: str) -> list[str]:
    """The recovery codes `printed`; they and the secret go to the search for leaks at the
    end of the run (tests/test_zz_no_secrets_leaked.py: the session files among others)."""
    ISSUED_TOTP_SECRETS.append(secret)
    codes = RECOVERY_CODE.findall(printed)
    ISSUED_RECOVERY_CODES.extend(codes)
    return codes


def qr_modules(lines: list[str]) -> list[list[bool]]:
    """The light/dark modules of a QR code drawn in half blocks (two rows a character)."""
    top = {"█": True, "▀": True, "▄": False, " ": False}
    bottom = {"█": True, "▀": False, "▄": True, " ": False}
    rows: list[list[bool]] = []
    for line in lines:
        rows += [[top[c] for c in line], [bottom[c] for c in line]]
    return rows


def test_mfa_enable_at_a_terminal_shows_a_qr_code_and_the_key_then_login_asks_a_code(
    servers: Servers, clock: Clock, tmp_path: pathlib.Path
) -> None:
    cli, name = new_user(servers, tmp_path / "config")
    running = cli.start("mfa", "enable", terminal=True)
    running.answer("password: ", PASSWORD)
    secret = running.printed(KEY).group(1)
    uri = running.printed(URI).group(1)
    running.answer(
        "code the app shows now: ",
        "000000" if rfc6238(secret, clock.step) != "000000" else "111111",
    )
    running.answer("code the app shows now: ", rfc6238(secret, clock.step))
    done = running.finish()
    assert done.returncode == 0, done.stderr
    assert "that code does not match the new key" in done.stderr

    lines = done.stdout.splitlines()
    assert lines[0].startswith("Scan this QR code with your authenticator app")
    drawn = [line for line in lines if QR_LINE.fullmatch(line)]
    assert len(drawn) > 10 and lines[1 : 1 + len(drawn)] == drawn
    # The QR code is the URI printed below it (segno's modules, light ones drawn).
    expected = [[not dark for dark in row] for row in segno.make(uri, error="l").matrix]
    border = (len(qr_modules(drawn)[0]) - len(expected)) // 2
    inner = [row[border:-border] for row in qr_modules(drawn)[border : border + len(expected)]]
    assert inner == expected
    assert uri.startswith(f"otpauth://totp/Paygate:{name}?") and f"secret={secret}" in uri
    assert f"two-factor login is on for {name}: each login needs a code of the app." in lines
    assert STORE_THEM in done.stdout and "not shown again" in done.stdout
    recovery = issued(secret, done.stdout)
    assert len(set(recovery)) == 10
    saved = cli.session_file.read_text()
    assert secret not in saved and not any(c in saved for c in recovery)

    # Login at a terminal: the password, then (the gateway answered MFA_REQUIRED) a code.
    login = Paygate(servers, tmp_path / "elsewhere").start("login", name, terminal=True)
    login.answer("password: ", PASSWORD)
    clock.advance()
    code = rfc6238(secret, clock.step)
    login.answer(
        f"{name}'s one-time code (from your authenticator app, or a recovery code): ", code
    )
    logged_in = login.finish()
    assert logged_in.returncode == 0, logged_in.stderr
    assert re.fullmatch(rf"logged in as {name} until {TIME}\n", logged_in.stdout)
    assert code not in (tmp_path / "elsewhere" / "paygate" / "session.json").read_text()


def test_login_takes_the_code_with_code_or_after_the_password_and_each_once(
    servers: Servers, clock: Clock, tmp_path: pathlib.Path
) -> None:
    cli, name = new_user(servers, tmp_path / "config")
    mfa = enable_by_script(cli, clock)
    assert len(mfa.recovery_codes) == 10
    other = Paygate(servers, tmp_path / "script")

    said = other.refused("login", name, "--password-stdin", input=f"{PASSWORD}\n")
    assert said == (
        f"error: {name} has two-factor login on and there is no terminal to ask for a code:"
        " pass --code CODE, or give it on the line after the password (--password-stdin)\n"
    )
    assert not other.session_file.exists()

    code = mfa.code()
    logged_in = other.run(
        "-v", "login", name, "--password-stdin", "--code", code, input=f"{PASSWORD}\n"
    )
    assert logged_in.stdout.startswith(f"logged in as {name} ")
    assert "rpc /paygate.v1.GatewayService/Login OK" in logged_in.stderr
    assert code not in logged_in.stderr
    assert other.refused(
        "login", name, "--password-stdin", "--code", code, input=f"{PASSWORD}\n"
    ) == (
        "error: the one-time code is wrong or was used already: type the code your app shows"
        " now (each code works once), or an unused recovery code [INVALID_ONE_TIME_CODE]\n"
    )
    assert other.login(name, code=mfa.code()).startswith(f"logged in as {name} ")
    assert other.login(name, "--code", mfa.recovery_codes[0]).startswith("logged in as ")
    assert "[INVALID_ONE_TIME_CODE]" in other.refused(
        "login", name, "--password-stdin", "--code", mfa.recovery_codes[0], input=f"{PASSWORD}\n"
    )
    # The right code with a wrong password says only that the password is wrong.
    assert other.refused(
        "login", name, "--password-stdin", "--code", mfa.code(), input="wrong password!\n"
    ) == ("error: invalid username or password [UNAUTHENTICATED]\n")


def test_new_recovery_codes_then_disable(
    servers: Servers, clock: Clock, tmp_path: pathlib.Path
) -> None:
    cli, name = new_user(servers, tmp_path / "config")
    mfa = enable_by_script(cli, clock)
    renewed = cli.ok("mfa", "recovery-codes", "--code", mfa.code())
    assert renewed.startswith(f"new recovery codes for {name}; the old ones no longer work.\n")
    new_codes = RECOVERY_CODE.findall(renewed)
    ISSUED_RECOVERY_CODES.extend(new_codes)
    assert len(new_codes) == 10 and STORE_THEM in renewed
    other = Paygate(servers, tmp_path / "other")
    assert "[INVALID_ONE_TIME_CODE]" in other.refused(
        "login", name, "--password-stdin", "--code", mfa.recovery_codes[1], input=f"{PASSWORD}\n"
    )
    other.login(name, "--code", new_codes[0])

    assert "[INVALID_ONE_TIME_CODE]" in cli.refused(
        "mfa", "disable", "--password-stdin", input=f"{PASSWORD}\n000000x\n"
    )
    disabled = cli.ok("mfa", "disable", "--password-stdin", input=f"{PASSWORD}\n{mfa.code()}\n")
    assert disabled.startswith(f"two-factor login is off for {name}: the password alone logs in.")
    assert other.login(name).startswith(f"logged in as {name} ")  # no code asked
    assert cli.refused(
        "mfa", "disable", "--password-stdin", "--code", "123456", input=f"{PASSWORD}\n"
    ) == ("error: two-factor login is off: `paygate mfa enable` turns it on [TOTP_NOT_ENABLED]\n")


def test_a_password_change_ends_the_other_sessions_and_the_old_password_fails(
    servers: Servers, tmp_path: pathlib.Path
) -> None:
    cli, name = new_user(servers, tmp_path / "config")
    other = Paygate(servers, tmp_path / "other")
    other.login(name)

    mismatch = cli.start("password", terminal=True)
    mismatch.answer("current password: ", PASSWORD)
    mismatch.answer("new password: ", NEW_PASSWORD)
    mismatch.answer("new password (again): ", NEW_PASSWORD + "x")
    done = mismatch.finish()
    assert (done.returncode, done.stderr) == (1, "error: the new passwords do not match\n")

    assert (
        cli.refused("password", "--password-stdin", input=f"wrong password!\n{NEW_PASSWORD}\n")
        == "error: the password is wrong [UNAUTHENTICATED]\n"
    )
    changed = cli.ok("password", "--password-stdin", input=f"{PASSWORD}\n{NEW_PASSWORD}\n")
    assert changed == f"password changed for {name}; 1 other session ended (this one stays)\n"
    assert cli.ok("balance").startswith("balance: 10.00 USD")
    assert "[UNAUTHENTICATED]" in other.refused("balance")
    assert other.refused("login", name, "--password-stdin", input=f"{PASSWORD}\n") == (
        "error: invalid username or password [UNAUTHENTICATED]\n"
    )
    assert other.login(name, password=NEW_PASSWORD).startswith(f"logged in as {name} ")


def test_sessions_are_listed_with_this_one_marked_and_ended_one_or_all(
    servers: Servers, tmp_path: pathlib.Path
) -> None:
    cli, name = new_user(servers, tmp_path / "config")
    other = Paygate(servers, tmp_path / "other")
    other.login(name)
    third = Paygate(servers, tmp_path / "third")
    third.login(name)

    header, *rows, footer = cli.ok("sessions").splitlines()
    assert re.fullmatch(r"  SESSION +STARTED +LAST USED +ADDRESS", header), header
    assert footer == "(*: this session)" and len(rows) == 3
    parsed = [
        re.fullmatch(rf"([* ]) (ses_[0-9a-f]+) +({TIME})  ({TIME})  (ipv4:127\.0\.0\.1)", row)
        for row in rows
    ]
    assert all(parsed), rows
    marks = [found.group(1) for found in parsed if found]
    assert marks == [" ", " ", "*"]  # newest first: this one logged in first
    ids = [found.group(2) for found in parsed if found]
    (theirs,) = [line for line in other.ok("sessions").splitlines() if line.startswith("* ses_")]
    assert theirs.split()[1] == ids[1]

    assert cli.ok("sessions", "revoke", ids[1]) == f"ended session {ids[1]}\n"
    assert "[UNAUTHENTICATED]" in other.refused("balance")
    assert len(cli.ok("sessions").splitlines()) == 4  # header, two sessions, footer
    assert cli.refused("sessions", "revoke", ids[1]) == (
        f"error: no live session {ids[1]} of yours [NOT_FOUND]\n"
    )
    assert cli.refused("sessions", "revoke", "pay_1") == (
        "error: 'pay_1' is not a session id: `paygate sessions` lists yours [INVALID_ARGUMENT]\n"
    )

    assert cli.ok("logout", "--all") == f"logged out {name}: every session of yours ended\n"
    assert not cli.session_file.exists()
    assert "[UNAUTHENTICATED]" in third.refused("balance")

    fourth = Paygate(servers, tmp_path / "fourth")
    fourth.login(name)
    (own,) = [
        line.split()[1] for line in fourth.ok("sessions").splitlines() if line.startswith("* ses_")
    ]
    assert fourth.ok("sessions", "revoke", own) == (
        f"ended session {own}: it was this one, so you are logged out here\n"
    )
    assert not fourth.session_file.exists()


def test_the_end_of_input_at_the_code_prompt_leaves_two_factor_login_off(
    servers: Servers, tmp_path: pathlib.Path
) -> None:
    cli, name = new_user(servers, tmp_path / "config")
    running = cli.start("mfa", "enable", terminal=True)
    running.answer("password: ", PASSWORD)
    ISSUED_TOTP_SECRETS.append(running.printed(KEY).group(1))
    running.answer("code the app shows now: ", "\x04")  # Ctrl-D
    done = running.finish()
    assert (done.returncode, done.stderr) == (
        1,
        "error: no code given (the input ended): nothing was done\n",
    )
    assert "Recovery codes" not in done.stdout
    assert cli.login(name).startswith(f"logged in as {name} ")  # no code asked

    script = cli.start("mfa", "enable", "--password-stdin")
    script.answer("", PASSWORD)
    ISSUED_TOTP_SECRETS.append(script.printed(KEY).group(1))
    script.answer("", "12345")
    refused = script.finish()
    assert (refused.returncode, refused.stderr) == (
        1,
        "error: that code does not match the new key: check that the app's clock is right and"
        " type the code it shows now. Two-factor login stays off: run `paygate mfa enable`"
        " again (with a new key) [INVALID_ONE_TIME_CODE]\n",
    )
    assert cli.login(name).startswith(f"logged in as {name} ")
