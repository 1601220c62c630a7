"""The `paygate` commands of offline payments, over the client's outbox.

    paygate pay --queue-if-offline bob 5.00   pay now, or keep it to send later
    paygate queue                             your queued payments, their states and attempts
    paygate queue sync [--wait SECONDS]       send them now and print how each one ended
    paygate queue forget ID [--yes]           drop one that has not been sent, after asking
    paygate queue resend ID [--yes]           send again one held for review, after asking

The outbox is $XDG_STATE_HOME/paygate/outbox.db unless --outbox (env PAYGATE_OUTBOX) says
otherwise. When the session has expired, `queue sync` asks for the password and logs in
again before sending; the password is never stored.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import sys
from collections.abc import Mapping

from paygate.client import cli as _cli
from paygate.client import cli_authorizations, cli_security
from paygate.client._session_file import (
    StoredSession,
    load_session,
    save_session,
    session_path,
)
from paygate.client._sync_client import Client
from paygate.client.cli_errors import CliError
from paygate.client.cli_prompts import read_password, read_stdin_line
from paygate.client.delivery import DeliveryReport, RunEnd
from paygate.client.outbox import Outbox, Outcome
from paygate.client.outbox_models import EntryState, QueuedPayment, default_outbox_path
from paygate.client.outbox_store import MAX_LIST
from paygate.common.money import format_amount

OUTBOX_ENV = "PAYGATE_OUTBOX"
DEFAULT_LIST_LIMIT = 50
DEFAULT_SYNC_WAIT_S = 0.0
MAX_SYNC_WAIT_S = 24 * 3600.0


def add_outbox_option(parser: argparse.ArgumentParser, environ: Mapping[str, str]) -> None:
    parser.add_argument(
        "--outbox",
        default=environ.get(OUTBOX_ENV) or str(default_outbox_path(environ)),
        metavar="PATH",
        help=f"file of queued payments (env {OUTBOX_ENV}; default %(default)s)",
    )


def add_queue_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    queue = commands.add_parser(
        "queue",
        help="list, send or forget queued payments",
        # The action is optional (alone, `paygate queue` lists): argparse would show it as
        # required.
        usage="%(prog)s [-h] [--limit N] [ACTION ...]",
        description="Without an ACTION, list your queued payments.",
    )
    queue.add_argument(
        "--limit", type=_cli.positive_int, default=DEFAULT_LIST_LIMIT, metavar="N",
        help="list at most this many (default %(default)s)",
    )
    queue.set_defaults(command=cmd_queue_list)
    actions = queue.add_subparsers(
        metavar="ACTION", help="what to do instead of listing; `paygate queue ACTION --help`"
    )

    sync = actions.add_parser("sync", help="send queued payments now and print each outcome")
    sync.add_argument(
        "--wait",
        type=wait_seconds,
        default=DEFAULT_SYNC_WAIT_S,
        metavar="SECONDS",
        help="wait up to this long for the gateway to come back (default: do not wait)",
    )
    sync.add_argument(
        "--attempts", type=_cli.positive_int, default=None, metavar="N",
        help="attempts at most per run on transient failures (default 5)",
    )
    sync.add_argument(
        "--password-stdin", action="store_true",
        help="if a new login is needed, read the password from stdin",
    )
    sync.set_defaults(command=cmd_queue_sync, unreachable_means="your payments stay queued")

    forget = actions.add_parser("forget", help="drop a queued payment that was not delivered")
    forget.add_argument("id", help="its number in `paygate queue`, or its idempotency key")
    forget.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    forget.set_defaults(command=cmd_queue_forget)

    resend = actions.add_parser(
        "resend", help="queue again and send a payment held for review, once you checked it"
    )
    resend.add_argument("id", help="its number in `paygate queue`, or its idempotency key")
    resend.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    resend.add_argument(
        "--password-stdin", action="store_true",
        help="if a new login is needed, read the password from stdin",
    )
    resend.set_defaults(command=cmd_queue_resend, wait=DEFAULT_SYNC_WAIT_S, attempts=None)


def wait_seconds(text: str) -> float:
    value = float(text)
    if not 0 <= value <= MAX_SYNC_WAIT_S:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be between 0 and {MAX_SYNC_WAIT_S:.0f}")
    return value


# Commands -------------------------------------------------------------------------------


def pay_or_queue(args: argparse.Namespace, key: str, amount: int) -> None:
    # Even an expired session: offline, the user cannot log in, but can queue. The gateway
    # refuses the old token (UNAUTHENTICATED), the payment stays queued, and `queue sync`
    # asks for a new login before sending it.
    stored = known_session(args)

    def print_earlier(outcome: Outcome) -> None:
        # Payments queued earlier go first; say how those ended too. This one's is below.
        if outcome.entry.idempotency_key != key:
            print_outcome(outcome)

    outbox = Outbox(args.outbox)
    outbox.add_callback(print_earlier)
    with open_queue_client(args, stored, outbox) as client:
        result = client.pay(
            args.payee, amount, currency=args.currency, description=args.description,
            idempotency_key=key, capture_later=args.capture_later, queue_if_offline=True,
        )
    if isinstance(result, QueuedPayment) and result.state == EntryState.NEEDS_REVIEW:
        raise CliError(review_message(result))  # its key was queued long ago
    if isinstance(result, QueuedPayment):
        why = result.last_error or "it waits behind payments queued before it"
        held = ", to be held until the payee captures it" if result.capture_later else ""
        print(f"queued payment #{result.entry_id} to {result.payee_username} "
              f"{money(result)}{held} (key {key}): not sent yet [{why}]")
        print(next_step(result.last_error), file=sys.stderr)
        return
    if args.capture_later:
        print(cli_authorizations.held_message(result))
        return
    print(
        f"paid {result.payee_username} {format_amount(result.amount_minor, result.currency)} "
        f"{result.currency}: payment {result.payment_id} {result.status}"
    )


def cmd_queue_list(args: argparse.Namespace) -> None:
    stored = known_session(args)
    with open_queue_client(args, stored, Outbox(args.outbox)) as client:
        entries = client.queued_payments(limit=min(args.limit, MAX_LIST))
    if not entries:
        print("no queued payments")
    for entry in entries:
        print(describe_entry(entry))


def cmd_queue_sync(args: argparse.Namespace) -> None:
    sync(args, known_session(args))


def sync(args: argparse.Namespace, stored: StoredSession) -> None:
    outbox = Outbox(args.outbox)
    outbox.add_callback(print_outcome)
    with open_queue_client(args, stored, outbox) as client:
        if stored.expired(datetime.datetime.now(datetime.UTC)):
            log_in_again(args, client, stored, "your session has expired")
        report = client.deliver_queued(wait_s=args.wait, max_attempts=args.attempts)
        if report.end == RunEnd.NEEDS_LOGIN:
            log_in_again(args, client, stored, "the gateway did not accept your session")
            report = client.deliver_queued(wait_s=args.wait, max_attempts=args.attempts)
    summarize(report)


def cmd_queue_forget(args: argparse.Namespace) -> None:
    stored = known_session(args)
    with open_queue_client(args, stored, Outbox(args.outbox)) as client:
        entry = client.queued_payment(args.id)
        if not args.yes and not entry.settled and not confirm_forget(entry):
            raise CliError(f"payment #{entry.entry_id} was not forgotten")
        forgotten = client.forget_queued(args.id)
    print(f"forgot payment #{forgotten.entry_id} to {forgotten.payee_username} {money(forgotten)}")


def cmd_queue_resend(args: argparse.Namespace) -> None:
    stored = known_session(args)
    with open_queue_client(args, stored, Outbox(args.outbox)) as client:
        entry = client.queued_payment(args.id)  # this user's, at this gateway
    if entry.state != EntryState.NEEDS_REVIEW:
        raise CliError(
            f"payment #{entry.entry_id} is {entry.state}: only a payment held for review is"
            " resent (`paygate queue sync` sends queued ones)"
        )
    if not args.yes and not confirm_resend(entry):
        raise CliError(f"payment #{entry.entry_id} was not resent")
    asyncio.run(requeue(args.outbox, entry.entry_id))
    print(f"queued payment #{entry.entry_id} again; sending it", file=sys.stderr)
    sync(args, stored)


async def requeue(path: str, entry_id: int) -> QueuedPayment:
    outbox = Outbox(path)
    try:
        return await outbox.requeue(entry_id)
    finally:
        await outbox.close()


# Helpers --------------------------------------------------------------------------------


def open_queue_client(args: argparse.Namespace, stored: StoredSession, outbox: Outbox) -> Client:
    return _cli.open_client(args, stored, outbox=outbox)


def known_session(args: argparse.Namespace) -> StoredSession:
    """The saved session for this gateway, even expired: it says whose queue this is."""
    stored = load_session(session_path(args.environ))
    if stored is None or stored.gateway != args.gateway:
        raise _cli.NotLoggedIn
    return stored


def log_in_again(
    args: argparse.Namespace, client: Client, stored: StoredSession, why: str
) -> None:
    print(f"{why}: log in again as {stored.username} to send your queued payments",
          file=sys.stderr)
    password = read_password(args.password_stdin, confirm=False)
    session = cli_security.log_in(client, args, stored.username, password)
    renewed = StoredSession(
        gateway=stored.gateway,
        username=stored.username,
        access_token=session.access_token,
        expire_time=session.expire_time,
    )
    save_session(session_path(args.environ), renewed)


def confirm_forget(entry: QueuedPayment) -> bool:
    print(f"forget payment #{entry.entry_id} to {entry.payee_username} {money(entry)}"
          f" (key {entry.idempotency_key})?", file=sys.stderr)
    if entry.attempts:
        print(f"it was sent {entry.attempts} time(s) without a final answer: if one reached the"
              " gateway, it may have been paid (see `paygate payments`).", file=sys.stderr)
    print("type y to forget it: ", end="", file=sys.stderr, flush=True)
    return read_stdin_line().strip().lower() in ("y", "yes")


def confirm_resend(entry: QueuedPayment) -> bool:
    print(f"send payment #{entry.entry_id} to {entry.payee_username} {money(entry)}"
          f" (key {entry.idempotency_key}) again?", file=sys.stderr)
    print("if an earlier attempt reached the gateway, this pays it a second time: check"
          " `paygate payments` first.", file=sys.stderr)
    print("type y to send it: ", end="", file=sys.stderr, flush=True)
    return read_stdin_line().strip().lower() in ("y", "yes")


def summarize(report: DeliveryReport) -> None:
    held = (f"; {report.needs_review} payment(s) held for review: see `paygate queue`"
            if report.needs_review else "")
    if report.pending == 0 and held:
        # Exit status 1: a person has to decide about them; sending them again is not safe.
        raise CliError(f"no queued payments left to send{held}")
    if report.pending == 0:
        print("no queued payments left" if report.outcomes else "nothing to send")
        return
    if report.end == RunEnd.BLOCKED:
        raise CliError(
            f"{report.pending} payment(s) still queued: another paygate process is sending them"
        )
    raise CliError(
        f"{report.pending} payment(s) still queued [{report.last_error or report.end}]; "
        f"run `paygate queue sync` again later{held}"
    )


def print_outcome(outcome: Outcome) -> None:
    entry = outcome.entry
    attempts = f"key {entry.idempotency_key}, {entry.attempts} attempt(s)"
    if entry.state == EntryState.SUCCEEDED:
        # Replayed: an earlier attempt made it (its answer was lost); it was not made twice.
        replayed = ", replayed" if outcome.payment is not None and outcome.payment.replayed else ""
        print(f"delivered #{entry.entry_id} to {entry.payee_username} {money(entry)}: "
              f"payment {entry.payment_id} {entry.payment_status} ({attempts}{replayed})",
              flush=True)
    elif entry.state == EntryState.NEEDS_REVIEW:
        print(review_message(entry), flush=True)
    else:
        reason = entry.failure_reason or entry.payment_status
        # The gateway's message says it in words ("no user 'nobody'"); the reason is the code.
        said = f"{outcome.error.message} " if outcome.error is not None else ""
        print(f"failed #{entry.entry_id} to {entry.payee_username} {money(entry)}: "
              f"{said}[{reason}] ({attempts})", flush=True)


def describe_entry(entry: QueuedPayment) -> str:
    line = (
        f"#{entry.entry_id:<5} {entry.created_at:%Y-%m-%d %H:%M:%S}  {entry.state:<12} "
        f"attempts {entry.attempts:<3} {money(entry):>14} to {entry.payee_username}"
        f"  key {entry.idempotency_key}"
    )
    if entry.capture_later:
        line += "  (capture later)"
    if entry.payment_id:
        line += f"  payment {entry.payment_id} {entry.payment_status}"
    if entry.failure_reason:
        line += f"  [{entry.failure_reason}]"
    elif entry.last_error and not entry.settled:
        line += f"  (last error {entry.last_error})"
    if entry.description:
        line += f"  {entry.description}"
    if entry.state == EntryState.NEEDS_REVIEW:
        line += (f"  -> check `paygate payments`, then `paygate queue forget {entry.entry_id}`"
                 f" or `paygate queue resend {entry.entry_id} --yes`")
    return line


def review_message(entry: QueuedPayment) -> str:
    """What a user is told of a payment held for review, and what to do about it."""
    when = entry.maybe_delivered_at or entry.created_at
    described = f" \"{entry.description}\"" if entry.description else " (no description)"
    return (
        f"held #{entry.entry_id} to {entry.payee_username} {money(entry)}{described} for review"
        f" (key {entry.idempotency_key}, {entry.attempts} attempt(s)): an attempt on"
        f" {when:%Y-%m-%d %H:%M:%S} UTC may have reached the gateway, which no longer keeps"
        " its key, so sending it again could pay twice. Check `paygate payments` for a payment"
        f" to {entry.payee_username} of {money(entry)}{described}: if it is there, run"
        f" `paygate queue forget {entry.entry_id}`; if not, `paygate queue resend"
        f" {entry.entry_id} --yes`."
    )


def next_step(last_error: str) -> str:
    if last_error == "UNAUTHENTICATED":
        return "the gateway did not accept your session: `paygate queue sync` will log you in"
    return "it is kept on disk: `paygate queue sync` sends it (or `paygate queue` to see it)"


def money(entry: QueuedPayment) -> str:
    return f"{format_amount(entry.amount_minor, entry.currency)} {entry.currency}"
