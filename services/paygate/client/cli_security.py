"""The `paygate` commands of account security: two-factor login, the password, sessions.

    paygate mfa enable                  shows a new key (a QR code, and as text), asks for
                                        a code of it, prints 10 recovery codes, once
    paygate login alice [--code CODE]   asks for the code when the account needs one
    paygate mfa disable                 the password and a code
    paygate mfa recovery-codes          new recovery codes for a code; the old ones stop
    paygate password                    the current password, then the new one (twice)
    paygate sessions                    your live sessions; `sessions revoke ID` ends one
    paygate logout --all                ends every session (cli.py)

Scripts give the password on standard input (--password-stdin) and the code on the line
after it, or with --code. The key, the codes and the recovery codes are printed for the
user to see, and go nowhere else: not to a log (-v logs only each call's method and
status) and not to the session file, which keeps only the access token.
"""

from __future__ import annotations

import argparse
import io
import sys

import segno

from paygate.client import cli as _cli
from paygate.client._models import Session, SessionInfo, TotpEnrollment
from paygate.client._session_file import remove_session, session_path
from paygate.client._sync_client import Client
from paygate.client.cli_errors import CliError
from paygate.client.cli_prompts import (
    has_terminal,
    read_code,
    read_new_password,
    read_password,
)
from paygate.errors import INVALID_ONE_TIME_CODE, MFA_REQUIRED, InvalidArgument, Unauthenticated

TIME_FORMAT = "%Y-%m-%d %H:%M:%S UTC"
CONFIRM_TRIES_ON_A_TERMINAL = 3
CODE_PROMPT = "one-time code (from your authenticator app, or a recovery code): "
STORE_THEM = (
    "Recovery codes: each one logs you in once without the app. Store them now where you"
    " keep passwords, not only on this computer: they are not shown again."
)
QR_CHARACTERS = "█▀▄ "


def add_code_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--code",
        metavar="CODE",
        help=f"{what}: the code your authenticator app shows now, or a recovery code;"
        " asked for when not given (or read from the line after the password)",
    )


def add_security_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    mfa = commands.add_parser(
        "mfa",
        help="two-factor login: enable, disable, new recovery codes",
        description="Two-factor login: a code of an authenticator app at each login.",
    )
    actions = mfa.add_subparsers(required=True, metavar="ACTION", help="one of these")
    enable = actions.add_parser(
        "enable", help="turn two-factor login on: shows a key for your app, asks for a code"
    )
    _password_stdin(enable, "and the app's code on the line after it")
    enable.set_defaults(command=cmd_mfa_enable, unreachable_means="two-factor login is as it was")
    disable = actions.add_parser("disable", help="turn two-factor login off (password and code)")
    _password_stdin(disable, "and the code on the line after it")
    add_code_option(disable, "a code")
    disable.set_defaults(command=cmd_mfa_disable, unreachable_means="two-factor login is as it was")
    renew = actions.add_parser(
        "recovery-codes", help="make new recovery codes (with a code); the old ones stop working"
    )
    add_code_option(renew, "a code")
    renew.set_defaults(command=cmd_mfa_recovery_codes, unreachable_means="nothing was changed")

    password = commands.add_parser("password", help="change your password; your other sessions end")
    _password_stdin(password, "and the new one on the line after it")
    password.set_defaults(command=cmd_password, unreachable_means="the password was not changed")

    sessions = commands.add_parser(
        "sessions",
        help="list your live sessions; `paygate sessions revoke ID` ends one",
        usage="%(prog)s [-h] [revoke ID]",
        description="Without an ACTION, list your live sessions, this one marked with *.",
    )
    sessions.set_defaults(command=cmd_sessions)
    session_actions = sessions.add_subparsers(metavar="ACTION", help="what to do instead")
    revoke = session_actions.add_parser("revoke", help="end one of your sessions, at once")
    revoke.add_argument(
        "session_id", metavar="ID", help="the session, as `paygate sessions` lists it"
    )
    revoke.set_defaults(command=cmd_sessions_revoke, unreachable_means="no session was ended")


def _password_stdin(parser: argparse.ArgumentParser, then: str) -> None:
    parser.add_argument(
        "--password-stdin", action="store_true", help=f"read the password from stdin, {then}"
    )


# Logging in with a code (`paygate login`, and `paygate queue sync` when it logs in again).


def log_in(client: Client, args: argparse.Namespace, username: str, password: str) -> Session:
    """Log in; when the gateway answers MFA_REQUIRED, again with a one-time code: --code,
    the line after the password on stdin, or asked on the terminal."""
    given = getattr(args, "code", None)
    try:
        return client.login(username, password, one_time_code=given or "")
    except Unauthenticated as error:
        if error.reason != MFA_REQUIRED or given:
            raise
    code = read_code(
        None,
        args.password_stdin,
        f"{username}'s {CODE_PROMPT}",
        missing=f"{username} has two-factor login on and there is no terminal to ask for a"
        " code: pass --code CODE, or give it on the line after the password (--password-stdin)",
    )
    return client.login(username, password, one_time_code=code)


# Commands.


def cmd_mfa_enable(args: argparse.Namespace) -> None:
    stored = _cli.require_session(args)
    password = read_password(args.password_stdin, confirm=False)
    with _cli.open_client(args, stored) as client:
        enrollment = client.enroll_totp(password)
        show_key(enrollment)
        codes = confirm(client, args)
    print(f"two-factor login is on for {stored.username}: each login needs a code of the app.")
    print_recovery_codes(codes)


def confirm(client: Client, args: argparse.Namespace) -> list[str]:
    """Turn two-factor on with a code of the new key; on a terminal, a mistyped code may be
    typed again."""
    tries = CONFIRM_TRIES_ON_A_TERMINAL if has_terminal() else 1
    attempt = 1
    while True:
        code = read_code(
            None,
            args.password_stdin,
            "code the app shows now: ",
            missing="no terminal to ask for the app's code: give it on the line after the"
            " password (--password-stdin)",
        )
        try:
            return client.confirm_totp(code)
        except InvalidArgument as error:
            if error.reason != INVALID_ONE_TIME_CODE:
                raise
            said = (
                "that code does not match the new key: check that the app's clock is right"
                " and type the code it shows now"
            )
            if attempt == tries:
                raise CliError(
                    f"{said}. Two-factor login stays off: run `paygate mfa enable` again"
                    f" (with a new key) [{error.reason}]"
                ) from error
            print(said, file=sys.stderr)
            attempt += 1


def cmd_mfa_disable(args: argparse.Namespace) -> None:
    stored = _cli.require_session(args)
    password = read_password(args.password_stdin, confirm=False)
    code = read_code(
        args.code,
        args.password_stdin,
        CODE_PROMPT,
        missing="no terminal to ask for a code: pass --code CODE",
    )
    with _cli.open_client(args, stored) as client:
        client.disable_totp(password, code)
    print(
        f"two-factor login is off for {stored.username}: the password alone logs in."
        " You may remove Paygate from your authenticator app."
    )


def cmd_mfa_recovery_codes(args: argparse.Namespace) -> None:
    stored = _cli.require_session(args)
    code = read_code(
        args.code, False, CODE_PROMPT, missing="no terminal to ask for a code: pass --code CODE"
    )
    with _cli.open_client(args, stored) as client:
        codes = client.regenerate_recovery_codes(code)
    print(f"new recovery codes for {stored.username}; the old ones no longer work.")
    print_recovery_codes(codes)


def cmd_password(args: argparse.Namespace) -> None:
    stored = _cli.require_session(args)
    current = read_password(args.password_stdin, confirm=False, prompt="current password: ")
    new = read_new_password(args.password_stdin)
    with _cli.open_client(args, stored) as client:
        ended = client.change_password(current, new)
    others = f"{ended} other session{'s' * (ended != 1)} ended" if ended else "no other session"
    print(f"password changed for {stored.username}; {others} (this one stays)")


def cmd_sessions(args: argparse.Namespace) -> None:
    with _cli.open_client(args, _cli.require_session(args)) as client:
        sessions = client.list_sessions()
    print("\n".join(session_table(sessions)))


def cmd_sessions_revoke(args: argparse.Namespace) -> None:
    path = session_path(args.environ)
    with _cli.open_client(args, _cli.require_session(args)) as client:
        current = [s.session_id for s in client.list_sessions() if s.current]
        try:
            client.revoke_session(args.session_id)
        except InvalidArgument as error:
            raise InvalidArgument(
                f"{args.session_id!r} is not a session id: `paygate sessions` lists yours",
                reason=error.reason,
            ) from error
    if args.session_id in current:
        remove_session(path)  # its token no longer works: forget it
        print(f"ended session {args.session_id}: it was this one, so you are logged out here")
        return
    print(f"ended session {args.session_id}")


# What the commands print.


def show_key(enrollment: TotpEnrollment) -> None:
    """The new key, as a QR code to scan and as text to type; flushed before the code is
    asked for, so that a script reading the output sees it."""
    lines = qr_lines(enrollment.otpauth_uri)
    if lines:
        print("Scan this QR code with your authenticator app (or type the key below into it):")
        print("\n".join(lines))
    else:
        print("(this terminal's encoding cannot draw the QR code: type the key into your app)")
    print(f"key: {enrollment.secret}")
    print(f"uri: {enrollment.otpauth_uri}", flush=True)


def qr_lines(uri: str) -> list[str]:
    """The QR code of `uri` in half blocks, light modules drawn (for a dark terminal), or
    [] when standard output cannot write those characters."""
    encoding = getattr(sys.stdout, "encoding", None) or "ascii"
    try:
        QR_CHARACTERS.encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return []
    text = _terminal_text(segno.make(uri, error="l", micro=False))
    return text.rstrip("\n").split("\n")


def _terminal_text(code: segno.QRCode) -> str:
    out = io.StringIO()
    code.terminal(out=out, compact=True)
    return out.getvalue()


def print_recovery_codes(codes: list[str]) -> None:
    print(STORE_THEM)
    for code in codes:
        print(f"  {code}")


def session_table(sessions: list[SessionInfo]) -> list[str]:
    if not sessions:
        return ["no live sessions"]
    width = max(len("SESSION"), *(len(s.session_id) for s in sessions))
    rows = [f"  {'SESSION':<{width}}  {'STARTED':<23}  {'LAST USED':<23}  ADDRESS"]
    for s in sessions:
        mark = "*" if s.current else " "
        rows.append(
            f"{mark} {s.session_id:<{width}}  {s.create_time:{TIME_FORMAT}}"
            f"  {s.last_use_time:{TIME_FORMAT}}  {s.client_address}"
        )
    rows.append("(*: this session)")
    return rows
