"""paygate-admin user: operators look after gateway users, on the gateway's admin port.

    paygate-admin user show alice
    paygate-admin user freeze alice --reason "card reported stolen"
    paygate-admin user unfreeze alice
    paygate-admin user reset-mfa alice --reason "lost their phone"

Each command is one AdminService call, with the `admin` certificate, to the address of
`[gateway] admin_listen` in the suite configuration (or --address), checking that the
server is the gateway. The gateway records every change, with the certificate's name and
the reason, in its audit table and its log; `show` lists the last ones.
"""

from __future__ import annotations

import argparse
import datetime
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import grpc

from paygate.admin.common import admin_credentials, call, dialing, read_config
from paygate.common.tls import expect_server_identity
from paygate.gen.paygate.v1 import admin_pb2, admin_pb2_grpc

GATEWAY_IDENTITY = "gateway"
ADMIN_PORT = "the gateway's admin port"
USERNAME_HELP = "the user's name"
_ACTION_NAMES = {
    admin_pb2.USER_ACTION_FREEZE: "freeze",
    admin_pb2.USER_ACTION_UNFREEZE: "unfreeze",
    admin_pb2.USER_ACTION_RESET_TWO_FACTOR: "reset-mfa",
}


def add_user_commands(commands: Any) -> None:
    """`paygate-admin user ...`, in the tool's subcommands."""
    user = commands.add_parser("user", help="look after a gateway user: show, freeze, ...")
    user.add_argument(
        "--address",
        metavar="HOST:PORT",
        help="the gateway's admin port (default: [gateway] admin_listen of the configuration)",
    )
    actions = user.add_subparsers(
        required=True, metavar="ACTION", help="one of these; `paygate-admin user ACTION --help`"
    )
    show = actions.add_parser("show", help="the user's account, two-factor, freeze, sessions")
    show.add_argument("username", help=USERNAME_HELP)
    show.set_defaults(command=cmd_show)
    for name, what, command in (
        (
            "freeze",
            "end every session; refuse logins and payments to and from the user",
            cmd_freeze,
        ),
        ("unfreeze", "let a frozen user log in, pay and be paid again", cmd_unfreeze),
        ("reset-mfa", "turn two-factor login off (a lost authenticator)", cmd_reset_mfa),
    ):
        action = actions.add_parser(name, help=what)
        action.add_argument("username", help=USERNAME_HELP)
        action.add_argument("--reason", default="", help="why, for the audit trail (one line)")
        action.set_defaults(command=command)


def cmd_show(args: argparse.Namespace) -> None:
    with admin_stub(args) as stub:
        response = call(
            stub.GetUser, admin_pb2.GetUserRequest(username=args.username), args.timeout
        )
    print_user(response.user)


def cmd_freeze(args: argparse.Namespace) -> None:
    request = admin_pb2.FreezeUserRequest(username=args.username, reason=args.reason)
    with admin_stub(args) as stub:
        response = call(stub.FreezeUser, request, args.timeout)
    if response.changed:
        ended = response.sessions_ended
        print(f"{args.username} is frozen; {ended} session{'s' * (ended != 1)} ended")
    else:
        print(f"{args.username} was frozen already: nothing changed")


def cmd_unfreeze(args: argparse.Namespace) -> None:
    request = admin_pb2.UnfreezeUserRequest(username=args.username, reason=args.reason)
    with admin_stub(args) as stub:
        response = call(stub.UnfreezeUser, request, args.timeout)
    if response.changed:
        print(f"{args.username} is no longer frozen")
    else:
        print(f"{args.username} was not frozen: nothing changed")


def cmd_reset_mfa(args: argparse.Namespace) -> None:
    request = admin_pb2.ResetTwoFactorRequest(username=args.username, reason=args.reason)
    with admin_stub(args) as stub:
        response = call(stub.ResetTwoFactor, request, args.timeout)
    if response.changed:
        print(f"two-factor login of {args.username} is off: the password alone logs in")
    else:
        print(f"{args.username} had no two-factor login: nothing changed")


def print_user(user: admin_pb2.UserDetails) -> None:
    two_factor = "off"
    if user.two_factor_enabled:
        two_factor = f"on ({user.recovery_codes_left} recovery codes left)"
    print(f"user:           {user.username} ({user.user_id})")
    print(f"account:        {user.account_number} at {user.bank_id} ({user.currency})")
    print(f"registered:     {utc(user.create_time.seconds)}")
    print(f"two-factor:     {two_factor}")
    print(f"frozen:         {'yes' if user.frozen else 'no'}")
    print(f"live sessions:  {user.live_sessions}")
    if user.recent_actions:
        print("operator actions, newest first:")
    for action in user.recent_actions:
        name = _ACTION_NAMES.get(action.action, "?")
        note = "" if action.changed else " (nothing changed)"
        reason = f": {action.reason}" if action.reason else ""
        print(f"  {utc(action.time.seconds)}  {action.operator}  {name}{note}{reason}")


def utc(seconds: int) -> str:
    moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


@contextmanager
def admin_stub(args: argparse.Namespace) -> Iterator[Any]:
    """An AdminService stub on a mutual-TLS channel to the gateway's admin port."""
    config = read_config(args.config)
    address = args.address or config.gateway.admin_listen
    credentials = admin_credentials(config)
    options = [expect_server_identity(GATEWAY_IDENTITY)]
    dialing(args, ADMIN_PORT, address)
    with grpc.secure_channel(address, credentials, options=options) as channel:
        # The generated stub is untyped; every response is read where it is used.
        yield admin_pb2_grpc.AdminServiceStub(channel)  # type: ignore[no-untyped-call]
