"""The gateway's housekeeping: what a pass deletes (on a real SQLite store), and that
expired rows go in bounded transactions (prune_in_batches)."""

from __future__ import annotations

import asyncio
import pathlib

from paygate.common.config import GatewayConfig, TlsFiles
from paygate.gateway.main import (
    PRUNE_BATCH,
    SESSION_KEPT_AFTER_EXPIRY_S,
    housekeeping_pass,
    prune_in_batches,
)
from paygate.gateway.models import User
from paygate.gateway.store import SqliteGatewayStore

NOW_S = 1_800_000_000.0


def test_a_pass_deletes_sessions_a_day_past_expiry_and_old_login_failures(
    tmp_path: pathlib.Path,
) -> None:
    database = tmp_path / "gateway.db"
    tls = TlsFiles(ca=tmp_path / "ca.pem", cert=tmp_path / "c.pem", key=tmp_path / "k.pem")
    config = GatewayConfig(
        listen="127.0.0.1:0",
        metrics="127.0.0.1:0",
        database=database,
        tls=tls,
        bank_addresses={},
    )
    store = SqliteGatewayStore(database)
    alice = User(
        user_id="u1", username="alice", bank_id="bank-a", account_number="1", currency="USD"
    )

    async def scenario() -> list[bool]:
        await store.open()
        try:
            await store.create_user(alice, b"hash")
            await store.insert_session("long-gone", "u1", NOW_S - SESSION_KEPT_AFTER_EXPIRY_S - 1)
            await store.insert_session("just-expired", "u1", NOW_S - 60)
            await store.insert_session("live", "u1", NOW_S + 3600)
            window_s = config.login_failure_window_s
            await store.record_login_failure(["user:old"], NOW_S - window_s - 1)
            await store.record_login_failure(["user:recent"], NOW_S - 1)
            await housekeeping_pass(store, config, NOW_S)
            sessions = [
                await store.session(t) is not None for t in ("long-gone", "just-expired", "live")
            ]
            failures = await store.login_failures(["user:old", "user:recent"], since_s=0.0)
            return [*sessions, *(bool(times) for times in failures)]
        finally:
            await store.close()

    # The session that expired a minute ago stays (its token is answered "expired").
    assert asyncio.run(scenario()) == [False, True, True, False, True]


def test_a_backlog_is_deleted_batch_by_batch_until_none_is_left() -> None:
    backlog = 2 * PRUNE_BATCH + 7
    calls: list[tuple[float, int]] = []

    async def prune(*, older_than_s: float, limit: int) -> int:
        nonlocal backlog
        calls.append((older_than_s, limit))
        deleted = min(backlog, limit)
        backlog -= deleted
        return deleted

    assert asyncio.run(prune_in_batches(prune, 123.0)) == 2 * PRUNE_BATCH + 7
    assert backlog == 0
    assert calls == [(123.0, PRUNE_BATCH)] * 3  # two full batches, then the rest


def test_nothing_to_delete_is_one_call() -> None:
    calls = 0

    async def prune(*, older_than_s: float, limit: int) -> int:
        nonlocal calls
        calls += 1
        return 0

    assert asyncio.run(prune_in_batches(prune, 0.0)) == 0
    assert calls == 1
