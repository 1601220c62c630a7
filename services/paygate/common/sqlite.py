"""SQLite databases on disk, used from asyncio through one dedicated thread.

Every process owns one database file. All statements run on a single worker thread, so
transactions are serialized (SQLite has one writer anyway) and the event loop never
blocks on disk. The file is in WAL mode with synchronous=FULL: a transaction that has
returned is on disk and survives kill -9 and power loss.

The schema is created by numbered migrations; `user_version` records the last one applied.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import pathlib
import sqlite3
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")

BUSY_TIMEOUT_MS = 5000
# The health probe waits this long for the write lock before calling the database unusable.
PROBE_BUSY_TIMEOUT_MS = 1000


class Database:
    """One SQLite file, a worker thread, and `transaction(fn)` to run fn(conn) atomically."""

    def __init__(self, path: pathlib.Path, migrations: Sequence[str]) -> None:
        self.path = path
        self._migrations = migrations
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"sqlite-{path.stem}"
        )
        self._conn: sqlite3.Connection | None = None
        self._inode: int | None = None

    async def open(self) -> None:
        await self._call(self._open)

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        for number, sql in enumerate(self._migrations[version:], start=version + 1):
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in _statements(sql):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {number}")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        self._conn = conn
        self._inode = self.path.stat().st_ino

    async def close(self) -> None:
        if self._conn is not None:
            await self._call(self._conn.close)
            self._conn = None
        self._executor.shutdown(wait=True)

    async def transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run fn(conn) inside BEGIN IMMEDIATE ... COMMIT; roll back if it raises."""
        return await self._call(self._in_transaction, fn)

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run fn(conn) for reading, in a deferred transaction (a consistent snapshot)."""
        return await self._call(self._in_transaction, fn, "BEGIN DEFERRED")

    def _in_transaction(
        self, fn: Callable[[sqlite3.Connection], T], begin: str = "BEGIN IMMEDIATE"
    ) -> T:
        conn = self._conn
        if conn is None:
            raise RuntimeError(f"database {self.path} is not open")
        conn.execute(begin)
        try:
            result = fn(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    async def healthy(self) -> bool:
        """Whether the database can take a write now, in the file this process opened.

        A file that was removed or replaced under a running process would swallow every
        write until the restart, so that counts as unusable too.
        """
        try:
            if self.path.stat().st_ino != self._inode:
                return False
            await self._call(self._probe_write)
        except Exception:
            return False
        return True

    def _probe_write(self) -> None:
        conn = self._conn
        if conn is None:
            raise RuntimeError(f"database {self.path} is not open")
        conn.execute(f"PRAGMA busy_timeout = {PROBE_BUSY_TIMEOUT_MS}")
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")
        finally:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")

    async def _call(self, fn: Callable[..., T], *args: object) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)


def _statements(sql: str) -> list[str]:
    return [s.strip() for s in sql.split(";") if s.strip()]
