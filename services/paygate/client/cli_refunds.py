"""The `paygate` commands of refunds: money of a payment sent back by its payee.

    paygate refund PAYMENT_ID [AMOUNT] --reason TEXT   the payee: send back all that is left
                                                       to refund, or part of it
    paygate refunds PAYMENT_ID                         either party: the payment's refunds

`paygate payments` says of each payment how much of it was refunded. A refusal says why in
words, with the gateway's reason at the end ([AMOUNT_EXCEEDS_REFUNDABLE]).
"""

from __future__ import annotations

import argparse
import sys
import uuid

from paygate.client import cli as _cli
from paygate.client._models import Payment, Refund
from paygate.client.cli_authorizations import TIME_FORMAT, moved_minor
from paygate.client.delivery import maybe_delivered
from paygate.common.money import format_amount, parse_amount
from paygate.common.rpc_errors import from_channel
from paygate.errors import (
    AMOUNT_EXCEEDS_REFUNDABLE,
    INSUFFICIENT_FUNDS,
    PAYMENT_NOT_REFUNDABLE,
    InvalidArgument,
    NotFound,
    PaygateError,
    PermissionDenied,
    Unavailable,
)


def add_refund_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    refund = commands.add_parser(
        "refund", help="send money of a payment you were paid back to its payer"
    )
    refund.add_argument("payment_id", help="the payment, as `paygate payments` lists it")
    refund.add_argument(
        "amount", nargs="?",
        help="decimal amount to send back (default: all that is left to refund)",
    )  # fmt: skip
    refund.add_argument("--reason", default="", help="why, in a few words the payer will see")
    refund.add_argument("--idempotency-key", help="reuse the key of a refund to retry it safely")
    refund.set_defaults(command=cmd_refund, unreachable_means="nothing was refunded")

    refunds = commands.add_parser("refunds", help="list the refunds of a payment")
    refunds.add_argument("payment_id", help="the payment, as `paygate payments` lists it")
    refunds.set_defaults(command=cmd_refunds)


def cmd_refund(args: argparse.Namespace) -> None:
    key = args.idempotency_key if args.idempotency_key is not None else str(uuid.uuid4())
    with _cli.open_client(args, _cli.require_session(args)) as client:
        try:
            payment = client.get_payment(args.payment_id)
            amount_minor = None
            if args.amount is not None:
                amount_minor = parse_amount(args.amount, payment.currency)
                if amount_minor == 0:
                    raise InvalidArgument(
                        f"amount {args.amount!r} is zero: leave it out to refund all that is left"
                    )
            refund = client.refund(
                args.payment_id, amount_minor, reason=args.reason, idempotency_key=key
            )
        except Unavailable as error:
            if maybe_delivered(error) or not from_channel(error):
                print(
                    "the refund did not complete now; it may still go through. Retry with"
                    f" --idempotency-key {key}: the retry answers it if it went through, or"
                    " makes it, once",
                    file=sys.stderr,
                )
            raise
        except PaygateError as error:
            left = None
            if error.reason == AMOUNT_EXCEEDS_REFUNDABLE:
                now = client.get_payment(args.payment_id)
                left_minor = moved_minor(now) - now.amount_refunded_minor
                left = f"{format_amount(left_minor, now.currency)} {now.currency}"
            raise type(error)(
                refusal_message(error, args, left), reason=error.reason, metadata=error.metadata
            ) from error
        after = client.get_payment(args.payment_id)
    print(refunded_message(refund, after))


def cmd_refunds(args: argparse.Namespace) -> None:
    with _cli.open_client(args, _cli.require_session(args)) as client:
        refunds: list[Refund] = []
        token = ""
        while True:
            page, token = client.list_refunds(args.payment_id, page_token=token)
            refunds += page
            if not token:
                break
    if not refunds:
        print(f"no refunds of payment {args.payment_id}")
    for refund in refunds:
        print(describe_refund(refund))


def refunded_message(refund: Refund, payment: Payment) -> str:
    amount = format_amount(refund.amount_minor, refund.currency)
    left = moved_minor(payment) - payment.amount_refunded_minor
    replayed = " (replayed: this key's answer, given before; nothing happened now)"
    shares = "".join(
        f"\n  {s.payee_username} gives back {format_amount(s.amount_minor, refund.currency)}"
        for s in refund.splits
    )
    return (
        f"refunded {amount} {refund.currency} to {payment.payer_username}: refund"
        f" {refund.refund_id} {refund.status}{replayed * refund.replayed}{shares}\n"
        f"payment {payment.payment_id}: {format_amount(left, payment.currency)}"
        f" {payment.currency} left to refund"
    )


def describe_refund(refund: Refund) -> str:
    line = (
        f"{refund.create_time:{TIME_FORMAT}}  {refund.refund_id}  {refund.status:<9}"
        f"  {format_amount(refund.amount_minor, refund.currency)} {refund.currency}"
    )
    if refund.failure_reason:
        line += f"  [{refund.failure_reason}]"
    if refund.reason:
        line += f"  {refund.reason}"
    return line


def refund_note(payment: Payment) -> str:
    """What `paygate payments` adds to a payment's line once some of it was refunded."""
    if not payment.amount_refunded_minor:
        return ""
    refunded = format_amount(payment.amount_refunded_minor, payment.currency)
    return f"  refunded {refunded} of {format_amount(moved_minor(payment), payment.currency)}"


def refusal_message(error: PaygateError, args: argparse.Namespace, left: str | None) -> str:
    pid = args.payment_id
    if isinstance(error, NotFound):
        return f"no payment {pid} among yours: check its id in `paygate payments`"
    if isinstance(error, PermissionDenied):
        if "split payment" in error.message:  # the gateway names who may
            return f"payment {pid}: {error.message}"
        return f"only the payee of payment {pid} can refund it: you are its payer"
    if error.reason == PAYMENT_NOT_REFUNDABLE:
        return f"payment {pid} did not succeed (or is not captured yet): nothing to refund"
    if error.reason == AMOUNT_EXCEEDS_REFUNDABLE:
        at_most = f"at most {left} is left to refund" if left else error.message
        return f"cannot refund that much of payment {pid}: {at_most}"
    if error.reason == INSUFFICIENT_FUNDS:
        return "your account lacks the money to refund that: the refund failed, nothing moved"
    return error.message
