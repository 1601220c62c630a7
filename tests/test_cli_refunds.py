"""Suite tests of refunds through `paygate`, run as users run it: the payee's `refund` of part
and of the rest, `refunds` listing them for both parties, what `payments` says, and the
refusals in words with their reason and exit status 1."""

from __future__ import annotations

import pathlib
import re

import pytest
from suite import Suite
from test_cli import Cli
from users import unique_name

pytestmark = pytest.mark.suite

TIME = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC"


def test_refund_part_then_the_rest_and_every_refusal(suite: Suite, tmp_path: pathlib.Path) -> None:
    cli, shop = Cli(suite, tmp_path / "payer"), Cli(suite, tmp_path / "payee")
    payer, payee = unique_name("una"), unique_name("shop")
    cli.register(payer, "bank-a", cli.open_account("bank-a", "50.00"))
    cli.register(payee, "bank-b", cli.open_account("bank-b", "0"))
    cli.login(payer)
    shop.login(payee)
    paid = re.search(r"payment (pay_\w+)", cli.ok("paygate", "pay", payee, "20.00"))
    assert paid
    pid = paid.group(1)

    said = shop.ok("paygate", "refund", pid, "7.50", "--reason", "one cup was broken")
    assert re.fullmatch(
        rf"refunded 7\.50 USD to {payer}: refund (re_\w+) SUCCEEDED\n"
        rf"payment {pid}: 12\.50 USD left to refund\n",
        said,
    ), said
    (line,) = cli.ok("paygate", "payments").splitlines()
    assert line.endswith(f"-20.00 USD  to {payee}  refunded 7.50 of 20.00"), line
    assert cli.ok("paygate", "balance") == "balance: 37.50 USD (available 37.50 USD)\n"

    too_much = shop.run("paygate", "refund", pid, "12.51")
    assert too_much.returncode == 1
    assert f"cannot refund that much of payment {pid}: at most 12.50 USD is left" in too_much.stderr
    assert "[AMOUNT_EXCEEDS_REFUNDABLE]" in too_much.stderr, too_much.stderr
    by_payer = cli.run("paygate", "refund", pid)
    assert by_payer.returncode == 1
    assert f"only the payee of payment {pid} can refund it" in by_payer.stderr

    rest = shop.ok("paygate", "refund", pid)
    assert re.match(rf"refunded 12\.50 USD to {payer}: refund re_\w+ SUCCEEDED\n", rest), rest
    assert rest.endswith(f"payment {pid}: 0.00 USD left to refund\n")
    listed = cli.ok("paygate", "refunds", pid).splitlines()
    assert len(listed) == 2
    assert re.fullmatch(rf"{TIME}  re_\w+  SUCCEEDED  7\.50 USD  one cup was broken", listed[0])
    assert re.fullmatch(rf"{TIME}  re_\w+  SUCCEEDED  12\.50 USD", listed[1])
    assert cli.ok("paygate", "balance") == "balance: 50.00 USD (available 50.00 USD)\n"
