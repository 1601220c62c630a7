"""Loading a bank's demo accounts from its TOML file in ops/demo-accounts/.

    currency = "USD"
    [[accounts]]
    account_number = "100001"
    balance = "1000.00"      # decimal text in the major unit

Loading is idempotent: an account that already exists is left as it is.
"""

from __future__ import annotations

import pathlib
import tomllib

from paygate.bank.participant import Participant
from paygate.common.money import parse_amount
from paygate.errors import AlreadyExists


async def load_demo_accounts(participant: Participant, path: pathlib.Path) -> int:
    """Open the accounts listed in `path` that do not exist yet; return how many were opened."""
    with path.open("rb") as f:
        data = tomllib.load(f)
    currency = data.get("currency", "USD")
    opened = 0
    for entry in data.get("accounts", []):
        balance = parse_amount(str(entry["balance"]), currency)
        try:
            await participant.open_account(currency, balance, str(entry["account_number"]))
        except AlreadyExists:
            continue
        opened += 1
    return opened
