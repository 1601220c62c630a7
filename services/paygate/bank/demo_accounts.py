"""Loading a bank's demo accounts from its TOML file in ops/demo-accounts/.

    currency = "USD"
    [[accounts]]
    account_number = "100001"
    balance = "1000.00"      # decimal text in the major unit
    link_code = "DEMO-100001" # the code to register with; public, as the demo money is

Loading is idempotent: an account that already exists is left as it is. One without a link
code (a bank file made before link codes existed) does not get the file's public code: the
number may be a real customer's, opened while demo accounts were off. A warning says to
issue one with `paygate-admin link-code`.
"""

from __future__ import annotations

import logging
import pathlib
import tomllib

from paygate.bank.participant import Participant
from paygate.common.money import parse_amount
from paygate.errors import AlreadyExists

_log = logging.getLogger("paygate.bank")


async def load_demo_accounts(participant: Participant, path: pathlib.Path) -> int:
    """Open the accounts listed in `path` that do not exist yet; return how many were opened."""
    with path.open("rb") as f:
        data = tomllib.load(f)
    currency = data.get("currency", "USD")
    opened = 0
    for entry in data.get("accounts", []):
        balance = parse_amount(str(entry["balance"]), currency)
        number = str(entry["account_number"])
        link_code = str(entry["link_code"]) if "link_code" in entry else None
        try:
            await participant.open_account(currency, balance, number, link_code)
        except AlreadyExists:
            if link_code is not None and not await participant.has_link_code(number):
                _log.warning(
                    "account %s exists without a link code: it cannot be registered with until"
                    " an operator issues one (paygate-admin link-code)", number,
                    extra={"fields": {"account_number": number}},
                )
            continue
        opened += 1
    return opened
