"""paygate: the command-line client of the Paygate gateway, a thin layer over Client.

    paygate register alice --bank bank-a --account 100001 --link-code DEMO-100001
    paygate login alice
    paygate balance
    paygate pay bob 12.50 --description lunch
    paygate pay --queue-if-offline bob 5.00        (see `paygate queue --help`)
    paygate pay-batch payouts.csv                  a payment per line (see cli_batch.py)
    paygate pay-split bob=10.00 carol=2.50         one payment, two payees, all or none
    paygate pay bob 20.00 --capture-later          held until bob captures it:
    paygate capture PAYMENT_ID 12.50               (bob) or `paygate cancel PAYMENT_ID`
    paygate payments --limit 10
    paygate mfa enable                             two-factor login (see cli_security.py),
    paygate password, paygate sessions             the password and sessions
    paygate logout [--all]

Passwords are read from the terminal (or one line of standard input with
--password-stdin), never from the command line, where other users could see them.
The login is kept in $XDG_CONFIG_HOME/paygate/session.json, readable by its owner only.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import itertools
import logging
import os
import sys
import uuid
from collections.abc import Callable, Mapping, Sequence

import paygate
from paygate.client import (
    DEFAULT_TARGET,
    DEFAULT_TIMEOUT_S,
    Client,
    InvalidArgument,
    Outbox,
    PaygateError,
    Payment,
    Unauthenticated,
    Unavailable,
    cli_authorizations,
    cli_batch,
    cli_events,
    cli_queue,
    cli_refunds,
    cli_security,
    cli_split,
)
from paygate.client._session_file import (
    SessionFileError,
    StoredSession,
    load_session,
    remove_session,
    save_session,
    session_path,
)
from paygate.client.cli_errors import (
    CA_CERT_ENV,
    GATEWAY_ENV,
    CliError,
    no_answer_message,
    payment_failure_message,
    refusal_message,
)
from paygate.client.cli_prompts import ask_secret, has_terminal, read_password
from paygate.common.money import DEFAULT_CURRENCY, format_amount, parse_amount
from paygate.common.rpc_errors import from_channel

DEFAULT_CA_CERT = "certs/ca.pem"
DEFAULT_LIMIT = 20
MAX_PAGE_SIZE = 100  # the gateway's limit on ListPayments
NOT_LOGGED_IN = "not logged in: run `paygate login USER`"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser(os.environ).parse_args(argv)
    if args.verbose:
        logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    command: Callable[[argparse.Namespace], None] = args.command
    try:
        command(args)
    except NotLoggedIn as missing:
        print(str(missing) or NOT_LOGGED_IN, file=sys.stderr)
        return 1
    except PaygateError as error:
        if from_channel(error):
            # Every command the gateway did not answer, said the same way.
            said = no_answer_message(
                error,
                args.dialed or args.gateway,
                timeout_s=args.timeout,
                consequence=args.unreachable_means,
                hint=args.unreachable_hint,
            )
            print(said, file=sys.stderr)
        else:
            print(refusal_message(error), file=sys.stderr)
        return 1
    except (CliError, SessionFileError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


def build_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="paygate", description="Pay other Paygate users.")
    parser.add_argument(
        "--version",
        action="version",
        version=f"%(prog)s {paygate.__version__}",
        help="print the version of paygate and exit",
    )
    parser.add_argument(
        "--gateway",
        default=environ.get(GATEWAY_ENV) or DEFAULT_TARGET,
        help=(
            f"gateway address, or several as IP:PORT,IP:PORT to balance over them"
            f" (env {GATEWAY_ENV}; default %(default)s)"
        ),
    )
    parser.add_argument(
        "--ca-cert",
        default=environ.get(CA_CERT_ENV) or DEFAULT_CA_CERT,
        help=f"CA certificate that signed the gateway's (env {CA_CERT_ENV}; default %(default)s)",
    )
    parser.add_argument(
        "--timeout",
        type=positive_float,
        default=DEFAULT_TIMEOUT_S,
        metavar="SECONDS",
        help="deadline of each call (default %(default)s)",
    )
    cli_queue.add_outbox_option(parser, environ)
    parser.add_argument("-v", "--verbose", action="store_true", help="log each call to stderr")
    # dialed: the gateway a command called; unreachable_means: what it means for the command
    # that the gateway could not be reached (said by main, for every command).
    parser.set_defaults(environ=environ, dialed=None, unreachable_means="", unreachable_hint="")
    commands = parser.add_subparsers(
        required=True, metavar="COMMAND", help="one of these; `paygate COMMAND --help` for more"
    )

    register = commands.add_parser("register", help="create a user linked to a bank account")
    register.add_argument("username", help="your new user name (letters, digits, . _ -)")
    register.add_argument("--bank", required=True, help="bank id, for example bank-a")
    register.add_argument("--account", required=True, help="account number at that bank")
    register.add_argument(
        "--link-code",
        help="the account's link code, from the bank (proves the account is yours);"
        " asked for when not given",
    )
    register.add_argument(
        "--password-stdin", action="store_true", help="read the password from stdin"
    )
    register.set_defaults(command=cmd_register, unreachable_means="nobody was registered")

    login = commands.add_parser("login", help="log in and keep the session")
    login.add_argument("username", help="your user name")
    login.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    cli_security.add_code_option(login, "with two-factor login on")
    login.set_defaults(command=cmd_login, unreachable_means="you are not logged in")

    logout = commands.add_parser("logout", help="revoke the session")
    logout.add_argument(
        "--all", action="store_true", help="end every session of yours, wherever it was made"
    )
    logout.set_defaults(command=cmd_logout)
    commands.add_parser("balance", help="show your balance").set_defaults(command=cmd_balance)

    pay = commands.add_parser("pay", help="pay another user")
    pay.add_argument("payee", help="the user name of the user to pay")
    pay.add_argument("amount", help="decimal amount, for example 12.50")
    pay.add_argument(
        "--currency",
        default=DEFAULT_CURRENCY,
        help="ISO 4217 code; both accounts must hold it (default %(default)s)",
    )
    pay.add_argument(
        "--description", default="", help="a note both users see in their list of payments"
    )
    pay.add_argument("--idempotency-key", help="reuse the key of a payment to retry it safely")
    pay.add_argument(
        "--queue-if-offline",
        action="store_true",
        help="keep the payment in the outbox if the gateway cannot be reached, to send later",
    )
    cli_authorizations.add_capture_later_option(pay)
    pay.set_defaults(
        command=cmd_pay,
        unreachable_means="nothing was paid",
        unreachable_hint="With --queue-if-offline the payment waits in the outbox and is sent"
        " when the gateway is back.",
    )

    cli_batch.add_pay_batch_parser(commands)
    cli_split.add_pay_split_parser(commands)

    payments = commands.add_parser("payments", help="list your payments, newest first")
    payments.add_argument(
        "--limit",
        type=positive_int,
        default=DEFAULT_LIMIT,
        help="list at most this many (default %(default)s)",
    )
    payments.set_defaults(command=cmd_payments)
    cli_queue.add_queue_parsers(commands)
    cli_authorizations.add_authorization_parsers(commands)
    cli_refunds.add_refund_parsers(commands)
    cli_events.add_events_parser(commands)
    cli_security.add_security_parsers(commands)
    return parser


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be positive, not {text}")
    return value


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {text}")
    return value


# Commands. Each one opens a Client, makes its calls and prints the result for people.


def cmd_register(args: argparse.Namespace) -> None:
    link_code = args.link_code
    if link_code is None:
        if not has_terminal():
            raise CliError("no terminal to ask for the account's link code: pass --link-code")
        link_code = ask_secret("link code (from your bank): ", "link code")
    password = read_password(args.password_stdin, confirm=True)
    with open_client(args) as client:
        user = client.register(
            args.username, password, args.bank, args.account, link_code=link_code
        )
    print(f"registered {args.username}: {user.bank_id} account {user.account_number}")


def cmd_login(args: argparse.Namespace) -> None:
    password = read_password(args.password_stdin, confirm=False)
    with open_client(args) as client:
        session = cli_security.log_in(client, args, args.username, password)
    stored = StoredSession(
        gateway=args.gateway,
        username=args.username,
        access_token=session.access_token,
        expire_time=session.expire_time,
    )
    save_session(session_path(args.environ), stored)
    print(f"logged in as {args.username} until {session.expire_time:%Y-%m-%d %H:%M:%S} UTC")


def cmd_logout(args: argparse.Namespace) -> None:
    path = session_path(args.environ)
    stored = load_session(path)
    if stored is None:
        raise NotLoggedIn
    expired = stored.expired(datetime.datetime.now(datetime.UTC))
    if args.all and expired:
        raise CliError(
            f"the session of {stored.username} has expired, so it cannot end the others:"
            f" run `paygate login {stored.username}`, then `paygate logout --all`"
        )
    expires = f"{stored.expire_time:%Y-%m-%d %H:%M:%S} UTC"
    args.unreachable_means = (
        f"logged out here, but the session was not revoked: its token stays valid until {expires}"
        + ("; your other sessions were not ended" if args.all else "")
    )
    try:
        if not expired:
            # Revoked where it was issued, whatever --gateway says now. Unauthenticated
            # means already revoked, which is what the user wants, unless the others were
            # to end too: that needs a live session, and the error says to log in again.
            client = open_client(args, stored, target=stored.gateway)
            with client, contextlib.suppress(*(() if args.all else (Unauthenticated,))):
                client.logout(all_sessions=args.all)
    finally:
        # Forgotten even when the gateway cannot be told: the user asked to log out here.
        remove_session(path)
    print(f"logged out {stored.username}" + (": every session of yours ended" * args.all))


def cmd_balance(args: argparse.Namespace) -> None:
    with open_client(args, require_session(args)) as client:
        balance = client.balance()
    currency = balance.currency
    print(
        f"balance: {format_amount(balance.balance_minor, currency)} {currency} "
        f"(available {format_amount(balance.available_minor, currency)} {currency})"
    )


def cmd_pay(args: argparse.Namespace) -> None:
    amount_minor = parse_amount(args.amount, args.currency)
    if amount_minor == 0:
        raise InvalidArgument(f"amount {args.amount!r} is zero: a payment moves more than nothing")
    # Chosen here rather than by the library, so that it can be shown for a retry.
    key = args.idempotency_key if args.idempotency_key is not None else str(uuid.uuid4())
    if args.queue_if_offline:
        # Has its own session rule: an expired session can still queue a payment.
        cli_queue.pay_or_queue(args, key, amount_minor)
        return
    stored = require_session(args)
    with open_client(args, stored) as client:
        try:
            payment = client.pay(
                args.payee,
                amount_minor,
                currency=args.currency,
                description=args.description,
                idempotency_key=key,
                capture_later=args.capture_later,
            )
        except Unavailable as error:
            # What is known of the payment; main then prints the error itself.
            said = payment_failure_message(error, key)
            if said:
                print(said, file=sys.stderr)
            raise
    if args.capture_later:
        print(cli_authorizations.held_message(payment))
        return
    amount = format_amount(payment.amount_minor, payment.currency)
    replayed = " (replayed: this key's payment, made before; nothing moved now)"
    print(
        f"paid {payment.payee_username} {amount} {payment.currency}: "
        f"payment {payment.payment_id} {payment.status}{replayed if payment.replayed else ''}"
    )


def cmd_payments(args: argparse.Namespace) -> None:
    stored = require_session(args)
    with open_client(args, stored) as client:
        pages = client.iter_payments(page_size=min(args.limit, MAX_PAGE_SIZE))
        payments = list(itertools.islice(pages, args.limit))
    if not payments:
        print("no payments")
    for payment in payments:
        print(describe_payment(payment, stored.username))


def describe_payment(payment: Payment, username: str) -> str:
    outgoing = payment.payer_username == username
    direction = f"to {payment.payee_username}" if outgoing else f"from {payment.payer_username}"
    # What moved of a payment that did (all of it, or what its payee captured), signed;
    # one that did not (failed, cancelled, or only held) unsigned: it moved nothing.
    moved_minor = cli_authorizations.moved_minor(payment)
    part_minor = payment.amount_minor
    if payment.splits:  # a payee sees their own part of it; the payer, every part
        parts = {split.payee_username: split.amount_minor for split in payment.splits}
        total = format_amount(payment.amount_minor, payment.currency)
        if outgoing:
            direction = "to " + ", ".join(
                f"{name} {format_amount(part, payment.currency)}" for name, part in parts.items()
            )
        else:
            part_minor = parts.get(username, 0)
            moved_minor = part_minor if moved_minor else 0
            direction += f" (your part of {total})"
    amount = format_amount(moved_minor or part_minor, payment.currency)
    sign = ("-" if outgoing else "+") if moved_minor else " "
    line = (
        f"{payment.create_time:%Y-%m-%d %H:%M:%S} UTC  {payment.payment_id}  "
        f"{payment.status:<9}  {sign}{amount} {payment.currency}  {direction}"
    )
    if payment.failure_reason:
        line += f"  [{payment.failure_reason}]"
    line += cli_authorizations.capture_note(payment)
    line += cli_refunds.refund_note(payment)
    if payment.description:
        line += f"  {payment.description}"
    return line


# Helpers.


class NotLoggedIn(Exception):
    """No saved session for this gateway, or it has expired."""


def open_client(
    args: argparse.Namespace,
    stored: StoredSession | None = None,
    *,
    target: str | None = None,
    outbox: Outbox | None = None,
) -> Client:
    """The client of the gateway a command calls (`target`, else --gateway)."""
    args.dialed = target or args.gateway
    try:
        return Client(
            args.dialed,
            ca_cert=args.ca_cert,
            access_token=stored.access_token if stored is not None else None,
            timeout_s=args.timeout,
            username=stored.username if outbox is not None and stored is not None else None,
            outbox=outbox,
        )
    except OSError as exc:
        raise CliError(
            f"cannot read the CA certificate {args.ca_cert} ({exc.strerror}): name the CA that"
            f" signed the gateway's certificate with --ca-cert or {CA_CERT_ENV} (a relative path"
            f" is read from the current directory, {os.getcwd()})"
        ) from exc
    except ValueError as exc:  # a malformed list of gateway addresses
        raise CliError(f"--gateway: {exc}") from exc


def require_session(args: argparse.Namespace) -> StoredSession:
    stored = load_session(session_path(args.environ))
    if stored is None:
        raise NotLoggedIn
    if stored.gateway != args.gateway:
        # A token is only good at the gateway that issued it.
        raise NotLoggedIn(
            f"not logged in at {args.gateway}: the saved session is {stored.username}'s at"
            f" {stored.gateway}; run `paygate --gateway {args.gateway} login USER`"
        )
    if stored.expired(datetime.datetime.now(datetime.UTC)):
        raise NotLoggedIn(
            f"the session of {stored.username} has expired: run `paygate login {stored.username}`"
        )
    return stored


if __name__ == "__main__":
    sys.exit(main())
