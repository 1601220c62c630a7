"""PostgreSQL for the gateway and the banks: bounded pools, migrations, retries, a health probe.

Each process keeps its tables in its own schema (paygate.common.database_url), so one server
and one database can hold the gateway and every bank. Every pooled connection runs in
autocommit mode with its search_path, statement_timeout and lock_timeout set once when it
connects; a transaction is an explicit BEGIN ... COMMIT around one function.

Migrations are numbered like SQLite's: step N is the N-th string of the store's list, and
`schema_migrations` records which steps ran. All pending steps run in one transaction under
an advisory lock, so two processes starting together on one schema migrate it once.

Errors are translated here, in one place: a serialization failure or a deadlock is retried
a bounded number of times (the whole function again, in a new transaction); any other
operational error (server down, pool exhausted, timeout) becomes `Unavailable` with reason
DATABASE_UNAVAILABLE, so callers get UNAVAILABLE and retry with their idempotency key.
A connection error is never retried here: the COMMIT may have landed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import random
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any, NoReturn, TypeVar

import psycopg
import psycopg_pool

from paygate.common.database_url import PostgresUrl, check_schema
from paygate.errors import DATABASE_UNAVAILABLE, Unavailable

T = TypeVar("T")

DEFAULT_POOL_MIN_SIZE = 1
DEFAULT_POOL_MAX_SIZE = 8
CONNECT_TIMEOUT_S = 5
POOL_OPEN_TIMEOUT_S = 10.0
POOL_WAIT_TIMEOUT_S = 5.0  # how long a transaction waits for a free connection
STATEMENT_TIMEOUT_MS = 5000
# A row lock is held for one short transaction; waiting longer means something is stuck.
LOCK_TIMEOUT_MS = 3000
PROBE_TIMEOUT_MS = 1000
MAX_ATTEMPTS = 5
RETRY_BACKOFF_S = 0.005  # doubled per attempt, with jitter
SERIALIZATION_FAILURE = "40001"
DEADLOCK_DETECTED = "40P01"
UNIQUE_VIOLATION = "23505"
RETRYABLE = frozenset({SERIALIZATION_FAILURE, DEADLOCK_DETECTED})


def session_settings(schema: str) -> list[str]:
    """What every connection of a process sets once: its schema and its time limits."""
    check_schema(schema)
    return [
        f"SET search_path TO {schema}",
        f"SET statement_timeout = {STATEMENT_TIMEOUT_MS}",
        f"SET lock_timeout = {LOCK_TIMEOUT_MS}",
    ]


def connect_kwargs() -> dict[str, Any]:
    return {"autocommit": True, "connect_timeout": CONNECT_TIMEOUT_S}


def migrate(url: PostgresUrl, schema: str, migrations: Sequence[str]) -> None:
    """Create the schema and run the pending numbered migrations, all in one transaction."""
    check_schema(schema)
    with psycopg.connect(url.url, **connect_kwargs()) as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"paygate:{schema}",))
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        conn.execute(f"SET LOCAL search_path TO {schema}")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version INTEGER PRIMARY KEY, applied_at_s DOUBLE PRECISION NOT NULL)"
        )
        row = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()
        applied = int(row[0]) if row else 0
        if applied > len(migrations):
            raise RuntimeError(
                f"schema {schema} is at migration {applied}, newer than this code "
                f"({len(migrations)})"
            )
        for number, sql in enumerate(migrations[applied:], start=applied + 1):
            conn.execute(sql)  # several statements: allowed without parameters
            conn.execute(
                "INSERT INTO schema_migrations (version, applied_at_s) VALUES (%s, %s)",
                (number, time.time()),
            )


def drop_schema(url: PostgresUrl, schema: str) -> None:
    """Remove a schema and everything in it (tests use this to clean up after themselves)."""
    check_schema(schema)
    with psycopg.connect(url.url, **connect_kwargs()) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


# The health probe: a write that is rolled back. It fails on a read-only server, a standby,
# a schema that was dropped or reset, and when the row lock or the server is stuck.
_PROBE = (
    "UPDATE schema_migrations SET applied_at_s = applied_at_s"
    " WHERE version = (SELECT MAX(version) FROM schema_migrations) RETURNING version"
)
_PROBE_LIMITS = [
    f"SET LOCAL statement_timeout = {PROBE_TIMEOUT_MS}",
    f"SET LOCAL lock_timeout = {PROBE_TIMEOUT_MS}",
]
_READ_SNAPSHOT = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"


def _backoff_s(attempt: int) -> float:
    return float(RETRY_BACKOFF_S * 2**attempt * (0.5 + random.random()))


def _retryable(exc: psycopg.Error, retry_on: Collection[str]) -> bool:
    return exc.sqlstate in retry_on


def _raise_translated(exc: psycopg.Error) -> NoReturn:
    """Unavailable for what a retry may fix (server down, timeouts); anything else as is."""
    if isinstance(exc, psycopg.OperationalError):
        raise Unavailable(
            "the database is unavailable; retry", reason=DATABASE_UNAVAILABLE
        ) from exc
    raise exc


class SyncDatabase:
    """A schema reached through a bounded pool of synchronous connections and worker threads.

    `transaction(fn)` runs fn(conn) in a worker thread inside BEGIN ... COMMIT (READ
    COMMITTED), so fn may be plain synchronous code (the bank's ledger rules).
    """

    def __init__(
        self,
        url: PostgresUrl,
        schema: str,
        migrations: Sequence[str],
        *,
        retry_on: Collection[str] = RETRYABLE,
        max_size: int = DEFAULT_POOL_MAX_SIZE,
    ) -> None:
        self.url = url
        self.schema = check_schema(schema)
        self._migrations = migrations
        self._retry_on = retry_on
        settings = session_settings(schema)

        def configure(conn: psycopg.Connection) -> None:
            for statement in settings:
                conn.execute(statement)

        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=max_size, thread_name_prefix=f"pg-{schema}"
        )
        self._pool = psycopg_pool.ConnectionPool(
            url.url,
            min_size=DEFAULT_POOL_MIN_SIZE,
            max_size=max_size,
            timeout=POOL_WAIT_TIMEOUT_S,
            kwargs=connect_kwargs(),
            configure=configure,
            name=f"paygate-{schema}",
            open=False,
        )

    async def open(self) -> None:
        await self._call(self._open)

    def _open(self) -> None:
        migrate(self.url, self.schema, self._migrations)
        self._pool.open(wait=True, timeout=POOL_OPEN_TIMEOUT_S)

    async def close(self) -> None:
        await self._call(self._pool.close)
        self._executor.shutdown(wait=True)

    async def transaction(self, fn: Callable[[psycopg.Connection], T]) -> T:
        return await self._call(self._run, fn, None)

    async def read(self, fn: Callable[[psycopg.Connection], T]) -> T:
        """Run fn(conn) in a read-only snapshot: every statement sees the same commits."""
        return await self._call(self._run, fn, _READ_SNAPSHOT)

    def _run(self, fn: Callable[[psycopg.Connection], T], first: str | None) -> T:
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                with self._pool.connection() as conn, conn.transaction():
                    if first is not None:
                        conn.execute(first)
                    return fn(conn)
            except psycopg.Error as exc:
                if attempt < MAX_ATTEMPTS and _retryable(exc, self._retry_on):
                    time.sleep(_backoff_s(attempt))
                    continue
                _raise_translated(exc)
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def healthy(self) -> bool:
        try:
            return await self._call(self._probe)
        except Exception:
            return False

    def _probe(self) -> bool:
        wait_s = PROBE_TIMEOUT_MS / 1000
        with self._pool.connection(timeout=wait_s) as conn, conn.transaction(force_rollback=True):
            for statement in _PROBE_LIMITS:
                conn.execute(statement)
            row = conn.execute(_PROBE).fetchone()
        return row is not None and row[0] == len(self._migrations)

    async def _call(self, fn: Callable[..., T], *args: object) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)


class AsyncDatabase:
    """A schema reached through a bounded pool of asyncio connections (the gateway)."""

    def __init__(
        self,
        url: PostgresUrl,
        schema: str,
        migrations: Sequence[str],
        *,
        max_size: int = DEFAULT_POOL_MAX_SIZE,
    ) -> None:
        self.url = url
        self.schema = check_schema(schema)
        self._migrations = migrations
        settings = session_settings(schema)

        async def configure(conn: psycopg.AsyncConnection) -> None:
            for statement in settings:
                await conn.execute(statement)

        self._pool = psycopg_pool.AsyncConnectionPool(
            url.url,
            min_size=DEFAULT_POOL_MIN_SIZE,
            max_size=max_size,
            timeout=POOL_WAIT_TIMEOUT_S,
            kwargs=connect_kwargs(),
            configure=configure,
            name=f"paygate-{schema}",
            open=False,
        )

    async def open(self) -> None:
        await asyncio.to_thread(migrate, self.url, self.schema, self._migrations)
        await self._pool.open(wait=True, timeout=POOL_OPEN_TIMEOUT_S)

    async def close(self) -> None:
        await self._pool.close()

    async def transaction(self, fn: Callable[[psycopg.AsyncConnection], Awaitable[T]]) -> T:
        """Run fn(conn) inside BEGIN ... COMMIT (READ COMMITTED); roll back if it raises."""
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                async with self._pool.connection() as conn, conn.transaction():
                    return await fn(conn)
            except psycopg.Error as exc:
                if attempt < MAX_ATTEMPTS and _retryable(exc, RETRYABLE):
                    await asyncio.sleep(_backoff_s(attempt))
                    continue
                _raise_translated(exc)
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def healthy(self) -> bool:
        try:
            wait_s = PROBE_TIMEOUT_MS / 1000
            async with (
                self._pool.connection(timeout=wait_s) as conn,
                conn.transaction(force_rollback=True),
            ):
                for statement in _PROBE_LIMITS:
                    await conn.execute(statement)
                row = await (await conn.execute(_PROBE)).fetchone()
        except Exception:
            return False
        return row is not None and row[0] == len(self._migrations)
