"""The `paygate` commands of authorizations: money held for the payee, captured or cancelled.

    paygate pay bob 20.00 --capture-later   the payer: hold 20.00 for bob, who captures it
    paygate capture PAYMENT_ID [AMOUNT]     the payee: take all of it, or less (the rest
                                            goes back to the payer)
    paygate cancel PAYMENT_ID               the payee: release it all; nothing moves

`paygate payments` says of each authorization what was captured, or until when it can be.
A refusal says why in words, with the gateway's reason at the end ([PAYMENT_NOT_CAPTURABLE]).
"""

from __future__ import annotations

import argparse
import sys
import uuid
from collections.abc import Callable

from paygate.client import cli as _cli
from paygate.client._models import CaptureMethod, Payment, PaymentStatus
from paygate.client._sync_client import Client
from paygate.client.delivery import maybe_delivered
from paygate.common.money import format_amount, parse_amount
from paygate.common.rpc_errors import from_channel
from paygate.errors import (
    AMOUNT_EXCEEDS_CAPTURABLE,
    AUTHORIZATION_EXPIRED,
    PAYMENT_NOT_CAPTURABLE,
    InvalidArgument,
    NotFound,
    PaygateError,
    PermissionDenied,
    Unavailable,
)

TIME_FORMAT = "%Y-%m-%d %H:%M:%S UTC"
DONE = {"capture": "captured", "cancel": "cancelled"}


def add_authorization_parsers(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    capture = commands.add_parser(
        "capture", help="take the money of a payment authorized to you (all of it, or less)"
    )
    capture.add_argument("payment_id", help="the payment, as `paygate payments` lists it")
    capture.add_argument(
        "amount", nargs="?",
        help="decimal amount to take, at most what was authorized (default: all of it);"
        " the rest goes back to the payer",
    )
    capture.add_argument(
        "--idempotency-key", help="reuse the key of a capture to retry it safely"
    )
    capture.set_defaults(
        command=cmd_capture, unreachable_means="nothing was captured", action_name="capture"
    )

    cancel = commands.add_parser(
        "cancel", help="release a payment authorized to you: nothing moves"
    )
    cancel.add_argument("payment_id", help="the payment, as `paygate payments` lists it")
    cancel.add_argument("--idempotency-key", help="reuse the key of a cancel to retry it safely")
    cancel.set_defaults(
        command=cmd_cancel, unreachable_means="nothing was cancelled", action_name="cancel"
    )


def add_capture_later_option(pay: argparse.ArgumentParser) -> None:
    pay.add_argument(
        "--capture-later",
        action="store_true",
        help="only hold the money: the payee takes it (all or less) with `paygate capture`,"
        " or releases it, before a deadline",
    )


# Commands.


def cmd_capture(args: argparse.Namespace) -> None:
    key = args.idempotency_key if args.idempotency_key is not None else str(uuid.uuid4())
    with _cli.open_client(args, _cli.require_session(args)) as client:
        amount_minor = None
        if args.amount is not None:
            # In the payment's currency, which only the payment says.
            payment = explained(client, args, lambda: client.get_payment(args.payment_id))
            amount_minor = parse_amount(args.amount, payment.currency)
            if amount_minor == 0:
                raise InvalidArgument(
                    f"amount {args.amount!r} is zero: leave it out to capture everything held"
                )
        captured = explained(
            client, args,
            lambda: client.capture(args.payment_id, amount_minor, idempotency_key=key),
            key=key,
        )
    print(captured_message(captured))


def cmd_cancel(args: argparse.Namespace) -> None:
    key = args.idempotency_key if args.idempotency_key is not None else str(uuid.uuid4())
    with _cli.open_client(args, _cli.require_session(args)) as client:
        canceled = explained(
            client, args, lambda: client.cancel(args.payment_id, idempotency_key=key), key=key
        )
    amount = format_amount(canceled.amount_minor, canceled.currency)
    print(
        f"cancelled payment {canceled.payment_id} from {canceled.payer_username}"
        f" ({amount} {canceled.currency}): nothing moved, the hold is released"
        f"{replayed_note(canceled)}"
    )


# What the commands print.


def held_message(payment: Payment) -> str:
    """What `paygate pay --capture-later` prints: the money is held, until when."""
    amount = format_amount(payment.amount_minor, payment.currency)
    deadline = (
        f" before {payment.capture_before:{TIME_FORMAT}}"
        if payment.capture_before is not None
        else ""
    )
    return (
        f"authorized {payment.payee_username} {amount} {payment.currency}: payment"
        f" {payment.payment_id} {payment.status}{replayed_note(payment)}\n"
        f"the money is held until {payment.payee_username} captures it{deadline};"
        " uncaptured by then, it is released"
    )


def captured_message(payment: Payment) -> str:
    captured = format_amount(payment.amount_captured_minor, payment.currency)
    amount = format_amount(payment.amount_minor, payment.currency)
    rest_minor = payment.amount_minor - payment.amount_captured_minor
    released = (
        f" ({format_amount(rest_minor, payment.currency)} {payment.currency} released to"
        f" {payment.payer_username})"
        if rest_minor > 0
        else ""
    )
    return (
        f"captured {captured} of {amount} {payment.currency} from {payment.payer_username}:"
        f" payment {payment.payment_id} {payment.status}{released}{replayed_note(payment)}"
    )


def replayed_note(payment: Payment) -> str:
    return " (replayed: this key's answer, given before; nothing happened now)" * payment.replayed


def moved_minor(payment: Payment) -> int:
    """What moved of a payment: what was captured of a succeeded authorization."""
    if payment.status != PaymentStatus.SUCCEEDED:
        return 0
    if payment.capture_method == CaptureMethod.MANUAL:
        return payment.amount_captured_minor
    return payment.amount_minor


def capture_note(payment: Payment) -> str:
    """What `paygate payments` adds to an authorization's line ("" for any other payment)."""
    if payment.capture_method != CaptureMethod.MANUAL:
        return ""
    currency = payment.currency
    if payment.status == PaymentStatus.SUCCEEDED:
        return (
            f"  captured {format_amount(payment.amount_captured_minor, currency)} of"
            f" {format_amount(payment.amount_minor, currency)}"
        )
    if payment.status == PaymentStatus.REQUIRES_CAPTURE and payment.capture_before is not None:
        return f"  requires capture before {payment.capture_before:{TIME_FORMAT}}"
    return ""  # CANCELED: its status and [reason] say it


# Refusals, said in words.


def explained(
    client: Client, args: argparse.Namespace, call: Callable[[], Payment], key: str = ""
) -> Payment:
    """The call's payment, or its refusal raised again with a message that says why."""
    try:
        return call()
    except Unavailable as error:
        # Unless it never left (no connection): main's message then says it all.
        if key and (maybe_delivered(error) or not from_channel(error)):
            print(
                f"the {args.action_name} did not complete now; it may still go through. Retry"
                f" with --idempotency-key {key}: the retry answers it if it went through, or"
                " makes it, once",
                file=sys.stderr,
            )
        raise
    except (NotFound, PermissionDenied) as error:
        raise type(error)(
            refusal_message(error, args, None), reason=error.reason, metadata=error.metadata
        ) from error
    except PaygateError as error:
        if error.reason not in (PAYMENT_NOT_CAPTURABLE, AMOUNT_EXCEEDS_CAPTURABLE):
            raise
        try:
            payment: Payment | None = client.get_payment(args.payment_id)
        except PaygateError:
            payment = None  # the gateway's own words then
        raise type(error)(
            refusal_message(error, args, payment), reason=error.reason, metadata=error.metadata
        ) from error


def refusal_message(error: PaygateError, args: argparse.Namespace, payment: Payment | None) -> str:
    pid, action = args.payment_id, args.action_name
    if isinstance(error, NotFound):
        return f"no payment {pid} among yours: check its id in `paygate payments`"
    if isinstance(error, PermissionDenied):
        return f"only the payee of payment {pid} can {action} it: you are its payer"
    if payment is None:
        return error.message
    currency = payment.currency
    amount = f"{format_amount(payment.amount_minor, currency)} {currency}"
    if error.reason == AMOUNT_EXCEEDS_CAPTURABLE:
        return f"cannot capture {args.amount} {currency} of payment {pid}: {amount} was authorized"
    if payment.capture_method != CaptureMethod.MANUAL:
        return (
            f"payment {pid} cannot be {DONE[action]}: it was not made with --capture-later,"
            " so its money moved when it was paid"
        )
    if payment.status == PaymentStatus.SUCCEEDED:
        captured = format_amount(payment.amount_captured_minor, currency)
        return f"payment {pid} was already captured ({captured} of {amount})"
    if payment.failure_reason == AUTHORIZATION_EXPIRED and payment.capture_before is not None:
        return (
            f"payment {pid} expired uncaptured at {payment.capture_before:{TIME_FORMAT}}: its"
            " hold was released"
        )
    if payment.status == PaymentStatus.CANCELED:
        return f"payment {pid} was cancelled: its hold was released"
    return f"payment {pid} is {payment.status}, not awaiting capture"
