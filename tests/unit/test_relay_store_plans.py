"""Query plans of the relay's statements on SQLite: what runs at every pass reads the
partial index of unpublished events, never the whole events table, however many events the
gateway keeps."""

from __future__ import annotations

import sqlite3

import pytest
from paygate.gateway.schema import SQLITE_MIGRATIONS
from paygate.relay.store import SQLITE_SQL


@pytest.mark.parametrize("name", ["unpublished", "oldest_unpublished", "count_unpublished"])
def test_what_waits_is_read_through_the_unpublished_index(name: str) -> None:
    conn = sqlite3.connect(":memory:")
    for step in SQLITE_MIGRATIONS:
        conn.executescript(step)
    statement = getattr(SQLITE_SQL, name)
    params = tuple(1 for _ in statement.names)
    steps = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {statement.text}", params)]
    assert any("USING INDEX events_unpublished" in step for step in steps), steps
    assert not [s for s in steps if s.startswith("SCAN e") and "INDEX" not in s], steps
