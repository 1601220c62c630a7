"""SQLite databases on disk, used from asyncio through one dedicated thread.

Every process owns one database file. All statements run on a single worker thread, so
transactions are serialized (SQLite has one writer anyway) and the event loop never
blocks on disk. The file is in WAL mode with synchronous=FULL: a transaction that has
returned is on disk and survives kill -9 and power loss.

Group commit: transactions that arrive while the thread is busy wait in a queue, and the
thread then runs up to MAX_GROUP_TRANSACTIONS of them in one SQLite transaction, each in a
savepoint of its own, and commits them with one fsync. A transaction whose function
raises is rolled back to its savepoint and its caller gets the exception; the others are
unaffected, exactly as if they had run one after another. No caller hears of success
before the COMMIT that contains its writes has returned; if that COMMIT fails, every
transaction of the group fails. Under light load a group is one transaction, so nothing
waits longer than before; under load one fsync serves many callers. The queue holds the
transactions of the waiting callers only (a server bounds its concurrent calls, and a
batch its transactions).

The thread costs the event loop one hand-off per group, not per transaction: one job on
the thread commits a group (and queues itself again, behind any reads, while transactions
wait), and one call back into the loop wakes every caller whose transactions it finished.

The schema is created by numbered migrations; `user_version` records the last one applied.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import dataclasses
import enum
import logging
import pathlib
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from paygate.common.invariants import check

T = TypeVar("T")
_log = logging.getLogger("paygate.sqlite")

BUSY_TIMEOUT_MS = 5000
# The health probe waits this long for the write lock before calling the database unusable.
PROBE_BUSY_TIMEOUT_MS = 1000
# A bound on how much one COMMIT carries, so that one group cannot hold the thread for long.
MAX_GROUP_TRANSACTIONS = 64
WAL_SWITCH_ATTEMPTS = 50
WAL_SWITCH_RETRY_S = 0.1
GROUP_MEMBER_SAVEPOINT = "paygate_group_member"


class _State(enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"  # taken into a group; its outcome is not known yet
    DONE = "done"  # its group committed or failed: value or error is final
    CANCELLED = "cancelled"  # its caller gave up before it ran: it never will


@dataclasses.dataclass(eq=False)
class _Waiter:
    """One caller of transaction() or transactions(): woken once all its items are DONE."""

    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[None]
    items: list[_Queued] = dataclasses.field(default_factory=list)

    def wake_if_done(self) -> None:
        """On the caller's event loop."""
        if not self.future.done() and all(item.state is _State.DONE for item in self.items):
            self.future.set_result(None)


@dataclasses.dataclass(eq=False)
class _Queued:
    """One caller's transaction, waiting for a group commit; its outcome once run."""

    fn: Callable[[sqlite3.Connection], Any]
    waiter: _Waiter
    state: _State = _State.QUEUED
    value: Any = None
    error: BaseException | None = None


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
        self._queue: collections.deque[_Queued] = collections.deque()
        self._queue_lock = threading.Lock()  # the event loop appends, the worker takes
        self._draining = False  # a _drain job is on the thread or waiting for it (under lock)

    async def open(self) -> None:
        await self._call(self._open)

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        _switch_to_wal(conn)
        conn.execute("PRAGMA synchronous = FULL")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        # Foreign keys are off while migrating, so that a step can rebuild a table others
        # refer to (SQLite's documented way to change a CHECK); each step checks them all
        # before it commits.
        conn.execute("PRAGMA foreign_keys = OFF")
        for number, sql in enumerate(self._migrations[version:], start=version + 1):
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in _statements(sql):
                    conn.execute(statement)
                broken = conn.execute("PRAGMA foreign_key_check").fetchall()
                check(not broken, f"migration {number} breaks foreign keys: {broken[:3]}")
                conn.execute(f"PRAGMA user_version = {number}")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        conn.execute("PRAGMA foreign_keys = ON")
        self._conn = conn
        self._inode = self.path.stat().st_ino

    async def close(self) -> None:
        """Commit what is queued, then close the file (a transaction queued later fails)."""
        if self._conn is not None:
            await self._call(self._commit_all_and_close)
        self._executor.shutdown(wait=True)

    def _commit_all_and_close(self) -> None:
        """On the worker: every group still queued, then the connection."""
        while group := self._take_group():
            self._commit_and_wake(group)
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    async def transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run fn(conn) atomically and durably: its writes are on disk when this returns,
        and none are if it raises (it may share its COMMIT with others: group commit)."""
        (outcome,) = await self._run_queued([fn])
        if isinstance(outcome, BaseException):
            raise outcome
        result: T = outcome
        return result

    async def transactions(
        self, fns: Sequence[Callable[[sqlite3.Connection], T]]
    ) -> list[T | Exception]:
        """Run each fn(conn) as if by transaction(), in order, committed together.

        A batch of the caller's: its transactions enter the queue at once, so they share
        COMMITs (one per MAX_GROUP_TRANSACTIONS) instead of racing the worker for a group.
        Returns each one's result or the exception it raised (its writes undone); raises
        only when the caller is cancelled, or when a COMMIT fails (then nothing of that
        group is on disk, and every transaction of it is reported failed).
        """
        outcomes: list[T | Exception] = []
        for outcome in await self._run_queued(fns):
            if isinstance(outcome, BaseException) and not isinstance(outcome, Exception):
                raise outcome
            outcomes.append(outcome)
        return outcomes

    async def _run_queued(self, fns: Sequence[Callable[[sqlite3.Connection], Any]]) -> list[Any]:
        """Queue `fns` and wait until each one's group has committed or failed.

        Returns each one's value or the exception it raised. A caller cancelled while its
        transactions wait makes them never run; once taken into a group they run and
        commit with it regardless (the caller just does not hear of it).
        """
        if not fns:
            return []
        loop = asyncio.get_running_loop()
        waiter = _Waiter(loop=loop, future=loop.create_future())
        items = waiter.items = [_Queued(fn, waiter) for fn in fns]
        with self._queue_lock:
            self._queue.extend(items)
            start = not self._draining
            self._draining = True
        try:
            if start:
                self._submit_drain()
            await waiter.future
        except BaseException:
            with self._queue_lock:
                for item in items:
                    if item.state is _State.QUEUED:
                        item.state = _State.CANCELLED
            raise
        finally:
            # Items and waiter refer to each other: without this, what a transaction returned
            # or raised (its traceback, its cursors) would live until the cycle collector ran.
            waiter.items = []
        return [item.error if item.error is not None else item.value for item in items]

    def _submit_drain(self) -> None:
        """Put one _drain job on the thread; the caller has set _draining."""
        try:
            self._executor.submit(self._drain)
        except RuntimeError as exc:  # the executor is shut down: nothing will ever run
            self._fail_queued(exc)

    def _drain(self) -> None:
        """On the worker: commit one group of the queue, wake its callers, and queue
        itself again while transactions wait (behind any read submitted meanwhile)."""
        try:
            group = self._take_group()
            if group:
                self._commit_and_wake(group)
            with self._queue_lock:
                if not self._queue:
                    self._draining = False
                    return
        except BaseException as exc:
            # A bug here must not leave callers waiting for a job that will never come.
            _log.exception("database worker failed", extra={"fields": {"path": str(self.path)}})
            self._fail_queued(exc)
            raise
        self._submit_drain()

    def _take_group(self) -> list[_Queued]:
        group: list[_Queued] = []
        with self._queue_lock:
            while self._queue and len(group) < MAX_GROUP_TRANSACTIONS:
                item = self._queue.popleft()
                if item.state is _State.QUEUED:
                    item.state = _State.RUNNING
                    group.append(item)
        return group

    def _commit_and_wake(self, group: list[_Queued]) -> None:
        try:
            self._commit_group(group)  # sets every item DONE, whatever happens
        finally:
            self._wake({item.waiter for item in group})

    def _fail_queued(self, error: BaseException) -> None:
        """Fail every queued transaction (they will never run) and wake their callers."""
        with self._queue_lock:
            failed = [item for item in self._queue if item.state is _State.QUEUED]
            self._queue.clear()
            self._draining = False
        for item in failed:
            item.error = error
            item.state = _State.DONE
        self._wake({item.waiter for item in failed})

    @staticmethod
    def _wake(waiters: set[_Waiter]) -> None:
        """One call into each event loop for all the waiters the worker just finished."""
        by_loop: dict[asyncio.AbstractEventLoop, list[_Waiter]] = {}
        for waiter in waiters:
            by_loop.setdefault(waiter.loop, []).append(waiter)
        for loop, group in by_loop.items():
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits
                loop.call_soon_threadsafe(_wake_all, group)

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

    def _commit_group(self, group: list[_Queued]) -> None:
        conn = self._conn
        try:
            if conn is None:
                raise RuntimeError(f"database {self.path} is not open")
            conn.execute("BEGIN IMMEDIATE")
            for item in group:
                _run_in_savepoint(conn, item)
            conn.execute("COMMIT")
        except BaseException as exc:
            # Nothing of the group is on disk: every caller that thought it succeeded fails.
            for item in group:
                if item.error is None:
                    item.error = exc
            with contextlib.suppress(sqlite3.Error):  # closed meanwhile: nothing to undo
                if conn is not None and conn.in_transaction:
                    conn.execute("ROLLBACK")
        finally:
            # Only now is each outcome final (after the COMMIT, or after the failure).
            for item in group:
                item.state = _State.DONE

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


def _wake_all(waiters: list[_Waiter]) -> None:
    for waiter in waiters:
        waiter.wake_if_done()


def _run_in_savepoint(conn: sqlite3.Connection, item: _Queued) -> None:
    """Run one transaction of a group; if it raises, undo its writes and keep the error."""
    conn.execute(f"SAVEPOINT {GROUP_MEMBER_SAVEPOINT}")
    try:
        item.value = item.fn(conn)
    except Exception as exc:
        item.error = exc
        if not conn.in_transaction:
            # SQLite rolled back the whole transaction (disk full, I/O error): the group fails.
            raise
        conn.execute(f"ROLLBACK TO {GROUP_MEMBER_SAVEPOINT}")
    conn.execute(f"RELEASE {GROUP_MEMBER_SAVEPOINT}")


def _switch_to_wal(conn: sqlite3.Connection) -> None:
    """Set WAL mode, retrying briefly: SQLite answers "database is locked" at once, without
    waiting for busy_timeout, when another process writes to the file at that moment
    (several client processes opening one outbox file do)."""
    for attempt in range(WAL_SWITCH_ATTEMPTS):
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == WAL_SWITCH_ATTEMPTS - 1:
                raise
            time.sleep(WAL_SWITCH_RETRY_S)


def _statements(sql: str) -> list[str]:
    return [s.strip() for s in sql.split(";") if s.strip()]
