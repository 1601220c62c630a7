"""`paygate pay-batch FILE.csv`: bulk payouts from a CSV file, a line per payment.

    payee,amount,description,idempotency_key
    bob,12.50,invoice 1041,
    carol,7.00,refund of order 77,order-77

Columns: payee, amount (decimal, in --currency), description (optional), idempotency key
(optional). A first line that names the columns (its first two fields `payee` and
`amount`) is a header and is skipped; blank lines are skipped. A file with a line that
cannot be read pays nothing: every such line is named.

A line without a key gets one made from the file (the SHA-256 of its bytes) and the line's
number, so running the same file again answers each line as before (replayed) instead of
paying it twice. Editing the file changes its hash, and with it the key of every line
that has none of its own: give lines keys to edit a file safely between runs.

Each line is a payment of its own; the batch is not atomic. It prints a line per payment
as the gateway answers, then a summary; the exit status is 1 when any payment failed.
Payments are sent in calls of at most 1,000 (paygate.client.pay_many); on a terminal, a
progress bar on stderr counts them.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import io
import pathlib
import sys
from collections.abc import Sequence
from typing import TextIO

from paygate.client import cli as _cli
from paygate.client._batch import BatchItem, BatchResult
from paygate.client.cli_errors import CliError
from paygate.common.money import DEFAULT_CURRENCY, check_currency, format_amount, parse_amount
from paygate.errors import PaygateError

MAX_FILE_BYTES = 64 * 1024 * 1024
MAX_LINES = 100_000
MAX_BAD_LINES_SHOWN = 20
PROGRESS_WIDTH = 30
PROGRESS_MIN_PAYMENTS = 100  # a smaller file is answered before a bar would tell anything
HELP = """\
Pay many users from a CSV file: one payment per line, with the columns payee, amount
(decimal, for example 12.50), description (optional) and idempotency key (optional). A first
line `payee,amount,...` is a header and is skipped.

A line without a key gets one made from the SHA-256 of the file and the line's number:
running the same file again answers each line as before (replayed) and pays nothing twice.
Editing the file changes the key of every line without its own, so such lines would be
paid again: give lines their own keys to edit a file between runs.

Each line is a payment of its own (the batch is not atomic): a line that fails (an unknown
payee, not enough money) fails alone. Funds are reserved in the file's order. A file with a
line that cannot be read pays nothing. Payments are sent in calls of at most 1,000; on a
terminal, a progress bar on stderr counts them. The exit status is 1 when any failed.
"""


@dataclasses.dataclass(frozen=True)
class Line:
    number: int  # in the file, from 1
    item: BatchItem


def add_pay_batch_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    batch = commands.add_parser(
        "pay-batch",
        help="pay many users from a CSV file (bulk payouts)",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    batch.add_argument("file", type=pathlib.Path, help="the CSV file (- for standard input)")
    batch.add_argument(
        "--currency",
        default=DEFAULT_CURRENCY,
        help="ISO 4217 code of every amount of the file (default %(default)s)",
    )
    batch.set_defaults(
        command=cmd_pay_batch,
        unreachable_means="the payments not listed above may or may not have been made",
        unreachable_hint="Run the same command with the same file again: each line is paid at"
        " most once.",
    )


def cmd_pay_batch(args: argparse.Namespace) -> None:
    lines = read_lines(read_file(args.file), args.currency)
    stored = _cli.require_session(args)
    progress = Progress(sys.stderr, len(lines))
    failed = replayed = paid_minor = 0

    def show(results: list[BatchResult]) -> None:
        nonlocal failed, replayed, paid_minor
        progress.clear()
        for result in results:
            line = by_key[result.item.idempotency_key or ""]
            print(result_line(line, result))
            failed += result.error is not None
            if result.payment is not None and result.replayed:
                replayed += 1
            elif result.payment is not None:
                paid_minor += result.payment.amount_minor
        progress.advance(len(results))

    by_key = {line.item.idempotency_key or "": line for line in lines}
    progress.advance(0)
    try:
        with _cli.open_client(args, stored) as client:
            client.pay_many([line.item for line in lines], on_results=show)
    finally:
        progress.clear()
    amount = format_amount(paid_minor, args.currency)
    print(
        f"{len(lines) - failed} of {len(lines)} paid ({replayed} of them before: replayed),"
        f" {failed} failed; {amount} {args.currency} paid now"
    )
    if failed:
        raise CliError(f"{failed} of {len(lines)} payments failed (listed above)")


def read_file(path: pathlib.Path) -> bytes:
    try:
        if str(path) == "-":
            data = sys.stdin.buffer.read(MAX_FILE_BYTES + 1)
        else:
            with path.open("rb") as f:
                data = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from None
    if len(data) > MAX_FILE_BYTES:
        raise CliError(f"{path} is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB")
    return data


def derived_key(digest: str, number: int) -> str:
    """The key of line `number` of a file whose SHA-256 is `digest`, when it gives none."""
    return f"batch-{digest[:32]}-{number}"


def read_lines(data: bytes, currency: str) -> list[Line]:
    """The file's payments; CliError naming every line that cannot be read."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CliError(f"the file is not UTF-8 text (byte {exc.start})") from None
    check_currency(currency)
    digest = hashlib.sha256(data).hexdigest()
    lines: list[Line] = []
    bad: list[str] = []
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        for fields in reader:
            number = reader.line_num
            if not any(field.strip() for field in fields):
                continue
            if not lines and not bad and _is_header(fields):
                continue
            try:
                lines.append(Line(number, _item(fields, currency, digest, number)))
            except (CliError, PaygateError) as problem:
                bad.append(f"line {number}: {getattr(problem, 'message', problem)}")
            if len(lines) + len(bad) > MAX_LINES:
                raise CliError(f"the file has more than {MAX_LINES} payments: split it")
    except csv.Error as exc:
        raise CliError(f"line {reader.line_num}: {exc}") from None
    bad += repeated_keys(lines)
    if bad:
        shown = bad[:MAX_BAD_LINES_SHOWN] + [f"... and {len(bad) - MAX_BAD_LINES_SHOWN} more"] * (
            len(bad) > MAX_BAD_LINES_SHOWN
        )
        raise CliError("nothing was paid: fix these lines\n" + "\n".join(shown))
    if not lines:
        raise CliError("the file holds no payment")
    return lines


def repeated_keys(lines: Sequence[Line]) -> list[str]:
    """A line whose key an earlier line has too: each payment needs its own."""
    first: dict[str, int] = {}
    problems = []
    for line in lines:
        key = line.item.idempotency_key or ""
        earlier = first.setdefault(key, line.number)
        if earlier != line.number:
            problems.append(
                f"line {line.number}: the idempotency key {key!r} is line {earlier}'s too"
            )
    return problems


def _is_header(fields: Sequence[str]) -> bool:
    return [f.strip().lower() for f in fields[:2]] == ["payee", "amount"]


def _item(fields: list[str], currency: str, digest: str, number: int) -> BatchItem:
    if not 2 <= len(fields) <= 4:
        raise CliError(
            f"{len(fields)} columns: expected payee, amount, and optionally description and"
            " idempotency key"
        )
    payee, amount, description, key = [*(f.strip() for f in fields), "", ""][:4]
    if not payee:
        raise CliError("no payee")
    amount_minor = parse_amount(amount, currency)
    if amount_minor == 0:
        raise CliError(f"amount {amount!r} is zero")
    return BatchItem(
        payee_username=payee,
        amount_minor=amount_minor,
        currency=currency,
        description=description,
        idempotency_key=key or derived_key(digest, number),
    )


def result_line(line: Line, result: BatchResult) -> str:
    item = line.item
    amount = f"{format_amount(item.amount_minor, item.currency)} {item.currency}"
    if result.payment is not None:
        again = " (replayed: paid before; nothing moved now)" if result.replayed else ""
        return (
            f"line {line.number}: paid {item.payee_username} {amount}: payment"
            f" {result.payment.payment_id} {result.payment.status}{again}"
        )
    error = result.error
    assert error is not None
    again = " (replayed: this key's answer)" if result.replayed else ""
    return (
        f"line {line.number}: FAILED {item.payee_username} {amount}: {error.message}"
        f" [{error.reason}]{again}"
    )


class Progress:
    """A bar on `stream` counting payments answered, shown only on a terminal and for a
    file of at least PROGRESS_MIN_PAYMENTS; it advances as each call (up to 1,000) is
    answered, and is cleared before the lines of its results are printed."""

    def __init__(self, stream: TextIO, total: int) -> None:
        self._stream = stream
        self._total = total
        self._done = 0
        self._shown = total >= PROGRESS_MIN_PAYMENTS and stream.isatty()

    def advance(self, count: int) -> None:
        if not self._shown:
            return
        self._done += count
        filled = PROGRESS_WIDTH * self._done // self._total
        bar = "#" * filled + "." * (PROGRESS_WIDTH - filled)
        self._stream.write(f"\r[{bar}] {self._done}/{self._total} payments answered")
        self._stream.flush()

    def clear(self) -> None:
        if self._shown:
            self._stream.write("\r\033[K")
            self._stream.flush()
