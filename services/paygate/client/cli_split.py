"""`paygate pay-split`: one payment divided among several payees, all paid or none.

    paygate pay-split seller=70.00 platform=5.50 courier=12.25 --description "order 77"

Each PAYEE=AMOUNT is a part (2 to 10 payees, each once); the payment's amount is their
sum, in --currency. It is one payment with one idempotency key: every part is paid, or
none is (a payee's bank refusing its part, or down, fails the whole payment and moves
nothing anywhere). Every payee sees it in `paygate payments` and `paygate events`.
"""

from __future__ import annotations

import argparse
import sys
import uuid

from paygate.client import Split, Unavailable
from paygate.client import cli as _cli
from paygate.client.cli_errors import payment_failure_message
from paygate.common.money import DEFAULT_CURRENCY, format_amount, parse_amount
from paygate.errors import InvalidArgument


def add_pay_split_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    split = commands.add_parser(
        "pay-split",
        help="pay several users their parts of one payment, all or none",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    split.add_argument("parts", nargs="+", metavar="PAYEE=AMOUNT", help="a payee and its part")
    split.add_argument(
        "--currency", default=DEFAULT_CURRENCY, help="ISO 4217 code (default %(default)s)"
    )
    split.add_argument("--description", default="", help="a note every party sees")
    split.add_argument("--idempotency-key", help="reuse the key of a payment to retry it safely")
    split.set_defaults(command=cmd_pay_split, unreachable_means="nothing was paid")


def parse_parts(parts: list[str], currency: str) -> list[Split]:
    splits = []
    for part in parts:
        payee, sep, amount = part.partition("=")
        if not sep or not payee:
            raise InvalidArgument(f"{part!r} is not PAYEE=AMOUNT, for example bob=12.50")
        splits.append(Split(payee, parse_amount(amount, currency)))
    return splits


def cmd_pay_split(args: argparse.Namespace) -> None:
    splits = parse_parts(args.parts, args.currency)
    key = args.idempotency_key if args.idempotency_key is not None else str(uuid.uuid4())
    stored = _cli.require_session(args)
    with _cli.open_client(args, stored) as client:
        try:
            payment = client.pay_split(
                splits, currency=args.currency, description=args.description, idempotency_key=key
            )
        except Unavailable as error:
            said = payment_failure_message(error, key)
            if said:
                print(said, file=sys.stderr)
            raise
    replayed = " (replayed: this key's payment, made before; nothing moved now)"
    total = format_amount(payment.amount_minor, payment.currency)
    print(
        f"paid {total} {payment.currency} in {len(payment.splits)} parts: payment"
        f" {payment.payment_id} {payment.status}{replayed if payment.replayed else ''}"
    )
    for split in payment.splits:
        print(f"  {split.payee_username}: {format_amount(split.amount_minor, payment.currency)}")
