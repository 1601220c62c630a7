"""The store's part for users: accounts, sessions, two-factor login, the login throttle.

Written once for SQLite and PostgreSQL, as the rest of the store (store_sql.py, whose
SqlGatewayStore takes these methods from SqlAccountStore and runs their bodies).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable
from typing import TypeVar

from paygate.common.sql import Statement, Values
from paygate.errors import AlreadyExists
from paygate.gateway.models import Session, SessionInfo, TotpRecord, User
from paygate.gateway.statements import USERS, GatewaySql
from paygate.gateway.store_operators import revoke_all
from paygate.gateway.store_tx import Body, Tx

T = TypeVar("T")


class SqlAccountStore:
    """GatewayStore's methods for users and their sessions; SqlGatewayStore runs them."""

    _sql: GatewaySql

    def _write(self, body: Body[T]) -> Awaitable[T]:
        raise NotImplementedError

    def _read(self, body: Body[T]) -> Awaitable[T]:
        raise NotImplementedError

    async def _delete_some(self, statement: Statement, before: float, limit: int) -> int:
        raise NotImplementedError

    # Users and sessions ------------------------------------------------------------

    async def create_user(self, user: User, password_hash: bytes) -> None:
        sql = self._sql
        values = USERS.values(user)
        values.update(password_hash=password_hash, created_at_s=time.time())

        async def insert(tx: Tx) -> None:
            if await tx.one(sql.username_taken, values):
                raise username_taken(user)
            if await tx.one(sql.account_linked, values):
                raise account_linked(user)
            await tx.run(sql.insert_user, values)

        await self._write(insert)

    async def user_by_username(self, username: str) -> tuple[User, bytes] | None:
        async def select(tx: Tx) -> tuple[User, bytes] | None:
            row = await tx.one(self._sql.user_by_username, {"username": username})
            return (USERS.from_row(row[: USERS.width]), bytes(row[USERS.width])) if row else None

        return await self._read(select)

    async def insert_session(
        self,
        token_hash: str,
        user_id: str,
        expire_at_s: float,
        *,
        session_id: str = "",
        client_address: str = "",
    ) -> bool:
        """Record a session, unless its user is frozen (False); its public id is random
        (new_session_id()) unless given."""
        values = {
            "token_hash": token_hash,
            "user_id": user_id,
            "expire_at_s": expire_at_s,
            "created_at_s": time.time(),
            "session_id": session_id or new_session_id(),
            "client_address": client_address,
        }

        async def insert(tx: Tx) -> bool:
            row = await tx.one(self._sql.frozen_for_login, values)
            if row is None or row[0]:
                return False
            await tx.run(self._sql.insert_session, values)
            return True

        return await self._write(insert)

    async def session(self, token_hash: str) -> Session | None:
        async def select(tx: Tx) -> Session | None:
            row = await tx.one(self._sql.session, {"token": token_hash})
            if row is None:
                return None
            expire_at_s, revoked, session_id, last_used_at_s = row[USERS.width :]
            return Session(
                USERS.from_row(row[: USERS.width]),
                float(expire_at_s),
                bool(revoked),
                session_id or "",
                float(last_used_at_s),
            )

        return await self._read(select)

    async def revoke_session(self, token_hash: str) -> None:
        await self._write(lambda tx: tx.run(self._sql.revoke_session, {"token": token_hash}))

    async def touch_session(self, token_hash: str, at_s: float) -> None:
        """Note that the session was used at `at_s`."""
        values = {"token": token_hash, "at_s": at_s}
        await self._write(lambda tx: tx.run(self._sql.touch_session, values))

    async def live_sessions(self, user_id: str, *, now_s: float, limit: int) -> list[SessionInfo]:
        """The user's sessions neither revoked nor expired at `now_s`, newest first."""
        values = {"user_id": user_id, "now_s": now_s, "limit": limit}

        async def select(tx: Tx) -> list[SessionInfo]:
            return [
                SessionInfo(
                    session_id=row[0] or "",
                    token_hash=row[1],
                    created_at_s=float(row[2]),
                    last_used_at_s=float(row[3]),
                    expire_at_s=float(row[4]),
                    client_address=row[5],
                )
                for row in await tx.all(self._sql.live_sessions, values)
            ]

        return await self._read(select)

    async def revoke_session_by_id(self, user_id: str, session_id: str) -> str | None:
        """End the user's live session of that id; its token hash, or None if none."""
        values = {"user_id": user_id, "session_id": session_id}

        async def revoke(tx: Tx) -> str | None:
            rows = await tx.all(self._sql.revoke_session_by_id, values)
            return str(rows[0][0]) if rows else None

        return await self._write(revoke)

    async def revoke_sessions_of(self, user_id: str, *, keep: str = "") -> list[str]:
        """End every live session of the user but the one of token hash `keep`; the token
        hashes of those ended."""
        return await self._write(lambda tx: revoke_all(tx, self._sql, user_id, keep))

    async def change_password(self, user_id: str, password_hash: bytes, *, keep: str) -> list[str]:
        """Replace the password and end every other session, in one transaction; the token
        hashes of the sessions ended."""
        values = {"user_id": user_id, "password_hash": password_hash}

        async def change(tx: Tx) -> list[str]:
            await tx.run(self._sql.set_password, values)
            return await revoke_all(tx, self._sql, user_id, keep)

        return await self._write(change)

    async def prune_sessions(self, *, older_than_s: float, limit: int) -> int:
        """Delete up to `limit` sessions that expired before `older_than_s`; how many."""
        return await self._delete_some(self._sql.prune_sessions, older_than_s, limit)

    # Two-factor login ---------------------------------------------------------------

    async def totp(self, user_id: str) -> TotpRecord:
        async def select(tx: Tx) -> TotpRecord:
            row = await tx.one(self._sql.totp, {"user_id": user_id})
            if row is None:
                return TotpRecord(secret=None, pending=None, last_step=None, recovery_codes_left=0)
            secret, pending, last_step, left = row
            return TotpRecord(
                secret=bytes(secret) if secret is not None else None,
                pending=bytes(pending) if pending is not None else None,
                last_step=int(last_step) if last_step is not None else None,
                recovery_codes_left=int(left),
            )

        return await self._read(select)

    async def set_totp_pending(self, user_id: str, sealed: bytes) -> None:
        values = {"user_id": user_id, "sealed": sealed}
        await self._write(lambda tx: tx.run(self._sql.set_totp_pending, values))

    async def enable_totp(
        self, user_id: str, sealed: bytes, *, step: int, code_hashes: list[str]
    ) -> bool:
        """Turn on the pending secret `sealed` (its code of `step` used), with new recovery
        codes; False when another secret is pending now."""
        values = {"user_id": user_id, "sealed": sealed, "step": step}

        async def enable(tx: Tx) -> bool:
            if await tx.run(self._sql.enable_totp, values) != 1:
                return False
            await _replace_codes(tx, self._sql, user_id, code_hashes)
            return True

        return await self._write(enable)

    async def use_totp_step(self, user_id: str, step: int) -> bool:
        """Record that a code of time `step` was used; False when that step, or a later
        one, already was (or two-factor is off)."""
        values = {"user_id": user_id, "step": step}
        return await self._write(lambda tx: _changed_one(tx, self._sql.use_totp_step, values))

    async def use_recovery_code(self, user_id: str, code_hash: str, at_s: float) -> bool:
        """Use up an unused recovery code; False when there is none of that hash."""
        values = {"user_id": user_id, "code_hash": code_hash, "at_s": at_s}
        return await self._write(lambda tx: _changed_one(tx, self._sql.use_recovery_code, values))

    async def replace_recovery_codes(self, user_id: str, code_hashes: list[str]) -> None:
        await self._write(lambda tx: _replace_codes(tx, self._sql, user_id, code_hashes))

    async def disable_totp(self, user_id: str) -> None:
        """Turn two-factor off: the secret, a pending one and the recovery codes go."""

        async def disable(tx: Tx) -> None:
            await tx.run(self._sql.disable_totp, {"user_id": user_id})
            await tx.run(self._sql.delete_recovery_codes, {"user_id": user_id})

        await self._write(disable)

    async def login_failures(self, keys: list[str], *, since_s: float) -> list[list[float]]:
        """For each key, the times of its failures since `since_s`, oldest first."""

        async def select(tx: Tx) -> list[list[float]]:
            statement = self._sql.login_failures
            return [
                [float(row[0]) for row in await tx.all(statement, {"key": k, "since_s": since_s})]
                for k in keys
            ]

        return await self._read(select)

    async def record_login_failure(self, keys: list[str], at_s: float) -> None:
        rows = [{"key": key, "at_s": at_s} for key in keys]
        await self._write(lambda tx: tx.many(self._sql.record_login_failure, rows))

    async def clear_login_failures(self, key: str) -> None:
        await self._write(lambda tx: tx.run(self._sql.clear_login_failures, {"key": key}))

    async def prune_login_failures(self, *, older_than_s: float, limit: int) -> int:
        """Delete up to `limit` failures older than `older_than_s`; how many."""
        return await self._delete_some(self._sql.prune_login_failures, older_than_s, limit)


async def _changed_one(tx: Tx, statement: Statement, values: Values) -> bool:
    return await tx.run(statement, values) == 1


async def _replace_codes(tx: Tx, sql: GatewaySql, user_id: str, code_hashes: list[str]) -> None:
    await tx.run(sql.delete_recovery_codes, {"user_id": user_id})
    rows = [{"user_id": user_id, "code_hash": code_hash} for code_hash in code_hashes]
    await tx.many(sql.insert_recovery_code, rows)


def new_session_id() -> str:
    """A session's public id: 96 random bits, unrelated to its token."""
    return f"ses_{secrets.token_hex(12)}"


def username_taken(user: User) -> AlreadyExists:
    return AlreadyExists(f"username {user.username!r} is taken")


def account_linked(user: User) -> AlreadyExists:
    return AlreadyExists(
        f"account {user.account_number} at {user.bank_id} is already linked to a user"
    )
