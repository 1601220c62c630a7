"""The relay's store on PostgreSQL: the gateway's schema, over a small asyncio pool."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

from paygate.common.database_url import PostgresUrl
from paygate.common.postgres import AsyncDatabase
from paygate.common.sql import POSTGRES
from paygate.gateway.schema import POSTGRES_MIGRATIONS
from paygate.gateway.store_postgres import PostgresTx
from paygate.gateway.store_tx import Body
from paygate.relay.store import RelaySql, RelayStore

T = TypeVar("T")

SQL = RelaySql(POSTGRES)
# One connection publishes; a second serves the lag gauge meanwhile.
POOL_MAX_SIZE = 2


class PostgresRelayStore(RelayStore):
    def __init__(self, url: PostgresUrl, *, schema: str) -> None:
        self._postgres = AsyncDatabase(url, schema, POSTGRES_MIGRATIONS, max_size=POOL_MAX_SIZE)
        super().__init__(self._postgres, SQL)

    def _write(self, body: Body[T]) -> Awaitable[T]:
        return self._postgres.transaction(lambda conn: body(PostgresTx(conn)))
