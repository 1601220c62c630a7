"""Which GatewayStore a gateway uses: SQLite for a path, PostgreSQL for a postgresql:// URL."""

from __future__ import annotations

from paygate.common.config import GatewayConfig
from paygate.common.database_url import PostgresUrl, default_schema
from paygate.gateway.store import GatewayStore, SqliteGatewayStore


def gateway_store(config: GatewayConfig) -> GatewayStore:
    """The store of config.database; every gateway sharing one URL shares one schema."""
    if isinstance(config.database, PostgresUrl):
        # Imported here: a process on SQLite (the default) never loads psycopg.
        from paygate.gateway.store_postgres import PostgresGatewayStore

        schema = config.database.schema_or(default_schema("gateway"))
        return PostgresGatewayStore(config.database, schema=schema)
    return SqliteGatewayStore(config.database)


async def open_gateway_store(config: GatewayConfig) -> GatewayStore:
    """The store of config.database, opened (migrated and connected)."""
    store = gateway_store(config)
    await store.open()
    return store
