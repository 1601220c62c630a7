"""The outbox file's schema, and the upgrade that brings a file of an older client to it.

A new file gets the current table from MIGRATIONS (user_version 1). A file written by a
client before the `needs_review` state has the table without it and without the
`maybe_delivered_*` columns; `upgrade` rebuilds that table once (SQLite cannot change a
CHECK constraint in place). A file written before authorizations lacks the `capture_later`
column, which `upgrade` adds (0: every payment of such a file is an automatic one). The
upgrade looks at the table itself, inside the write transaction, rather than at
user_version: several processes may open an old file at once, and whichever comes second
must find the work done, not do it again.
"""

from __future__ import annotations

import sqlite3

# IF NOT EXISTS: several processes may open a new file at once and all run this.
_TABLE = """
    CREATE TABLE IF NOT EXISTS {name} (
        entry_id INTEGER PRIMARY KEY AUTOINCREMENT,
        idempotency_key TEXT NOT NULL,
        gateway TEXT NOT NULL,
        payer_username TEXT NOT NULL,
        payee_username TEXT NOT NULL,
        amount_minor INTEGER NOT NULL CHECK (amount_minor > 0),
        currency TEXT NOT NULL,
        description TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN
            ('queued', 'delivering', 'succeeded', 'failed', 'forgotten', 'needs_review')),
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT NOT NULL DEFAULT '',
        lease_owner TEXT NOT NULL DEFAULT '',
        lease_host TEXT NOT NULL DEFAULT '',
        lease_pid INTEGER NOT NULL DEFAULT 0,
        lease_until_s REAL NOT NULL DEFAULT 0,
        payment_id TEXT NOT NULL DEFAULT '',
        payment_status TEXT NOT NULL DEFAULT '',
        failure_reason TEXT NOT NULL DEFAULT '',
        created_at_s REAL NOT NULL,
        updated_at_s REAL NOT NULL,
        -- The first attempt that may have reached the gateway: when (0: none) and which.
        maybe_delivered_at_s REAL NOT NULL DEFAULT 0,
        maybe_delivered_attempt INTEGER NOT NULL DEFAULT 0,
        -- 1: an authorization, sent with manual capture (the payee captures it later).
        capture_later INTEGER NOT NULL DEFAULT 0 CHECK (capture_later IN (0, 1)),
        -- A key belongs to a user at a gateway, as it does at the gateway.
        UNIQUE (gateway, payer_username, idempotency_key)
    )
"""
_INDEX = """
    CREATE INDEX IF NOT EXISTS outbox_unsettled ON outbox (gateway, payer_username, entry_id)
        WHERE state IN ('queued', 'delivering')
"""

MIGRATIONS = [_TABLE.format(name="outbox") + ";" + _INDEX]

# The columns of the first schema, which the upgrade copies as they are.
_V1_COLUMNS = (
    "entry_id, idempotency_key, gateway, payer_username, payee_username, amount_minor,"
    " currency, description, state, attempts, last_error, lease_owner, lease_host, lease_pid,"
    " lease_until_s, payment_id, payment_status, failure_reason, created_at_s, updated_at_s"
)


def upgrade(conn: sqlite3.Connection) -> bool:
    """Bring an older outbox table to the current schema, in the caller's write transaction;
    False when it already is (the usual case, and the second process's)."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(outbox)")}
    if "maybe_delivered_at_s" not in columns:
        _rebuild_first_schema(conn)  # the new table has every column: nothing more to do
        return True
    if "capture_later" not in columns:
        conn.execute(
            "ALTER TABLE outbox ADD COLUMN capture_later INTEGER NOT NULL DEFAULT 0"
            " CHECK (capture_later IN (0, 1))"
        )
        return True
    return False


def _rebuild_first_schema(conn: sqlite3.Connection) -> None:
    conn.execute("DROP TABLE IF EXISTS outbox_upgrade")
    conn.execute(_TABLE.format(name="outbox_upgrade"))
    # Whether the attempts of an older row reached the gateway was not recorded. Assume one
    # did, as early as it could have (when the row was written): such a row is held for
    # review rather than sent again once the gateway may have forgotten its key.
    conn.execute(
        f"INSERT INTO outbox_upgrade ({_V1_COLUMNS}, maybe_delivered_at_s,"
        f" maybe_delivered_attempt) SELECT {_V1_COLUMNS},"
        " CASE WHEN attempts > 0 THEN created_at_s ELSE 0 END,"
        " CASE WHEN attempts > 0 THEN 1 ELSE 0 END FROM outbox"
    )
    # Entry ids are never reused (AUTOINCREMENT), not even those of rows already deleted.
    sequence = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
    conn.execute("DROP TABLE outbox")
    conn.execute("ALTER TABLE outbox_upgrade RENAME TO outbox")
    if sequence is not None:
        updated = conn.execute(
            "UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = 'outbox'", sequence
        )
        if updated.rowcount == 0:  # the old table held no row: nothing was copied
            conn.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('outbox', ?)", sequence)
    conn.execute(_INDEX)
