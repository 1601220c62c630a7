"""Group commit in paygate.common.sqlite.Database: concurrent transactions share a COMMIT,
and each one still succeeds or fails on its own, exactly as if they ran one by one."""

from __future__ import annotations

import asyncio
import pathlib
import sqlite3
import time
from collections.abc import Callable

import pytest
from paygate.common.sqlite import MAX_GROUP_TRANSACTIONS, Database

MIGRATIONS = ["CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER NOT NULL)"]


def committed_rows(path: pathlib.Path) -> dict[str, int]:
    """What another connection sees: only what is committed."""
    with sqlite3.connect(path) as conn:
        return dict(conn.execute("SELECT k, v FROM t").fetchall())


def insert(key: str, value: int = 1) -> Callable[[sqlite3.Connection], str]:
    def fn(conn: sqlite3.Connection) -> str:
        conn.execute("INSERT INTO t (k, v) VALUES (?, ?)", (key, value))
        return key

    return fn


def slow(conn: sqlite3.Connection) -> None:
    """Holds the database thread so that the transactions behind it queue up."""
    time.sleep(0.2)
    conn.execute("INSERT INTO t (k, v) VALUES ('slow', 0)")


async def open_db(tmp_path: pathlib.Path) -> tuple[Database, list[str]]:
    db = Database(tmp_path / "t.db", MIGRATIONS)
    await db.open()
    commits: list[str] = []
    conn = db._conn
    assert conn is not None
    conn.set_trace_callback(lambda sql: commits.append(sql) if sql == "COMMIT" else None)
    return db, commits


def test_queued_transactions_share_one_commit_and_all_land(tmp_path: pathlib.Path) -> None:
    async def scenario() -> None:
        db, commits = await open_db(tmp_path)
        first = asyncio.create_task(db.transaction(slow))
        await asyncio.sleep(0.05)
        keys = await asyncio.gather(*(db.transaction(insert(f"k{i}")) for i in range(20)))
        await first
        assert keys == [f"k{i}" for i in range(20)]
        assert len(commits) == 2  # the slow one, then the twenty together
        assert len(committed_rows(tmp_path / "t.db")) == 21
        await db.close()

    asyncio.run(scenario())


def test_a_failing_transaction_in_a_group_undoes_only_its_own_writes(
    tmp_path: pathlib.Path,
) -> None:
    def half_then_fail(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO t (k, v) VALUES ('half', 1)")
        raise ValueError("refused after writing")

    async def scenario() -> None:
        db, commits = await open_db(tmp_path)
        first = asyncio.create_task(db.transaction(slow))
        await asyncio.sleep(0.05)
        results = await asyncio.gather(
            db.transaction(insert("a")),
            db.transaction(half_then_fail),
            db.transaction(insert("a")),  # a duplicate key: fails on its own
            db.transaction(insert("b")),
            return_exceptions=True,
        )
        await first
        assert results[0] == "a" and results[3] == "b"
        assert isinstance(results[1], ValueError)
        assert isinstance(results[2], sqlite3.IntegrityError)
        assert committed_rows(tmp_path / "t.db") == {"slow": 0, "a": 1, "b": 1}
        assert len(commits) == 2
        await db.close()

    asyncio.run(scenario())


def test_a_group_is_bounded(tmp_path: pathlib.Path) -> None:
    async def scenario() -> None:
        db, commits = await open_db(tmp_path)
        first = asyncio.create_task(db.transaction(slow))
        await asyncio.sleep(0.05)
        count = MAX_GROUP_TRANSACTIONS + 5
        await asyncio.gather(*(db.transaction(insert(f"k{i}")) for i in range(count)))
        await first
        assert len(commits) == 3  # the slow one, a full group, the rest
        await db.close()

    asyncio.run(scenario())


def test_a_transaction_whose_caller_gave_up_before_it_ran_never_runs(
    tmp_path: pathlib.Path,
) -> None:
    async def scenario() -> None:
        db, _ = await open_db(tmp_path)
        first = asyncio.create_task(db.transaction(slow))
        await asyncio.sleep(0.05)
        abandoned = asyncio.create_task(db.transaction(insert("abandoned")))
        await asyncio.sleep(0.01)
        abandoned.cancel()
        with pytest.raises(asyncio.CancelledError):
            await abandoned
        await first
        await db.transaction(insert("later"))
        assert committed_rows(tmp_path / "t.db") == {"slow": 0, "later": 1}
        await db.close()

    asyncio.run(scenario())


def test_a_lone_transaction_commits_at_once(tmp_path: pathlib.Path) -> None:
    async def scenario() -> None:
        db, commits = await open_db(tmp_path)
        await db.transaction(insert("only"))
        assert committed_rows(tmp_path / "t.db") == {"only": 1}
        assert commits == ["COMMIT"]
        await db.close()

    asyncio.run(scenario())


def test_a_batch_of_transactions_shares_commits_and_reports_each_outcome(
    tmp_path: pathlib.Path,
) -> None:
    async def scenario() -> None:
        db, commits = await open_db(tmp_path)
        fns = [insert(f"k{i}") for i in range(MAX_GROUP_TRANSACTIONS + 6)]
        fns[3] = insert("k0")  # a duplicate key: this one fails, alone
        outcomes = await db.transactions(fns)
        assert isinstance(outcomes[3], sqlite3.IntegrityError)
        assert [o for i, o in enumerate(outcomes) if i != 3] == [
            f"k{i}" for i in range(len(fns)) if i != 3
        ]
        # One COMMIT per group of MAX_GROUP_TRANSACTIONS, not one per transaction.
        assert len(commits) == 2
        assert len(committed_rows(tmp_path / "t.db")) == len(fns) - 1
        await db.close()

    asyncio.run(scenario())


def test_batches_larger_than_a_group_and_single_callers_all_get_their_own_final_outcome(
    tmp_path: pathlib.Path,
) -> None:
    """Two batches of more than MAX_GROUP_TRANSACTIONS and single transactions at once:
    nobody hears of an outcome before the COMMIT that contains it, and everyone hears."""

    def slow_insert(key: str) -> Callable[[sqlite3.Connection], str]:
        def fn(conn: sqlite3.Connection) -> str:
            time.sleep(0.0005)  # long enough for the callers to look while a group runs
            conn.execute("INSERT INTO t (k, v) VALUES (?, 1)", (key,))
            return key

        return fn

    async def scenario() -> None:
        db, _ = await open_db(tmp_path)
        size = MAX_GROUP_TRANSACTIONS + 36
        a = db.transactions([slow_insert(f"a{i}") for i in range(size)])
        b = db.transactions([slow_insert(f"b{i}") for i in range(size)])
        singles = [db.transaction(slow_insert(f"s{i}")) for i in range(10)]
        got_a, got_b, *got_singles = await asyncio.gather(a, b, *singles)
        assert got_a == [f"a{i}" for i in range(size)]
        assert got_b == [f"b{i}" for i in range(size)]
        assert got_singles == [f"s{i}" for i in range(10)]
        # Everyone was answered after the COMMIT holding their write: it is all on disk.
        assert len(committed_rows(tmp_path / "t.db")) == 2 * size + 10
        await db.close()

    for _ in range(3):
        asyncio.run(scenario())
        (tmp_path / "t.db").unlink()
        for extra in ("t.db-wal", "t.db-shm"):
            (tmp_path / extra).unlink(missing_ok=True)


def test_a_group_costs_one_job_on_the_database_thread(tmp_path: pathlib.Path) -> None:
    """The thread hand-off is paid per group, not per transaction: twenty transactions
    queued behind a slow one are committed by one job, not twenty."""

    async def scenario() -> None:
        db, commits = await open_db(tmp_path)
        jobs: list[str] = []
        submit = db._executor.submit

        def counting_submit(fn: Callable[..., object], /, *args: object) -> object:
            jobs.append(getattr(fn, "__name__", "?"))
            return submit(fn, *args)

        db._executor.submit = counting_submit  # type: ignore[method-assign]
        first = asyncio.create_task(db.transaction(slow))
        await asyncio.sleep(0.05)
        await asyncio.gather(*(db.transaction(insert(f"k{i}")) for i in range(20)))
        await first
        assert len(commits) == 2
        # One job for the slow transaction, one for the group of twenty (it found the queue
        # non-empty after the first, so it queued itself once more).
        assert jobs.count("_drain") == 2
        await db.close()

    asyncio.run(scenario())


def test_reads_are_not_starved_by_a_steady_stream_of_transactions(
    tmp_path: pathlib.Path,
) -> None:
    """A group's job queues itself behind reads submitted meanwhile, so a read waits for at
    most the group running when it arrived, however many transactions keep coming."""

    async def scenario() -> None:
        db, _ = await open_db(tmp_path)
        stop = asyncio.Event()

        async def writer(n: int) -> None:
            i = 0
            while not stop.is_set():
                await db.transaction(insert(f"w{n}-{i}"))
                i += 1

        writers = [asyncio.create_task(writer(n)) for n in range(8)]
        await asyncio.sleep(0.05)
        counted = await asyncio.wait_for(
            db.read(lambda conn: conn.execute("SELECT COUNT(*) FROM t").fetchone()[0]), 2.0
        )
        stop.set()
        await asyncio.gather(*writers)
        assert counted > 0
        await db.close()

    asyncio.run(scenario())


def test_an_empty_batch_returns_at_once(tmp_path: pathlib.Path) -> None:
    async def scenario() -> None:
        db, commits = await open_db(tmp_path)
        assert await asyncio.wait_for(db.transactions([]), 2.0) == []
        assert commits == []
        await db.close()

    asyncio.run(scenario())


def test_close_commits_what_was_queued_before_it(tmp_path: pathlib.Path) -> None:
    async def scenario() -> None:
        db, _ = await open_db(tmp_path)
        first = asyncio.create_task(db.transaction(slow))
        await asyncio.sleep(0.05)
        queued = [asyncio.create_task(db.transaction(insert(f"k{i}"))) for i in range(5)]
        await asyncio.sleep(0)  # they are in the queue, behind the slow one
        await db.close()
        await first
        assert await asyncio.gather(*queued) == [f"k{i}" for i in range(5)]
        assert len(committed_rows(tmp_path / "t.db")) == 6
        with pytest.raises(RuntimeError):
            await db.transaction(insert("after-close"))

    asyncio.run(scenario())
