"""paygate-admin: operators open accounts and deposit money at a bank, and look after
gateway users, over mutual TLS.

    paygate-admin open-account --bank bank-a --balance 100.00   (prints NUMBER LINK_CODE)
    paygate-admin link-code --bank bank-a --account 100005     (a new link code)
    paygate-admin deposit --bank bank-a --account 100001 --amount 5.00 --reference R-1
    paygate-admin account --bank bank-a --account 100001        (balances, and the holds)
    paygate-admin user show|freeze|unfreeze|reset-mfa USERNAME [--reason TEXT]   (users.py)

The banks' and the gateway's admin port's addresses come from the suite configuration
(--config or $PAYGATE_CONFIG), and the tool presents the `admin` certificate, the only
identity a bank lets open accounts, take deposits and list holds, and the gateway's
AdminService answers.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import grpc

import paygate
from paygate.admin.common import (
    DEFAULT_TIMEOUT_S,
    AdminError,
    admin_credentials,
    call,
    dialing,
    read_config,
)
from paygate.admin.users import add_user_commands
from paygate.common.config import CONFIG_ENV
from paygate.common.money import DEFAULT_CURRENCY, format_amount, parse_amount
from paygate.common.rpc_errors import from_channel
from paygate.common.tls import InsecureKeyFile, expect_server_identity
from paygate.errors import PaygateError
from paygate.gen.paygate.bank.v1 import bank_pb2, bank_pb2_grpc

BANK_HELP = "bank id from the configuration, for example bank-a"
DEFAULT_HOLDS_LIMIT = 100
HOLDS_PAGE_SIZE = 100  # the most holds a bank returns in one ListHolds page
TIME_FORMAT = "%Y-%m-%d %H:%M:%S UTC"
HOLD_KINDS = {bank_pb2.DIRECTION_DEBIT: "debit hold", bank_pb2.DIRECTION_CREDIT: "pending credit"}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command: Callable[[argparse.Namespace], None] = args.command
    try:
        command(args)
    except PaygateError as error:
        if from_channel(error) and args.dialed:
            print(
                f"error: {args.server} at {args.dialed} did not answer [{error.reason}]\n"
                f"({error.message}) Is the suite running? --config or {CONFIG_ENV} names the"
                " configuration of the suite you mean.",
                file=sys.stderr,
            )
        else:
            print(f"error: {error.message} [{error.reason}]", file=sys.stderr)
        return 1
    except (AdminError, InsecureKeyFile) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="paygate-admin", description="Operate Paygate banks and gateway users."
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"%(prog)s {paygate.__version__}",
        help="print the version of paygate and exit",
    )
    parser.add_argument(
        "--config",
        help=f"suite configuration file: the banks' addresses and certs_dir (env {CONFIG_ENV};"
        " default: the built-in defaults, relative to the current directory)",
    )
    parser.add_argument(
        "--timeout",
        type=positive_float,
        default=DEFAULT_TIMEOUT_S,
        metavar="SECONDS",
        help="deadline of each call (default %(default)s)",
    )
    parser.set_defaults(server="", dialed="")  # what the command calls, once it knows
    commands = parser.add_subparsers(
        required=True,
        metavar="COMMAND",
        help="one of these; `paygate-admin COMMAND --help` for more",
    )

    open_account = commands.add_parser(
        "open-account", help="open an account; prints its number and its link code"
    )
    open_account.add_argument("--bank", required=True, help=BANK_HELP)
    open_account.add_argument("--balance", required=True, help="initial balance, e.g. 100.00")
    open_account.add_argument(
        "--currency", default=DEFAULT_CURRENCY, help="ISO 4217 code (default %(default)s)"
    )
    open_account.set_defaults(command=cmd_open_account)

    deposit = commands.add_parser("deposit", help="add money to an account, once per reference")
    deposit.add_argument("--bank", required=True, help=BANK_HELP)
    deposit.add_argument("--account", required=True, help="the account's number")
    deposit.add_argument("--amount", required=True, help="amount, e.g. 5.00")
    deposit.add_argument(
        "--reference", required=True, help="unique per deposit; a repeat is a no-op"
    )
    deposit.add_argument(
        "--currency", default=DEFAULT_CURRENCY, help="ISO 4217 code (default %(default)s)"
    )
    deposit.set_defaults(command=cmd_deposit)

    link_code = commands.add_parser(
        "link-code", help="give an account a new link code (the old one stops working)"
    )
    link_code.add_argument("--bank", required=True, help=BANK_HELP)
    link_code.add_argument("--account", required=True, help="the account's number")
    link_code.set_defaults(command=cmd_link_code)

    account = commands.add_parser(
        "account", help="show an account's balances and the holds on it, with their payments"
    )
    account.add_argument("--bank", required=True, help=BANK_HELP)
    account.add_argument("--account", required=True, help="the account's number")
    account.add_argument(
        "--limit",
        type=positive_int,
        default=DEFAULT_HOLDS_LIMIT,
        metavar="N",
        help="the most holds to list, oldest first (default %(default)s)",
    )
    account.set_defaults(command=cmd_account)
    add_user_commands(commands)
    return parser


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be positive, not {text}")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, not {text}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {text}")
    return value


def cmd_open_account(args: argparse.Namespace) -> None:
    request = bank_pb2.OpenAccountRequest(
        currency=args.currency, initial_balance=parse_amount(args.balance, args.currency)
    )
    with bank_stub(args) as stub:
        response: bank_pb2.OpenAccountResponse = call(stub.OpenAccount, request, args.timeout)
    # One line, for scripts: read -r ACCOUNT CODE <<< "$(paygate-admin open-account ...)".
    # The link code goes to the account holder, who registers with it; the bank keeps
    # only its hash, so this is the one time it is shown (link-code issues a new one).
    print(f"{response.account.account_number} {response.link_code}")


def cmd_link_code(args: argparse.Namespace) -> None:
    request = bank_pb2.IssueLinkCodeRequest(account_number=args.account)
    with bank_stub(args) as stub:
        response: bank_pb2.IssueLinkCodeResponse = call(stub.IssueLinkCode, request, args.timeout)
    print(response.link_code)


def cmd_deposit(args: argparse.Namespace) -> None:
    request = bank_pb2.DepositRequest(
        account_number=args.account,
        amount=parse_amount(args.amount, args.currency),
        currency=args.currency,
        reference=args.reference,
    )
    with bank_stub(args) as stub:
        response: bank_pb2.DepositResponse = call(stub.Deposit, request, args.timeout)
    account = response.account
    outcome = (
        "replayed: reference already applied, nothing changed" if response.replayed else "applied"
    )
    print(f"balance: {money(account.balance, account.currency)} ({outcome})")


def cmd_account(args: argparse.Namespace) -> None:
    request = bank_pb2.GetAccountRequest(account_number=args.account)
    with bank_stub(args) as stub:
        response: bank_pb2.GetAccountResponse = call(stub.GetAccount, request, args.timeout)
        holds = list_holds(stub, args.account, args.limit, args.timeout)
    account = response.account
    print(f"account:        {account.account_number} at {args.bank}")
    print(f"balance:        {money(account.balance, account.currency)}")
    print(f"available:      {money(account.available, account.currency)}")
    print(f"pending debit:  {money(account.pending_debit, account.currency)}")
    print(f"pending credit: {money(account.pending_credit, account.currency)}")
    if holds is None:
        print(f"holds:          not listed: {args.bank} does not list holds (upgrade it)")
        return
    listed, more = holds
    if not listed:
        print("no holds")
        return
    print("holds, oldest first:")
    for line in holds_table(listed):
        print(f"  {line}")
    if more:
        print(f"more holds not shown: --limit {args.limit} listed the oldest {len(listed)}")


def list_holds(
    stub: Any, account_number: str, limit: int, timeout_s: float
) -> tuple[list[bank_pb2.Hold], bool] | None:
    """Up to `limit` holds on the account, oldest first, and whether more are open; None
    from a bank of a version without ListHolds. Each page is one call with its deadline."""
    listed: list[bank_pb2.Hold] = []
    token = ""
    while len(listed) < limit:
        request = bank_pb2.ListHoldsRequest(
            account_number=account_number,
            page_size=min(limit - len(listed), HOLDS_PAGE_SIZE),
            page_token=token,
        )
        try:
            response: bank_pb2.ListHoldsResponse = call(stub.ListHolds, request, timeout_s)
        except PaygateError as error:
            if error.reason == grpc.StatusCode.UNIMPLEMENTED.name:
                return None
            raise
        listed += response.holds
        token = response.next_page_token
        if not token or not response.holds:  # (an empty page never has a next one)
            break
    return listed[:limit], bool(token)


def holds_table(holds: Sequence[bank_pb2.Hold]) -> list[str]:
    """The holds as aligned lines under a header: when placed, what, how much, whose."""
    rows = [("placed", "hold", "amount", "payment")]
    for hold in holds:
        placed = datetime.datetime.fromtimestamp(hold.create_time.seconds, datetime.UTC)
        # A refund is a transaction of its own; one the gateway did not name (another
        # coordinator's) is shown by its transaction id.
        payment = hold.payment_id or (
            f"refund {hold.refund_id}" if hold.refund_id else f"(transaction {hold.transaction_id})"
        )
        rows.append(
            (
                placed.strftime(TIME_FORMAT),
                HOLD_KINDS.get(hold.direction, "hold"),
                money(hold.amount, hold.currency),
                payment,
            )
        )
    # The kind's column as wide as its longest word, so that every table lines up alike.
    widths = [max(len(row[column]) for row in rows) for column in range(3)]
    widths[1] = max(len(kind) for kind in HOLD_KINDS.values())
    return [
        f"{placed:<{widths[0]}}  {kind:<{widths[1]}}  {amount:>{widths[2]}}  {payment}"
        for placed, kind, amount, payment in rows
    ]


def money(amount_minor: int, currency: str) -> str:
    return f"{format_amount(amount_minor, currency)} {currency}"


@contextmanager
def bank_stub(args: argparse.Namespace) -> Iterator[Any]:
    """A BankService stub on a mutual-TLS channel to --bank, closed on exit."""
    config = read_config(args.config)
    bank = config.banks.get(args.bank)
    if bank is None:
        known = ", ".join(sorted(config.banks))
        raise AdminError(f"unknown bank {args.bank!r}: expected one of {known}")
    credentials = admin_credentials(config)
    options = [expect_server_identity(args.bank)]
    dialing(args, args.bank, bank.listen)
    with grpc.secure_channel(bank.listen, credentials, options=options) as channel:
        # The generated stub is untyped; every response is annotated where it is used.
        yield bank_pb2_grpc.BankServiceStub(channel)  # type: ignore[no-untyped-call]


if __name__ == "__main__":
    sys.exit(main())
