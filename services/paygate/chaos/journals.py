"""The banks' journals, read after recovery: what each bank posted for the split payments
and their refunds.

The checker's split_partial claim (chaos/split_checks.py) needs, leg by leg, what every
bank posted for a split payment and for each refund of one, which no balance says: an
account's balance adds up all its payments. No bank RPC lists a journal, so the tool reads
the `entries` table of each bank's own database (a SQLite file opened read-only, or its
PostgreSQL schema), as an auditor would, for the run's accounts only, and keeps the entries
posted under the ids it is given: a bank's transaction is named by the gateway's id of what
it moves, a payment's (`pay_...`) or a refund's (`re_...`). The entries are only ever
appended, so a read after recovery holds everything the run posted.
"""

from __future__ import annotations

import asyncio
import collections
import pathlib
import sqlite3
from collections.abc import Collection, Sequence

from paygate.chaos.history import JournalEntry, User
from paygate.common.config import SuiteConfig
from paygate.common.database_url import DatabaseLocation, PostgresUrl, default_schema

READ_TIMEOUT_S = 10.0
ACCOUNTS_PER_QUERY = 500  # under SQLite's smallest limit on a statement's parameters
# A posted leg of a two-phase transaction (not an account's opening or a deposit).
_SELECT = (
    "SELECT account_number, amount, reference FROM entries"
    " WHERE kind IN ('debit', 'credit') AND account_number IN ({})"
)


class JournalError(Exception):
    """A bank's journal could not be read."""


async def read_journals(
    config: SuiteConfig, users: Sequence[User], references: Collection[str]
) -> list[JournalEntry]:
    """Every entry the banks posted to the users' accounts under one of `references`."""
    wanted = frozenset(references)
    accounts: dict[str, list[str]] = collections.defaultdict(list)
    for user in users:
        accounts[user.bank_id].append(user.account_number)
    found: list[JournalEntry] = []
    for bank_id, numbers in sorted(accounts.items()) if wanted else []:
        database = config.banks[bank_id].database
        found += await asyncio.to_thread(_read, bank_id, database, numbers, wanted)
    return found


def _read(
    bank_id: str, database: DatabaseLocation, accounts: list[str], wanted: frozenset[str]
) -> list[JournalEntry]:
    chunks = [
        accounts[i : i + ACCOUNTS_PER_QUERY] for i in range(0, len(accounts), ACCOUNTS_PER_QUERY)
    ]
    if isinstance(database, PostgresUrl):
        rows = _read_postgres(bank_id, database, chunks)
    else:
        rows = _read_sqlite(bank_id, database, chunks)
    return [
        JournalEntry(bank_id=bank_id, account_number=account, reference=ref, amount_minor=amount)
        for account, amount, ref in rows
        if ref in wanted
    ]


def _read_sqlite(
    bank_id: str, path: pathlib.Path, chunks: list[list[str]]
) -> list[tuple[str, int, str]]:
    # Read-only: the tool never writes to a bank's database (a missing file is an error,
    # not a new empty database).
    uri = path.resolve().as_uri() + "?mode=ro"
    rows: list[tuple[str, int, str]] = []
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=READ_TIMEOUT_S)
        try:
            for chunk in chunks:
                rows += conn.execute(_SELECT.format(", ".join("?" * len(chunk))), chunk)
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise JournalError(f"{bank_id}'s journal in {path} could not be read: {exc}") from exc
    return rows


def _read_postgres(
    bank_id: str, url: PostgresUrl, chunks: list[list[str]]
) -> list[tuple[str, int, str]]:
    # Imported here: a run against banks on SQLite never loads psycopg.
    import psycopg

    from paygate.common.postgres import connect_kwargs, session_settings

    rows: list[tuple[str, int, str]] = []
    try:
        with psycopg.connect(url.url, **connect_kwargs()) as conn:
            for statement in session_settings(url.schema_or(default_schema(bank_id))):
                conn.execute(statement)
            for chunk in chunks:
                rows += conn.execute(_SELECT.format(", ".join(["%s"] * len(chunk))), chunk)
    except psycopg.Error as exc:
        # The URL's password stays out of the message: str(url) is redacted.
        raise JournalError(f"{bank_id}'s journal at {url} could not be read: {exc}") from exc
    return rows
