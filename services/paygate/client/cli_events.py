"""The `paygate events` command: what happened to your money, listed or followed live.

    paygate events                  your events, oldest first (--after N, --type T, --limit N)
    paygate events --follow         then each new one as it happens, until Ctrl-C

Each line: sequence, time, type, the payment or refund, the amount as it moved for you, the
other party. `--follow` reconnects by itself when the gateway restarts or another gateway
takes over, and resumes after the last event it printed, which it keeps beside the session
(events-USER.cursor): run it again later and it goes on from there, printing each event once.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pathlib
import signal
import sys

from paygate.client import cli as _cli
from paygate.client._async_client import AsyncClient
from paygate.client._events import Event
from paygate.client._session_file import StoredSession, session_path
from paygate.common.money import format_amount

TIME_FORMAT = "%Y-%m-%d %H:%M:%S UTC"
PAGE_SIZE = 100


def add_events_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    events = commands.add_parser("events", help="what happened to your money, oldest first")
    events.add_argument(
        "--after", type=int, metavar="N",
        help="start after event N (default: the first; with --follow, after the last one"
        " printed before)",
    )  # fmt: skip
    events.add_argument(
        "--type",
        action="append",
        default=[],
        metavar="TYPE",
        help="only events of this type (payment.succeeded, ...); repeatable",
    )
    events.add_argument(
        "--limit",
        type=_cli.positive_int,
        default=1000,
        help="list at most this many (default %(default)s; not with --follow)",
    )
    events.add_argument(
        "--follow",
        action="store_true",
        help="then print each new event as it happens, until Ctrl-C",
    )
    events.set_defaults(command=cmd_events)


def cmd_events(args: argparse.Namespace) -> None:
    stored = _cli.require_session(args)
    if args.follow:
        cursor_file = cursor_path(args, stored)
        after = args.after if args.after is not None else read_cursor(cursor_file)
        asyncio.run(follow(args, stored, after, cursor_file))
        return
    printed, after = 0, args.after or 0
    with _cli.open_client(args, stored) as client:
        while printed < args.limit:
            events, after, more = client.list_events(
                starting_after=after, page_size=PAGE_SIZE, types=args.type
            )
            for event in events[: args.limit - printed]:
                print(describe_event(event, stored.username))
                printed += 1
            if not more:
                break
    if not printed:
        print("no events")


async def follow(
    args: argparse.Namespace, stored: StoredSession, after: int, cursor_file: pathlib.Path
) -> None:
    args.dialed = args.gateway
    async with AsyncClient(
        args.gateway, ca_cert=args.ca_cert, access_token=stored.access_token,
        timeout_s=args.timeout,
    ) as client:  # fmt: skip
        # Ctrl-C or SIGTERM cancel the watch at its next wait, never between printing an
        # event and saving its cursor (no wait between the two), so that a stopped
        # `--follow` never prints an event again when run again. (SIGKILL cannot wait:
        # between the two, the last event may then be printed twice.)
        loop, task = asyncio.get_running_loop(), asyncio.current_task()
        assert task is not None
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        try:
            async for event in client.watch_events(starting_after=after):
                if not args.type or event.type in args.type:
                    print(describe_event(event, stored.username), flush=True)
                write_cursor(cursor_file, event.sequence)
        except asyncio.CancelledError:
            return


def describe_event(event: Event, username: str) -> str:
    line = f"{event.sequence:>5}  {event.create_time:{TIME_FORMAT}}  {event.type:<18}"
    if event.payment is not None:
        p = event.payment
        outgoing = p.payer_username == username
        amount = p.amount_captured_minor or p.amount_minor
        sign = ("-" if outgoing else "+") if event.type in MOVED else " "
        other = f"to {p.payee_username}" if outgoing else f"from {p.payer_username}"
        parts = {split.payee_username: split.amount_minor for split in p.splits}
        if parts and outgoing:
            other = "to " + ", ".join(
                f"{name} {format_amount(part, p.currency)}" for name, part in parts.items()
            )
        elif parts:  # a payee of a split payment: their own part
            other += f" (your part of {format_amount(p.amount_minor, p.currency)})"
            amount = parts.get(username, 0)
        line += f"  {p.payment_id}  {sign}{format_amount(amount, p.currency)} {p.currency}"
        line += f"  {other}"
        if p.failure_reason:
            line += f"  [{p.failure_reason}]"
    elif event.refund is not None:
        r = event.refund
        line += f"  {r.refund_id}   {format_amount(r.amount_minor, r.currency)} {r.currency}"
        line += f"  refund of {r.payment_id}"
        share = {split.payee_username: split.amount_minor for split in r.splits}.get(username)
        if share is not None:
            line += f" (you give back {format_amount(share, r.currency)})"
        if r.failure_reason:
            line += f"  [{r.failure_reason}]"
    return line


# The events after which money moved (shown signed); the others moved nothing (yet).
MOVED = {"payment.succeeded", "payment.captured"}


def cursor_path(args: argparse.Namespace, stored: StoredSession) -> pathlib.Path:
    return session_path(args.environ).parent / f"events-{stored.username}.cursor"


def read_cursor(path: pathlib.Path) -> int:
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return 0
    if not text.isdigit():
        print(f"ignoring {path}: not an event sequence", file=sys.stderr)
        return 0
    return int(text)


def write_cursor(path: pathlib.Path, sequence: int) -> None:
    """Kept after each event printed; written whole or not at all (a rename)."""
    partial = path.with_suffix(".partial")
    partial.write_text(f"{sequence}\n", encoding="ascii")
    os.replace(partial, path)
