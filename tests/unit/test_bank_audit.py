"""The bank's periodic audit on SQLite: it reads only the journal posted since its last
pass (so that its cost does not grow with the history), and still sees what it must see.

Each test runs a Participant on a real SQLite file and changes the file behind the bank's
back with a second connection, as a bug or a hand edit would.
"""

from __future__ import annotations

import asyncio
import contextlib
import pathlib
import sqlite3
from collections.abc import Awaitable, Callable

import pytest
from paygate.bank.ledger import Leg
from paygate.bank.main import audit_forever
from paygate.bank.participant import AUDIT_CHUNK_ENTRIES, Participant
from paygate.bank.store import JOURNAL_SINCE_SQL, SqliteLedgerStore
from paygate.common.faults import FaultInjector
from paygate.common.invariants import InvariantViolation

Body = Callable[[Participant, pathlib.Path], Awaitable[None]]


def with_bank(
    tmp_path: pathlib.Path, body: Body, audit_chunk_entries: int = AUDIT_CHUNK_ENTRIES
) -> None:
    """Open a bank with two accounts (100.00 and 0) at tmp_path and run body on it."""
    path = tmp_path / "bank.db"

    async def main() -> None:
        store = SqliteLedgerStore(path)
        await store.open()
        try:
            bank = Participant(
                store,
                FaultInjector(enabled=False, var_dir=tmp_path, process="bank"),
                audit_chunk_entries=audit_chunk_entries,
            )
            await bank.open_account("USD", 100_00, "1")
            await bank.open_account("USD", 0, "2")
            await body(bank, path)
        finally:
            await store.close()

    asyncio.run(main())


async def pay(bank: Participant, transaction_id: str, amount_minor: int) -> None:
    legs = [
        Leg(account_number=number, direction=direction, amount_minor=amount_minor, currency="USD")
        for number, direction in (("1", "debit"), ("2", "credit"))
    ]
    assert (await bank.prepare(transaction_id, legs)).yes
    await bank.commit(transaction_id)


def behind_the_banks_back(path: pathlib.Path, sql: str) -> None:
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        assert conn.execute(sql).rowcount == 1


async def the_next_pass_fails(bank: Participant, *, balances: int, journal: int) -> None:
    """The next (incremental) audit fails on these sums, and the bank stops serving."""
    with pytest.raises(InvariantViolation, match=f"sum of balances {balances} != .* {journal}"):
        await bank.audit()
    assert not await bank.healthy()


def test_the_journal_after_a_mark_is_read_by_a_range_search(tmp_path: pathlib.Path) -> None:
    with_bank(tmp_path, lambda bank, path: asyncio.sleep(0))
    with contextlib.closing(sqlite3.connect(tmp_path / "bank.db")) as conn:
        steps = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {JOURNAL_SINCE_SQL}", (1,))]
    assert steps == ["SEARCH entries USING INTEGER PRIMARY KEY (rowid>?)"], steps


def test_a_periodic_audit_sees_entries_posted_since_the_last(tmp_path: pathlib.Path) -> None:
    async def body(bank: Participant, path: pathlib.Path) -> None:
        await bank.audit(full=True)
        await pay(bank, "t1", 25_00)
        totals = await bank.audit()
        assert totals.balance == 100_00 and await bank.healthy()
        # An entry with no balance behind it, written after the last pass: the next
        # (incremental) pass reads it and fails.
        behind_the_banks_back(
            path,
            "INSERT INTO entries (account_number, amount, kind, reference, created_at)"
            " VALUES ('2', 1, 'credit', 'forged', '2026-11-26')",
        )
        await the_next_pass_fails(bank, balances=10000, journal=10001)

    with_bank(tmp_path, body)


def test_a_changed_old_entry_is_found_by_the_next_full_pass(tmp_path: pathlib.Path) -> None:
    async def body(bank: Participant, path: pathlib.Path) -> None:
        await bank.audit(full=True)
        await pay(bank, "t1", 25_00)
        await bank.audit()
        behind_the_banks_back(path, "UPDATE entries SET amount = amount + 1 WHERE entry_id = 1")
        # Incremental passes read only what was posted after their mark: not this entry.
        await pay(bank, "t2", 5_00)
        await bank.audit()
        assert await bank.healthy()
        # The loop's every third pass is a full one, and that one sees it.
        loop = asyncio.ensure_future(audit_forever(bank, interval_s=0.01, full_every=3))
        try:
            for _ in range(500):
                if not await bank.healthy():
                    break
                await asyncio.sleep(0.01)
            assert not await bank.healthy()
        finally:
            loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loop
        # Put back, the bank passes its audit and serves again.
        behind_the_banks_back(path, "UPDATE entries SET amount = amount - 1 WHERE entry_id = 1")
        await bank.audit()
        assert await bank.healthy()

    with_bank(tmp_path, body)


def test_entries_removed_below_the_mark_make_the_next_pass_full(tmp_path: pathlib.Path) -> None:
    async def body(bank: Participant, path: pathlib.Path) -> None:
        await pay(bank, "t1", 25_00)
        await bank.audit(full=True)
        # The last entry (the payee's credit) deleted by hand: the journal now ends below
        # the mark, which the next pass sees, so it sums the whole journal and fails.
        behind_the_banks_back(
            path, "DELETE FROM entries WHERE entry_id = (SELECT MAX(entry_id) FROM entries)"
        )
        await the_next_pass_fails(bank, balances=10000, journal=7500)

    with_bank(tmp_path, body)


def test_a_changed_balance_is_found_by_any_pass(tmp_path: pathlib.Path) -> None:
    async def body(bank: Participant, path: pathlib.Path) -> None:
        await bank.audit(full=True)
        behind_the_banks_back(
            path, "UPDATE accounts SET balance = balance + 1 WHERE account_number = '2'"
        )
        await the_next_pass_fails(bank, balances=10001, journal=10000)

    with_bank(tmp_path, body)


def test_a_full_pass_sums_the_journal_a_chunk_at_a_time(tmp_path: pathlib.Path) -> None:
    # 2 openings and 2 entries per payment, read 3 entries at a time: 8 chunks.
    async def body(bank: Participant, path: pathlib.Path) -> None:
        for i in range(10):
            await pay(bank, f"t{i}", 1_00)
        totals = await bank.audit(full=True)
        assert totals.balance == 100_00 and await bank.healthy()
        behind_the_banks_back(path, "UPDATE entries SET amount = amount + 1 WHERE entry_id = 1")
        with pytest.raises(InvariantViolation, match="sum of balances 10000 != .* 10001"):
            await bank.audit(full=True)

    with_bank(tmp_path, body, audit_chunk_entries=3)


def test_payments_go_on_between_the_chunks_of_a_full_pass(tmp_path: pathlib.Path) -> None:
    # One read per entry: a payment started while the pass runs is done long before it.
    async def body(bank: Participant, path: pathlib.Path) -> None:
        for i in range(40):
            await pay(bank, f"t{i}", 1_00)
        audit = asyncio.ensure_future(bank.audit(full=True))
        await asyncio.sleep(0)  # the pass has sent its first read
        await pay(bank, "during", 1_00)
        assert not audit.done()
        totals = await audit
        assert totals.balance == 100_00 and await bank.healthy()

    with_bank(tmp_path, body, audit_chunk_entries=1)
