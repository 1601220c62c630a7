"""The store's part for operators (AdminService): a user's status, and operator actions.

Written once for SQLite and PostgreSQL, as the rest of the store (store_sql.py, whose
SqlGatewayStore takes these methods from SqlOperatorStore). An action and its entry in the
audit table (`operator_actions`) are one transaction: there is no change without its entry,
and no entry without its change.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from paygate.gateway.models import ActionDone, OperatorAction, User, UserAction, UserStatus
from paygate.gateway.statements import USERS, GatewaySql
from paygate.gateway.store_tx import Body, Tx

T = TypeVar("T")

Change = Callable[[Tx, GatewaySql, str], Awaitable[ActionDone]]


async def revoke_all(tx: Tx, sql: GatewaySql, user_id: str, keep: str) -> list[str]:
    """End the user's live sessions but the one of token hash `keep` ('' for none); the
    token hashes of those ended."""
    values = {"user_id": user_id, "keep": keep, "now_s": time.time()}
    return [str(row[0]) for row in await tx.all(sql.revoke_sessions_of, values)]


async def _set_frozen(tx: Tx, sql: GatewaySql, user_id: str, frozen: bool) -> bool:
    return await tx.run(sql.set_frozen, {"user_id": user_id, "frozen": frozen}) == 1


async def _freeze(tx: Tx, sql: GatewaySql, user_id: str) -> ActionDone:
    """Frozen, and every live session ended (a repeat finds none: logins were refused)."""
    changed = await _set_frozen(tx, sql, user_id, True)
    return ActionDone(changed=changed, ended=tuple(await revoke_all(tx, sql, user_id, "")))


async def _unfreeze(tx: Tx, sql: GatewaySql, user_id: str) -> ActionDone:
    return ActionDone(changed=await _set_frozen(tx, sql, user_id, False))


async def _reset_two_factor(tx: Tx, sql: GatewaySql, user_id: str) -> ActionDone:
    """Two-factor off: the secret, one being enrolled, the last step and the codes go."""
    totp = await tx.run(sql.reset_totp, {"user_id": user_id})
    codes = await tx.run(sql.delete_recovery_codes, {"user_id": user_id})
    return ActionDone(changed=totp > 0 or codes > 0)


CHANGES: dict[UserAction, Change] = {
    UserAction.FREEZE: _freeze,
    UserAction.UNFREEZE: _unfreeze,
    UserAction.RESET_TWO_FACTOR: _reset_two_factor,
}


class SqlOperatorStore:
    """GatewayStore's methods for operators; SqlGatewayStore runs their bodies."""

    _sql: GatewaySql

    def _write(self, body: Body[T]) -> Awaitable[T]:
        raise NotImplementedError

    def _read(self, body: Body[T]) -> Awaitable[T]:
        raise NotImplementedError

    async def user_status(
        self, username: str, *, now_s: float, recent_actions: int
    ) -> UserStatus | None:
        """What an operator sees of the user (None: no such user), with the newest
        `recent_actions` entries of the audit table about them."""
        sql = self._sql
        values = {"username": username, "now_s": now_s}

        async def select(tx: Tx) -> UserStatus | None:
            row = await tx.one(sql.user_status, values)
            if row is None:
                return None
            user: User = USERS.from_row(row[: USERS.width])
            created_at_s, frozen, two_factor, codes_left, live = row[USERS.width :]
            listed = {"user_id": user.user_id, "limit": recent_actions}
            actions = tuple(
                OperatorAction(
                    at_s=float(at_s),
                    operator=str(operator),
                    action=UserAction(action),
                    reason=str(reason),
                    changed=bool(changed),
                )
                for at_s, operator, action, reason, changed in await tx.all(
                    sql.recent_actions, listed
                )
            )
            return UserStatus(
                user=user,
                created_at_s=float(created_at_s),
                frozen=bool(frozen),
                two_factor_enabled=bool(two_factor),
                recovery_codes_left=int(codes_left),
                live_sessions=int(live),
                recent_actions=actions,
            )

        return await self._read(select)

    async def act_on_user(
        self, action: UserAction, username: str, *, operator: str, reason: str, at_s: float
    ) -> ActionDone | None:
        """Do `action` to the user and record it in the audit table, changed or not, in one
        transaction; None (and nothing written) when there is no such user."""
        sql = self._sql
        change = CHANGES[action]

        async def act(tx: Tx) -> ActionDone | None:
            row = await tx.one(sql.user_for_action, {"username": username})
            if row is None:
                return None
            user_id = str(row[0])
            done = await change(tx, sql, user_id)
            entry = {
                "at_s": at_s,
                "operator": operator,
                "action": str(action),
                "user_id": user_id,
                "username": username,
                "reason": reason,
                "changed": done.changed,
            }
            await tx.run(sql.insert_action, entry)
            return done

        return await self._write(act)
