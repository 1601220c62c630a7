"""Link codes at a bank, on real SQLite files: demo accounts and their published codes, a
bank file made before link codes existed (migrated, its accounts without codes), one answer
for every refusal, and codes typed the way people type them."""

from __future__ import annotations

import asyncio
import logging
import pathlib
import sqlite3
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest
from paygate.bank import ledger
from paygate.bank.demo_accounts import load_demo_accounts
from paygate.bank.participant import Participant
from paygate.bank.store import MIGRATIONS, SqliteLedgerStore
from paygate.common.faults import FaultInjector
from paygate.errors import NotFound

T = TypeVar("T")
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


def with_bank(tmp_path: pathlib.Path, body: Callable[[Participant], Awaitable[T]]) -> T:
    async def main() -> T:
        store = SqliteLedgerStore(tmp_path / "bank.db")
        await store.open()
        try:
            bank = Participant(store, FaultInjector(enabled=False, var_dir=tmp_path, process="b"))
            return await body(bank)
        finally:
            await store.close()

    return asyncio.run(main())


async def refusal(bank: Participant, number: str, code: str) -> str:
    """The message of a refused LinkAccount, with the number taken out."""
    with pytest.raises(NotFound) as caught:
        await bank.link_account(number, code)
    assert caught.value.reason == "ACCOUNT_NOT_FOUND"
    return caught.value.message.replace(number, "N")


def test_demo_accounts_open_with_their_published_codes(tmp_path: pathlib.Path) -> None:
    demo = tmp_path / "bank-a.toml"
    demo.write_text(DEMO)

    async def body(bank: Participant) -> list[int]:
        assert await load_demo_accounts(bank, demo) == 2
        assert await load_demo_accounts(bank, demo) == 0  # idempotent
        return [(await bank.link_account(n, f"DEMO-{n}")).balance for n in ("100001", "100002")]

    assert with_bank(tmp_path, body) == [10_00, 0]


def test_an_existing_account_without_a_code_does_not_get_the_public_one(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    """100001 may be a real customer's account, opened while demo accounts were off."""
    demo = tmp_path / "bank-a.toml"
    demo.write_text(DEMO)

    async def body(bank: Participant) -> str:
        await bank._store.transaction(lambda tx: ledger.open_account(tx, "USD", 1_00, "100001"))
        with caplog.at_level(logging.WARNING, logger="paygate.bank"):
            assert await load_demo_accounts(bank, demo) == 1  # only 100002 was opened
        return await refusal(bank, "100001", "DEMO-100001")

    assert with_bank(tmp_path, body) == "no account N with this link code at this bank"
    assert "100001 exists without a link code" in caplog.text


def test_a_bank_file_from_before_link_codes_is_migrated_and_codes_issued(
    tmp_path: pathlib.Path,
) -> None:
    # A schema-1 file, as the previous version left it, with one account.
    with sqlite3.connect(tmp_path / "bank.db") as conn:
        conn.executescript(MIGRATIONS[0])
        conn.execute(
            "INSERT INTO accounts (account_number, currency, balance, created_at)"
            " VALUES ('100001', 'USD', 500, '2026-01-01T00:00:00+00:00')"
        )
        conn.execute("PRAGMA user_version = 1")

    async def body(bank: Participant) -> list[object]:
        # No code yet: the same answer as for an account that does not exist, or a wrong code.
        answers = {
            await refusal(bank, "100001", "ANY-CODE"),
            await refusal(bank, "999999", "ANY-CODE"),
        }
        code = await bank.issue_link_code("100001")
        other = await bank.open_account("USD", 0)
        answers.add(await refusal(bank, other[0].account_number, code))  # a wrong code
        linked = await bank.link_account("100001", code)
        return [answers, linked.balance]

    assert with_bank(tmp_path, body) == [{"no account N with this link code at this bank"}, 500]


def test_a_code_is_the_same_in_any_case_and_with_or_without_dashes_and_spaces(
    tmp_path: pathlib.Path,
) -> None:
    async def body(bank: Participant) -> list[str]:
        account, code = await bank.open_account("USD", 0)
        typed = [code.lower(), code.replace("-", ""), code.replace("-", " ").lower()]
        return [(await bank.link_account(account.account_number, t)).account_number for t in typed]

    assert len(set(with_bank(tmp_path, body))) == 1
