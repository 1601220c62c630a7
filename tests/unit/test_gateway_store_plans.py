"""Query plans of the gateway's SQLite store: the queries that run all the time stay
bounded however many payments are stored (the scale target: 1,000,000 payments)."""

from __future__ import annotations

import asyncio
import pathlib
import sqlite3

from paygate.gateway.store import CLAIM_SQL, SqliteGatewayStore


def plan(path: pathlib.Path, sql: str, params: tuple[object, ...]) -> list[str]:
    with sqlite3.connect(path) as conn:
        return [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params)]


def test_recovery_claims_through_the_unfinished_index_not_a_scan(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "gateway.db"

    async def create() -> None:
        store = SqliteGatewayStore(path)
        await store.open()
        await store.close()

    asyncio.run(create())
    steps = plan(path, CLAIM_SQL, ("g", 1.0, 0.0, "g", 100))
    assert any("USING INDEX payments_unfinished" in step for step in steps), steps
    # The outer UPDATE finds its rows by primary key; no step reads the whole table.
    assert not [s for s in steps if s.startswith("SCAN payments") and "INDEX" not in s], steps
