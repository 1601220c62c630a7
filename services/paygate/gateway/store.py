"""The gateway's storage: users, sessions, payments with their 2PC state, idempotency keys,
and what operators did to users (the audit table).

GatewayStore is the narrow interface the domain modules use; every method is one
database transaction. Its methods are written once, in store_sql.SqlGatewayStore;
SqliteGatewayStore runs them on one SQLite file.
"""

from __future__ import annotations

import pathlib
import sqlite3
from collections.abc import Awaitable, Coroutine, Iterable, Sequence
from typing import Any, Protocol, TypeVar

from prometheus_client import Counter

from paygate.common.invariants import InvariantViolation
from paygate.common.sql import NO_VALUES, SQLITE, Row, Statement, Values
from paygate.common.sqlite import Database
from paygate.gateway.models import (
    ActionDone,
    Event,
    OperationKey,
    Payment,
    Settled,
    TxnState,
    User,
    UserAction,
    UserStatus,
)
from paygate.gateway.models import BeginOutcome as BeginOutcome
from paygate.gateway.models import BeginResult as BeginResult
from paygate.gateway.models import Lease as Lease
from paygate.gateway.models import Session as Session
from paygate.gateway.models import SessionInfo as SessionInfo
from paygate.gateway.models import TotpRecord as TotpRecord
from paygate.gateway.schema import SQLITE_MIGRATIONS as MIGRATIONS
from paygate.gateway.statements import GatewaySql
from paygate.gateway.store_sql import SqlGatewayStore
from paygate.gateway.store_tx import Body

T = TypeVar("T")

SQL = GatewaySql(SQLITE)
CLAIM_SQL = SQL.claim.text  # recovery's claim (its plan is checked by a test)


class GatewayStore(Protocol):
    events_written: Counter | None  # counts the events written, by type (main.py sets it)

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def healthy(self) -> bool: ...
    async def create_user(self, user: User, password_hash: bytes) -> None: ...
    async def user_by_username(self, username: str) -> tuple[User, bytes] | None: ...
    async def insert_session(
        self,
        token_hash: str,
        user_id: str,
        expire_at_s: float,
        *,
        session_id: str = "",
        client_address: str = "",
    ) -> bool: ...
    async def session(self, token_hash: str) -> Session | None: ...
    async def revoke_session(self, token_hash: str) -> None: ...
    async def touch_session(self, token_hash: str, at_s: float) -> None: ...
    async def live_sessions(
        self, user_id: str, *, now_s: float, limit: int
    ) -> list[SessionInfo]: ...
    async def revoke_session_by_id(self, user_id: str, session_id: str) -> str | None: ...
    async def revoke_sessions_of(self, user_id: str, *, keep: str = "") -> list[str]: ...
    async def change_password(
        self, user_id: str, password_hash: bytes, *, keep: str
    ) -> list[str]: ...
    async def prune_sessions(self, *, older_than_s: float, limit: int) -> int: ...
    async def totp(self, user_id: str) -> TotpRecord: ...
    async def set_totp_pending(self, user_id: str, sealed: bytes) -> None: ...
    async def enable_totp(
        self, user_id: str, sealed: bytes, *, step: int, code_hashes: list[str]
    ) -> bool: ...
    async def use_totp_step(self, user_id: str, step: int) -> bool: ...
    async def use_recovery_code(self, user_id: str, code_hash: str, at_s: float) -> bool: ...
    async def replace_recovery_codes(self, user_id: str, code_hashes: list[str]) -> None: ...
    async def disable_totp(self, user_id: str) -> None: ...
    async def begin_payment(
        self, key: str, request_hash: str, payment: Payment, lease: Lease | None = None
    ) -> BeginResult: ...
    async def frozen_parties(self, payer_user_id: str, payee_user_id: str) -> list[str]: ...
    async def user_status(
        self, username: str, *, now_s: float, recent_actions: int
    ) -> UserStatus | None: ...
    async def act_on_user(
        self, action: UserAction, username: str, *, operator: str, reason: str, at_s: float
    ) -> ActionDone | None: ...
    async def begin_refund(
        self, key: str, request_hash: str, refund: Payment, lease: Lease
    ) -> tuple[BeginResult, Payment | None]: ...
    async def list_refunds(
        self, payment_id: str, *, after_seq: int, limit: int
    ) -> list[tuple[int, Payment]]: ...
    async def decide_commit(
        self, payment_id: str, *, finished: bool = False, refund: Payment | None = None
    ) -> TxnState: ...
    async def list_events(self, user_id: str, *, after: int, limit: int) -> list[Event]: ...
    async def event_bounds(self, user_id: str) -> tuple[int, int | None]: ...
    async def prune_events(self, *, older_than_us: int, limit: int) -> int: ...
    async def decide_abort(
        self, payment_id: str, reason: str, message: str, *, release_key: bool
    ) -> TxnState: ...
    async def authorize(self, payment_id: str) -> TxnState: ...
    async def capture(
        self, payment_id: str, amount_minor: int, lease: Lease, key: OperationKey | None
    ) -> Settled: ...
    async def cancel(
        self, payment_id: str, reason: str, lease: Lease, key: OperationKey | None
    ) -> Settled: ...
    async def claim_expired(
        self, owner: str, *, now_s: float, lease_s: float, limit: int
    ) -> list[Payment]: ...
    async def count_expired(self, *, now_s: float) -> int: ...
    async def finish(self, payment_id: str, state: TxnState) -> None: ...
    async def finish_many(self, finished: Sequence[tuple[str, TxnState]]) -> None:
        """finish() for several transactions, in one database transaction."""
        ...

    async def get_payment(self, payment_id: str) -> Payment | None: ...
    async def list_payments(
        self, user_id: str, *, before_seq: int | None, limit: int
    ) -> list[tuple[int, Payment]]: ...
    async def claim_unfinished(
        self, owner: str, *, now_s: float, lease_s: float, limit: int
    ) -> list[Payment]: ...
    async def renew_lease(self, payment_id: str, lease: Lease) -> bool: ...
    async def count_unfinished(self, *, created_before_us: int) -> int: ...
    async def prune_idempotency_keys(self, *, older_than_s: float, limit: int) -> int: ...
    async def login_failures(self, keys: list[str], *, since_s: float) -> list[list[float]]: ...
    async def record_login_failure(self, keys: list[str], at_s: float) -> None: ...
    async def clear_login_failures(self, key: str) -> None: ...
    async def prune_login_failures(self, *, older_than_s: float, limit: int) -> int: ...


class SqliteGatewayStore(SqlGatewayStore):
    """GatewayStore on one SQLite file: writes share group commits (common/sqlite.py)."""

    def __init__(self, path: pathlib.Path) -> None:
        self._sqlite = Database(path, MIGRATIONS)
        super().__init__(self._sqlite, SQL)

    def _write(self, body: Body[T]) -> Awaitable[T]:
        return self._sqlite.transaction(lambda conn: run_now(body(SqliteTx(conn))))

    def _read(self, body: Body[T]) -> Awaitable[T]:
        return self._sqlite.read(lambda conn: run_now(body(SqliteTx(conn))))


class SqliteTx:
    """A transaction on the database thread: each statement runs when it is awaited, at
    once, so a body over it never waits for anything (run_now runs it to its end)."""

    __slots__ = ("_conn",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    async def run(self, statement: Statement, values: Values = NO_VALUES) -> int:
        return self._conn.execute(statement.text, statement.args(values)).rowcount

    async def one(self, statement: Statement, values: Values = NO_VALUES) -> Row | None:
        row: Row | None = self._conn.execute(statement.text, statement.args(values)).fetchone()
        return row

    async def all(self, statement: Statement, values: Values = NO_VALUES) -> list[Row]:
        return self._conn.execute(statement.text, statement.args(values)).fetchall()

    async def many(self, statement: Statement, rows: Iterable[Values]) -> None:
        self._conn.executemany(statement.text, map(statement.args, rows))

    async def insert(self, statement: Statement, values: Values) -> int:
        row_id = self._conn.execute(statement.text, statement.args(values)).lastrowid
        if row_id is None:
            raise InvariantViolation(f"no row id after {statement}")
        return row_id


def run_now(body: Coroutine[Any, Any, T]) -> T:
    """The result of a body over SqliteTx, run to its end on the database thread (there is
    no event loop there, and a body that waited for one would be a bug)."""
    try:
        body.send(None)
    except StopIteration as done:
        result: T = done.value
        return result
    body.close()
    raise RuntimeError("a SQLite transaction waited for something other than a statement")
