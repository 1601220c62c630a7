"""What a gateway's database holds, as bytes to search for a secret in clear: the SQLite
file and its WAL as they are on disk, or every row of every table of the PostgreSQL schema
as text (a bytea shown as hex: secrets_in() looks for that form too)."""

from __future__ import annotations

import pathlib

import psycopg
from paygate.common.database_url import PostgresUrl
from psycopg import sql

CONNECT_TIMEOUT_S = 5


def gateway_database_text(database: pathlib.Path | PostgresUrl) -> bytes:
    if isinstance(database, PostgresUrl):
        return _postgres_rows(database)
    files = [pathlib.Path(f"{database}{suffix}") for suffix in ("", "-wal")]
    return b"".join(f.read_bytes() for f in files if f.exists())


def _postgres_rows(url: PostgresUrl) -> bytes:
    with psycopg.connect(url.url, connect_timeout=CONNECT_TIMEOUT_S) as conn:
        tables = [
            str(row[0])
            for row in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
            ).fetchall()
        ]
        assert "users" in tables, f"no users table in the schema of {url}: {tables}"
        text = []
        for table in tables:
            query = sql.SQL("SELECT t::text FROM {} t").format(sql.Identifier(table))
            text += [str(row[0]) for row in conn.execute(query).fetchall()]
    return "\n".join(text).encode()


def secrets_in(text: bytes, secrets: list[str]) -> list[str]:
    """The first characters of each secret that `text` holds: as typed, in lower case,
    without dashes, or as the hex PostgreSQL shows a bytea in (a secret kept unsealed in a
    bytea column)."""
    found = []
    for secret in secrets:
        forms = {secret, secret.lower(), secret.replace("-", "")}
        forms |= {form.encode().hex() for form in forms}
        if any(form.encode() in text for form in forms):
            found.append(secret[:4])
    return found
