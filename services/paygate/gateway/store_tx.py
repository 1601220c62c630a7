"""A transaction of the gateway's store, as the store's bodies see it (store_sql.py).

A body is a coroutine over a `Tx`: every statement it awaits runs in one database
transaction, which SqliteGatewayStore and PostgresGatewayStore run each their own way.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterable
from typing import Any, Protocol, TypeVar

from paygate.common.sql import NO_VALUES, Row, Statement, Values

T = TypeVar("T")


class Tx(Protocol):
    """One database transaction, as SqlGatewayStore's bodies run statements in it."""

    async def run(self, statement: Statement, values: Values = NO_VALUES) -> int:
        """Execute the statement; how many rows it changed."""
        ...

    async def one(self, statement: Statement, values: Values = NO_VALUES) -> Row | None: ...
    async def all(self, statement: Statement, values: Values = NO_VALUES) -> list[Row]: ...
    async def many(self, statement: Statement, rows: Iterable[Values]) -> None: ...
    async def insert(self, statement: Statement, values: Values) -> int:
        """Insert one row (with Dialect.returning); its generated id."""
        ...


Body = Callable[[Tx], Coroutine[Any, Any, T]]
