"""The outbox's SQLite file: one row per payment a user asked for, written before it is sent.

    queued ──claimed by a process──> delivering ──final answer──> succeeded | failed
     ^  │  │                              │
     │  │  └─ first attempt that may have │
     │  │     reached the gateway is older than the key window ──> needs_review
     │  └──forget──> forgotten            │           (forget ──> forgotten; requeue ──> queued)
     └──── transient failure; or the process holding it died, or its lease expired

A claim marks the row as maybe delivered (when and at which attempt) in the same write,
before the request is sent: a process that dies mid-call leaves the mark. Only an attempt
known not to have reached the gateway takes its own mark off again (release).

The file is shared by every client process of the user (WAL, synchronous=FULL: a row that
was written survives kill -9 and power loss). A process claims the oldest unsettled row of
a (gateway, payer) in one write transaction, with a lease naming its host and pid, and only
when no other row of that payer is leased: so payments go out in the order they were
queued and two processes never send at the same time. A lease ends when its process
settles or releases the row, when it expires, or at once when its process is gone.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import pathlib
import socket
import sqlite3
import time
from collections.abc import Callable
from typing import Any

from paygate.client.outbox_models import (
    DEFAULT_KEY_TTL_S,
    SETTLED_STATES,
    EntryState,
    PaymentOrder,
    QueuedPayment,
    Settlement,
)
from paygate.client.outbox_schema import MIGRATIONS, upgrade
from paygate.common.invariants import InvariantViolation, check
from paygate.common.sqlite import Database
from paygate.errors import IDEMPOTENCY_KEY_MISMATCH, FailedPrecondition, ResourceExhausted

DIRECTORY_MODE = 0o700
MAX_UNSETTLED_PER_PAYER = 10_000  # a runaway caller must not fill the disk
SETTLED_RETENTION_S = 30 * 24 * 3600  # settled rows are kept this long, for `paygate queue`
MAX_LIST = 1_000
OUTBOX_FULL = "OUTBOX_FULL"
NOT_FORGETTABLE = "NOT_FORGETTABLE"
NOT_IN_REVIEW = "NOT_IN_REVIEW"

# QueuedPayment's fields in order, as columns; the times are converted on reading.
_FIELDS = (
    "entry_id", "idempotency_key", "gateway", "payer_username", "payee_username",
    "amount_minor", "currency", "description", "state", "attempts", "last_error", "payment_id",
    "payment_status", "failure_reason", "created_at_s", "updated_at_s", "maybe_delivered_at_s",
    "capture_later",
)
_COLUMNS = ", ".join(_FIELDS)
_UNSETTLED = "state IN ('queued', 'delivering')"  # to be sent
_OPEN = "state IN ('queued', 'delivering', 'needs_review')"  # not ended


@dataclasses.dataclass(frozen=True, kw_only=True)
class Lease:
    """Who is sending a row: a process on a host, until a time (s since the epoch)."""

    owner: str
    host: str
    pid: int
    duration_s: float


@dataclasses.dataclass(frozen=True)
class Blocked:
    """Another live process is sending this payer's head row; try again after a while."""

    entry_id: int


def this_process_lease(owner: str, duration_s: float) -> Lease:
    return Lease(owner=owner, host=socket.gethostname(), pid=os.getpid(), duration_s=duration_s)


class OutboxStore:
    """The outbox table behind an async interface; every write is one IMMEDIATE transaction."""

    def __init__(self, path: pathlib.Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._db = Database(path, MIGRATIONS)
        self._host = socket.gethostname()
        self._clock = clock  # wall time, s since the epoch: it is compared across processes

    async def open(self) -> None:
        self.path.parent.mkdir(mode=DIRECTORY_MODE, parents=True, exist_ok=True)
        await self._db.open()
        await self._db.transaction(upgrade)

    async def close(self) -> None:
        await self._db.close()

    async def enqueue(self, order: PaymentOrder) -> QueuedPayment:
        """Write the order as a queued row, or return the row already holding its key."""
        return await self._db.transaction(lambda conn: self._enqueue(conn, order, self._clock()))

    def _enqueue(
        self, conn: sqlite3.Connection, order: PaymentOrder, now_s: float
    ) -> QueuedPayment:
        mine = "gateway = ? AND payer_username = ? AND idempotency_key = ?"
        params = (order.gateway, order.payer_username, order.idempotency_key)
        existing = _row(conn, mine, params)
        if existing is not None:
            if _order_of(existing) != order:
                raise FailedPrecondition(
                    "this idempotency key is already queued for another payment",
                    reason=IDEMPOTENCY_KEY_MISMATCH,
                )
            return existing
        conn.execute(
            f"DELETE FROM outbox WHERE NOT {_OPEN} AND updated_at_s < ?",
            (now_s - SETTLED_RETENTION_S,),
        )
        (unsettled,) = conn.execute(
            f"SELECT count(*) FROM outbox WHERE gateway = ? AND payer_username = ? AND {_OPEN}",
            (order.gateway, order.payer_username),
        ).fetchone()
        if unsettled >= MAX_UNSETTLED_PER_PAYER:
            raise ResourceExhausted(
                f"the outbox already holds {unsettled} unsent payments", reason=OUTBOX_FULL
            )
        conn.execute(
            "INSERT INTO outbox (idempotency_key, gateway, payer_username, payee_username,"
            " amount_minor, currency, description, capture_later, state, created_at_s,"
            " updated_at_s) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?)",
            (
                order.idempotency_key, order.gateway, order.payer_username, order.payee_username,
                order.amount_minor, order.currency, order.description, int(order.capture_later),
                now_s, now_s,
            ),
        )
        return _existing_row(conn, mine, params)

    async def claim_head(
        self, gateway: str, payer: str, lease: Lease, *, key_ttl_s: float = DEFAULT_KEY_TTL_S
    ) -> QueuedPayment | Blocked | None:
        """Lease the payer's oldest unsettled row and count an attempt; None when there is none.

        A row that may have reached the gateway more than key_ttl_s ago is not leased but
        moved to needs_review, and returned so (the caller reports it and claims again).
        """
        return await self._db.transaction(
            lambda conn: self._claim_head(conn, gateway, payer, lease, key_ttl_s, self._clock())
        )

    def _claim_head(
        self,
        conn: sqlite3.Connection,
        gateway: str,
        payer: str,
        lease: Lease,
        key_ttl_s: float,
        now_s: float,
    ) -> QueuedPayment | Blocked | None:
        rows = conn.execute(
            f"SELECT entry_id, state, lease_host, lease_pid, lease_until_s FROM outbox"
            f" WHERE gateway = ? AND payer_username = ? AND {_UNSETTLED} ORDER BY entry_id",
            (gateway, payer),
        ).fetchall()
        if not rows:
            return None
        for entry_id, state, host, pid, until_s in rows:
            if state == EntryState.DELIVERING and self._lease_live(host, pid, until_s, now_s):
                return Blocked(entry_id)
        head = rows[0][0]
        review = conn.execute(
            "UPDATE outbox SET state = 'needs_review', lease_owner = '', lease_until_s = 0,"
            " updated_at_s = ? WHERE entry_id = ? AND maybe_delivered_at_s > 0"
            " AND maybe_delivered_at_s <= ?",
            (now_s, head, now_s - key_ttl_s),
        )
        if review.rowcount == 0:
            # The mark is written before the request can leave (see the module docstring).
            conn.execute(
                "UPDATE outbox SET state = 'delivering', attempts = attempts + 1,"
                " lease_owner = ?, lease_host = ?, lease_pid = ?, lease_until_s = ?,"
                " updated_at_s = ?,"
                " maybe_delivered_attempt = CASE WHEN maybe_delivered_at_s > 0"
                "   THEN maybe_delivered_attempt ELSE attempts + 1 END,"
                " maybe_delivered_at_s = CASE WHEN maybe_delivered_at_s > 0"
                "   THEN maybe_delivered_at_s ELSE ? END"
                " WHERE entry_id = ?",
                (lease.owner, lease.host, lease.pid, now_s + lease.duration_s, now_s, now_s,
                 head),
            )
        return _row(conn, "entry_id = ?", (head,))

    def _lease_live(self, host: str, pid: int, until_s: float, now_s: float) -> bool:
        if until_s <= now_s:
            return False
        # A process on this host that is gone holds nothing. Elsewhere (or if the pid was
        # reused) we wait for the lease to expire; sending twice would still be safe.
        return host != self._host or _pid_alive(pid)

    async def settle(self, entry_id: int, settlement: Settlement) -> QueuedPayment | None:
        """Record a final answer. Any process may: the gateway answers the same for a key."""
        check(settlement.state in SETTLED_STATES, f"cannot settle as {settlement.state}")
        return await self._db.transaction(lambda conn: self._settle(conn, entry_id, settlement))

    def _settle(
        self, conn: sqlite3.Connection, entry_id: int, settlement: Settlement
    ) -> QueuedPayment | None:
        cursor = conn.execute(
            "UPDATE outbox SET state = ?, payment_id = ?, payment_status = ?, failure_reason = ?,"
            " last_error = ?, lease_owner = '', lease_until_s = 0, updated_at_s = ?"
            f" WHERE entry_id = ? AND {_UNSETTLED}",
            (
                settlement.state, settlement.payment_id, settlement.payment_status,
                settlement.failure_reason, settlement.last_error, self._clock(), entry_id,
            ),
        )
        # None: another process recorded the answer first, and reports it.
        return _row(conn, "entry_id = ?", (entry_id,)) if cursor.rowcount == 1 else None

    async def release(
        self, entry_id: int, owner: str, last_error: str, *, maybe_delivered: bool = True
    ) -> QueuedPayment | None:
        """Give a row back to the queue after a transient failure (if it is still ours).

        maybe_delivered=False says this attempt never reached the gateway: if its claim
        made the row's maybe-delivered mark, the mark goes (an earlier attempt's stays).
        """

        def release(conn: sqlite3.Connection) -> QueuedPayment | None:
            conn.execute(
                "UPDATE outbox SET state = 'queued', last_error = ?, lease_owner = '',"
                " lease_until_s = 0, updated_at_s = ?,"
                " maybe_delivered_at_s = CASE WHEN ? AND maybe_delivered_attempt = attempts"
                "   THEN 0 ELSE maybe_delivered_at_s END,"
                " maybe_delivered_attempt = CASE WHEN ? AND maybe_delivered_attempt = attempts"
                "   THEN 0 ELSE maybe_delivered_attempt END"
                " WHERE entry_id = ? AND state = 'delivering' AND lease_owner = ?",
                (last_error, self._clock(), not maybe_delivered, not maybe_delivered, entry_id,
                 owner),
            )
            return _row(conn, "entry_id = ?", (entry_id,))

        return await self._db.transaction(release)

    async def entries(
        self, gateway: str, payer: str, *, limit: int = MAX_LIST
    ) -> list[QueuedPayment]:
        """The payer's rows in queue order: the oldest `limit` that have not ended (queued,
        delivering, needs_review), then the newest ended ones up to `limit` in all."""
        limit = min(limit, MAX_LIST)

        def read(conn: sqlite3.Connection) -> list[QueuedPayment]:
            where = "gateway = ? AND payer_username = ?"
            unsettled = _rows(conn, f"{where} AND {_OPEN} ORDER BY entry_id LIMIT ?",
                              (gateway, payer, limit))
            settled = _rows(conn, f"{where} AND NOT {_OPEN} ORDER BY entry_id DESC LIMIT ?",
                            (gateway, payer, limit - len(unsettled)))
            return sorted(unsettled + settled, key=lambda entry: entry.entry_id)

        return await self._db.read(read)

    async def find(self, gateway: str, payer: str, ref: str) -> QueuedPayment | None:
        """The payer's row whose entry id or idempotency key is `ref`."""
        entry_id = int(ref) if ref.isdigit() else -1
        return await self._db.read(
            lambda conn: _row(
                conn,
                "gateway = ? AND payer_username = ? AND (entry_id = ? OR idempotency_key = ?)",
                (gateway, payer, entry_id, ref),
            )
        )

    async def forget(self, entry_id: int) -> QueuedPayment:
        """Drop a row that is not being sent and has no final answer."""
        return await self._db.transaction(lambda conn: self._forget(conn, entry_id, self._clock()))

    def _forget(self, conn: sqlite3.Connection, entry_id: int, now_s: float) -> QueuedPayment:
        found = conn.execute(
            "SELECT state, lease_host, lease_pid, lease_until_s FROM outbox WHERE entry_id = ?",
            (entry_id,),
        ).fetchone()
        if found is None:
            raise FailedPrecondition(f"no queued payment {entry_id}", reason=NOT_FORGETTABLE)
        state, host, pid, until_s = found
        sending = state == EntryState.DELIVERING and self._lease_live(host, pid, until_s, now_s)
        forgettable = (EntryState.QUEUED, EntryState.DELIVERING, EntryState.NEEDS_REVIEW)
        if state not in forgettable or sending:
            what = "being sent now" if sending else state
            raise FailedPrecondition(
                f"payment {entry_id} cannot be forgotten: it is {what}", reason=NOT_FORGETTABLE
            )
        conn.execute(
            "UPDATE outbox SET state = 'forgotten', lease_owner = '', lease_until_s = 0,"
            " updated_at_s = ? WHERE entry_id = ?",
            (now_s, entry_id),
        )
        return _existing_row(conn, "entry_id = ?", (entry_id,))

    async def requeue(self, entry_id: int) -> QueuedPayment:
        """Queue a needs_review row again, after its user checked that it was not paid.

        Its maybe-delivered mark goes: the person took the decision the window guards.
        """

        def requeue(conn: sqlite3.Connection) -> QueuedPayment:
            cursor = conn.execute(
                "UPDATE outbox SET state = 'queued', maybe_delivered_at_s = 0,"
                " maybe_delivered_attempt = 0, updated_at_s = ?"
                " WHERE entry_id = ? AND state = 'needs_review'",
                (self._clock(), entry_id),
            )
            if cursor.rowcount == 0:
                raise FailedPrecondition(
                    f"payment {entry_id} is not waiting for review", reason=NOT_IN_REVIEW
                )
            return _existing_row(conn, "entry_id = ?", (entry_id,))

        return await self._db.transaction(requeue)

    async def pending(
        self, gateway: str, payer: str, state: EntryState | None = None
    ) -> int:
        """The payer's rows at this gateway that are to be sent, or in `state`."""
        where = _UNSETTLED if state is None else "state = ?"
        params: tuple[object, ...] = (gateway, payer) + (() if state is None else (state,))
        return int(
            await self._db.read(
                lambda conn: conn.execute(
                    f"SELECT count(*) FROM outbox WHERE gateway = ? AND payer_username = ?"
                    f" AND {where}",
                    params,
                ).fetchone()[0]
            )
        )

    async def depth(self) -> int:
        """Unsettled rows in the whole file, every gateway and payer."""
        return int(
            await self._db.read(
                lambda conn: conn.execute(f"SELECT count(*) FROM outbox WHERE {_UNSETTLED}")
                .fetchone()[0]
            )
        )


def _rows(conn: sqlite3.Connection, where: str, params: tuple[object, ...]) -> list[QueuedPayment]:
    return [
        _entry(row) for row in conn.execute(f"SELECT {_COLUMNS} FROM outbox WHERE {where}", params)
    ]


def _row(conn: sqlite3.Connection, where: str, params: tuple[object, ...]) -> QueuedPayment | None:
    rows = _rows(conn, where, params)
    return rows[0] if rows else None


def _existing_row(
    conn: sqlite3.Connection, where: str, params: tuple[object, ...]
) -> QueuedPayment:
    """A row this transaction has just written: its absence is a bug, not an answer."""
    row = _row(conn, where, params)
    if row is None:
        raise InvariantViolation(f"the outbox row just written is missing ({where})")
    return row


def _entry(row: tuple[Any, ...]) -> QueuedPayment:
    values = dict(zip(_FIELDS, row, strict=True))
    created_s, updated_s = values.pop("created_at_s"), values.pop("updated_at_s")
    maybe_delivered_s = values.pop("maybe_delivered_at_s")
    values["state"] = EntryState(values["state"])
    values["capture_later"] = bool(values["capture_later"])
    return QueuedPayment(
        **values,
        created_at=_utc(created_s),
        updated_at=_utc(updated_s),
        maybe_delivered_at=_utc(maybe_delivered_s) if maybe_delivered_s > 0 else None,
    )


def _utc(seconds: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)


def _order_of(entry: QueuedPayment) -> PaymentOrder:
    return PaymentOrder(
        idempotency_key=entry.idempotency_key,
        gateway=entry.gateway,
        payer_username=entry.payer_username,
        payee_username=entry.payee_username,
        amount_minor=entry.amount_minor,
        currency=entry.currency,
        description=entry.description,
        capture_later=entry.capture_later,
    )


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, someone else's
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc here: trust kill(0)
    # A zombie has exited; its parent just has not reaped it yet.
    return stat.rpartition(")")[2].split()[0] != "Z"
