"""The outbox's SQLite file: rows written before sending, claimed in order under a lease,
settled once, shared safely by several processes; held for review past the key window; and
files of older clients upgraded in place."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import pathlib
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest
from paygate.client import outbox_store
from paygate.client.outbox_models import (
    EntryState,
    PaymentOrder,
    Settlement,
    default_outbox_path,
)
from paygate.client.outbox_store import Blocked, Lease, OutboxStore, this_process_lease
from paygate.errors import FailedPrecondition, ResourceExhausted

T = TypeVar("T")
GATEWAY = "127.0.0.1:50051"
REPO = pathlib.Path(__file__).resolve().parents[2]


def order(key: str, amount_minor: int = 100, payer: str = "alice") -> PaymentOrder:
    return PaymentOrder(
        idempotency_key=key,
        gateway=GATEWAY,
        payer_username=payer,
        payee_username="bob",
        amount_minor=amount_minor,
        currency="USD",
        description="",
    )


def run_with(
    path: pathlib.Path,
    body: Callable[[OutboxStore], Awaitable[T]],
    clock: Callable[[], float] | None = None,
) -> T:
    async def main() -> T:
        store = OutboxStore(path) if clock is None else OutboxStore(path, clock=clock)
        await store.open()
        try:
            return await body(store)
        finally:
            await store.close()

    return asyncio.run(main())


def ours(owner: str = "me") -> Lease:
    return this_process_lease(owner, 60.0)


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_a_queued_row_is_on_disk_before_anything_is_sent(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "outbox.db"
    entry = run_with(path, lambda store: store.enqueue(order("k1", 250)))
    assert (entry.state, entry.attempts, entry.amount_minor) == (EntryState.QUEUED, 0, 250)
    # Another process (here: another store) finds it, in a file in WAL mode.
    [found] = run_with(path, lambda store: store.entries(GATEWAY, "alice"))
    assert found == entry
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_queueing_the_same_key_again_returns_the_row_and_other_parameters_are_refused(
    tmp_path: pathlib.Path,
) -> None:
    async def body(store: OutboxStore) -> None:
        first = await store.enqueue(order("k1"))
        assert await store.enqueue(order("k1")) == first
        with pytest.raises(FailedPrecondition) as info:
            await store.enqueue(order("k1", amount_minor=999))
        assert info.value.reason == "IDEMPOTENCY_KEY_MISMATCH"
        assert len(await store.entries(GATEWAY, "alice")) == 1

    run_with(tmp_path / "outbox.db", body)


def test_rows_are_claimed_oldest_first_one_at_a_time_per_payer(tmp_path: pathlib.Path) -> None:
    async def body(store: OutboxStore) -> None:
        for key in ("k1", "k2", "k3"):
            await store.enqueue(order(key))
        await store.enqueue(order("other", payer="carol"))
        head = await store.claim_head(GATEWAY, "alice", ours("a"))
        assert not isinstance(head, Blocked) and head is not None
        assert (head.idempotency_key, head.state, head.attempts) == ("k1", "delivering", 1)
        # Another process of the same user waits: the order holds, nothing is sent twice.
        assert await store.claim_head(GATEWAY, "alice", ours("b")) == Blocked(head.entry_id)
        # Other payers (and gateways) are separate queues.
        carol = await store.claim_head(GATEWAY, "carol", ours("b"))
        assert carol is not None and not isinstance(carol, Blocked)
        assert await store.claim_head("elsewhere:1", "alice", ours("b")) is None
        # Given back after a transient failure, the same row comes first again.
        await store.release(head.entry_id, "a", "UNAVAILABLE")
        again = await store.claim_head(GATEWAY, "alice", ours("b"))
        assert again is not None and not isinstance(again, Blocked)
        assert (again.idempotency_key, again.attempts, again.last_error) == ("k1", 2, "UNAVAILABLE")

    run_with(tmp_path / "outbox.db", body)


def test_a_row_leased_by_a_dead_process_or_an_expired_lease_is_claimed_again(
    tmp_path: pathlib.Path,
) -> None:
    host = socket.gethostname()

    async def body(store: OutboxStore) -> None:
        await store.enqueue(order("k1"))
        dead = Lease(owner="dead", host=host, pid=dead_pid(), duration_s=3600)
        assert not isinstance(await store.claim_head(GATEWAY, "alice", dead), Blocked)
        taken = await store.claim_head(GATEWAY, "alice", ours())
        assert taken is not None and not isinstance(taken, Blocked) and taken.attempts == 2
        await store.release(taken.entry_id, "me", "UNAVAILABLE")
        # A process on another host cannot be checked: its lease holds until it expires.
        remote = Lease(owner="remote", host="elsewhere", pid=1, duration_s=3600)
        await store.claim_head(GATEWAY, "alice", remote)
        assert isinstance(await store.claim_head(GATEWAY, "alice", ours()), Blocked)
        await store.settle(taken.entry_id, Settlement(state=EntryState.FAILED))
        await store.enqueue(order("k2"))
        expired = Lease(owner="remote", host="elsewhere", pid=1, duration_s=0)
        await store.claim_head(GATEWAY, "alice", expired)
        reclaimed = await store.claim_head(GATEWAY, "alice", ours())
        assert reclaimed is not None and not isinstance(reclaimed, Blocked)
        assert reclaimed.idempotency_key == "k2"

    run_with(tmp_path / "outbox.db", body)


def test_an_answer_is_recorded_once_and_a_settled_row_is_never_sent_again(
    tmp_path: pathlib.Path,
) -> None:
    async def body(store: OutboxStore) -> None:
        entry_id = (await store.enqueue(order("k1"))).entry_id
        await store.claim_head(GATEWAY, "alice", ours())
        answer = Settlement(
            state=EntryState.SUCCEEDED, payment_id="pay_1", payment_status="SUCCEEDED"
        )
        recorded = await store.settle(entry_id, answer)
        assert recorded is not None and recorded.state == EntryState.SUCCEEDED
        assert recorded.payment_id == "pay_1"
        assert await store.settle(entry_id, answer) is None  # a second process reports nothing
        assert await store.release(entry_id, "me", "UNAVAILABLE") == recorded
        assert await store.claim_head(GATEWAY, "alice", ours()) is None
        assert await store.pending(GATEWAY, "alice") == 0
        assert await store.depth() == 0

    run_with(tmp_path / "outbox.db", body)


def test_only_a_row_that_is_not_being_sent_and_has_not_ended_can_be_forgotten(
    tmp_path: pathlib.Path,
) -> None:
    async def body(store: OutboxStore) -> None:
        first = await store.enqueue(order("k1"))
        second = await store.enqueue(order("k2"))
        await store.claim_head(GATEWAY, "alice", ours())  # k1 is being sent
        for entry_id in (first.entry_id, 999):
            with pytest.raises(FailedPrecondition) as info:
                await store.forget(entry_id)
            assert info.value.reason == "NOT_FORGETTABLE"
        forgotten = await store.forget(second.entry_id)
        assert forgotten.state == EntryState.FORGOTTEN
        with pytest.raises(FailedPrecondition):
            await store.forget(second.entry_id)
        await store.release(first.entry_id, "me", "UNAVAILABLE")
        assert (await store.forget(first.entry_id)).state == EntryState.FORGOTTEN
        assert await store.claim_head(GATEWAY, "alice", ours()) is None
        assert await store.find(GATEWAY, "alice", "k2") == forgotten
        assert await store.find(GATEWAY, "alice", str(second.entry_id)) == forgotten
        assert await store.find(GATEWAY, "carol", "k2") is None

    run_with(tmp_path / "outbox.db", body)


def test_the_outbox_refuses_more_unsent_payments_than_its_limit(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outbox_store, "MAX_UNSETTLED_PER_PAYER", 2)

    async def body(store: OutboxStore) -> None:
        await store.enqueue(order("k1"))
        await store.enqueue(order("k2"))
        with pytest.raises(ResourceExhausted) as info:
            await store.enqueue(order("k3"))
        assert info.value.reason == "OUTBOX_FULL"
        await store.enqueue(order("k1", payer="carol"))  # another payer's queue

    run_with(tmp_path / "outbox.db", body)


def test_the_default_path_is_in_the_users_state_directory() -> None:
    home = pathlib.Path(os.path.expanduser("~"))
    assert default_outbox_path({"XDG_STATE_HOME": "/s"}) == pathlib.Path("/s/paygate/outbox.db")
    expected = home / ".local" / "state" / "paygate" / "outbox.db"
    assert default_outbox_path({}) == expected
    assert default_outbox_path({"XDG_STATE_HOME": "relative"}) == expected


ENQUEUE_SCRIPT = """
import asyncio, pathlib, sys
from paygate.client.outbox_models import PaymentOrder
from paygate.client.outbox_store import OutboxStore
async def main():
    store = OutboxStore(pathlib.Path(sys.argv[1]))
    await store.open()
    for i in range(20):
        await store.enqueue(PaymentOrder(
            idempotency_key=f"{sys.argv[2]}-{i}", gateway="g:1", payer_username="alice",
            payee_username="bob", amount_minor=1, currency="USD", description=""))
    await store.close()
asyncio.run(main())
"""


def test_processes_that_create_and_fill_one_outbox_at_once_lose_nothing(
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "state" / "outbox.db"
    processes = [
        subprocess.Popen([sys.executable, "-c", ENQUEUE_SCRIPT, str(path), f"p{n}"], cwd=REPO)
        for n in range(6)
    ]
    for process in processes:
        assert process.wait(timeout=60) == 0
    entries = run_with(path, lambda store: store.entries("g:1", "alice"))
    assert len({entry.idempotency_key for entry in entries}) == 120
    assert len({entry.entry_id for entry in entries}) == 120
    assert oct(path.parent.stat().st_mode & 0o777) == oct(0o700)


# The key window, review, and the upgrade of older files -----------------------------------

HOUR_S = 3600.0


class Clock:
    def __init__(self) -> None:
        self.now_s = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now_s


def test_a_claim_marks_the_row_maybe_delivered_before_sending_and_only_its_refusal_clears_it(
    tmp_path: pathlib.Path,
) -> None:
    clock = Clock()

    async def body(store: OutboxStore) -> None:
        entry_id = (await store.enqueue(order("k1"))).entry_id
        first = await store.claim_head(GATEWAY, "alice", ours(), key_ttl_s=HOUR_S)
        assert first is not None and not isinstance(first, Blocked)
        assert first.maybe_delivered_at is not None  # on disk before the request leaves
        released = await store.release(entry_id, "me", "UNAVAILABLE", maybe_delivered=False)
        assert released is not None and released.maybe_delivered_at is None
        clock.now_s += 60
        await store.claim_head(GATEWAY, "alice", ours(), key_ttl_s=HOUR_S)
        await store.release(entry_id, "me", "DEADLINE_EXCEEDED")  # may have run
        clock.now_s += 60
        await store.claim_head(GATEWAY, "alice", ours(), key_ttl_s=HOUR_S)
        kept = await store.release(entry_id, "me", "UNAVAILABLE", maybe_delivered=False)
        assert kept is not None and kept.maybe_delivered_at is not None
        assert kept.maybe_delivered_at.timestamp() == clock.now_s - 60  # attempt 2's time
        # Once the window has passed, the row is held instead of being leased again.
        clock.now_s += HOUR_S - 60
        held = await store.claim_head(GATEWAY, "alice", ours(), key_ttl_s=HOUR_S)
        assert held is not None and not isinstance(held, Blocked)
        assert (held.state, held.attempts) == (EntryState.NEEDS_REVIEW, 3)
        assert await store.claim_head(GATEWAY, "alice", ours(), key_ttl_s=HOUR_S) is None
        assert await store.pending(GATEWAY, "alice") == 0
        assert await store.pending(GATEWAY, "alice", EntryState.NEEDS_REVIEW) == 1

    run_with(tmp_path / "outbox.db", body, clock)


def test_a_row_held_for_review_can_be_forgotten_or_requeued_and_is_not_pruned(
    tmp_path: pathlib.Path,
) -> None:
    clock = Clock()

    async def body(store: OutboxStore) -> None:
        for key in ("k1", "k2"):
            await store.enqueue(order(key))
            await store.claim_head(GATEWAY, "alice", ours(), key_ttl_s=HOUR_S)
            clock.now_s += HOUR_S
            held = await store.claim_head(GATEWAY, "alice", ours(), key_ttl_s=HOUR_S)
            assert held is not None and not isinstance(held, Blocked)
            assert held.state == EntryState.NEEDS_REVIEW
        first, second = await store.entries(GATEWAY, "alice")
        with pytest.raises(FailedPrecondition) as info:
            await store.requeue((await store.enqueue(order("k3"))).entry_id)
        assert info.value.reason == "NOT_IN_REVIEW"
        assert (await store.forget(first.entry_id)).state == EntryState.FORGOTTEN
        requeued = await store.requeue(second.entry_id)
        assert (requeued.state, requeued.maybe_delivered_at) == (EntryState.QUEUED, None)
        again = await store.claim_head(GATEWAY, "alice", ours(), key_ttl_s=HOUR_S)
        assert again is not None and not isinstance(again, Blocked)
        assert (again.idempotency_key, again.state) == ("k2", EntryState.DELIVERING)
        await store.settle(again.entry_id, Settlement(state=EntryState.SUCCEEDED))
        # Held rows have not ended: the 30-day pruning of ended rows leaves them.
        await store.claim_head(GATEWAY, "alice", ours(), key_ttl_s=HOUR_S)  # k3
        clock.now_s += HOUR_S
        await store.claim_head(GATEWAY, "alice", ours(), key_ttl_s=HOUR_S)  # k3 held
        clock.now_s += 31 * 24 * HOUR_S
        await store.enqueue(order("k4"))  # prunes
        keys = {e.idempotency_key: e.state for e in await store.entries(GATEWAY, "alice")}
        assert keys == {"k3": EntryState.NEEDS_REVIEW, "k4": EntryState.QUEUED}

    run_with(tmp_path / "outbox.db", body, clock)


# The table as clients before the needs_review state wrote it (user_version 1).
V1_SCHEMA = """
    CREATE TABLE outbox (
        entry_id INTEGER PRIMARY KEY AUTOINCREMENT,
        idempotency_key TEXT NOT NULL, gateway TEXT NOT NULL, payer_username TEXT NOT NULL,
        payee_username TEXT NOT NULL, amount_minor INTEGER NOT NULL CHECK (amount_minor > 0),
        currency TEXT NOT NULL, description TEXT NOT NULL,
        state TEXT NOT NULL
            CHECK (state IN ('queued', 'delivering', 'succeeded', 'failed', 'forgotten')),
        attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT NOT NULL DEFAULT '',
        lease_owner TEXT NOT NULL DEFAULT '', lease_host TEXT NOT NULL DEFAULT '',
        lease_pid INTEGER NOT NULL DEFAULT 0, lease_until_s REAL NOT NULL DEFAULT 0,
        payment_id TEXT NOT NULL DEFAULT '', payment_status TEXT NOT NULL DEFAULT '',
        failure_reason TEXT NOT NULL DEFAULT '', created_at_s REAL NOT NULL,
        updated_at_s REAL NOT NULL,
        UNIQUE (gateway, payer_username, idempotency_key)
    );
    CREATE INDEX outbox_unsettled ON outbox (gateway, payer_username, entry_id)
        WHERE state IN ('queued', 'delivering');
    PRAGMA user_version = 1;
"""
V1_ROW = (
    "INSERT INTO outbox (entry_id, idempotency_key, gateway, payer_username, payee_username,"
    " amount_minor, currency, description, state, attempts, created_at_s, updated_at_s)"
    " VALUES (?, ?, ?, 'alice', 'bob', 100, 'USD', '', ?, ?, ?, ?)"
)


def old_client_file(path: pathlib.Path, created_s: float) -> None:
    with sqlite3.connect(path) as conn:
        conn.executescript(V1_SCHEMA)
        conn.execute("PRAGMA journal_mode = WAL")
        for entry_id, key, state, attempts in [
            (1, "tried", "queued", 2),
            (2, "untried", "queued", 0),
            (3, "done", "succeeded", 1),
            (9, "pruned", "failed", 1),
        ]:
            conn.execute(V1_ROW, (entry_id, key, GATEWAY, state, attempts, created_s, created_s))
        conn.execute("DELETE FROM outbox WHERE entry_id = 9")  # as the 30-day pruning does
    conn.close()


UPGRADE_SCRIPT = """
import asyncio, pathlib, sys
from paygate.client.outbox_store import OutboxStore
async def main():
    store = OutboxStore(pathlib.Path(sys.argv[1]))
    await store.open()
    await store.close()
asyncio.run(main())
"""


def test_a_file_of_an_older_client_is_upgraded_once_keeping_its_rows(
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "outbox.db"
    clock = Clock()
    old_client_file(path, clock.now_s)
    # Several processes of the user open it at once: one upgrades, the others find it done.
    processes = [
        subprocess.Popen([sys.executable, "-c", UPGRADE_SCRIPT, str(path)], cwd=REPO)
        for _ in range(4)
    ]
    for process in processes:
        assert process.wait(timeout=60) == 0

    async def body(store: OutboxStore) -> None:
        tried, untried, done = await store.entries(GATEWAY, "alice")
        assert [e.idempotency_key for e in (tried, untried, done)] == ["tried", "untried", "done"]
        # Whether an old attempt reached the gateway was not recorded: assume it did, at
        # the earliest time it could have.
        assert tried.maybe_delivered_at is not None
        assert tried.maybe_delivered_at.timestamp() == clock.now_s
        assert (tried.attempts, untried.maybe_delivered_at) == (2, None)
        assert (done.state, done.attempts) == (EntryState.SUCCEEDED, 1)
        assert (await store.enqueue(order("new"))).entry_id == 10  # ids are never reused
        clock.now_s += 23 * HOUR_S
        held = await store.claim_head(GATEWAY, "alice", ours(), key_ttl_s=23 * HOUR_S)
        assert held is not None and not isinstance(held, Blocked)
        assert (held.idempotency_key, held.state) == ("tried", EntryState.NEEDS_REVIEW)
        sent = await store.claim_head(GATEWAY, "alice", ours(), key_ttl_s=23 * HOUR_S)
        assert sent is not None and not isinstance(sent, Blocked)
        assert (sent.idempotency_key, sent.state) == ("untried", EntryState.DELIVERING)

    run_with(path, body, clock)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        assert "outbox_upgrade" not in tables and "outbox_unsettled" in tables
    conn.close()


def test_an_authorization_is_queued_as_one_and_its_key_is_not_reused_for_a_plain_payment(
    tmp_path: pathlib.Path,
) -> None:
    async def body(store: OutboxStore) -> None:
        held = dataclasses.replace(order("k1"), capture_later=True)
        entry = await store.enqueue(held)
        assert entry.capture_later and not (await store.enqueue(order("k2"))).capture_later
        assert await store.enqueue(held) == entry
        with pytest.raises(FailedPrecondition) as info:
            await store.enqueue(order("k1"))
        assert info.value.reason == "IDEMPOTENCY_KEY_MISMATCH"
        claimed = await store.claim_head(GATEWAY, "alice", ours())
        assert claimed is not None and not isinstance(claimed, Blocked)
        assert (claimed.idempotency_key, claimed.capture_later) == ("k1", True)

    run_with(tmp_path / "outbox.db", body)


# The table as clients before authorizations wrote it: no capture_later column.
V2_SCHEMA = V1_SCHEMA.replace(
    "('queued', 'delivering', 'succeeded', 'failed', 'forgotten')",
    "('queued', 'delivering', 'succeeded', 'failed', 'forgotten', 'needs_review')",
).replace(
    "updated_at_s REAL NOT NULL,",
    "updated_at_s REAL NOT NULL, maybe_delivered_at_s REAL NOT NULL DEFAULT 0,"
    " maybe_delivered_attempt INTEGER NOT NULL DEFAULT 0,",
)


def test_a_file_from_before_authorizations_opens_and_its_payments_stay_automatic(
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "outbox.db"
    clock = Clock()
    with sqlite3.connect(path) as conn:
        conn.executescript(V2_SCHEMA)
        conn.execute(V1_ROW, (1, "old", GATEWAY, "queued", 0, clock.now_s, clock.now_s))
    conn.close()
    processes = [
        subprocess.Popen([sys.executable, "-c", UPGRADE_SCRIPT, str(path)], cwd=REPO)
        for _ in range(3)
    ]
    for process in processes:
        assert process.wait(timeout=60) == 0

    async def body(store: OutboxStore) -> None:
        (old,) = await store.entries(GATEWAY, "alice")
        assert (old.idempotency_key, old.capture_later, old.state) == (
            "old", False, EntryState.QUEUED,
        )
        new = await store.enqueue(dataclasses.replace(order("new"), capture_later=True))
        assert (new.entry_id, new.capture_later) == (2, True)

    run_with(path, body, clock)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        with pytest.raises(sqlite3.IntegrityError):  # the column keeps its CHECK
            conn.execute("UPDATE outbox SET capture_later = 2")
    conn.close()
