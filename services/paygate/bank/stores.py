"""Which LedgerStore a bank uses: SQLite for a path, PostgreSQL for a postgresql:// URL."""

from __future__ import annotations

from paygate.bank.store import LedgerStore, SqliteLedgerStore
from paygate.common.config import BankConfig
from paygate.common.database_url import PostgresUrl, default_schema


def ledger_store(config: BankConfig) -> LedgerStore:
    """The store of config.database; banks sharing one URL get one schema each (bank_a, ...)."""
    if isinstance(config.database, PostgresUrl):
        # Imported here: a process on SQLite (the default) never loads psycopg.
        from paygate.bank.store_postgres import PostgresLedgerStore

        schema = config.database.schema_or(default_schema(config.bank_id))
        return PostgresLedgerStore(config.database, schema=schema)
    return SqliteLedgerStore(config.database)


async def open_ledger_store(config: BankConfig) -> LedgerStore:
    """The store of config.database, opened (migrated and connected)."""
    store = ledger_store(config)
    await store.open()
    return store
