"""Suite tests of authorizations through `paygate`, run as users run it: the payer's
`pay --capture-later`, the payee's `capture` and `cancel`, what `payments` says of each, and
the refusals, each in words with its reason and exit status 1."""

from __future__ import annotations

import pathlib
import re

import pytest
from suite import Suite
from test_cli import Cli
from users import unique_name

pytestmark = pytest.mark.suite

TIME = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC"


@pytest.fixture
def cli(suite: Suite, tmp_path: pathlib.Path) -> Cli:
    """The payer's `paygate` (and the operator's `paygate-admin`)."""
    return Cli(suite, tmp_path / "xdg-config")


@pytest.fixture
def shop(suite: Suite, tmp_path: pathlib.Path) -> Cli:
    """The payee's `paygate`: a config directory (a session) of its own."""
    return Cli(suite, tmp_path / "payee-config")


def authorize(cli: Cli, payee: str, amount: str) -> str:
    """`paygate pay PAYEE AMOUNT --capture-later`; the payment's id."""
    said = cli.ok("paygate", "pay", payee, amount, "--capture-later")
    found = re.fullmatch(
        rf"authorized {payee} {re.escape(amount)} USD: payment (pay_\w+) REQUIRES_CAPTURE\n"
        rf"the money is held until {payee} captures it before {TIME}; uncaptured by then,"
        r" it is released\n",
        said,
    )
    assert found, said
    return found.group(1)


def test_authorize_capture_part_cancel_another_and_list_them(
    suite: Suite, cli: Cli, shop: Cli
) -> None:
    payer, payee = unique_name("una"), unique_name("shop")
    payer_account = cli.open_account("bank-a", "50.00")
    payee_account = cli.open_account("bank-b", "0")
    cli.register(payer, "bank-a", payer_account)
    cli.register(payee, "bank-b", payee_account)
    cli.login(payer)
    shop.login(payee)

    held = authorize(cli, payee, "20.00")
    assert cli.ok("paygate", "balance") == "balance: 50.00 USD (available 30.00 USD)\n"
    (line,) = cli.ok("paygate", "payments").splitlines()
    assert re.search(
        rf"  {held}  REQUIRES_CAPTURE   20\.00 USD  to {payee}  requires capture before {TIME}$",
        line,
    ), line

    captured = shop.ok("paygate", "capture", held, "12.50")
    assert captured == (
        f"captured 12.50 of 20.00 USD from {payer}: payment {held} SUCCEEDED"
        f" (7.50 USD released to {payer})\n"
    )
    (line,) = cli.ok("paygate", "payments").splitlines()
    assert line.endswith(f"  {held}  SUCCEEDED  -12.50 USD  to {payee}  captured 12.50 of 20.00")
    (line,) = shop.ok("paygate", "payments").splitlines()
    assert line.endswith(f"+12.50 USD  from {payer}  captured 12.50 of 20.00")

    dropped = authorize(cli, payee, "5.00")
    assert shop.ok("paygate", "cancel", dropped) == (
        f"cancelled payment {dropped} from {payer} (5.00 USD): nothing moved, the hold is"
        " released\n"
    )
    canceled, _ = cli.ok("paygate", "payments").splitlines()  # newest first
    assert canceled.endswith(f"  {dropped}  CANCELED    5.00 USD  to {payee}  [CANCELED]")
    assert cli.ok("paygate", "balance") == "balance: 37.50 USD (available 37.50 USD)\n"
    assert suite.bank_account("bank-b", payee_account).balance == 12_50


def test_each_refusal_says_why_with_its_reason(suite: Suite, cli: Cli, shop: Cli) -> None:
    payer, payee = unique_name("vic"), unique_name("shop")
    cli.register(payer, "bank-a", cli.open_account("bank-a", "30.00"))
    cli.register(payee, "bank-c", cli.open_account("bank-c", "0"))
    cli.login(payer)
    shop.login(payee)
    held = authorize(cli, payee, "10.00")

    def refused(who: Cli, *args: str) -> str:
        result = who.run("paygate", *args)
        assert (result.returncode, result.stdout) == (1, ""), result.stderr
        assert "Traceback" not in result.stderr
        return result.stderr

    assert refused(shop, "capture", held, "10.01") == (
        f"error: cannot capture 10.01 USD of payment {held}: 10.00 USD was authorized"
        " [AMOUNT_EXCEEDS_CAPTURABLE]\n"
    )
    assert refused(cli, "capture", held) == (
        f"error: only the payee of payment {held} can capture it: you are its payer"
        " [PERMISSION_DENIED]\n"
    )
    assert refused(cli, "cancel", held) == (
        f"error: only the payee of payment {held} can cancel it: you are its payer"
        " [PERMISSION_DENIED]\n"
    )
    assert refused(shop, "cancel", "pay_000000000000000000000000") == (
        "error: no payment pay_000000000000000000000000 among yours: check its id in"
        " `paygate payments` [NOT_FOUND]\n"
    )
    assert "is zero: leave it out" in refused(shop, "capture", held, "0")

    shop.ok("paygate", "capture", held)  # all of it
    assert refused(shop, "capture", held) == (
        f"error: payment {held} was already captured (10.00 of 10.00 USD)"
        " [PAYMENT_NOT_CAPTURABLE]\n"
    )
    assert refused(shop, "cancel", held) == (
        f"error: payment {held} was already captured (10.00 of 10.00 USD)"
        " [PAYMENT_NOT_CAPTURABLE]\n"
    )
    dropped = authorize(cli, payee, "1.00")
    shop.ok("paygate", "cancel", dropped)
    assert refused(shop, "capture", dropped) == (
        f"error: payment {dropped} was cancelled: its hold was released [PAYMENT_NOT_CAPTURABLE]\n"
    )
    paid = re.search(r"payment (pay_\w+) SUCCEEDED", cli.ok("paygate", "pay", payee, "2.00"))
    assert paid, "no payment id"
    assert refused(shop, "capture", paid.group(1)) == (
        f"error: payment {paid.group(1)} cannot be captured: it was not made with"
        " --capture-later, so its money moved when it was paid [PAYMENT_NOT_CAPTURABLE]\n"
    )
    assert cli.ok("paygate", "balance") == "balance: 18.00 USD (available 18.00 USD)\n"


def test_a_capture_retried_with_its_key_is_said_to_be_replayed(
    suite: Suite, cli: Cli, shop: Cli
) -> None:
    payer, payee = unique_name("wes"), unique_name("shop")
    payer_account = cli.open_account("bank-b", "9.00")
    cli.register(payer, "bank-b", payer_account)
    cli.register(payee, "bank-a", cli.open_account("bank-a", "0"))
    cli.login(payer)
    shop.login(payee)
    held = authorize(cli, payee, "4.00")
    first = shop.ok("paygate", "capture", held, "3.00", "--idempotency-key", "capture-1")
    again = shop.ok("paygate", "capture", held, "3.00", "--idempotency-key", "capture-1")
    assert "replayed" not in first
    assert again == first.rstrip("\n") + (
        " (replayed: this key's answer, given before; nothing happened now)\n"
    )
    assert suite.bank_account("bank-b", payer_account).balance == 6_00


def test_an_operator_sees_the_holds_of_authorizations_until_they_are_cancelled(
    suite: Suite, cli: Cli, shop: Cli
) -> None:
    payer, payee = unique_name("xia"), unique_name("shop")
    payer_account = cli.open_account("bank-a", "50.00")
    payee_account = cli.open_account("bank-b", "0")
    cli.register(payer, "bank-a", payer_account)
    cli.register(payee, "bank-b", payee_account)
    cli.login(payer)
    shop.login(payee)
    older = authorize(cli, payee, "20.00")
    newer = authorize(cli, payee, "5.00")

    def account(bank_id: str, number: str, *args: str) -> str:
        return cli.ok("paygate-admin", "account", "--bank", bank_id, "--account", number, *args)

    header = "  placed" + " " * 19 + "hold" + " " * 15 + "amount  payment"
    assert re.fullmatch(
        f"account:        {payer_account} at bank-a\n"
        "balance:        50.00 USD\n"
        "available:      25.00 USD\n"
        "pending debit:  25.00 USD\n"
        "pending credit: 0.00 USD\n"
        "holds, oldest first:\n"
        f"{header}\n"
        rf"  {TIME}  debit hold      20\.00 USD  {older}\n"
        rf"  {TIME}  debit hold       5\.00 USD  {newer}\n",
        account("bank-a", payer_account),
    ), account("bank-a", payer_account)
    payee_said = account("bank-b", payee_account, "--limit", "1")
    assert re.fullmatch(
        f"account:        {payee_account} at bank-b\n"
        r"balance:        0\.00 USD\n"
        r"available:      0\.00 USD\n"
        r"pending debit:  0\.00 USD\n"
        r"pending credit: 25\.00 USD\n"
        "holds, oldest first:\n"
        f"{header}\n"
        rf"  {TIME}  pending credit  20\.00 USD  {older}\n"
        "more holds not shown: --limit 1 listed the oldest 1\n",
        payee_said,
    ), payee_said

    shop.ok("paygate", "cancel", older)
    (line,) = account("bank-a", payer_account).splitlines()[7:]
    assert line.endswith(f"  debit hold      5.00 USD  {newer}"), line
    shop.ok("paygate", "cancel", newer)
    for bank_id, number in (("bank-a", payer_account), ("bank-b", payee_account)):
        assert account(bank_id, number).splitlines()[4:] == [
            "pending credit: 0.00 USD",
            "no holds",
        ]
