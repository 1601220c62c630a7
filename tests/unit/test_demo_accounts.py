"""Demo accounts and their published link codes, on a real SQLite bank file, including one
made before link codes existed (its accounts have none: loading gives them the file's)."""

from __future__ import annotations

import asyncio
import pathlib

from paygate.bank import ledger
from paygate.bank.demo_accounts import load_demo_accounts
from paygate.bank.participant import Participant
from paygate.bank.store import SqliteLedgerStore
from paygate.common.faults import FaultInjector
from paygate.errors import NotFound

DEMO = """
currency = "USD"

[[accounts]]
account_number = "100001"
link_code = "DEMO-100001"
balance = "10.00"

[[accounts]]
account_number = "100002"
link_code = "DEMO-100002"
balance = "0.00"
"""


def test_loading_opens_accounts_with_their_codes_and_gives_old_accounts_theirs(
    tmp_path: pathlib.Path,
) -> None:
    demo = tmp_path / "bank-a.toml"
    demo.write_text(DEMO)

    async def scenario() -> list[object]:
        store = SqliteLedgerStore(tmp_path / "bank.db")
        await store.open()
        try:
            bank = Participant(store, FaultInjector(enabled=False, var_dir=tmp_path, process="b"))
            # 100001 as a bank of the previous version opened it: no link code.
            await store.transaction(lambda tx: ledger.open_account(tx, "USD", 10_00, "100001"))
            assert not await bank.has_link_code("100001")
            opened = await load_demo_accounts(bank, demo)
            linked = [
                (await bank.link_account(number, f"DEMO-{number}")).balance
                for number in ("100001", "100002")
            ]
            try:
                await bank.link_account("100001", "DEMO-100002")
                wrong: object = "linked"
            except NotFound as error:
                wrong = error.reason
            # Loading again changes nothing: an existing code is not replaced.
            await bank.issue_link_code("100002", "NEW-CODE")
            await load_demo_accounts(bank, demo)
            kept = (await bank.link_account("100002", "NEW-CODE")).account_number
            return [opened, linked, wrong, kept]
        finally:
            await store.close()

    assert asyncio.run(scenario()) == [1, [10_00, 0], "ACCOUNT_NOT_FOUND", "100002"]
