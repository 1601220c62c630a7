"""A gateway database made by an earlier version opens with every payment as it was.

Step 6 rebuilds the payments table on SQLite (to widen its checks): the rows, their
sequence numbers, the parties' references and the next sequence number survive it."""

from __future__ import annotations

import asyncio
import pathlib
import sqlite3

from paygate.gateway.models import TxnState
from paygate.gateway.schema import SQLITE_MIGRATIONS
from paygate.gateway.store import SqliteGatewayStore

BEFORE_AUTHORIZATIONS = 5
BEFORE_OPERATORS = 10


def old_database(path: pathlib.Path) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    for statement_block in SQLITE_MIGRATIONS[:BEFORE_AUTHORIZATIONS]:
        conn.executescript(statement_block)
    conn.execute(f"PRAGMA user_version = {BEFORE_AUTHORIZATIONS}")
    conn.executescript(
        """
        INSERT INTO users VALUES ('usr_a', 'alice', x'00', 'bank-a', '100001', 'USD',
            'customer', 0);
        INSERT INTO users VALUES ('usr_b', 'bob', x'00', 'bank-b', '100001', 'USD',
            'customer', 0);
        INSERT INTO payments (payment_id, status, txn_state, payer_user_id, payer_username,
            payer_bank_id, payer_account, payee_user_id, payee_username, payee_bank_id,
            payee_account, amount, currency, description, create_time_us, one_phase)
            VALUES ('pay_old', 'succeeded', 'committed', 'usr_a', 'alice', 'bank-a', '100001',
            'usr_b', 'bob', 'bank-b', '100001', 1250, 'USD', 'lunch', 7, 0);
        INSERT INTO payment_parties VALUES ('usr_a', 1), ('usr_b', 1);
        """
    )
    conn.close()


def test_payments_survive_the_rebuild_of_their_table(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "gateway.db"
    old_database(path)

    async def reopen() -> None:
        store = SqliteGatewayStore(path)
        await store.open()
        try:
            payment = await store.get_payment("pay_old")
            assert payment is not None
            assert (payment.amount_minor, payment.txn_state, payment.description) == (
                1250,
                TxnState.COMMITTED,
                "lunch",
            )
            assert not payment.manual_capture and payment.amount_captured_minor == 0
            listed = await store.list_payments("usr_b", before_seq=None, limit=10)
            assert [(seq, p.payment_id) for seq, p in listed] == [(1, "pay_old")]
        finally:
            await store.close()

    asyncio.run(reopen())
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(SQLITE_MIGRATIONS)
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    assert conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'payments'").fetchone() == (
        1,
    )
    conn.close()


def test_users_of_an_earlier_version_lose_their_role_and_are_not_frozen(
    tmp_path: pathlib.Path,
) -> None:
    """Step 11 drops the stored role (nothing read it) and adds `frozen`, off."""
    path = tmp_path / "gateway.db"
    old_database(path)
    conn = sqlite3.connect(path, isolation_level=None)
    for number in range(BEFORE_AUTHORIZATIONS, BEFORE_OPERATORS):
        conn.executescript(SQLITE_MIGRATIONS[number])
    conn.execute(f"PRAGMA user_version = {BEFORE_OPERATORS}")
    conn.close()

    async def reopen() -> None:
        store = SqliteGatewayStore(path)
        await store.open()
        try:
            found = await store.user_by_username("alice")
            assert found is not None and found[0].account_number == "100001"
            status = await store.user_status("alice", now_s=0.0, recent_actions=10)
            assert status is not None and not status.frozen and status.recent_actions == ()
        finally:
            await store.close()

    asyncio.run(reopen())
    conn = sqlite3.connect(path)
    columns = [row[1] for row in conn.execute("PRAGMA table_info(users)")]
    assert "role" not in columns and "frozen" in columns
    conn.close()
