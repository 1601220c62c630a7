"""Operators: what AdminService does to gateway users, and the trail it leaves.

An operator is a client certificate, not a user: the gateway's admin port answers only
the operators' certificate (gateway/operator_interceptor.py), and its common name is the
`operator` every action here is recorded under.

    get_user          a user's status; never a secret (no hash, secret or code)
    freeze            every live session ends; logins, payments by and to the user, and
                      captures either way are refused with USER_FROZEN until unfreeze.
                      Balances, payments and authorizations are left as they are.
    unfreeze          all of that works again; the sessions the freeze ended stay ended
    reset_two_factor  two-factor login off, recovery codes deleted: the password alone
                      logs in (for a user who lost their authenticator)

Each change is idempotent: repeating it changes nothing and answers the user as they are,
and is recorded too, with `changed` false. Every change is written to the audit table
(`operator_actions`) in the transaction that makes it, and every action, reads included,
is written to the log as one line of logger `paygate.audit`: the operator, the action, the
user, the reason, and what it did (never a secret). paygate_admin_actions_total{action,
outcome} counts them. An unknown user is NOT_FOUND (USER_NOT_FOUND), and nothing is
written to the table.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from prometheus_client import Counter

from paygate.common.metrics import admin_actions, new_registry
from paygate.errors import USER_NOT_FOUND, InvalidArgument, NotFound
from paygate.gateway.accounts import USERNAME_PATTERN, Accounts
from paygate.gateway.models import ActionDone, UserAction, UserStatus
from paygate.gateway.payments import has_control_characters
from paygate.gateway.store import GatewayStore

_log = logging.getLogger("paygate.audit")

REASON_MAX_LENGTH = 200
RECENT_ACTIONS_LISTED = 10
GET_USER = "get_user"  # the metric's and the log's name of a read
ACTIONS = (GET_USER, *(str(action) for action in UserAction))
# What became of an operator's call: done (a read answered, or a change made), unchanged
# (the user was already as asked), not_found, invalid (bad input), failed (anything else).
OUTCOMES = ("done", "unchanged", "not_found", "invalid", "failed")


def validate(username: str, reason: str) -> None:
    if not USERNAME_PATTERN.fullmatch(username):
        raise InvalidArgument("username must be 3 to 32 characters from a-z, 0-9, '_', '.', '-'")
    if len(reason) > REASON_MAX_LENGTH or has_control_characters(reason):
        raise InvalidArgument(
            f"reason must be at most {REASON_MAX_LENGTH} characters on one line"
            " (no line breaks or control characters)"
        )


@dataclasses.dataclass
class Call:
    """What became of one operator call, set by its body as it learns it."""

    outcome: str = "failed"  # one of OUTCOMES
    done: ActionDone | None = None  # what a change did


def not_found(username: str) -> NotFound:
    return NotFound(f"no user {username!r}", reason=USER_NOT_FOUND)


class Operators:
    def __init__(
        self,
        store: GatewayStore,
        accounts: Accounts,
        actions: Counter | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._accounts = accounts
        self._actions = actions or admin_actions(new_registry(), ACTIONS, OUTCOMES)
        self._clock = clock

    async def get_user(self, operator: str, username: str) -> UserStatus:
        with self._recorded(operator, GET_USER, username, "") as call:
            validate(username, "")
            status = await self._status(username)
            call.outcome = "done"
            return status

    async def act(
        self, operator: str, action: UserAction, username: str, reason: str
    ) -> tuple[UserStatus, ActionDone]:
        """Do `action` to the user; the user as they are after it, and what it did."""
        with self._recorded(operator, str(action), username, reason) as call:
            validate(username, reason)
            write = self._store.act_on_user(
                action, username, operator=operator, reason=reason, at_s=self._clock()
            )
            done = await self._accounts.ending_sessions(write, _ended)
            if done is None:
                raise not_found(username)
            call.outcome, call.done = ("done" if done.changed else "unchanged"), done
            return await self._status(username), done

    async def _status(self, username: str) -> UserStatus:
        status = await self._store.user_status(
            username, now_s=self._clock(), recent_actions=RECENT_ACTIONS_LISTED
        )
        if status is None:
            raise not_found(username)
        return status

    @contextmanager
    def _recorded(self, operator: str, action: str, username: str, reason: str) -> Iterator[Call]:
        """Count the call, and log it once its input is valid."""
        call = Call()
        try:
            yield call
        except InvalidArgument:
            call.outcome = "invalid"
            raise
        except NotFound:
            call.outcome = "not_found"
            raise
        finally:
            self._actions.labels(action, call.outcome).inc()
            if call.outcome != "invalid":
                _log_action(operator, action, username, reason, call)


def _ended(done: ActionDone | None) -> tuple[str, ...]:
    return done.ended if done is not None else ()


def _log_action(operator: str, action: str, username: str, reason: str, call: Call) -> None:
    """One line per action: who, what, to whom, why, and what came of it; never a secret
    (a session's token hash is not one either, but only the count is logged)."""
    fields: dict[str, object] = {
        "operator": operator,
        "action": action,
        "username": username,
        "reason": reason,
        "outcome": call.outcome,
    }
    if call.done is not None:
        fields.update(changed=call.done.changed, sessions_ended=len(call.done.ended))
    level = logging.WARNING if call.outcome == "failed" else logging.INFO
    _log.log(level, "operator action", extra={"fields": fields})
